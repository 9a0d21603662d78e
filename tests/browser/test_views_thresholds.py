"""The threshold sliders in JupyterLab: `tune`'s results display as a widget; dragging a slider (mouse) and typing a
value in one's readout (0.6 stays 0.6) show the counts at the new threshold, equal to a brute-force count in the
kernel; the status line says what the decoders don't hold yet; Apply sets the flow's decoders (read back, with the
module's decoded output, from a cell run afterwards) and the flow graph's hover text follows at once; Reset all says
its thresholds are not applied; no button is cut and no card scrolls sideways at 1000 px; a label named
`<img src=x onerror=alert(1)>` shows as text and runs nothing; the nbconvert export shows the static view."""
import json
import time

from playwright.sync_api import expect

from harness import _PANEL, cell_output, widget_output, export_html, notebook, open_notebook, open_static, run_all, save, screenshot

EVIL = '<img src=x onerror=alert(1)>'
SETUP = '''
import json
import time
import numpy as np, torch
from dnn_cool import BinaryClassificationTask, MultilabelClassificationTask, Project

project = Project([BinaryClassificationTask('is_positive'),
                   MultilabelClassificationTask('tags', labels=['red', '<img src=x onerror=alert(1)>'])])
@project.add_flow
def details(flow, x, out):
    out += flow.tags(x.features)
    return out
@project.add_flow
def toy(flow, x, out):
    out += flow.is_positive(x.features)
    out += flow.details(x.features) | out.is_positive
    return out

g = np.random.default_rng(0)
n = 600
scores = g.random(n).astype(np.float32)
y = g.random(n) < scores
tag_scores = g.random((n, 2)).astype(np.float32)
tags = (g.random((n, 2)) < tag_scores).astype(np.float32)
activated = {'is_positive': torch.tensor(scores), 'details.tags': torch.tensor(tag_scores)}
targets = {'is_positive': torch.tensor(y, dtype=torch.float32), 'details.tags': torch.tensor(tags)}
precondition = {'details.tags': torch.tensor(y)}

def brute(t):  # the counts at threshold t, by scanning every score
    pred = scores >= np.float32(t)
    return dict(tp=int((pred & y).sum()), fp=int((pred & ~y).sum()), fn=int((~pred & y).sum()), tn=int((~pred & ~y).sum()))

results = toy.get_decoder().tune(activated, targets, precondition)
'''
SHOW = 'results'
FLOW = 'toy'  # the flow graph, whose hover texts name the thresholds
STATE = '''
module = toy.torch(in_features={'features': 8}).eval()
with torch.no_grad(): out = module({'features': torch.randn(256, 8, generator=torch.Generator().manual_seed(1))})
held = toy.get_decoder().thresholds()
decoded_ok = bool((out['decoded']['is_positive'] == (out['activated']['is_positive'] >= np.float32(held['is_positive']))).all())
current = results.view().current[('is_positive', None)]
print('STATE ' + json.dumps({'held': held, 'current': current, 'counts': brute(current), 'decoded_ok': decoded_ok}))
'''


def _state(page, cell: int) -> dict:
    text = cell_output(page, cell).inner_text()
    return json.loads(text[text.index('STATE ') + 6:].strip().splitlines()[0])


def _run_cell(page, index: int, timeout: float = 60):
    "Run code cell `index` (0-based among code cells) again, as a user would after interacting, and wait for it."
    code = f"(name) => ({_PANEL})(name).content.widgets.filter(c => c.model.type === 'code')"
    before = page.evaluate(f"([name, i]) => ({code})(name)[i].model.executionCount", [page.notebook, index])
    page.evaluate(f"""([name, i]) => {{ const p = ({_PANEL})(name); const cell = ({code})(name)[i];
        window.jupyterapp.shell.activateById(p.id); p.content.activeCellIndex = p.content.widgets.indexOf(cell);
        window.jupyterapp.commands.execute('notebook:run-cell'); return true; }}""", [page.notebook, index])
    page.wait_for_function(f"""([name, i, before]) => {{ const p = ({_PANEL})(name); const c = ({code})(name)[i].model;
        return c.executionCount !== null && c.executionCount !== before && p.sessionContext.session.kernel.status === 'idle'; }}""",
                           arg=[page.notebook, index, before], timeout=timeout * 1000)


def _settled(page, shown, readout, tolerance: float, timeout: float = 10):
    "Wait until the panel's threshold (`shown`, from the kernel) is within `tolerance` of the slider's readout; both values."
    deadline = time.time() + timeout
    while True:
        a, b = float(shown.inner_text()), float(readout.inner_text())
        if abs(a - b) <= tolerance or time.time() > deadline: return a, b
        page.wait_for_timeout(100)


def _counts(panel) -> dict:
    return {k: int(panel.locator(f'td.{k}').inner_text()) for k in ('tp', 'fp', 'fn', 'tn')}


def _node_title(out, path: str) -> str:
    "The hover text of task `path` in the flow graph shown by `out`."
    return out.locator(f'.dcw-canvas g.dc-node[data-path="{path}"] > title').first.text_content()


