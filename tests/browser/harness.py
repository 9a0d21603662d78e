"""Helpers that drive JupyterLab in Chromium for the browser tests (fixtures are in conftest.py)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import Request, urlopen


REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / 'static'
CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
                 '--disable-component-update', '--disable-sync', '--disable-quic']



def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class Lab:
    "A Jupyter server started for the tests (JupyterLab, or Notebook 7 when `kind == 'notebook'`), serving `root`."
    def __init__(self, root: Path, port: int, proc: subprocess.Popen, kind: str = 'lab'):
        self.root, self.port, self.proc, self.kind = root, port, proc, kind
        self.url = f'http://127.0.0.1:{port}'

    def add(self, notebook: str | Path, name: str | None = None) -> str:
        "Copy a notebook (a path, or the JSON text of one) into the server's root; returns its name there."
        src = Path(notebook) if not str(notebook).lstrip().startswith('{') else None
        name = name or (src.name if src else 'untitled.ipynb')
        (self.root / name).write_text(src.read_text() if src else str(notebook))
        return name

    def notebook_url(self, name: str) -> str:
        "Where the front end opens notebook `name` (a fresh workspace in JupyterLab)."
        return f'{self.url}/notebooks/{name}' if self.kind == 'notebook' else f'{self.url}/lab/tree/{name}?reset'

    def shutdown_kernels(self) -> int:
        "Stop every kernel the server runs (as closing the session, or the server, would); returns how many."
        with urlopen(f'{self.url}/api/kernels', timeout=10) as r: kernels = json.load(r)
        for k in kernels:
            urlopen(Request(f'{self.url}/api/kernels/{k["id"]}', method='DELETE'), timeout=30).close()
        return len(kernels)


Server = Lab


@contextmanager
def start_server(kind: str, root: Path, settings: Path, data_dir: Path, lab_settings: dict | None = None):
    """A JupyterLab (`kind='lab'`) or Notebook 7 (`'notebook'`) server on 127.0.0.1 with no token, serving `root`;
    stopped by its PID on exit. `lab_settings`: `{plugin id: settings}` written to its settings folder first."""
    # no news or update checks: they would reach for the network and pop notifications over the page
    plugins = {'@jupyterlab/apputils-extension:notification': {'fetchNews': 'false', 'checkForUpdates': False},
               **(lab_settings or {})}
    for plugin, values in plugins.items():
        package, _, name = plugin.rpartition(':')
        (settings / package).mkdir(parents=True, exist_ok=True)
        (settings / package / f'{name}.jupyterlab-settings').write_text(json.dumps(values))
    port = _free_port()
    env = {**os.environ, 'JUPYTERLAB_SETTINGS_DIR': str(settings), 'JUPYTER_CONFIG_DIR': str(settings / 'config'),
           'JUPYTER_DATA_DIR': str(data_dir), 'OMP_NUM_THREADS': '1', 'PYTHONHASHSEED': '0'}
    app = 'LabApp' if kind == 'lab' else 'JupyterNotebookApp'
    cmd = [sys.executable, '-m', 'jupyter', kind, '--no-browser', '--ip=127.0.0.1', f'--port={port}', '--port-retries=0',
           '--allow-root', "--ServerApp.token=''", "--ServerApp.password=''", '--ServerApp.disable_check_xsrf=True',
           f'--ServerApp.root_dir={root}', f'--{app}.expose_app_in_browser=True']
    if kind == 'lab': cmd.append('--LabApp.news_url=None')
    log = open(root.parent / f'{kind}-{port}.log', 'w')
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 90
        while True:
            try:
                with urlopen(f'http://127.0.0.1:{port}/api/status', timeout=2): break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f'{kind} did not start; see {log.name}')
                time.sleep(0.5)
        yield Lab(root, port, proc, kind)
    finally:
        proc.terminate()
        try: proc.wait(timeout=20)
        except subprocess.TimeoutExpired: proc.kill()
        log.close()


class Page:
    """A Playwright page that blocks every request beyond 127.0.0.1 and records console errors, blocked requests and
    dialogs (an `alert()` from an injected `<img onerror=alert(1)>` would show here)."""
    def __init__(self, page):
        self.page, self.console_errors, self.blocked, self.dialogs, self.notebook = page, [], [], [], None
        page.on('console', lambda m: self.console_errors.append(m.text) if m.type == 'error' else None)
        page.on('dialog', lambda d: (self.dialogs.append(d.message), d.dismiss()))
        page.on('pageerror', lambda e: self.console_errors.append(f'page error: {e}'))
        page.route('**/*', self._route)

    def _route(self, route):
        url = route.request.url
        host = urlparse(url).hostname
        if url.startswith(('data:', 'blob:', 'about:')) or host in ('127.0.0.1', 'localhost') or url.startswith('file:'):
            route.continue_()
        else:
            self.blocked.append(url)
            route.abort()

    def __getattr__(self, name): return getattr(self.page, name)  # the rest of Playwright's Page

    def assert_clean(self, ignore: tuple[str, ...] = ()):
        "No console error (but those containing one of `ignore`), no dialog and no request that left the machine."
        errors = [e for e in self.console_errors if not any(s in e for s in ignore)]
        assert not self.dialogs, f'dialogs opened (a script ran?): {self.dialogs}'
        assert not self.blocked, f'requests beyond 127.0.0.1: {self.blocked}'
        assert not errors, f'console errors: {errors}'


# ---- driving a notebook in JupyterLab -------------------------------------------------------------------------------

# JupyterLab's own objects (exposed by --LabApp.expose_app_in_browser): the notebook panel is found by its path, not
# as "the current widget", so a dialog or another tab taking the focus can't make a test read the wrong notebook.
_PANEL = """(name) => { const app = window.jupyterapp; if (!app) return null;
  for (const w of app.shell.widgets('main')) if (w.context && w.context.path === name && w.content) return w;
  return null; }"""

_KERNEL_IDLE = f"""(name) => {{ const p = ({_PANEL})(name);
  return !!(p && p.sessionContext.session && p.sessionContext.session.kernel &&
            p.sessionContext.session.kernel.status === 'idle'); }}"""

_CELLS_DONE = f"""(name) => {{ const p = ({_PANEL})(name);
  if (!p || !p.sessionContext.session || !p.sessionContext.session.kernel) return false;
  if (p.sessionContext.session.kernel.status !== 'idle') return false;
  const cells = p.content.widgets.filter(c => c.model.type === 'code');
  return cells.every(c => c.model.executionCount !== null && !c.promptNode.textContent.includes('*')); }}"""

_ERRORS = f"""(name) => {{ const p = ({_PANEL})(name); const out = [];
  p.content.widgets.filter(c => c.model.type === 'code').forEach((c, i) => {{
    for (const o of c.model.outputs.toJSON()) if (o.output_type === 'error') out.push(`cell ${{i}}: ${{o.ename}}: ${{o.evalue}}`);
  }});
  return out; }}"""


def open_notebook(page: Page, lab: Lab, name: str, timeout: float = 120):
    "Open `name` (in a fresh workspace, in JupyterLab) and wait until its kernel is idle."
    page.goto(lab.notebook_url(name))  # ?reset: no tabs left over from an earlier test
    page.wait_for_function(_KERNEL_IDLE, arg=name, timeout=timeout * 1000)
    page.notebook = name


def run_all(page: Page, timeout: float = 300) -> None:
    "Run every cell of the open notebook and wait for the kernel to finish; fail on any cell error."
    name = page.notebook
    page.evaluate(f"(name) => {{ const p = ({_PANEL})(name); window.jupyterapp.shell.activateById(p.id);"
                  f"  return window.jupyterapp.commands.execute('notebook:run-all-cells'); }}", name)
    page.wait_for_timeout(500)
    page.wait_for_function(_CELLS_DONE, arg=name, timeout=timeout * 1000, polling=250)
    errors = page.evaluate(_ERRORS, name)
    assert not errors, f'cells raised: {errors}'


def run_code(page: Page, code: str, timeout: float = 60) -> str:
    """Run `code` in the open notebook's kernel (as no cell: the notebook is unchanged) and return what it printed,
    or the error it raised as `ename: evalue`. Comm messages a widget sent before are handled first (the kernel takes
    its messages in order), so this reads the state a click left."""
    return page.evaluate(f"""async ([name, code]) => {{ const p = ({_PANEL})(name);
      const future = p.sessionContext.session.kernel.requestExecute({{code, store_history: false}});
      let out = '';
      future.onIOPub = (msg) => {{
        if (msg.header.msg_type === 'stream') out += msg.content.text;
        if (msg.header.msg_type === 'error') out += `${{msg.content.ename}}: ${{msg.content.evalue}}`;
      }};
      await Promise.race([future.done, new Promise((_, no) => setTimeout(() => no(new Error('timed out')), {int(timeout * 1000)}))]);
      return out; }}""", [page.notebook, code])


def cell_output(page: Page, index: int):
    "The output area of the code cell `index` (0-based among code cells) as a Playwright locator."
    return page.locator('.jp-Notebook .jp-CodeCell').nth(index).locator('.jp-Cell-outputArea')  # not an Output widget's


def widget_output(page: Page, index: int):
    """The widget of code cell `index` (0-based among code cells): the output its live widget renders in. A view
    displays two outputs, its static copy and then its widget; the static copy, hidden while the widget lives, holds
    elements of the same classes, so a test that drives the widget looks inside this output only."""
    return cell_output(page, index).locator('.jp-OutputArea-output:has(> [class*="dc-live-"])').first  # the widget's root


def screenshot(locator, name: str) -> Path:
    """Screenshot `locator` as `<name>.png`: into `static/` (which README and docs show) when `UPDATE_SCREENSHOTS=1`,
    else into a temporary folder, so that running the tests leaves the checkout as it was."""
    folder = SCREENSHOTS if os.environ.get('UPDATE_SCREENSHOTS') == '1' else Path(tempfile.gettempdir()) / 'dnn_cool_screenshots'
    folder.mkdir(exist_ok=True)
    path = folder / f'{name}.png'
    locator.screenshot(path=str(path))
    return path


def screenshot_to_notes(locator, name: str) -> Path | None:
    "Screenshot `locator` as `<name>.png` into the folder `DNN_COOL_SCREENS` names, if it is set (for a person to look at)."
    folder = os.environ.get('DNN_COOL_SCREENS')
    box = locator.bounding_box()
    if not folder or not box or box['width'] < 1 or box['height'] < 1: return None
    Path(folder).mkdir(parents=True, exist_ok=True)
    path = Path(folder) / f'{name}.png'
    locator.screenshot(path=str(path))
    return path


def notebook(*cells: str) -> str:
    "The JSON text of a notebook with these code cells (for tests that write their own)."
    nb = {'cells': [{'cell_type': 'code', 'execution_count': None, 'id': f'c{i}', 'metadata': {}, 'outputs': [],
                     'source': src} for i, src in enumerate(cells)],
          'metadata': {'kernelspec': {'display_name': 'Python 3', 'language': 'python', 'name': 'python3'}},
          'nbformat': 4, 'nbformat_minor': 5}
    return json.dumps(nb)


def save(page: Page) -> None:
    "Save the open notebook from JupyterLab (with the outputs the page shows, as a user's Ctrl+S would)."
    name = page.notebook
    page.evaluate(f"(name) => ({_PANEL})(name).context.save()", name)
    page.wait_for_function(f"(name) => !({_PANEL})(name).context.model.dirty", arg=name, timeout=30000)


def export_html(lab: Lab, name: str, execute: bool = False) -> Path:
    """`name` exported to HTML by nbconvert, as saved (or executed first, when `execute`); returns the file.

    MathJax and require.js are left out (they come from a CDN). An executed notebook keeps no widget state
    (`store_widget_state=False`): with widget state, nbconvert renders widgets through a script from a CDN instead of
    the static view each of our outputs carries; the docs say so too."""
    src = lab.root / name
    out = lab.root / (src.stem + ('-executed' if execute else '') + '.html')
    cmd = [sys.executable, '-m', 'jupyter', 'nbconvert', '--to', 'html', str(src), '--output', out.name,
           '--HTMLExporter.mathjax_url=', '--HTMLExporter.require_js_url=']
    if execute: cmd += ['--execute', '--ExecutePreprocessor.store_widget_state=False', '--ExecutePreprocessor.timeout=300']
    subprocess.run(cmd, check=True, cwd=lab.root, capture_output=True, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    return out


def open_static(browser, html: Path) -> Page:
    "A fresh page showing an exported HTML file, with the network blocked."
    static = Page(browser.new_context().new_page())
    static.goto(html.as_uri())
    return static


# ---- what a view shows, read from the page --------------------------------------------------------------------------

# A view's output as a reader sees it: its visible text (innerText leaves out what CSS hides; streams left out) and longest line, the
# graphics drawn (a root <svg>, or an <img> that loaded, at least 16 px a side) and their alt texts, buttons whose
# label is cut, and elements scrolled sideways (a horizontal scrollbar).
_READ_VIEW = """(el) => {
  const shown = (e) => e.checkVisibility({checkOpacity: true, checkVisibilityCSS: true});
  // streams (a warning on stderr, a trainer's summary lines) are the cell's, not the view's
  const outputs = [...el.querySelectorAll('.jp-OutputArea-output')].filter((o) => !o.parentElement.closest('.jp-OutputArea-output')
                    && !(o.dataset.mimeType || '').startsWith('application/vnd.jupyter.std') && shown(o));
  const text = outputs.length ? outputs.map((o) => o.innerText).join('\\n') : el.innerText;
  const lines = text.split('\\n').map((s) => s.trim()).filter(Boolean);
  const graphics = [...el.querySelectorAll('svg, img')].filter((g) => {
    const tag = g.tagName.toLowerCase();
    if (tag === 'svg' && g.parentElement.closest('svg')) return false;  // a chart inside a figure
    const r = g.getBoundingClientRect();
    if (!shown(g) || r.width < 16 || r.height < 16) return false;
    return tag !== 'img' || (g.complete && g.naturalWidth > 0);
  });
  const cut = [...el.querySelectorAll('button')].filter((b) => shown(b) && b.scrollWidth > b.clientWidth + 1)
                                                .map((b) => b.innerText || b.title);
  const scrolled = [...el.querySelectorAll('*')].filter((e) => shown(e) && e.scrollWidth > e.clientWidth + 1 &&
                     ['auto', 'scroll'].includes(getComputedStyle(e).overflowX)).map((e) => e.className.baseVal ?? e.className);
  const statics = [...el.querySelectorAll('.dnn-cool-static')].filter(shown).length;  // static copies in view
  const alts = graphics.filter((g) => g.tagName.toLowerCase() === 'img').map((g) => g.alt).join('\\n');
  return {text, alts, statics, longest: lines.reduce((a, l) => (l.length > a.length ? l : a), ''), graphics: graphics.length, cut, scrolled,
          width: el.getBoundingClientRect().width};
}"""

ERROR_TEXTS = ('Error displaying widget', 'model not found', 'Loading widget', 'renderer could be found', 'Traceback')


def read_view(locator) -> dict:
    "What the output `locator` shows a reader (see `_READ_VIEW`)."
    return locator.evaluate(_READ_VIEW)


def code_sources(page: Page) -> list[str]:
    "The source of every code cell of the open notebook, in order (what `cell_output` indexes)."
    return page.evaluate(f"(name) => ({_PANEL})(name).content.widgets.filter((c) => c.model.type === 'code')"
                         ".map((c) => c.model.sharedModel.getSource())", page.notebook)


def wait_rendered(page: Page, timeout: float = 60) -> None:
    "Wait until the open notebook's outputs have settled: no widget output still says 'Loading widget...'."
    page.wait_for_function("() => ![...document.querySelectorAll('.jp-OutputArea-output')]"
                           ".some((o) => o.textContent.startsWith('Loading widget'))", timeout=timeout * 1000)
    page.wait_for_timeout(1000)  # images decode, layouts settle


def reopen(browser, server: Lab, name: str, width: int = 1280, height: int = 1400) -> Page:
    """`name` opened as a user opens a saved notebook: a new browser context (nothing left in memory), a fresh
    workspace with the file browser open, the notebook's kernel started anew; returns the page once outputs settled."""
    page = Page(browser.new_context(viewport={'width': width, 'height': height}, device_scale_factor=1).new_page())
    open_notebook(page, server, name)
    wait_rendered(page)
    return page


