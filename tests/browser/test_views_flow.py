"""The flow graph in a real JupyterLab: displaying a flow shows the widget; a click on a nested flow's title folds it
(the tasks inside disappear, those below move up exactly as the layout says), a click on a task shows its details
(and tells the kernel); hover titles are there; a hostile class name is text; the labels fit their boxes as Chromium
renders them. Then the notebook as saved, exported by nbconvert and opened with the network blocked: the static
drawing is there and folds on a click, in CSS alone."""
import inspect

from harness import widget_output, export_html, notebook, open_notebook, open_static, run_all, run_code, save, screenshot

from dnn_cool.synthetic import synthetic_project
from dnn_cool.views.flow import folded_geometry, layout_flow

EVIL = '<img src=x onerror=alert(1)>'
FACE, BODY, PERSON = 'person_regression.face_regression', 'person_regression.body_regression', 'person_regression'


def many_tasks_project():
    "40 tasks, three levels of nesting, AND / OR / NOT, edges that skip rows, long names (as in 20a_views.flow)."
    from dnn_cool import (BinaryClassificationTask, BoundedRegressionTask, ClassificationTask,
                          MultilabelClassificationTask, Project, RegressionTask)
    kinds = [BinaryClassificationTask, lambda n: ClassificationTask(n, labels=['a', 'b', 'c']),
             lambda n: BoundedRegressionTask(n, 0, 1), lambda n: MultilabelClassificationTask(n, num_labels=4), RegressionTask]
    names = ([(f'gate_{i}', 0) for i in range(6)] + [(f'detail_measurement_{i}', 2 + i % 3) for i in range(8)]
             + [(f'sub_{i}', i % 5) for i in range(8)] + [(f'deep_{i}', (i + 1) % 5) for i in range(6)]
             + [(f'flag_{i}', 0) for i in range(4)] + [(f'wide_task_name_number_{i}', 1) for i in range(8)])
    p = Project([kinds[k](n) for n, k in names])
    @p.add_flow
    def inner_most(flow, x, out):
        out += flow.deep_0(x.features)
        out += flow.deep_1(x.features)
        out += flow.flag_0(x.features)
        out += flow.deep_2(x.features) | out.flag_0
        out += flow.deep_3(x.features) | ~out.flag_0
        out += flow.flag_1(x.features)
        out += flow.deep_4(x.features) | (out.flag_0 & out.flag_1)
        out += flow.deep_5(x.features) | (out.flag_0 | ~out.flag_1)
        return out
    @p.add_flow
    def middle(flow, x, out):
        for i in range(6): out += getattr(flow, f'sub_{i}')(x.features)
        out += flow.flag_2(x.features)
        out += flow.inner_most(x.features) | out.flag_2
        out += flow.sub_6(x.features) | ~out.flag_2
        out += flow.sub_7(x.features) | out.flag_2
        return out
    @p.add_flow
    def big(flow, x, out):
        out += flow.gate_0(x.image)
        out += flow.gate_1(x.image) | out.gate_0
        out += flow.gate_2(x.image) | ~out.gate_1
        out += flow.gate_3(x.image) | (out.gate_1 & ~out.gate_2)
        out += flow.gate_4(x.image) | ((out.gate_0 | out.gate_2) & ~out.gate_3)
        out += flow.gate_5(x.image)
        for i in range(8): out += getattr(flow, f'detail_measurement_{i}')(x.image) | (out.gate_0 if i % 2 else out.gate_3)
        out += flow.flag_3(x.features) | out.gate_1
        out += flow.middle(x.features) | out.gate_4
        for i in range(8): out += getattr(flow, f'wide_task_name_number_{i}')(x.text) | (out.gate_2 if i < 4 else ~out.flag_3)
        return out
    return p


