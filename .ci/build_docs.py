"""Build dnn_cool's documentation site into `_docs/` without quarto: one self-contained page per notebook, a sidebar,
and an API reference; no page asks the network for anything (no CDN script, stylesheet or font).

Pages: a notebook's page has the name nbdev gives it (`07_train.ipynb` -> `train.html`), which is where nbdev's links
point, unless another notebook would have the same name or it is the API reference's (`reference.html`): then it has
the notebook's whole stem (`00a_distributed.html` and `07b_distributed.html`). Nothing else decides a name, so a new
notebook needs no change here, and no page is ever written twice (the build stops if one would be). Headings get the
ids pandoc gives them (`### ITask.decode` -> `itask.decode`), and under each class's `show_doc` card its methods are
listed with the ids nbdev links them by; every link inside the site is then checked against the ids its page has (a
link nbdev wrote to a shared name goes to the page that has the id), and the build stops on one that leads nowhere.

The notebooks go through the same preparation as `nbdev_docs` (nbdev's processors: `show_doc` for every exported name,
doc links, hidden cells removed), so this build also checks that nbdev's own quarto path can prepare them. Notebooks
saved without outputs (the library's notebooks) are executed first, in the plain shell nbdev_test uses, so their
examples show results; notebooks saved with outputs (the walkthroughs, run at full size) are executed too, as a test
(at their small `IN_TEST` size), and shown as saved. Widgets show their static views: every dnn_cool widget output
carries one.

Each build keeps what it ran in `_docs_exec/` (one executed notebook per notebook, with a hash of the notebook it ran),
so that a partial build renders the whole site: `--only NAME ...` runs only those notebooks and `--no-run` runs none;
every other page shows the outputs kept from the last run of that very notebook (or, where there are none, its code
without outputs, and the build says which). The full build (no `--only`, no `--no-run`) runs every notebook.

usage: python .ci/build_docs.py [--out _docs] [--workers 2] [--only NAME ... | --no-run]
"""
from __future__ import annotations

import argparse
import functools
import html
import inspect
import json
import multiprocessing
import os
import re
import shutil
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from urllib.parse import unquote

REPO = Path(__file__).resolve().parents[1]
NBS = REPO / 'nbs'
KEPT = REPO / '_docs_exec'  # the executed notebooks of the last runs (git-ignored), read by partial builds


# ---- execution ------------------------------------------------------------------------------------------------------

def _plain(o):
    "JSON fallback for execnb's containers (fastcore `L` lists, `AttrDict`s)."
    return dict(o) if hasattr(o, 'keys') else list(o)


def _has_outputs(nb: dict) -> bool:
    return any(c.get('outputs') for c in nb['cells'] if c['cell_type'] == 'code')


def _digest(name: str) -> str:
    import hashlib
    return hashlib.sha256((NBS / name).read_bytes()).hexdigest()


def keep(name: str, executed: dict) -> None:
    "Keep the executed notebook `name` for later partial builds, with the hash of the notebook that ran."
    KEPT.mkdir(exist_ok=True)
    tmp = KEPT / f'{name}.tmp'
    tmp.write_text(json.dumps({'source_sha256': _digest(name), 'notebook': executed}))
    tmp.replace(KEPT / f'{name}.json')


def kept(name: str) -> dict | None:
    "The outputs an earlier build kept for `name`, if it ran this very notebook (same hash), else None."
    f = KEPT / f'{name}.json'
    if not f.exists(): return None
    data = json.loads(f.read_text())
    return data['notebook'] if data.get('source_sha256') == _digest(name) else None


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


# ---- page names and ids ---------------------------------------------------------------------------------------------

API_PAGE = 'reference.html'  # the API reference's: no notebook gets it (`95_reference.ipynb` would be `95_reference.html`)


def short_name(nb_name: str) -> str:
    "nbdev's page name for a notebook, where its links point (`doclinks._nbpath2html`): the stem without its number."
    return re.sub(r'^\d+[a-zA-Z0-9]*_', '', Path(nb_name).stem.lower()) + '.html'


