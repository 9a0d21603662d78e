"""The best and worst inputs in JupyterLab: a task picker over thumbnails with loss, label and prediction; class
names that look like tags are text. Then the notebook as saved, exported by nbconvert and opened with the network
blocked, shows every task's thumbnail grid statically."""
import json

from harness import cell_output, export_html, notebook, open_notebook, open_static, run_all, save, screenshot, widget_output
from view_cells import EVIL, TRAIN

SHIRT = 'person_regression.body_regression.shirt_type'
RANK = '''
result = best_worst_inputs(net, test_ds.loader(batch_size=48), n=5)
result
'''
EXPECTED = f'''
bw = result['{SHIRT}']
print(json.dumps({{'worst': bw.worst_indices.tolist(), 'best': bw.best_indices.tolist(), 'tasks': list(result)}}))
'''
EVIL_RANK = EVIL + '\nbest_worst_inputs(evil_net, evil_ds.loader(batch_size=48), n=3).view(tasks=["person.shirt_type"])'


def test_best_worst_in_lab_and_in_an_export(lab, page, browser):
    name = lab.add(notebook(TRAIN, RANK, EXPECTED, EVIL_RANK), 'views_interpret.ipynb')
    open_notebook(page, lab, name)
    run_all(page)
    expected = json.loads(cell_output(page, 2).locator('.jp-OutputArea-output').first.inner_text())
    out = widget_output(page, 1)
    panel = out.locator('.widget-html-content .dnn-bw')
    panel.locator('details.task[data-path="camera_blocked"]').wait_for()  # the widget shows the first task
    assert out.locator('.dnn-bw').count() == 1  # the widget, not the static fallback besides it

    # pick a task: its worst and best samples, in rank order, each image loaded, each caption with its label
    out.locator('.widget-dropdown select').first.select_option(value=SHIRT)
    task = panel.locator(f'details.task[data-path="{SHIRT}"]')
    task.wait_for(timeout=10000)
    shown = task.locator('figure').evaluate_all('fs => fs.map(f => Number(f.dataset.index))')
    assert shown == expected['worst'] + expected['best']
    sizes = task.locator('figure img').evaluate_all('imgs => imgs.map(i => i.complete && i.naturalWidth)')
    assert sizes == [64] * 10, sizes
    caption = task.locator('figure figcaption').first.inner_text()
    assert caption.startswith(f"#{expected['worst'][0]} loss") and 'label' in caption and 'pred' in caption
    out.locator('.widget-toggle-button', has_text='best').click()
    panel.locator('.row[data-kind="worst"]').wait_for(state='detached', timeout=10000)
    assert panel.locator('.row[data-kind="best"] figure').count() == 5
    out.locator('.widget-toggle-button', has_text='both').click()
    panel.locator('.row[data-kind="worst"]').wait_for(timeout=10000)
    screenshot(out.locator('.widget-vbox').first, 'view_best_worst')  # the widget

    # class names that look like tags are text, and no script ran (the harness records dialogs)
    evil = widget_output(page, 3).locator('.widget-html-content .dnn-bw')
    evil.locator('figure').first.wait_for()
    assert evil.get_by_text('<img src=x onerror=alert(', exact=False).count() >= 1
    assert evil.locator('img').count() == evil.locator('figure').count()  # the thumbnails, nothing else
    page.assert_clean()

    save(page)
    static = open_static(browser, export_html(lab, name))
    grid = static.locator('.dnn-bw').first
    assert grid.locator('details.task').count() == len(expected['tasks'])  # statically, every task
    shirt = grid.locator(f'details.task[data-path="{SHIRT}"]')
    assert shirt.locator('figure').evaluate_all('fs => fs.map(f => Number(f.dataset.index))') == expected['worst'] + expected['best']
    assert set(shirt.locator('figure img').evaluate_all('imgs => imgs.map(i => i.complete && i.naturalWidth)')) == {64}
    shirt.locator('summary').first.click()  # fold it
    assert not shirt.locator('figure').first.is_visible()
    assert '<img src=x onerror=alert(' in static.locator('.dnn-bw').nth(1).text_content()
    static.assert_clean()
