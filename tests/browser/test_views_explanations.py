"""The explanation views in JupyterLab: the explorer picks a sample by filter, steps through the selection, shows
hidden branches on request; lists of trees fold per sample and per flow; class names that look like tags are text.
Then the notebook as saved, exported by nbconvert and opened with the network blocked, shows the static trees."""
import json
import re

from harness import cell_output, export_html, notebook, open_notebook, open_static, run_all, save, screenshot, widget_output
from view_cells import EVIL, TRAIN

EXPLORER = '''
from dnn_cool.views.explanations import ExplanationExplorer
explorer = ExplanationExplorer(net, test_ds)
explorer
'''
# what the page should show once the widget is moved: computed by the kernel, printed for the test to read
EXPECTED = '''
task = next(p for p in explorer.tasks_for('misclassified') if len(explorer.selection('misclassified', p)) >= 2)
print(json.dumps({'task': task, 'picked': explorer.selection('misclassified', task)[:2].tolist(),
                  'tree': [n.name for n in explorer.tree(int(explorer.selection('misclassified', task)[0])).walk()
                           if not n.hidden][1:]}))
'''
LIST = 'explain_batch(net, test_ds[list(range(6))], show_hidden=True)'
EVIL_LIST = EVIL + '\nexplain_batch(evil_net, evil_ds[[0, 1, 2]], show_hidden=True)'


def printed(page, i) -> dict:
    return json.loads(cell_output(page, i).locator('.jp-OutputArea-output').first.inner_text())


def test_explorer_and_trees_in_lab_and_in_an_export(lab, page, browser):
    name = lab.add(notebook(TRAIN, EXPLORER, EXPECTED, LIST, EVIL_LIST), 'views_explanations.ipynb')
    open_notebook(page, lab, name)
    run_all(page)
    expected = printed(page, 2)
    out = widget_output(page, 1)
    panel = out.locator('.widget-html-content .dnn-explain')
    panel.locator('.sname', has_text='sample 0').wait_for()  # all samples, the first one
    assert out.locator('.dnn-explain').count() == 1  # the widget, not the static fallback besides it

    # pick by filter: misclassified on a task; the focused line is that task, marked wrong, beside its label
    out.locator('.widget-dropdown select').first.select_option(label='misclassified on')
    out.locator('.widget-dropdown select').nth(1).select_option(value=expected['task'])
    first, second = expected['picked']
    panel.locator('.sname', has_text=f'sample {first}').wait_for(timeout=10000)
    focus = panel.locator('li.task.focus')
    assert focus.get_attribute('data-path') == expected['task'] and 'wrong' in focus.get_attribute('class')
    assert '✗' in focus.inner_text() and 'label' in focus.inner_text()
    assert panel.locator('figure img').evaluate('img => img.complete && img.naturalWidth') == 64  # the input image
    shown = panel.locator('li:visible').evaluate_all('els => els.map(e => e.dataset.path.split(".").pop())')
    assert shown == expected['tree'], shown
    out.locator('button', has_text='next ›').click()
    panel.locator('.sname', has_text=f'sample {second}').wait_for(timeout=10000)
    assert out.locator('input[type=number]').first.input_value() == '2'  # the place in the selection

    # hidden branches: none drawn, then greyed on request, a cut flow folded until clicked open
    hidden = panel.locator('li.hidden')
    assert hidden.count() == 0
    out.locator('.widget-checkbox input[type=checkbox]').check()
    hidden.first.wait_for(timeout=10000)
    assert 'hidden' in panel.locator('li.hidden .tag').first.inner_text()
    assert panel.locator('li.hidden').first.evaluate('e => parseFloat(getComputedStyle(e).opacity)') < 0.6
    folded = panel.locator('li.flow.hidden > details:not([open])')
    if folded.count():  # the sample's person was not seen: its flow was cut whole
        inner = folded.first.locator('li').first
        assert not inner.is_visible()
        folded.first.locator('summary').first.click()
        inner.wait_for(state='visible', timeout=5000)
    screenshot(out.locator('.widget-vbox').first, 'view_explanations')  # the widget

    # a list of trees: one box per sample, the first five open; fold a flow, unfold the sixth sample
    trees = cell_output(page, 3).locator('.dnn-explain')
    assert trees.locator('details.sample').count() == 6
    styles = trees.locator('li').evaluate_all('(ls) => [...new Set(ls.map((l) => getComputedStyle(l).listStyleType))]')
    assert styles == ['none'], styles  # no bullets, although JupyterLab styles nested lists (`ul ul`) with some
    sixth = trees.locator('details.sample').nth(5)
    assert sixth.get_attribute('open') is None and not sixth.locator('li').first.is_visible()
    sixth.locator('summary').first.click()
    sixth.locator('li').first.wait_for(state='visible', timeout=5000)
    box = trees.locator('details.sample').first
    flow = box.locator('li.flow > details[open]').first
    if flow.count():
        flow.locator('summary').first.click()
        assert flow.get_attribute('open') is None and not flow.locator('li').first.is_visible()

    # class names that look like tags are text, and no script ran (the harness records dialogs)
    evil = cell_output(page, 4).locator('.dnn-explain')
    assert evil.get_by_text('<img src=x onerror=alert(', exact=False).count() >= 1
    assert evil.locator('img').count() == 0
    page.assert_clean()

    save(page)
    static = open_static(browser, export_html(lab, name))
    explorer_view = static.locator('.dnn-explain').first
    explorer_view.locator('.sname', has_text='sample 0').wait_for()
    assert explorer_view.locator('figure img').evaluate('img => img.complete && img.naturalWidth') == 64
    lists = static.locator('.dnn-explain')
    assert lists.count() == 3  # the explorer's static view, the list, the evil list
    sixth = lists.nth(1).locator('details.sample').nth(5)
    assert not sixth.locator('li').first.is_visible()
    sixth.locator('summary').first.click()
    sixth.locator('li').first.wait_for(state='visible', timeout=5000)
    assert re.search(r'<img src=x onerror=alert\(\d\)>', lists.nth(2).text_content())  # folded text too
    static.assert_clean()
