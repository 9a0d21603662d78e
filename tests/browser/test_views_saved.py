"""Every view as a notebook lives on, after the session that ran it: run in JupyterLab and saved; reopened the next
day (its kernel stopped) in JupyterLab and in Notebook 7, saved with JupyterLab's default settings and with "Save
Widget State Automatically" on; the shipped walkthrough opened untrusted; exported by nbconvert and read offline; and
its HTML as GitHub's sanitizer would leave it. Each time every view shows something readable (graphics where they can
be drawn, short lines of text, never an error), and rerunning a cell brings its widget back.

One notebook, run once, serves every check: it is saved twice (without and with widget state) and reopened."""
import json
import shutil

import pytest
from harness import (ERROR_TEXTS, cell_output, code_sources, export_html, notebook, open_notebook, open_static, read_view,
                     reopen, run_all, run_cells, sanitize_like_github, save, screenshot_to_notes, set_widget_state_saving,
                     wait_rendered, _PANEL, Page, REPO)

SETUP = '''
import torch
from dnn_cool import *
from dnn_cool.demo import SyntheticBackbone
torch.manual_seed(0)
project = synthetic_project()
flow = project.flows['full_flow']
scenes, test_scenes = make_synthetic(256, seed=0), make_synthetic(64, seed=1)
train_ds = FlowDataset(flow, {'image': scenes.images}, scenes.labels)
test_ds = FlowDataset(flow, {'image': test_scenes.images}, test_scenes.labels)
net = FlowNet(SyntheticBackbone(width=8, out_features=32), flow.torch(in_features={'features': 32}))
'''
FIT = '''trainer = Trainer(net, flow.get_loss(), torch.optim.AdamW(net.parameters(), lr=3e-3),
                  train_ds.loader(32, shuffle=True, generator=torch.Generator().manual_seed(0)), test_ds.loader(64),
                  flow=flow, epochs=2, seed=0)
history = trainer.fit()'''
BODY_W = 'person_regression.body_regression.body_w'

# name: (cell source, graphics it draws at least, a text it shows, is it a widget in a live kernel)
VIEWS = {
    'flow': ('flow', 1, 'full_flow', True),
    'project': ('project', 1, 'full_flow', True),
    'training': (FIT, 1, 'full_flow', False),
    'history': ('history', 1, 'full_flow', False),
    'evaluation': ('EvaluationView(evaluate(net, test_ds.loader(64), flow), flow)', 0, 'camera_blocked', True),
    'thresholds': ('tuned = flow.get_decoder().tune()\ntuned', 2, 'door_open', True),
    'trees': ('explain_batch(net, test_ds[[0, 1]], flow)', 0, 'camera_blocked', False),
    'explorer': ("ExplanationExplorer(net, test_ds, flow, image_key='image')", 1, 'camera_blocked', True),
    'best_worst': (f"best_worst_inputs(net, test_ds.loader(64), flow, n=2, dataset=test_ds).view(tasks=['door_locked', '{BODY_W}'])",
                   4, 'door_locked', True),
}
TRUST_HINT = 'trust the notebook'  # what a view says where a sanitizer left only its plain form
RERUN_HINT = 'rerun the cell'  # what a widget's static copy says where the widget is gone
MAX_LINE = 300  # longer visible lines are text run together (an <svg>'s labels without the <svg>)
WIDTH, HEIGHT = 1280, 2600  # the file browser open: a notebook about 1000 px wide; tall, so a view fits in its picture


def check_readable(report: dict, name: str, where: str, graphics: int | None = None, hint: str | None = None):
    "The view `name` reads well in `report` (from `read_view`): no error, short lines, its text, its graphics."
    _, at_least, shows, _ = VIEWS[name]
    at_least = at_least if graphics is None else graphics
    text = report['text']
    assert not [e for e in ERROR_TEXTS if e in text], f'{name} ({where}) shows an error: {text[:300]!r}'
    assert len(report['longest']) <= MAX_LINE, f'{name} ({where}) runs text together: {report["longest"][:200]!r}...'
    assert shows in text or shows in report['alts'], f'{name} ({where}) does not show {shows!r}: {text[:300]!r}'  # in words or in a drawing
    assert report['graphics'] >= at_least, f'{name} ({where}) draws {report["graphics"]} graphics, expected {at_least}'
    assert not report['cut'], f'{name} ({where}): buttons with their labels cut: {report["cut"]}'
    if hint: assert hint in text, f'{name} ({where}) does not say {hint!r}: {text[-300:]!r}'


