"""Helpers that drive JupyterLab in Chromium for the browser tests (fixtures are in conftest.py)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlparse


REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / 'static'
CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
                 '--disable-component-update', '--disable-sync', '--disable-quic']



def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class Lab:
    "A JupyterLab server started for the tests, serving `root` (a temporary folder)."
    def __init__(self, root: Path, port: int, proc: subprocess.Popen):
        self.root, self.port, self.proc = root, port, proc
        self.url = f'http://127.0.0.1:{port}'

    def add(self, notebook: str | Path, name: str | None = None) -> str:
        "Copy a notebook (a path, or the JSON text of one) into the server's root; returns its name there."
        src = Path(notebook) if not str(notebook).lstrip().startswith('{') else None
        name = name or (src.name if src else 'untitled.ipynb')
        (self.root / name).write_text(src.read_text() if src else str(notebook))
        return name


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
    "Open `name` in a fresh JupyterLab workspace and wait until its kernel is idle."
    page.goto(f'{lab.url}/lab/tree/{name}?reset')  # ?reset: no tabs left over from an earlier test
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
    return page.locator('.jp-Notebook .jp-CodeCell').nth(index).locator('.jp-OutputArea')


def screenshot(locator, name: str) -> Path:
    """Screenshot `locator` as `<name>.png`: into `static/` (which README and docs show) when `UPDATE_SCREENSHOTS=1`,
    else into a temporary folder, so that running the tests leaves the checkout as it was."""
    folder = SCREENSHOTS if os.environ.get('UPDATE_SCREENSHOTS') == '1' else Path(tempfile.gettempdir()) / 'dnn_cool_screenshots'
    folder.mkdir(exist_ok=True)
    path = folder / f'{name}.png'
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