def test_sliders_move_counts_and_apply_to_the_flow(lab, page, browser):
    name = lab.add(notebook(SETUP, SHOW, STATE, FLOW), 'views_thresholds.ipynb')
    page.set_viewport_size({'width': 1280, 'height': 900})  # the file browser open: a notebook about 1000 px wide
    open_notebook(page, lab, name)
    run_all(page)
    tuned = _state(page, 2)
    assert tuned['decoded_ok'] and tuned['held']['is_positive'] == tuned['current']

    out = widget_output(page, 1)
    sliders = out.locator('.widget-slider')
    sliders.first.wait_for()
    assert sliders.count() == 3  # is_positive, and each label of tags
    assert out.locator('.dnn-cool.thresholds .summary').count() == 1  # the widget's table
    cards = out.locator('.widget-gridbox > .widget-vbox')
    assert cards.count() == 3 and not [w for w in cards.evaluate_all('(cs) => cs.map((c) => c.scrollWidth - c.clientWidth)') if w > 0]
    panels = out.locator('.panel')
    first = panels.nth(0)
    shown_before = first.locator('b.current').inner_text()

    # drag the first slider with the mouse
    handle = sliders.nth(0).locator('.noUi-handle')
    handle.scroll_into_view_if_needed()
    box = handle.bounding_box()
    page.mouse.move(box['x'] + box['width'] / 2, box['y'] + box['height'] / 2)
    page.mouse.down()
    page.mouse.move(box['x'] + box['width'] / 2 + 12, box['y'] + box['height'] / 2, steps=4)
    page.mouse.up()
    expect(first.locator('b.current')).not_to_have_text(shown_before, timeout=10000)  # the panel is re-rendered: query anew
    # the kernel answered the last move: the panel shows the slider's value (which the readout rounds to 4 decimals)
    shown, readout = _settled(page, first.locator('b.current'), sliders.nth(0).locator('.widget-readout'), 5e-5)
    assert abs(shown - readout) <= 5e-5 and shown > float(shown_before), (shown, readout, shown_before)  # moved right
    counts = _counts(first)

    # type a value in the evil label's readout: taken as typed, not snapped to a grid
    evil = panels.nth(2)
    assert EVIL in evil.locator('.name').inner_text()  # the name shows as text ...
    evil_readout = sliders.nth(2).locator('.widget-readout')
    evil_readout.click()
    page.keyboard.press('Control+A')
    page.keyboard.type('0.6')
    page.keyboard.press('Enter')
    expect(evil.locator('b.current')).to_have_text('0.6', timeout=10000)
    evil_shown = float(evil.locator('b.current').inner_text())
    status = out.locator('.status')
    expect(status).to_contain_text("not applied: 2 thresholds the decoders don't hold yet", timeout=10000)

    flow_out = widget_output(page, 3)
    assert f'threshold: {shown:.4g}' not in _node_title(flow_out, 'is_positive')  # the tuned threshold, before Apply
    out.locator('button', has_text='Apply to flow').click()
    out.locator('text=applied to the decoders of toy').wait_for(timeout=10000)
    assert not out.locator('button').evaluate_all('(bs) => bs.filter((b) => b.scrollWidth > b.clientWidth + 1).map((b) => b.innerText)')
    expect(flow_out.locator('.dcw-canvas g.dc-node[data-path="is_positive"] > title')).to_contain_text(
        f'threshold: {shown:.4g}', timeout=10000)  # the flow graph's hover text names the applied threshold at once
    page.set_viewport_size({'width': 1280, 'height': 1800})  # the whole widget in view, for its picture
    page.wait_for_timeout(500)
    screenshot(out.locator('.widget-vbox').first, 'view_thresholds')

    _run_cell(page, 2)  # a cell run after the interaction reads the flow's decoders and the module's output
    state = _state(page, 2)
    assert abs(state['held']['is_positive'] - shown) < 1e-6 and abs(state['current'] - shown) < 1e-6
    assert abs(state['held']['details.tags'][1] - 0.6) < 1e-7 and evil_shown == 0.6  # typed 0.6: 0.6 (as float32)
    assert state['held']['details.tags'][0] == tuned['held']['details.tags'][0]  # untouched
    assert state['counts'] == counts  # what the panel showed is the brute-force count at that threshold
    assert state['decoded_ok']  # the module decodes with the applied threshold

    out.locator('button', has_text='Reset all').click()  # the sliders go back; the decoders keep what was applied
    expect(status).to_contain_text("not applied: 2 thresholds the decoders don't hold yet", timeout=10000)
    assert out.locator('img').count() == 0  # ... and no element was made of it
    page.assert_clean()

    save(page)
    static = open_static(browser, export_html(lab, name))
    view = static.locator('.dnn-cool.thresholds')
    view.first.wait_for()
    assert static.locator('.dnn-cool.thresholds .panel').count() == 3
    assert static.locator('.dnn-cool.thresholds table.summary tbody tr').count() == 3
    assert EVIL in static.locator('.dnn-cool.thresholds .panel').nth(2).locator('.name').inner_text()
    charts = static.locator('.dnn-cool.thresholds .panel img')  # the charts, as images of their SVG
    assert charts.count() == 3 and all(charts.evaluate_all('(cs) => cs.map((c) => c.complete && c.naturalWidth > 0)'))
    assert static.locator('img[src="x"]').count() == 0  # no element made of the evil name
    static.assert_clean()
