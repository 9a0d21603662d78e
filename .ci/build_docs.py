"""Build dnn_cool's documentation site into `_docs/` without quarto: one self-contained page per notebook, a sidebar,
and an API reference; no page asks the network for anything (no CDN script, stylesheet or font).

The notebooks go through the same preparation as `nbdev_docs` (nbdev's processors: `show_doc` for every exported name,
doc links, hidden cells removed), so this build also checks that nbdev's own quarto path can prepare them. Notebooks
saved without outputs (the library's notebooks) are executed first, in the plain shell nbdev_test uses, so their
examples show results; notebooks saved with outputs (the walkthroughs, run at full size) are executed too, as a test
(at their small `IN_TEST` size), and shown as saved. Widgets show their static views: every dnn_cool widget output
carries one.

usage: python .ci/build_docs.py [--out _docs] [--workers 2] [--only NAME ...]
"""
from __future__ import annotations

import argparse
import base64
import html
import json
import multiprocessing
import os
import re
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NBS = REPO / 'nbs'


# ---- execution ------------------------------------------------------------------------------------------------------

def _plain(o):
    "JSON fallback for execnb's containers (fastcore `L` lists, `AttrDict`s)."
    return dict(o) if hasattr(o, 'keys') else list(o)


def _has_outputs(nb: dict) -> bool:
    return any(c.get('outputs') for c in nb['cells'] if c['cell_type'] == 'code')


def execute(path: str) -> tuple[str, dict | None, str | None, float]:
    "Run the notebook at `path` as `nbdev_test` does (slow-flagged and `eval: false` cells skipped), keeping outputs."
    os.chdir(REPO)
    os.environ.setdefault('OMP_NUM_THREADS', '1')
    os.environ['IN_TEST'] = '1'
    from execnb.shell import CaptureShell
    from fastcore.xtras import working_directory
    from nbdev.config import get_config
    from nbdev.frontmatter import FrontmatterProc
    from nbdev.process import NBProcessor
    fn = Path(path)
    flags = set(get_config().get('tst_flags', '').split())
    nb = NBProcessor(fn, procs=FrontmatterProc, process=True).nb

    def no_eval(cell):
        if cell.cell_type != 'code': return True
        direc = getattr(cell, 'directives_', {}) or {}
        if direc.get('eval:', [''])[0].lower() == 'false': return True
        return flags & direc.keys()
    start = time.time()
    shell = CaptureShell(fn)
    try:
        with working_directory(fn.parent): shell.run_all(nb, exc_stop=True, preproc=no_eval)
    except Exception:
        return path, None, shell.prettytb(fname=fn), time.time() - start
    # nbdev's reader stripped the `#|` directives and the title cell: put the outputs back into the notebook as saved
    outputs = {c.get('id'): c.get('outputs', []) for c in nb.cells if c.cell_type == 'code'}
    saved = json.loads(fn.read_text())
    for c in saved['cells']:
        if c['cell_type'] == 'code' and c.get('id') in outputs: c['outputs'] = json.loads(json.dumps(outputs[c['id']], default=_plain))
    return path, saved, None, time.time() - start


def process(nb: dict, name: str) -> dict:
    "nbdev's documentation processors (what `nbdev_proc_nbs` runs before quarto) over a notebook dict."
    from execnb.nbio import dict2nb
    from nbdev.processors import FilterDefaults
    nbo = dict2nb(nb)
    nbo.path_ = str(NBS / name)
    FilterDefaults()(nbo)
    return json.loads(json.dumps(nbo, default=_plain))


# ---- rendering ------------------------------------------------------------------------------------------------------

def _text(v) -> str: return ''.join(v) if isinstance(v, list) else (v or '')


_ANSI = re.compile(r'\x1b\[[0-9;]*[A-Za-z]')
_PANDOC_ATTRS = re.compile(r'\)\{[^}\n]*\}')  # quarto's `[x](url){target="_blank"}`: keep the link, drop the attributes
_DIRECTIVE = re.compile(r'^\s*#\|\s*([\w-]+)\s*:?\s*(.*?)\s*$')