def page_names(names: list[str]) -> dict[str, str]:
    """Each notebook's page: nbdev's name (`07_train.ipynb` -> `train.html`, `20a_views.flow.ipynb` -> `views.flow.html`,
    `index.ipynb` -> `index.html`) where no other notebook has the same one and it is not the API reference's; else
    the notebook's whole stem (`00a_distributed.html` and `07b_distributed.html`). A page's name depends only on its
    notebook's name and on whether another notebook shares the short one, never on the order of the notebooks."""
    short = {n: short_name(n) for n in names}
    count = Counter(short.values())
    pages = {n: short[n] if count[short[n]] == 1 and short[n] != API_PAGE else Path(n).stem.lower() + '.html'
             for n in names}
    clash = {p: [n for n in names if pages[n] == p] for p, k in Counter(pages.values()).items() if k > 1 or p == API_PAGE}
    if clash: raise SystemExit(f'notebooks that would share a page: {clash}: rename one of them')
    return pages


def heading_id(text: str) -> str:
    """The id pandoc (quarto) gives a heading, which nbdev's links expect: `### ITask.decode` -> `itask.decode`, `## The
    task interface` -> `the-task-interface` (lower case; punctuation but `_-.` dropped; spaces as hyphens; leading
    digits and punctuation dropped, leading underscores kept, as in nbdev's links to `_names`)."""
    s = re.sub(r'\s+', '-', re.sub(r'[^\w\s.-]', '', text.lower()).strip())
    return re.sub(r'^[\W\d]+', '', s) or 'section'


# ---- rendering ------------------------------------------------------------------------------------------------------

def _text(v) -> str: return ''.join(v) if isinstance(v, list) else (v or '')


_ANSI = re.compile(r'\x1b\[[0-9;]*[A-Za-z]')
_PANDOC_ATTRS = re.compile(r'\)\{[^}\n]*\}')  # quarto's `[x](url){target="_blank"}`: keep the link, drop the attributes
_DIRECTIVE = re.compile(r'^\s*#\|\s*([\w-]+)\s*:?\s*(.*?)\s*$')
_HEADING = re.compile(r'<h([1-6]) id="[^"]*">(.*?)<a class="anchor-link" href="[^"]*">&#182;</a></h\1>', re.S)
_SHOW_DOC = re.compile(r'^show_doc\(\s*([\w.]+)\s*[,)]')
_MEMBERS = re.compile(r'<!--members (\d+)-->')