def read_views(page: Page, where: str, names=tuple(VIEWS)) -> dict:
    "Every view's output of the open notebook (this module's), read after scrolling to it; screenshots for the notes."
    out = {}
    sources = code_sources(page)
    for name in names:
        cell = sources.index(VIEWS[name][0])
        locator = cell_output(page, cell)
        locator.scroll_into_view_if_needed()
        page.wait_for_timeout(150)
        out[name] = read_view(locator)
        screenshot_to_notes(locator, f'{where}-{name}')
    return out


@pytest.fixture(scope='module')
def saved(lab, browser):
    """The views notebook run in JupyterLab (1280 px wide, the file browser open), saved as `default.ipynb` with
    JupyterLab's default settings and as `state.ipynb` with widget state; the kernel stopped. Returns the live reports."""
    name = lab.add(notebook(SETUP, *[source for source, *_ in VIEWS.values()]), 'views_saved.ipynb')
    page = Page(browser.new_context(viewport={'width': WIDTH, 'height': HEIGHT}, device_scale_factor=1).new_page())
    open_notebook(page, lab, name)
    run_all(page, timeout=600)
    wait_rendered(page)
    live = read_views(page, 'live-lab')
    page.assert_clean()
    save(page)
    shutil.copy(lab.root / name, lab.root / 'default.ipynb')
    set_widget_state_saving(page, True)
    try:
        page.evaluate(f"(name) => {{ ({_PANEL})(name).context.model.dirty = true; }}", name)
        save(page)
    finally: set_widget_state_saving(page, False)
    assert 'widgets' in json.loads((lab.root / name).read_text())['metadata'], 'no widget state was saved'
    shutil.copy(lab.root / name, lab.root / 'state.ipynb')
    page.context.close()
    lab.shutdown_kernels()
    return live


def test_live_session_shows_the_widgets(saved):
    for name, (_, graphics, _, widget) in VIEWS.items():
        check_readable(saved[name], name, 'live')
        assert RERUN_HINT not in saved[name]['text'] and TRUST_HINT not in saved[name]['text'], \
            f'{name}: the static copy shows beside the live view'
        if widget: assert saved[name]['statics'] == 0, f'{name}: its static copy shows beside its live widget'


@pytest.mark.parametrize('front_end', ['lab', 'notebook'])
@pytest.mark.parametrize('settings', ['default', 'state'])
def test_reopened_with_the_kernel_stopped(saved, request, browser, front_end, settings):
    server = request.getfixturevalue('lab' if front_end == 'lab' else 'notebook7')
    name = server.add(request.getfixturevalue('lab').root / f'{settings}.ipynb', f'reopened_{settings}.ipynb')
    page = reopen(browser, server, name, WIDTH, HEIGHT)
    try:
        for view, report in read_views(page, f'reopened-{front_end}-{settings}').items():
            check_readable(report, view, f'reopened in {front_end}, {settings} settings', hint=RERUN_HINT if VIEWS[view][3] else None)
            assert report['statics'] == 1, f'{view}: {report["statics"]} static views shown'
        # the widget manager logs each widget output whose model is gone (the output itself is hidden, see above);
        # Notebook 7.6 logs "reading 'schema'" on opening any notebook, a one-cell notebook without dnn_cool as well
        page.assert_clean(ignore=('Failed to load resource', 'widget model not found', "reading 'schema'"))
        if front_end == 'lab' and settings == 'default':  # rerunning a cell brings its widget back
            flow_cell = code_sources(page).index('flow')
            run_cells(page, [0, flow_cell])
            out = cell_output(page, flow_cell)
            out.locator('.dcw-canvas svg').first.wait_for(timeout=30000)
            assert RERUN_HINT not in read_view(out)['text']
    finally:
        page.context.close()
        server.shutdown_kernels()