def set_widget_state_saving(page: Page, on: bool) -> None:
    "Turn JupyterLab's Settings > Save Widget State Automatically on or off (the menu item's command)."
    command = '@jupyter-widgets/jupyterlab-manager:saveWidgetState'
    page.evaluate(f"""async (on) => {{ const c = window.jupyterapp.commands;
      if (c.isToggled('{command}') !== on) await c.execute('{command}'); }}""", on)
    page.wait_for_timeout(500)


# ---- GitHub's renderer, as far as it can be checked here -------------------------------------------------------------

# GitHub shows a notebook's HTML outputs through an allowlist sanitizer (html-pipeline's, on Ruby's Sanitize): no
# <style>, <script> or <svg> (dropped with their contents), no `style` or `class` attributes, <img> only from http(s)
# or relative addresses (a data: URI is dropped). This is that allowlist, applied with bleach: an approximation, since
# GitHub's own renderer can't be reached from here.
GITHUB_TAGS = ('h1 h2 h3 h4 h5 h6 br b i strong em a pre code img tt div ins del sup sub p ol ul table thead tbody tfoot '
               'blockquote dl dt dd kbd q samp var hr li tr td th s strike summary details caption figure figcaption '
               'abbr bdo cite dfn mark small span time wbr').split()
GITHUB_ATTRIBUTES = {'a': ['href'], 'img': ['src', 'alt', 'width', 'height', 'title'],
                     '*': ['align', 'alt', 'colspan', 'rowspan', 'height', 'width', 'title', 'open', 'lang', 'dir',
                           'valign', 'nowrap', 'summary', 'scope', 'abbr', 'span', 'start', 'headers']}