CELLS = [
    # 0: displaying a flow draws it (a widget in Lab)
    "import dnn_cool\nfrom dnn_cool import FlowView, synthetic_project\nflow = synthetic_project().flows['full_flow']\nflow",
    # 1: a view kept in a variable, to read the kernel's side of the clicks
    "view = FlowView(flow)\nview",
    # 2: a class named like an injected script
    f"from dnn_cool import Project, ClassificationTask, BinaryClassificationTask\n"
    f"evil = Project([BinaryClassificationTask('gate'), ClassificationTask('kind', labels=[{EVIL!r}, 'plain'])])\n"
    "@evil.add_flow\ndef guarded(flow, x, out):\n    out += flow.gate(x.f)\n    out += flow.kind(x.f) | ~out.gate\n    return out\nguarded",
    # 3: forty tasks
    inspect.getsource(many_tasks_project) + "\nmany_tasks_project().flows['big']",
    # 4: a project lists its flows and draws each
    "synthetic_project()",
]

BOXES_JS = """(root) => [...root.querySelectorAll('g.dc-node')].map((g) => {
  const r = g.querySelector('rect.dc-box').getBBox();
  const texts = [...g.querySelectorAll('text')].map((t) => { const b = t.getBBox(); return [b.x, b.width, t.textContent]; });
  return {path: g.dataset.path, x: r.x, y: r.y, w: r.width, h: r.height, texts};
})"""


def _node_tops(svg):
    "`{path: y}` of every task box shown, relative to the drawing's top (as rendered, transforms applied)."
    return svg.evaluate("""(svg) => { const top = svg.getBoundingClientRect().top; const out = {};
      for (const g of svg.querySelectorAll('g.dc-node')) { const r = g.querySelector('rect').getBoundingClientRect();
        if (r.height > 0) out[g.dataset.path] = r.top - top; }
      return out; }""")


def _check_folded_like_layout(svg, folded):
    "The rendered drawing shows exactly the tasks `folded_geometry` keeps, where it puts them, at its height."
    lay = layout_flow(synthetic_project().flows['full_flow'])
    boxes, height = folded_geometry(lay, folded)
    expected = {p: b.y for p, b in boxes.items() if p in lay.nodes}
    tops = _node_tops(svg)
    assert set(tops) == set(expected), (set(tops) ^ set(expected))
    for p, y in expected.items(): assert abs(tops[p] - (y - 0.5)) < 1.5, (p, tops[p], y)  # the rect's stroke box
    assert abs(svg.bounding_box()['height'] - height) < 1.5, (svg.bounding_box()['height'], height)


def _click_fold(widget, path, folded: bool):
    """Click a nested flow's title in the widget, and wait for the kernel's answer: the drawing re-drawn with the
    flow's checkbox `checked` as markup (the click itself only sets the checkbox's state)."""
    widget.locator(f'label.dc-fold[data-path="{path}"]').click()
    widget.locator(f'input.dc-toggle[data-path="{path}"]' + ('[checked]' if folded else ':not([checked])')).wait_for(state='attached')