class Renderer:
    "Turns processed notebooks into HTML pages that link to each other relatively."
    def __init__(self, site_url: str):
        from nbconvert.filters.markdown_mistune import markdown2html_mistune
        from pygments.formatters import HtmlFormatter
        self._md, self.site_url = markdown2html_mistune, site_url.rstrip('/') + '/'
        self.pygments_css = HtmlFormatter().get_style_defs('.highlight')

    def markdown(self, src: str) -> str:
        src = _PANDOC_ATTRS.sub(')', src)
        out = self._md(src)
        out = out.replace(f'href="{self.site_url}', 'href="')  # doc links stay inside this site
        out = re.sub(r'(<h[1-6] id=")([^"]+)(")', lambda m: m.group(1) + m.group(2).lower() + m.group(3), out)
        out = re.sub(r'(src|href)="(\.\./)?static/', r'\1="static/', out)  # README pictures live in static/
        # links to a notebook (the README's `nbs/30_walkthrough.ipynb`) go to its page
        out = re.sub(r'href="(?:\./)?(?:nbs/)?([\w.-]+)\.ipynb(#[^"]*)?"', lambda m: f'href="{page_name(m.group(1) + ".ipynb")}{m.group(2) or ""}"', out)
        return out.replace('<a class="anchor-link"', '<a class="anchor"')

    def code(self, src: str) -> str:
        from pygments import highlight
        from pygments.formatters import HtmlFormatter
        from pygments.lexers import PythonLexer
        return highlight(src, PythonLexer(), HtmlFormatter())

    def output(self, o: dict) -> str:
        kind = o.get('output_type')
        if kind == 'stream':
            text = _ANSI.sub('', _text(o.get('text')))
            cls = 'stderr' if o.get('name') == 'stderr' else 'stdout'
            return f'<pre class="out {cls}">{html.escape(text)}</pre>' if text.strip() else ''
        if kind == 'error':
            tb = _ANSI.sub('', '\n'.join(o.get('traceback') or [f"{o.get('ename')}: {o.get('evalue')}"]))
            return f'<pre class="out error">{html.escape(tb)}</pre>'
        data = o.get('data', {})
        if 'text/html' in data: return f'<div class="out html">{_text(data["text/html"])}</div>'
        if 'image/svg+xml' in data: return f'<div class="out svg">{_text(data["image/svg+xml"])}</div>'
        for mime in ('image/png', 'image/jpeg'):
            if mime in data:
                b64 = _text(data[mime]).replace('\n', '')
                return f'<div class="out img"><img src="data:{mime};base64,{b64}" alt=""></div>'
        if 'text/markdown' in data: return f'<div class="out md">{self.markdown(_text(data["text/markdown"]))}</div>'
        if 'text/plain' in data:
            return f'<pre class="out plain">{html.escape(_ANSI.sub("", _text(data["text/plain"])))}</pre>'
        return ''

    def cell(self, c: dict) -> str:
        src = _text(c.get('source'))
        if c['cell_type'] == 'markdown': return f'<section class="md">{self.markdown(src)}</section>'
        if c['cell_type'] == 'raw': return ''
        lines, directives = src.split('\n'), {}
        while lines and _DIRECTIVE.match(lines[0]):
            k, v = _DIRECTIVE.match(lines[0]).groups()
            directives[k] = v.lower()
            lines.pop(0)
        if directives.get('include') == 'false': return ''
        body = '\n'.join(lines).strip('\n')
        show_code = body and directives.get('echo') != 'false'
        outputs = '' if directives.get('output') == 'false' else ''.join(self.output(o) for o in c.get('outputs', []))
        if not show_code and not outputs: return ''
        return ('<section class="cell">' + (f'<div class="in">{self.code(body)}</div>' if show_code else '')
                + (f'<div class="outs">{outputs}</div>' if outputs else '') + '</section>')


def frontmatter(nb: dict) -> dict:
    "The title/description nbdev's FrontmatterProc put in the first raw cell (YAML between `---` lines)."
    import yaml
    for c in nb['cells']:
        src = _text(c['source'])
        if c['cell_type'] == 'raw' and src.startswith('---'):
            body = src.strip().strip('-').strip()
            data = yaml.safe_load(body) or {}
            return {k: str(v) for k, v in data.items() if isinstance(k, str)}
    return {}


def page_name(nb_name: str) -> str:
    "nbdev's page name: `07_train.ipynb` -> `train.html`, `20a_views.flow.ipynb` -> `views.flow.html`, `index` stays."
    return re.sub(r'^\d+[a-z]?_', '', Path(nb_name).stem) + '.html'


