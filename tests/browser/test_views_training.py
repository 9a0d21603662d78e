"""The live training plot in JupyterLab: `Trainer.fit()` draws one figure that updates in place (never a new output per
frame), shows every task, hides the tqdm bars while it shows; the `History` displays as the same figure; the saved
notebook's nbconvert export, opened with the network blocked, shows the last frame."""
import time

from harness import _CELLS_DONE, _ERRORS, _PANEL, cell_output, export_html, notebook, open_notebook, open_static, save, screenshot

SETUP = '''
import time
import numpy as np, pandas as pd, torch
from dnn_cool import (BinaryClassificationTask, BoundedRegressionTask, Callback, ClassificationTask, FlowDataset,
                      MultilabelClassificationTask, Project, RegressionTask, Trainer)

project = Project([BinaryClassificationTask('is_positive'), ClassificationTask('kind', labels=['a', 'b', '<img src=x onerror=alert(1)>']),
                   BoundedRegressionTask('size', 0, 10), RegressionTask('weight', loc=5, scale=2),
                   MultilabelClassificationTask('tags', labels=['red', 'blue'])])
@project.add_flow
def details(flow, x, out):
    out += flow.size(x.features)
    out += flow.weight(x.features)
    out += flow.tags(x.features)
    return out
@project.add_flow
def shop(flow, x, out):
    out += flow.is_positive(x.features)
    out += flow.kind(x.features)
    out += flow.details(x.features) | out.is_positive
    return out

def data(n, seed):
    g = np.random.default_rng(seed)
    x = g.normal(size=(n, 8)).astype(np.float32)
    pos = x[:, 0] > 0
    labels = pd.DataFrame({'is_positive': pos, 'kind': np.array(['a', 'b', '<img src=x onerror=alert(1)>'])[x[:, 1:4].argmax(1)],
                           'size': 10 / (1 + np.exp(-2 * x[:, 4].astype(float))), 'weight': 5 + 2 * x[:, 5],
                           'tags': [[float(a > 0), float(b > 0)] for a, b in x[:, 6:8]]})
    labels.loc[~pos, ['size', 'weight', 'tags']] = None
    return FlowDataset(shop, {'features': x}, labels)

class Slow(Callback):  # a few seconds of training, so the test sees the figure change while it runs
    def on_batch_end(self, *args): time.sleep(0.05)

torch.manual_seed(0)
train, valid = data(640, 0), data(256, 1)
model = shop.torch(in_features={'features': 8})
'''
FIT = '''
trainer = Trainer(model, shop.get_loss(), torch.optim.Adam(model.parameters(), lr=0.02), train.loader(16, shuffle=True),
                  valid.loader(128), epochs=4, callbacks=[Slow()])
history = trainer.fit()
'''
HISTORY = 'history'


# the figure's status line, from the caption the view carries for pages that drop its image ("<title> · <status>")
_STATUS = '''(el) => { const c = el.querySelector('.dc-unstyled'); if (!c) return '';
  return c.textContent.slice(c.querySelector('b').textContent.length + 3); }'''
# the words drawn in the figure: its image is an SVG, as a base64 data URI
_DRAWN = '''(el) => { const b64 = el.querySelector('img').src.split(',')[1];
  const svg = new TextDecoder().decode(Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)));
  return new DOMParser().parseFromString(svg, 'image/svg+xml').documentElement.textContent; }'''


def _run_all_watching(page, cell: int, timeout: float = 240):
    "Run every cell; while they run, sample the outputs of code cell `cell`: (figures, status text, progress bars)."
    name = page.notebook
    page.evaluate(f"(name) => {{ const p = ({_PANEL})(name); window.jupyterapp.shell.activateById(p.id);"  # not awaited:
                  f"  window.jupyterapp.commands.execute('notebook:run-all-cells'); return true; }}", name)  # we watch it run
    out, samples, deadline = cell_output(page, cell), [], time.time() + timeout
    page.wait_for_timeout(300)
    while time.time() < deadline:
        figures = out.locator('.dnn-cool.training')
        n = figures.count()
        status = figures.first.evaluate(_STATUS) if n else ''
        samples.append((n, status, out.locator('.widget-hprogress, progress').count()))
        if page.evaluate(_CELLS_DONE, name): break
        page.wait_for_timeout(100)
    assert page.evaluate(_CELLS_DONE, name), 'the notebook did not finish in time'
    errors = page.evaluate(_ERRORS, name)
    assert not errors, f'cells raised: {errors}'
    return samples


def test_live_plot_updates_one_figure_in_place(lab, page, browser):
    name = lab.add(notebook(SETUP, FIT, HISTORY), 'views_training.ipynb')
    open_notebook(page, lab, name)
    samples = _run_all_watching(page, 1)

    assert max(n for n, _, _ in samples) == 1, 'more than one figure in the cell'  # updated in place, not appended
    statuses = [s for n, s, _ in samples if n]
    assert len(set(s for s in statuses if s.startswith('epoch '))) >= 3, statuses  # it changed while training ran
    assert all(bars == 0 for _, _, bars in samples), 'tqdm bars showed beside the live plot'

    out = cell_output(page, 1)
    figure = out.locator('.dnn-cool.training')
    assert figure.count() == 1
    assert out.locator('.jp-OutputArea-output').filter(has=page.locator('.dnn-cool.training')).count() == 1
    text = figure.evaluate(_DRAWN)
    status = figure.evaluate(_STATUS)
    assert figure.locator('img').evaluate('(i) => i.complete && i.naturalWidth > 0 && i.getBoundingClientRect().width <= 900')
    assert status.startswith('done: 4 epochs in'), status
    for task in ('is_positive', 'kind', 'size', 'weight', 'tags'): assert task in text, task  # every task has its card
    assert 'shop' in text and 'details · if is_positive' in text  # grouped by flow, with the flow's precondition
    assert 'epoch 3: train_loss' not in out.inner_text()  # the figure is the record: no per-epoch lines repeat it below

    history = cell_output(page, 2).locator('.dnn-cool.training')
    assert history.count() == 1 and 'best epoch' in history.evaluate(_STATUS)
    page.assert_clean()
    screenshot(figure, 'view_training')

    save(page)
    static = open_static(browser, export_html(lab, name))
    frames = static.locator('.dnn-cool.training')
    assert frames.count() == 2  # the last live frame, and the History's figure
    assert frames.first.evaluate(_STATUS).startswith('done: 4 epochs in')
    assert 'details · if is_positive' in frames.first.evaluate(_DRAWN)
    static.assert_clean()