_DROPPED_WITH_CONTENTS = ('script', 'style', 'svg', 'math', 'iframe', 'noscript', 'template', 'textarea', 'select')


def sanitize_like_github(html: str) -> str:
    "`html` as GitHub's notebook renderer would show it (see `GITHUB_TAGS`)."
    import bleach
    from html.parser import HTMLParser

    class Drop(HTMLParser):  # elements GitHub drops with everything inside them
        def __init__(self):
            super().__init__(convert_charrefs=False)
            self.out, self.depth = [], 0
        def handle_starttag(self, tag, attrs):
            if self.depth: self.depth += not self._void(tag)
            elif tag in _DROPPED_WITH_CONTENTS: self.depth = 1
            else: self.out.append(self.get_starttag_text())
        def handle_startendtag(self, tag, attrs):
            if not self.depth: self.out.append(self.get_starttag_text())
        def handle_endtag(self, tag):
            if self.depth:
                if not self._void(tag): self.depth -= 1
            else: self.out.append(f'</{tag}>')
        def handle_data(self, data):
            if not self.depth: self.out.append(data)
        def handle_entityref(self, name):
            if not self.depth: self.out.append(f'&{name};')
        def handle_charref(self, name):
            if not self.depth: self.out.append(f'&#{name};')
        @staticmethod
        def _void(tag): return tag in ('br', 'img', 'input', 'hr', 'wbr', 'meta', 'link', 'source', 'col', 'area')

    d = Drop()
    d.feed(html)
    d.close()
    return bleach.clean(''.join(d.out), tags=GITHUB_TAGS, attributes=GITHUB_ATTRIBUTES, protocols=['http', 'https', 'mailto'],
                        strip=True)


def run_cells(page: Page, indices, timeout: float = 120) -> None:
    "Run the code cells `indices` (0-based among code cells) of the open notebook, in order, as Shift+Enter on each would."
    page.evaluate(f"""async ([name, indices]) => {{ const p = ({_PANEL})(name); const app = window.jupyterapp;
      app.shell.activateById(p.id);
      const code = p.content.widgets.map((c, i) => [c, i]).filter(([c]) => c.model.type === 'code');
      for (const k of indices) {{ p.content.activeCellIndex = code[k][1]; await app.commands.execute('notebook:run-cell'); }}
    }}""", [page.notebook, list(indices)])
    page.wait_for_function(_KERNEL_IDLE, arg=page.notebook, timeout=timeout * 1000)
    errors = page.evaluate(_ERRORS, page.notebook)
    assert not errors, f'cells raised: {errors}'