def section(nb_name: str) -> str:
    stem = Path(nb_name).stem
    if stem == 'index': return 'Start'
    n = int(re.match(r'^(\d+)', stem).group(1)) if re.match(r'^\d', stem) else 99
    if 30 <= n < 40: return 'Walkthroughs'
    if 25 <= n < 30: return 'Integrations'  # other frameworks (PyTorch Lightning): above the views they may use
    if 20 <= n < 25: return 'Notebook views'
    if n >= 90: return 'Package'
    return 'Library'


SECTIONS = ('Start', 'Walkthroughs', 'Library', 'Notebook views', 'Integrations', 'Package', 'Reference')

CSS = """
*{box-sizing:border-box}body{margin:0;font:15px/1.55 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
color:#1f2328;background:#fff}a{color:#0b63c4;text-decoration:none}a:hover{text-decoration:underline}
nav.side{position:fixed;top:0;bottom:0;left:0;width:260px;overflow-y:auto;background:#f6f8fa;border-right:1px solid #d0d7de;
padding:18px 14px}nav.side .brand{font-weight:700;font-size:19px;margin-bottom:12px;display:block;color:#1f2328}
nav.side h4{margin:16px 0 4px;font-size:12px;text-transform:uppercase;letter-spacing:.06em;color:#57606a}
nav.side ul{list-style:none;margin:0;padding:0}nav.side li a{display:block;padding:3px 8px;border-radius:6px;color:#1f2328;font-size:14px}
nav.side li a.current{background:#dbe9fb;font-weight:600}main{margin-left:260px;padding:28px 40px 80px;max-width:1180px}
h1.title{margin:0 0 4px;font-size:32px}p.subtitle{margin:0 0 24px;color:#57606a;font-size:17px}
section.cell{margin:10px 0 16px}div.in .highlight{background:#f6f8fa;border:1px solid #d0d7de;border-radius:6px;padding:8px 12px;overflow-x:auto}
div.in pre,pre.out{margin:0;font:13px/1.45 ui-monospace,"DejaVu Sans Mono",Menlo,Consolas,monospace}
div.outs{margin-top:6px;padding-left:12px;border-left:3px solid #d0d7de;overflow-x:auto}pre.out{white-space:pre-wrap;padding:4px 0}
pre.error{color:#b42318}pre.stderr{color:#7d4e00}section.md h2{border-bottom:1px solid #d0d7de;padding-bottom:4px;margin-top:32px}
section.md table,div.out table{border-collapse:collapse;margin:8px 0;font-size:14px}section.md td,section.md th,div.out td,div.out th{border:1px solid #d0d7de;padding:4px 8px}
section.md code,div.md code{background:#f0f2f4;padding:1px 4px;border-radius:4px;font-size:90%}
section.md pre code{background:none;padding:0}section.md .highlight{background:#f6f8fa;border-radius:6px;padding:8px 12px;overflow-x:auto}
div.md hr{border:0;border-top:1px solid #d0d7de;margin:22px 0 8px}div.md h3{margin:6px 0;font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:17px}
a.anchor{margin-left:6px;color:#c0c6cc;font-size:80%}img{max-width:100%}
table.api{border-collapse:collapse;width:100%}table.api td{padding:3px 10px 3px 0;vertical-align:top;border-bottom:1px solid #eaeef2}
table.api td:first-child{font-family:ui-monospace,"DejaVu Sans Mono",monospace;white-space:nowrap;width:1%}
"""


def layout(title: str, subtitle: str, body: str, pages: list[tuple[str, str, str]], current: str, css: str) -> str:
    nav = ['<nav class="side"><a class="brand" href="index.html">dnn_cool</a>']
    for sec in SECTIONS:
        items = [(f, t) for f, t, s in pages if s == sec]
        if not items: continue
        nav.append(f'<h4>{html.escape(sec)}</h4><ul>')
        for f, t in items:
            cls = ' class="current"' if f == current else ''
            nav.append(f'<li><a href="{f}"{cls}>{html.escape(t)}</a></li>')
        nav.append('</ul>')
    nav.append('</nav>')
    head = f'<h1 class="title">{html.escape(title)}</h1>' + (f'<p class="subtitle">{subtitle}</p>' if subtitle else '')
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" '
            f'content="width=device-width, initial-scale=1"><title>{html.escape(title)} · dnn_cool</title>'
            f'<style>{CSS}{css}</style></head><body>{"".join(nav)}<main>{head}{body}</main></body></html>')