@pytest.mark.parametrize('front_end', ['lab', 'notebook'])
def test_shipped_walkthrough_opened_untrusted(request, browser, front_end):
    "The walkthrough as a clone has it (saved by `.ci/save_walkthroughs.py`, never signed here): untrusted."
    server = request.getfixturevalue('lab' if front_end == 'lab' else 'notebook7')
    name = server.add(REPO / 'nbs' / '30_walkthrough.ipynb', 'walkthrough.ipynb')
    page = reopen(browser, server, name, WIDTH, HEIGHT)
    try:
        assert page.evaluate(f"(name) => ({_PANEL})(name).content.widgets.every((c) => !c.model.trusted)", name)
        sources = code_sources(page)
        cells = {'flow': sources.index(next(s for s in sources if s.endswith('\nflow'))),
                 'training': sources.index(next(s for s in sources if s.endswith('history = trainer.fit()'))),
                 'history': sources.index('history'),
                 'evaluation': sources.index(next(s for s in sources if s.endswith('EvaluationView(evaluation, flow)'))),
                 'thresholds': sources.index(next(s for s in sources if s.endswith('\ntuned'))),
                 'trees': sources.index(next(s for s in sources if s.endswith('\ntrees'))),
                 'explorer': sources.index(next(s for s in sources if s.startswith('ExplanationExplorer('))),
                 'best_worst': sources.index(next(s for s in sources if s.startswith('ranked = best_worst_inputs')))}
        for view, cell in cells.items():
            out = cell_output(page, cell)
            out.scroll_into_view_if_needed()
            page.wait_for_timeout(150)
            report = read_view(out)
            screenshot_to_notes(out, f'untrusted-{front_end}-{view}')
            check_readable(report, view, f'untrusted in {front_end}', hint=TRUST_HINT)
        page.assert_clean(ignore=('Failed to load resource', "reading 'schema'"))  # Notebook 7.6's own, see above
    finally:
        page.context.close()
        server.shutdown_kernels()


def _export_cells(static: Page) -> list:
    "The output areas of the code cells of an nbconvert (lab template) page, in order."
    return [static.locator('.jp-Cell.jp-CodeCell').nth(i).locator('.jp-Cell-outputWrapper')
            for i in range(static.locator('.jp-Cell.jp-CodeCell').count())]


@pytest.mark.parametrize('settings', ['default', 'state'])
def test_nbconvert_export_offline(saved, lab, browser, settings):
    static = open_static(browser, export_html(lab, f'{settings}.ipynb'))
    static.set_viewport_size({'width': WIDTH, 'height': HEIGHT})
    outputs = _export_cells(static)
    for k, view in enumerate(VIEWS):
        out = outputs[k + 1]
        out.scroll_into_view_if_needed()
        report = read_view(out)
        screenshot_to_notes(out, f'nbconvert-{settings}-{view}')
        check_readable(report, view, f'nbconvert export, {settings} settings')
    # with widget state, nbconvert's page itself asks a CDN for the widget manager (blocked here): the views never do
    if settings == 'state': static.blocked[:] = [u for u in static.blocked if '@jupyter-widgets/html-manager' not in u]
    static.assert_clean(ignore=('Failed to load resource', 'ERR_FAILED', 'embed-amd') if settings == 'state' else ())


def test_github_like_sanitizer(saved, lab, browser):
    "Each view's HTML through an allowlist like GitHub's: short readable text and the hint, never text run together."
    nb = json.loads((lab.root / 'default.ipynb').read_text())
    cells = [c for c in nb['cells'] if c['cell_type'] == 'code'][1:]
    body = []
    for view, cell in zip(VIEWS, cells):
        parts = []
        for o in cell.get('outputs', []):
            data = o.get('data', {})
            if 'text/html' in data: parts.append(sanitize_like_github(''.join(data['text/html'])))
            elif 'text/plain' in data: parts.append(f'<pre>{sanitize_like_github("".join(data["text/plain"]))}</pre>')
        body.append(f'<section id="{view}">{"".join(parts)}</section>')
    page_file = lab.root / 'github.html'
    page_file.write_text(f'<!doctype html><meta charset="utf-8"><body style="width:900px">{"".join(body)}</body>')
    static = open_static(browser, page_file)
    for view in VIEWS:
        out = static.locator(f'section#{view}')
        report = read_view(out)
        screenshot_to_notes(out, f'github-{view}')
        check_readable(report, view, 'GitHub-like sanitizer', graphics=0, hint=TRUST_HINT)
    static.assert_clean(ignore=('Failed to load resource',))
