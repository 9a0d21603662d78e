"The browser harness itself: JupyterLab runs a notebook whose widget the page drives, with nothing from the network."
from harness import cell_output, notebook, open_notebook, run_all


def test_a_widget_round_trips_through_the_kernel(lab, page):
    name = lab.add(notebook(
        "import ipywidgets as w\nslider = w.IntSlider(value=3, max=10)\nlabel = w.HTML()\n"
        "slider.observe(lambda ch: setattr(label, 'value', f'<b>got {ch.new}</b>'), names=['value'])\n"
        "w.VBox([slider, label])"), 'smoke.ipynb')
    open_notebook(page, lab, name)
    run_all(page)
    out = cell_output(page, 0)
    handle = out.locator('.widget-slider .ui-slider-handle, .widget-slider .noUi-handle').first
    handle.focus()
    page.keyboard.press('ArrowRight')
    page.keyboard.press('ArrowRight')
    out.locator('text=got 5').wait_for(timeout=10000)
    page.assert_clean()