def api_reference(renderer: Renderer) -> str:
    "Every public name of the package, by module, linked to the page that documents it."
    sys.path.insert(0, str(REPO))
    import importlib
    from dnn_cool._modidx import d
    rows = []
    for mod, syms in sorted(d['syms'].items()):
        module = importlib.import_module(mod)
        public = set(getattr(module, '__all__', []))
        names = [(s.split('.', 2)[-1] if s.count('.') >= 2 else s, link) for s, (link, _) in syms.items()]
        names = [(n, link) for n, link in names if n.split('.')[0] in public and not n.split('.')[-1].startswith('_')]
        if not names: continue
        doc = renderer.markdown((module.__doc__ or '').strip().splitlines()[0]) if module.__doc__ else ''
        rows.append(f'<h2 id="{mod}">{html.escape(mod)}</h2>{doc}<table class="api"><tbody>')
        for n, link in sorted(names, key=lambda x: x[0].lower()):
            obj = module
            for part in n.split('.'): obj = getattr(obj, part, None)
            summary = ((getattr(obj, '__doc__', None) or '').strip().splitlines() or [''])[0]
            summary = renderer.markdown(summary).removeprefix('<p>').removesuffix('</p>\n').removesuffix('</p>')
            rows.append(f'<tr><td><a href="{link}">{html.escape(n)}</a></td><td>{summary}</td></tr>')
        rows.append('</tbody></table>')
    return ''.join(rows)


def build(out: Path, workers: int, only: list[str] | None = None) -> dict:
    started = time.time()
    sys.path.insert(0, str(REPO))
    names = sorted(p.name for p in NBS.glob('*.ipynb'))
    if only: names = [n for n in names if any(o in n for o in only)]
    raw = {n: json.loads((NBS / n).read_text()) for n in names}
    to_run = [str(NBS / n) for n in names]  # every notebook runs: this is also the notebook test run
    executed, failures, timings = {}, [], {}
    # one fresh process per notebook (spawned: a notebook must not inherit another's state, nor a forked torch)
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context('spawn'), max_tasks_per_child=1) as pool:
        for path, nb, err, secs in pool.map(execute, to_run):
            timings[Path(path).name] = secs
            if err: failures.append((path, err))
            else: executed[Path(path).name] = nb
    if failures:
        for path, err in failures: sys.stderr.write(f'\n==== {path} failed:\n{err}\n')
        raise SystemExit(f'{len(failures)} notebook(s) failed: {[Path(p).name for p, _ in failures]}')
    os.chdir(REPO)
    processed = {n: process(raw[n] if _has_outputs(raw[n]) else executed[n], n) for n in names}  # saved outputs win
    renderer = Renderer(_site_url())
    pages = []
    for n in names:
        fm = frontmatter(processed[n])
        pages.append((page_name(n), fm.get('title') or Path(n).stem, section(n)))
    pages.append(('api.html', 'API reference', 'Reference'))
    if out.exists(): shutil.rmtree(out)
    out.mkdir(parents=True)
    if (REPO / 'static').exists(): shutil.copytree(REPO / 'static', out / 'static')
    for n in names:
        nb, fm = processed[n], frontmatter(processed[n])
        body = ''.join(renderer.cell(c) for c in nb['cells'])
        subtitle = renderer.markdown(fm['description'])[3:-5] if fm.get('description') else ''  # strip <p></p>
        title = fm.get('title') or Path(n).stem
        (out / page_name(n)).write_text(layout(title, subtitle, body, pages, page_name(n), renderer.pygments_css))
    (out / 'api.html').write_text(layout('API reference', 'Every public name, by module.', api_reference(renderer),
                                         pages, 'api.html', renderer.pygments_css))
    return dict(pages=len(pages), seconds=time.time() - started, executed=timings)


def _site_url() -> str:
    from nbdev.config import get_config
    cfg = get_config()
    return cfg.doc_host.rstrip('/') + '/' + cfg.doc_baseurl.strip('/')


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--out', default=str(REPO / '_docs'))
    ap.add_argument('--workers', type=int, default=2)
    ap.add_argument('--only', nargs='*', help='build only notebooks whose name contains one of these')
    args = ap.parse_args()
    res = build(Path(args.out), args.workers, args.only)
    print(f"built {res['pages']} pages into {args.out} in {res['seconds']:.0f}s")