def test_flow_graph_in_lab_and_in_an_export(lab, page, browser):
    name = lab.add(notebook(*CELLS), 'views_flow.ipynb')
    open_notebook(page, lab, name)
    page.evaluate('window.jupyterapp.shell.collapseLeft()')  # the file browser closed: room for the details beside
    run_all(page)
    auto, widget, evil, big, project = (widget_output(page, i) for i in range(5))
    for out in (auto, widget, evil, big): out.locator('.dcw .dc-flow svg').wait_for(timeout=30000)  # widgets, not the fallback
    screenshot(widget.locator('.dcw-canvas'), 'view_flow')

    # hover: every task carries its title
    title = widget.locator('g.dc-node[data-path="door_locked"] > title').text_content()
    assert 'type: BinaryClassificationTask' in title and 'requires: ~door_open' in title and 'threshold: 0.5' in title

    # fold a nested flow by clicking its title: its tasks go, the ones below move up, the kernel knows
    svg = widget.locator('.dcw-canvas svg')
    _click_fold(widget, FACE, True)
    assert not widget.locator(f'g.dc-node[data-path="{FACE}.face_x1"]').is_visible()
    assert widget.locator(f'g.dc-node[data-path="{BODY}.body_x1"]').is_visible()
    _check_folded_like_layout(svg, [FACE])
    assert run_code(page, 'print(view.canvas.collapsed, view.visible_tasks()[-1])') == f"['{FACE}'] {BODY}.shirt_type\n"
    _click_fold(widget, PERSON, True)  # the outer flow too: all ten go
    assert not widget.locator(f'g.dc-node[data-path="{BODY}.body_x1"]').is_visible()
    _check_folded_like_layout(svg, [PERSON, FACE])
    _click_fold(widget, PERSON, False)  # unfold the outer: the inner stays folded
    assert widget.locator(f'g.dc-node[data-path="{BODY}.body_x1"]').is_visible()
    _check_folded_like_layout(svg, [FACE])

    # click a task: its details show beside the drawing, read from the kernel now
    run_code(page, "flow.graph['door_locked'].task.decoder.threshold = 0.375\nview.layout.nodes['door_locked'].task.decoder.threshold = 0.375")
    widget.locator('g.dc-node[data-path="door_locked"]').click()
    details = widget.locator('.dcw-details')
    details.locator('h4', has_text='door_locked').wait_for(timeout=30000)
    text = details.inner_text()
    assert 'BinaryClassificationTask' in text and '0.375' in text and '~door_open' in text
    assert run_code(page, 'print(view.selected)') == 'door_locked\n'
    widget.locator('g.dc-node.dc-selected[data-path="door_locked"]').wait_for()
    screenshot(widget.locator('.dcw'), 'view_flow_widget')

    # the flow displayed by itself is the same widget
    _click_fold(auto, PERSON, True)
    assert not auto.locator(f'g.dc-node[data-path="{FACE}.face_x1"]').is_visible()

    # a class named <img src=x onerror=alert(1)>: text in the hover title and in the details, no element, no script
    assert EVIL in evil.locator('g.dc-node[data-path="kind"] > title').text_content()
    evil.locator('g.dc-node[data-path="kind"]').click()
    evil.locator('.dcw-details h4', has_text='kind').wait_for(timeout=30000)
    assert EVIL in evil.locator('.dcw-details').inner_text()
    assert page.locator('.jp-OutputArea img[src="x"]').count() == 0  # (the hidden static copies hold images of the drawings)

    # forty tasks as Chromium renders them: no two boxes overlap, every label ends inside its box
    boxes = big.locator('.dcw-canvas svg').evaluate(BOXES_JS)
    assert len(boxes) == 40
    for i, a in enumerate(boxes):
        for t_x, t_w, text in a['texts']:
            assert t_x >= a['x'] and t_x + t_w <= a['x'] + a['w'] - 2, (a['path'], text, t_x + t_w, a['x'] + a['w'])
        for b in boxes[i + 1:]:
            assert not (a['x'] < b['x'] + b['w'] and b['x'] < a['x'] + a['w'] and a['y'] < b['y'] + b['h'] and b['y'] < a['y'] + a['h']), (a['path'], b['path'])
    # a project: its flows in sections, the one no other flow uses open; a click opens another
    project.get_by_text('Project: 14 tasks, 4 flows').wait_for()
    assert project.locator('.dcw').locator('visible=true').count() == 1
    project.get_by_text('face_regression · 5 tasks').click()
    project.locator('.dcw g.dc-node[data-path="face_x1"]').locator('visible=true').wait_for()  # in the section opened
    page.assert_clean()

    # the notebook as saved, exported, opened with the network blocked: static drawings that fold in CSS alone
    save(page)
    static = open_static(browser, export_html(lab, name))
    drawings = static.locator('.dc-flow svg')
    drawings.first.wait_for()
    assert drawings.count() == 4 + 4  # the project's four flows too
    first = static.locator('.dc-flow').first
    assert first.locator('g.dc-node').count() == 14
    assert 'type: BinaryClassificationTask' in first.locator('g.dc-node[data-path="door_open"] > title').text_content()
    first.locator(f'label.dc-fold[data-path="{FACE}"]').click()
    first.locator(f'g.dc-node[data-path="{FACE}.face_x1"]').wait_for(state='hidden')
    _check_folded_like_layout(first.locator('svg'), [FACE])
    assert EVIL in static.locator('.dc-flow').nth(2).locator('g.dc-node[data-path="kind"] > title').text_content()
    screenshot(static.locator('.dc-flow svg').nth(3), 'view_flow_40')
    static.assert_clean()