class Renderer:
    "Turns processed notebooks into HTML pages that link to each other relatively."
    def __init__(self, site_url: str, pages: dict[str, str]):
        from nbconvert.filters.markdown_mistune import markdown2html_mistune
        from pygments.formatters import HtmlFormatter
        self._md, self.site_url, self.pages = markdown2html_mistune, site_url.rstrip('/') + '/', pages
        self.pygments_css = HtmlFormatter().get_style_defs('.highlight')
        self.start_page(None)

    def start_page(self, module: str | None):
        "Before a page's cells: the module its notebook exports (where its `show_doc` cells find their names)."
        self.module, self._ids, self._classes = module, Counter(), []

    def _heading(self, m) -> str:
        "A heading with pandoc's id (`-1`, `-2` appended to a repeated one, as pandoc does) and its ¶ link to itself."
        level, inner = m.group(1), m.group(2)
        base = heading_id(html.unescape(re.sub(r'<[^>]+>', '', inner)))
        hid = base if not self._ids[base] else f'{base}-{self._ids[base]}'
        self._ids[base] += 1
        return f'<h{level} id="{hid}">{inner}<a class="anchor" href="#{hid}">&#182;</a></h{level}>'

    def markdown(self, src: str) -> str:
        src = _PANDOC_ATTRS.sub(')', src)
        out = self._md(src)
        out = out.replace(f'href="{self.site_url}', 'href="')  # doc links stay inside this site
        out = _HEADING.sub(self._heading, out)
        out = re.sub(r'(src|href)="(\.\./)?static/', r'\1="static/', out)  # README pictures live in static/
        # links to a notebook (the README's `nbs/30_walkthrough.ipynb`) go to its page
        out = re.sub(r'href="(?:\./)?(?:nbs/)?([\w.-]+\.ipynb)(#[^"]*)?"',
                     lambda m: f'href="{self.pages.get(m.group(1), m.group(1))}{m.group(2) or ""}"', out)
        return out

    def code(self, src: str) -> str:
        from pygments import highlight
        from pygments.formatters import HtmlFormatter
        from pygments.lexers import PythonLexer
        return highlight(src, PythonLexer(), HtmlFormatter())

    def output(self, o: dict, documented: object = None) -> str:
        "One output; `documented`: the object whose `show_doc` card this output is (the card is laid out as a card)."
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
        if 'text/markdown' in data and documented is not None: return self.card(_text(data['text/markdown']), documented)
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
        shows_doc = _SHOW_DOC.match(body)
        documented = self._documented(shows_doc.group(1)) if shows_doc else None
        outputs = '' if directives.get('output') == 'false' else ''.join(self.output(o, documented) for o in c.get('outputs', []))
        if not show_code and not outputs: return ''
        if inspect.isclass(documented) and outputs:  # where a class's card ends: its methods, once the page is done
            self._classes.append(documented)
            outputs += f'<!--members {len(self._classes) - 1}-->'
        return (f'<section class="cell{" doc" if shows_doc else ""}">' + (f'<div class="in">{self.code(body)}</div>' if show_code else '')
                + (f'<div class="outs">{outputs}</div>' if outputs else '') + '</section>')

    def _documented(self, name: str) -> object:
        "The object a `show_doc(name)` cell documents, found in the module the notebook exports (None if not there)."
        import importlib
        if not self.module: return None
        obj = importlib.import_module(self.module)
        for part in name.split('.'): obj = getattr(obj, part, None)
        return obj

    def card(self, md: str, obj: object) -> str:
        """A `show_doc` card: the source link at the right of the name (where quarto floats it), and a class written
        `class Name(...)` (fastcore writes every signature with `def`, and a class's with `__init__`'s `->None`), `class
        Name:` when it takes no argument."""
        if inspect.isclass(obj):
            name = re.escape(obj.__name__)
            try: takes_nothing = not inspect.signature(obj).parameters
            except (TypeError, ValueError): takes_nothing = False
            if takes_nothing: md = re.sub(rf'^def ({name})\(\n\s*\*args, \*\*kwargs\n\):$', r'class \1:', md, count=1, flags=re.M)
            md = re.sub(rf'^def ({name})\(', r'class \1(', md, count=1, flags=re.M)
            md = re.sub(r'^\)->None:$', '):', md, count=1, flags=re.M)  # `__init__`'s return, not the class's
        out = self.markdown(md)
        out = re.sub(r'<p><a href="([^"]+)">source</a></p>\s*(<h[1-6][^>]*>)', r'\2<a class="source" href="\1">source</a>', out, count=1)
        return f'<div class="out md card">{out}</div>'

    def finish_page(self, body: str) -> str:
        "The methods of every class the page documents, under its card, but those that have a card of their own."
        have = set(_ID.findall(body))
        return _MEMBERS.sub(lambda m: self.members(self._classes[int(m.group(1))], have), body)

    def members(self, cls: type, have: set[str]) -> str:
        """The public methods and properties that `cls` defines (those nbdev indexes, so those its links name), each
        with the id nbdev links it by (`tasks.html#itask.decode`), its signature and its docstring's first paragraph."""
        from dnn_cool._modidx import d
        from nbdev.doclinks import NbdevLookup
        prefix = f'{cls.__module__}.{cls.__qualname__}.'
        indexed = {k[len(prefix):] for k in d['syms'].get(cls.__module__, {}) if k.startswith(prefix)}
        rows, kinds = [], set()
        for name in [n for n in vars(cls) if n in indexed and not n.startswith('_')]:
            mid = f'{cls.__name__}.{name}'.lower()  # nbdev's link: `doclinks._get_modidx`
            if mid in have: continue
            raw = inspect.getattr_static(cls, name)
            doc = (inspect.getdoc(raw.fget if isinstance(raw, property) else getattr(cls, name)) or '').split('\n\n')[0]
            doc = self.markdown(NbdevLookup().link_line(doc)) if doc else ''
            have.add(mid)
            kinds.add('properties' if isinstance(raw, (property, functools.cached_property)) else 'methods')
            rows.append(f'<dt id="{mid}">{html.escape(_signature(cls, name, raw))}'
                        f'<a class="anchor" href="#{mid}">&#182;</a></dt><dd>{doc}</dd>')
        if not rows: return ''
        label = ' and '.join(sorted(kinds, reverse=True)).capitalize()  # "Methods", "Properties", "Methods and properties"
        return f'<div class="members"><p class="label">{label}</p><dl>{"".join(rows)}</dl></div>'


