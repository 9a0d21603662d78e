"""The display contract every view relies on: in JupyterLab a `WidgetView` shows its widget; where no widget state
exists (an nbconvert export, opened with the network blocked) the same output shows its static HTML."""
from harness import widget_output, export_html, notebook, open_notebook, open_static, run_all, save

VIEW = '''
import ipywidgets
from dnn_cool.views.core import WidgetView, wrap, esc
class Counter(WidgetView):
    def __init__(self): self.n = 0
    def to_html(self): return wrap(f'<span class="static-count">static {self.n} {esc("<b>x</b>")}</span>{esc("<img src=x onerror=alert(1)>")}')
    def __repr__(self): return f'Counter({self.n})'
    def build(self):
        self.slider = ipywidgets.IntSlider(description='n')
        self.label = ipywidgets.HTML('live 0')
        self.observe(self.slider, self._moved, names=['value'])
        return ipywidgets.VBox([self.slider, self.label, self.errors])
    def _moved(self, change):
        if change.new > 2: raise ValueError(f'too far: {change.new}')
        self.n = change.new
        self.label.value = f'live {self.n}'
c = Counter()
c
'''


def test_widget_in_lab_and_static_in_an_export(lab, page, browser):
    name = lab.add(notebook(VIEW), 'views_core.ipynb')
    open_notebook(page, lab, name)
    run_all(page)
    out = widget_output(page, 0)
    out.locator('.widget-slider').wait_for()
    assert out.locator('.static-count').count() == 0  # the widget, not the fallback
    out.locator('.widget-slider .noUi-handle').first.focus()
    page.keyboard.press('ArrowRight')
    out.locator('text=live 1').wait_for(timeout=10000)
    for _ in range(2): page.keyboard.press('ArrowRight')
    out.locator('text=ValueError: too far: 3').wait_for(timeout=10000)  # a failing callback shows in the view
    page.assert_clean()

    save(page)
    for execute in (False, True):  # the notebook as saved from JupyterLab, and executed by nbconvert itself
        static = open_static(browser, export_html(lab, name, execute=execute))
        static.locator('.static-count').wait_for()
        assert static.locator('.static-count').inner_text() == 'static 0 <b>x</b>'  # as displayed; escaped, so shown as text
        static.assert_clean()
