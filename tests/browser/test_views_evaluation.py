"""Evaluation at a glance in a real JupyterLab: the widget's flow, sort and search controls change the rows shown (as
the kernel's `rows()` says); a hostile class name is text; the notebook as saved, exported and opened with the network
blocked shows the static tables."""
import re

from harness import export_html, notebook, open_notebook, open_static, run_all, run_code, save, screenshot, widget_output

EVIL = '<img src=x onerror=alert(1)>'
BODY = 'person_regression.body_regression'

CELLS = [
    # 0: the walkthrough's flow, an untrained module on random features, evaluated per task and per class
    "import torch\nfrom dnn_cool import FlowDataset, evaluate, make_synthetic, synthetic_project\n"
    "from dnn_cool.views.evaluation import EvaluationView\n"
    "flow = synthetic_project().flows['full_flow']\ndata = make_synthetic(240, seed=1)\ntorch.manual_seed(0)\n"
    "ds = FlowDataset(flow, {'features': torch.randn(len(data), 8)}, data.labels)\n"
    "model = flow.torch(in_features={'features': 8})\nev = evaluate(model, ds.loader(120), detailed=True)\n"
    "view = EvaluationView(ev, flow, title='untrained walkthrough model · mode gt')\nview",
    # 1: a class named like an injected script, and a score that could not be computed
    "import pandas as pd\n"
    f"hostile = pd.DataFrame({{'task_path': ['guarded.kind'] * 3, 'metric_name': ['f1_score', 'recall', 'f1_score/' + {EVIL!r}],\n"
    "                        'metric_res': [0.5, float('nan'), 0.25], 'num_samples': [4, 4, 4]})\nEvaluationView(hostile)",
]


def _tasks(out):
    "The task paths the table shows, in order (per-class rows left out)."
    return [t for t in out.locator('td.dc-task').evaluate_all('(cells) => cells.map((c) => c.title)') if ' / ' not in t]


def _wait_rows(out, expected, timeout=30000):
    "Wait until the table shows exactly the tasks `expected`, in order (the kernel answers a control asynchronously)."
    out.page.wait_for_function("""([el, want]) => JSON.stringify([...el.querySelectorAll('td.dc-task')].map((c) => c.title)
                                     .filter((t) => !t.includes(' / '))) === JSON.stringify(want)""",
                               arg=[out.first.element_handle(), expected], timeout=timeout)


def test_evaluation_view_in_lab_and_in_an_export(lab, page, browser):
    name = lab.add(notebook(*CELLS), 'views_evaluation.ipynb')
    open_notebook(page, lab, name)
    page.evaluate('window.jupyterapp.shell.collapseLeft()')
    run_all(page)
    out, evil = widget_output(page, 0), widget_output(page, 1)
    out.locator('.widget-dropdown select').first.wait_for(timeout=30000)  # the widget, not the fallback
    paths = run_code(page, 'print(*flow.graph.paths)').split()
    assert len(paths) == 14
    assert _tasks(out) == paths  # every task, in the flow's order, full paths
    heads = out.locator('table').first.locator('tr.dc-head')
    assert heads.count() == 1  # one header for the table: every score under its own metric's column
    assert heads.evaluate('(r) => r.getBoundingClientRect().height') < 30  # metric names on one line, never wrapped

    # one flow
    flow_picker, sort_picker = out.locator('.widget-dropdown select').nth(0), out.locator('.widget-dropdown select').nth(1)
    flow_picker.select_option(BODY)
    _wait_rows(out, [p for p in paths if p.startswith(BODY + '.')])
    assert out.locator('tr.dc-group th', has_text='full_flow').count() == 0
    # every flow, sorted by F1, best first: the order the kernel computes
    flow_picker.select_option('all flows')
    sort_picker.select_option('f1_score')
    expected = run_code(page, "print(*view.rows(sort='f1_score').index)").split()
    assert expected != paths
    _wait_rows(out, expected)
    assert out.locator('table').first.locator('tr.dc-group').count() == 1  # sorted across flows: one group
    f1 = [float(v) for v in out.locator('td[title^="f1_score of "]').evaluate_all('(cs) => cs.map((c) => c.textContent)')
          if re.fullmatch(r'[\d.]+', v)]
    assert f1[:6] == sorted(f1[:6], reverse=True) and len(f1) >= 6
    # a search over the task paths
    sort_picker.select_option('flow order')
    out.locator('.widget-text input').fill('face_')
    out.locator('.widget-text input').press('Enter')
    _wait_rows(out, [p for p in paths if '.face_' in p])

    # a hostile class name is text; NaN is a dash
    evil.locator('summary', has_text='Per class and per label').click()
    assert EVIL in evil.locator('details td.dc-task').inner_text()
    assert evil.locator('td[title^="recall of guarded.kind"]').inner_text() == '–'
    assert page.locator('.jp-OutputArea img').count() == 0
    page.assert_clean()

    # exported as saved, opened with the network blocked: the static tables
    save(page)
    static = open_static(browser, export_html(lab, name))
    tables = static.locator('.dc-eval')
    tables.first.wait_for()
    assert tables.count() == 2
    assert _tasks(tables.first) == paths
    assert EVIL in tables.nth(1).locator('details td.dc-task').text_content()
    static.locator('.dc-eval details summary').first.click()  # per class: opens without script
    tables.first.locator('td.dc-task[title$=" / red"]').wait_for()
    static.locator('.dc-eval details summary').first.click()
    screenshot(tables.first, 'view_evaluation')
    static.assert_clean()