class _Annotation(str):
    "A string annotation (`from __future__ import annotations`) shown as written, without quotes."
    def __repr__(self): return str(self)


def _signature(cls: type, name: str, raw) -> str:
    "`decode(activated: torch.Tensor) -> torch.Tensor`; `property name`; `classmethod from_x(...)`."
    if isinstance(raw, (property, functools.cached_property)): return f'property {name}'
    fn = raw.__func__ if isinstance(raw, (staticmethod, classmethod)) else raw
    try: sig = inspect.signature(fn)
    except (TypeError, ValueError): return f'{name}(...)'
    plain = lambda a: _Annotation(a) if isinstance(a, str) else a
    params = [p.replace(annotation=plain(p.annotation)) for p in sig.parameters.values()]
    if not isinstance(raw, staticmethod) and not inspect.isclass(raw): params = params[1:]  # self, cls
    sig = sig.replace(parameters=params, return_annotation=plain(sig.return_annotation))
    kind = 'classmethod ' if isinstance(raw, classmethod) else 'staticmethod ' if isinstance(raw, staticmethod) else ''
    return f'{kind}{name}{sig}'


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


_DEFAULT_EXP = re.compile(r'^\s*#\|\s*default_exp\s+(\S+)', re.M)


def exported_module(nb: dict) -> str | None:
    "The module the notebook exports (`#| default_exp tasks` -> `dnn_cool.tasks`), if any."
    from nbdev.config import get_config
    for c in nb['cells']:
        m = c['cell_type'] == 'code' and _DEFAULT_EXP.search(_text(c['source']))
        if m: return f'{get_config().lib_name}.{m.group(1)}'.removesuffix('.__init__')
    return None


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
h1,h2,h3,h4{overflow-wrap:anywhere}h1.title{margin:0 0 4px;font-size:32px}p.subtitle{margin:0 0 24px;color:#57606a;font-size:17px}
section.cell{margin:10px 0 16px}div.in .highlight{background:#f6f8fa;border:1px solid #d0d7de;border-radius:6px;padding:8px 12px;overflow-x:auto}
div.in pre,pre.out{margin:0;font:13px/1.45 ui-monospace,"DejaVu Sans Mono",Menlo,Consolas,monospace}
div.outs{margin-top:6px;padding-left:12px;border-left:3px solid #d0d7de;overflow-x:auto}pre.out{white-space:pre-wrap;padding:4px 0}
pre.error{color:#b42318}pre.stderr{color:#7d4e00}section.md h2{border-bottom:1px solid #d0d7de;padding-bottom:4px;margin-top:32px}
section.md table,div.out table{border-collapse:collapse;margin:8px 0;font-size:14px}section.md td,section.md th,div.out td,div.out th{border:1px solid #d0d7de;padding:4px 8px}
section.md code,div.md code{background:#f0f2f4;padding:1px 4px;border-radius:4px;font-size:90%}
section.md pre code{background:none;padding:0}section.md .highlight{background:#f6f8fa;border-radius:6px;padding:8px 12px;overflow-x:auto}
div.md hr{border:0;border-top:1px solid #d0d7de;margin:22px 0 8px}div.md h3{margin:6px 0;font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:17px;overflow-wrap:anywhere}
a.anchor{margin-left:6px;color:#c0c6cc;font-size:80%}img{max-width:100%}
table.api{border-collapse:collapse;width:100%}table.api td{padding:3px 10px 3px 0;vertical-align:top;border-bottom:1px solid #eaeef2}
table.api td:first-child{font-family:ui-monospace,"DejaVu Sans Mono",monospace;white-space:nowrap;width:1%}
section.doc div.outs{border-left:0;padding-left:0;overflow:visible;margin-top:0}div.card>hr{display:none}
div.card{border-top:1px solid #d0d7de;padding-top:8px;margin-top:22px}div.card .highlight{background:#f6f8fa;border-radius:6px;padding:6px 10px;overflow-x:auto}
div.card p{margin:6px 0}.highlight pre{margin:0}a.source{float:right;font:400 13px system-ui,sans-serif;color:#57606a;margin-left:12px}
div.members{margin:8px 0 4px 2px;padding-left:14px;border-left:2px solid #eaeef2}div.members p.label{margin:0;font-size:12px;text-transform:uppercase;letter-spacing:.06em;color:#57606a}
div.members dt{margin-top:8px;font:13px/1.45 ui-monospace,"DejaVu Sans Mono",Menlo,Consolas,monospace;overflow-wrap:anywhere}
div.members dd{margin:2px 0 0 18px}span.where{color:#57606a;white-space:nowrap}div.members dd p{margin:0}
:target{scroll-margin-top:12px}dt:target,h1:target,h2:target,h3:target,h4:target{background:#fff8c5;border-radius:4px}
section.md table{display:block;max-width:100%;overflow-x:auto}
section.md pre,div.md pre{background:#f6f8fa;border-radius:6px;padding:8px 12px;overflow-x:auto;font-size:13px}
section.md .highlight pre,div.md .highlight pre{padding:0;background:none}
@media (max-width:1100px){nav.side{width:220px}main{margin-left:220px;padding:24px 24px 80px}}
nav.side .top{display:flex;align-items:baseline;justify-content:space-between}nav.side label.toggle,nav.side input.toggle{display:none}
@media (max-width:820px){
nav.side{position:static;width:auto;border-right:0;border-bottom:1px solid #d0d7de;padding:10px 16px}nav.side .brand{margin:0}
nav.side label.toggle{display:block;cursor:pointer;color:#0b63c4;font-size:15px;padding:4px 0}nav.side .links{display:none;padding-bottom:6px}
nav.side input.toggle:checked~.links{display:block}main{margin-left:0;padding:18px 16px 60px}h1.title{font-size:26px}
table.api td:first-child{white-space:normal;overflow-wrap:anywhere;width:40%}
}
"""


def layout(title: str, subtitle: str, body: str, pages: list[tuple[str, str, str]], current: str, css: str) -> str:
    # on a narrow screen the sidebar folds into a "Pages" toggle above the page (a checkbox and CSS: no script)
    nav = ['<nav class="side"><div class="top"><a class="brand" href="index.html">dnn_cool</a><label class="toggle" '
           'for="pages-toggle">Pages &#9776;</label></div><input class="toggle" type="checkbox" id="pages-toggle"><div class="links">']
    for sec in SECTIONS:
        items = [(f, t) for f, t, s in pages if s == sec]
        if not items: continue
        nav.append(f'<h4>{html.escape(sec)}</h4><ul>')
        for f, t in items:
            cls = ' class="current"' if f == current else ''
            nav.append(f'<li><a href="{f}"{cls}>{html.escape(t)}</a></li>')
        nav.append('</ul>')
    nav.append('</div></nav>')
    head = f'<h1 class="title">{html.escape(title)}</h1>' + (f'<p class="subtitle">{subtitle}</p>' if subtitle else '')
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" '
            f'content="width=device-width, initial-scale=1"><title>{html.escape(title)} · dnn_cool</title>'
            f'<style>{CSS}{css}</style></head><body>{"".join(nav)}<main>{head}{body}</main></body></html>')


def api_reference(renderer: Renderer, module_pages: dict[str, tuple[str, str]]) -> str:
    """Every public name of the package, by module, linked where nbdev links it (the notebook that defines it; a method
    to its entry under its class) and each module to its notebook's page."""
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
        doc = (module.__doc__ or '').strip().splitlines()
        doc = renderer.markdown(doc[0]).strip().removeprefix('<p>').removesuffix('</p>') if doc else ''
        if mod in module_pages:
            page, title = module_pages[mod]
            doc += f'{" " if doc else ""}<span class="where">(notebook: <a href="{page}">{html.escape(title)}</a>)</span>'
        rows.append(f'<h2 id="{mod}">{html.escape(mod)}<a class="anchor" href="#{mod}">&#182;</a></h2>'
                    f'<p>{doc}</p><table class="api"><tbody>')
        for n, link in sorted(names, key=lambda x: x[0].lower()):
            obj = module
            for part in n.split('.'): obj = getattr(obj, part, None)
            summary = ((getattr(obj, '__doc__', None) or '').strip().splitlines() or [''])[0]
            summary = renderer.markdown(summary).strip().removeprefix('<p>').removesuffix('</p>')
            rows.append(f'<tr><td><a href="{link}">{html.escape(n)}</a></td><td>{summary}</td></tr>')
        rows.append('</tbody></table>')
    return ''.join(rows)


# ---- links ----------------------------------------------------------------------------------------------------------

_ID = re.compile(r'''(?<![\w-])id=["']([^"']+)["']''')
_LINK = re.compile(r'(<a\b[^>]*?\shref=")([^"]*)(")', re.S)


def resolve_links(pages: dict[str, str], short: dict[str, list[str]], out: Path, notebook_of: dict[str, str]) -> dict[str, str]:
    """Every link inside the site goes to a file that exists and, with a `#fragment`, to an element with that id. nbdev
    names a page by its short name (`distributed.html#init_distributed`), which two notebooks may share: such a link
    goes to the one of them that has the id. `#cls.__init__` goes to the class (whose card documents its constructor).
    Any other link to a missing page or id fails the build, saying which notebook has it and where it points."""
    ids = {p: set(_ID.findall(h)) for p, h in pages.items()}
    problems = []

    def target(page: str, href: str) -> str:
        if not href or re.match(r'^([a-z][a-z0-9+.-]*:|//)', href, re.I): return href  # https:, mailto:, data:, ...
        file, _, fragment = href.partition('#')
        if file and not file.endswith('.html'):
            if not (out / unquote(file)).exists(): problems.append(f'{notebook_of[page]}: a link to {href}: no such file')
            return href
        candidates = [file or page] if (file or page) in pages else short.get(file, [])
        if not fragment:
            if len(candidates) == 1: return candidates[0]
            problems.append(f'{notebook_of[page]}: a link to {href}: ' + (f'which of {candidates}?' if candidates else 'no such page'))
            return href
        want = [unquote(fragment)] + ([unquote(fragment).removesuffix('.__init__')] if fragment.endswith('.__init__') else [])
        for frag in want:
            having = [c for c in candidates if frag in ids[c]]
            if len(having) == 1: return ('' if having[0] == page else having[0]) + '#' + frag
            if len(having) > 1:
                problems.append(f'{notebook_of[page]}: a link to {href}: the id is on each of {having}')
                return href
        problems.append(f'{notebook_of[page]}: a link to {href}: ' + (f'no id "{unquote(fragment)}" on {candidates}'
                                                                      if candidates else 'no such page'))
        return href

    resolved = {p: _LINK.sub(lambda m: m.group(1) + target(p, m.group(2)) + m.group(3), h) for p, h in pages.items()}
    if problems:
        raise SystemExit(f'{len(problems)} link(s) lead nowhere (a heading\'s id is its text in lower case with hyphens '
                         f'for spaces; a documented name\'s is `name` or `class.method` in lower case):\n  '
                         + '\n  '.join(problems))
    return resolved


# ---- the site -------------------------------------------------------------------------------------------------------

def build(out: Path, workers: int, only: list[str] | None = None) -> dict:
    """Run the notebooks (all of them, or those whose name contains one of `only`; none for `only=[]`) and render
    every notebook's page: the ones that did not run from their kept outputs."""
    started = time.time()
    sys.path.insert(0, str(REPO))
    names = sorted(p.name for p in NBS.glob('*.ipynb'))
    page_of = page_names(names)
    raw = {n: json.loads((NBS / n).read_text()) for n in names}
    run = names if only is None else [n for n in names if any(o in n for o in only)]
    to_run = [str(NBS / n) for n in run]  # a full build runs every notebook: this is also the notebook test run
    executed, failures, timings = {}, [], {}
    # one fresh process per notebook (spawned: a notebook must not inherit another's state, nor a forked torch)
    if to_run:
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context('spawn'), max_tasks_per_child=1) as pool:
            for path, nb, err, secs in pool.map(execute, to_run):
                timings[Path(path).name] = secs
                if err: failures.append((path, err))
                else:
                    executed[Path(path).name] = nb
                    keep(Path(path).name, nb)
    if failures:
        for path, err in failures: sys.stderr.write(f'\n==== {path} failed:\n{err}\n')
        raise SystemExit(f'{len(failures)} notebook(s) failed: {[Path(p).name for p, _ in failures]}')
    os.chdir(REPO)
    shown, unrun = {}, []
    for n in names:  # saved outputs win (the walkthroughs, run at full size); else this run's, else the kept ones
        shown[n] = raw[n] if _has_outputs(raw[n]) else executed.get(n) or kept(n)
        if shown[n] is None: shown[n], _ = raw[n], unrun.append(n)
    if unrun: print(f'shown without outputs (not run in this build, and no outputs kept from a run of the notebook as '
                    f'it is now): {", ".join(unrun)}', file=sys.stderr)
    processed = {n: process(shown[n], n) for n in names}
    renderer = Renderer(_site_url(), page_of)
    titles = {n: frontmatter(processed[n]).get('title') or Path(n).stem for n in names}
    sidebar = [(page_of[n], titles[n], section(n)) for n in names] + [(API_PAGE, 'API reference', 'Reference')]
    html_pages, notebook_of = {}, {API_PAGE: 'the API reference'}

    def add(page: str, source: str, text: str):
        if page in html_pages: raise SystemExit(f'{source} would overwrite the page of {notebook_of[page]} ({page})')
        html_pages[page], notebook_of[page] = text, source
    module_pages = {}
    for n in names:
        nb, fm = processed[n], frontmatter(processed[n])
        module = exported_module(raw[n])
        if module: module_pages[module] = (page_of[n], titles[n])
        renderer.start_page(module)
        body = renderer.finish_page(''.join(renderer.cell(c) for c in nb['cells']))
        subtitle = renderer.markdown(fm['description'])[3:-5] if fm.get('description') else ''  # strip <p></p>
        add(page_of[n], n, layout(titles[n], subtitle, body, sidebar, page_of[n], renderer.pygments_css))
    renderer.start_page(None)
    add(API_PAGE, 'the API reference', layout('API reference', 'Every public name, by module.',
                                             api_reference(renderer, module_pages), sidebar, API_PAGE, renderer.pygments_css))
    if out.exists(): shutil.rmtree(out)
    out.mkdir(parents=True)
    if (REPO / 'static').exists(): shutil.copytree(REPO / 'static', out / 'static')
    short = {}
    for n in names: short.setdefault(short_name(n), []).append(page_of[n])
    for page, text in resolve_links(html_pages, short, out, notebook_of).items(): (out / page).write_text(text)
    return dict(pages=len(html_pages), notebooks=len(names), seconds=time.time() - started, executed=timings)


def _site_url() -> str:
    from nbdev.config import get_config
    cfg = get_config()
    return cfg.doc_host.rstrip('/') + '/' + cfg.doc_baseurl.strip('/')


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--out', default=str(REPO / '_docs'))
    ap.add_argument('--workers', type=int, default=2)
    runs = ap.add_mutually_exclusive_group()
    runs.add_argument('--only', nargs='+', metavar='NAME', help='run only the notebooks whose name contains one of '
                      'these; the other pages show the outputs kept in _docs_exec/ by earlier builds')
    runs.add_argument('--no-run', action='store_true', help='run no notebook; every page shows its kept outputs')
    args = ap.parse_args()
    res = build(Path(args.out), args.workers, [] if args.no_run else args.only)
    print(f"built {res['pages']} pages ({res['notebooks']} notebooks and the API reference) into {args.out} "
          f"in {res['seconds']:.0f}s")
