"""The documentation site, built by `.ci/build_docs.py`, opened from disk in Chromium with the network blocked: one page
per notebook (none written over another) and the API reference on a page of its own; every page reached through the
sidebar loads with content, no console error and no request beyond the files themselves; every link inside the site
reaches a page and an element that has its id; a collapsed tree expands; the flow graph is drawn."""
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from urllib.parse import unquote

import pytest
from harness import REPO, Page

NOTEBOOKS = sorted((REPO / 'nbs').glob('*.ipynb'))
API_TITLE = 'API reference'


def notebook_title(nb: Path) -> str:
    "The notebook's title as it wrote it: the text of its first level-1 heading."
    import json
    for c in json.loads(nb.read_text())['cells']:
        if c['cell_type'] != 'markdown': continue
        for line in ''.join(c['source']).splitlines():
            if line.startswith('# '): return line[2:].strip()
    raise AssertionError(f'{nb.name} has no "# Title" heading')


@pytest.fixture(scope='module')
def site() -> Path:
    "The built site: `_docs/` when `.ci/check` has just built it (DNN_COOL_DOCS), else built here (a few minutes)."
    given = os.environ.get('DNN_COOL_DOCS')
    if given and (Path(given) / 'index.html').exists(): return Path(given)
    out = REPO / '_docs'
    subprocess.run([sys.executable, str(REPO / '.ci' / 'build_docs.py'), '--out', str(out)], check=True, cwd=REPO)
    return out


def test_every_page_loads_offline_from_the_sidebar(site, browser):
    page = Page(browser.new_context(viewport={'width': 1280, 'height': 900}).new_page())
    page.goto((site / 'index.html').as_uri())
    links = page.eval_on_selector_all('nav.side li a', 'els => els.map(e => e.getAttribute("href"))')
    assert len(links) >= 20, links
    visited = []
    for href in links:
        page.goto((site / 'index.html').as_uri())
        page.locator(f'nav.side li a[href="{href}"]').first.click()
        page.wait_for_load_state('load')
        assert page.url.endswith('/' + href), (page.url, href)
        text = page.locator('main').inner_text()
        assert len(text) > 200, f'{href} looks empty: {text[:200]!r}'
        broken = page.evaluate("() => [...document.images].filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src.slice(0, 80))")
        assert not broken, f'{href}: images that did not load: {broken}'
        visited.append(href)
    assert 'index.html' in visited and len(visited) == len(set(visited)), visited
    page.assert_clean()


def test_one_page_per_notebook_and_the_api_reference_on_a_page_of_its_own(site, browser):
    "Two notebooks never share a page (one would be lost), nor does the API reference overwrite a notebook's page."
    files = sorted(p.name for p in site.glob('*.html'))
    assert len(files) == len(NOTEBOOKS) + 1, (f'{len(NOTEBOOKS)} notebooks and the API reference gave {len(files)} '
                                              f'pages: {files}')
    page = Page(browser.new_context().new_page())
    titles = {}
    for name in files:
        page.goto((site / name).as_uri())
        titles[name] = page.locator('h1.title').inner_text().strip()
    expected = Counter([notebook_title(nb) for nb in NOTEBOOKS] + [API_TITLE])
    assert Counter(titles.values()) == expected, (f'missing: {expected - Counter(titles.values())}, '
                                                  f'unexpected: {Counter(titles.values()) - expected}')
    # every sidebar entry opens the page of the notebook it names, and every page has one entry
    page.goto((site / 'index.html').as_uri())
    entries = page.eval_on_selector_all('nav.side li a', 'els => els.map(e => [e.getAttribute("href"), e.innerText.trim()])')
    assert sorted(href for href, _ in entries) == files, entries
    wrong = [(href, text, titles[href]) for href, text in entries if titles[href] != text]
    assert not wrong, f'sidebar entries that open another page (href, entry, title there): {wrong}'
    page.assert_clean()


_LINKS_AND_IDS = """() => ({links: [...document.querySelectorAll('a[href]')].map(a => a.href),
                           ids: [...document.querySelectorAll('[id]')].map(e => e.id)
                                .concat([...document.querySelectorAll('a[name]')].map(a => a.name))})"""


def test_every_link_inside_the_site_reaches_an_existing_page_and_id(site, browser):
    """A link to `tasks.html#itask.decode` (the API reference's, nbdev's backticked names, a heading's own anchor) needs
    `tasks.html` to exist and to have an element with the id `itask.decode`; a browser would silently stay at the top."""
    page = Page(browser.new_context().new_page())
    root = site.resolve().as_uri() + '/'
    found = {}
    for f in sorted(site.glob('*.html')):
        page.goto(f.as_uri())
        found[f.name] = page.evaluate(_LINKS_AND_IDS)
    ids = {name: set(v['ids']) for name, v in found.items()}
    missing, checked = [], 0
    for name, v in found.items():
        for href in v['links']:
            if not href.startswith('file:'): continue  # https links leave the site (and are never loaded by it)
            target, _, fragment = href.partition('#')
            assert target.startswith(root), f'{name} links outside the site: {href}'
            rel = unquote(target[len(root):])
            checked += 1
            if not (site / rel).exists(): missing.append(f'{name} -> {rel} (no such file)')
            elif fragment and rel.endswith('.html') and unquote(fragment) not in ids[rel]:
                missing.append(f'{name} -> {rel}#{fragment}')
    assert checked > 300, checked
    by_page = Counter(m.split(' -> ')[0] for m in missing).most_common()
    assert not missing, (f'{len(missing)} of {checked} links inside the site miss their target (by page: {by_page}):\n'
                         + '\n'.join(missing[:25]))
    page.assert_clean()


def test_a_narrow_screen_shows_the_page_with_the_sidebar_folded(site, browser):
    "On a phone (or a narrow docs column) the text gets the width; the sidebar opens from its toggle."
    page = Page(browser.new_context(viewport={'width': 420, 'height': 800}).new_page())
    page.goto((site / 'tasks.html').as_uri())
    main = page.locator('main').bounding_box()
    assert main['x'] < 30 and main['width'] > 380, main
    entry = page.locator('nav.side li a[href="index.html"]')
    assert not entry.is_visible()
    page.locator('nav.side label.toggle').click()
    assert entry.is_visible()
    entry.click()
    page.wait_for_load_state('load')
    assert page.url.endswith('/index.html')
    # no page scrolls sideways: wide code, tables and figures scroll inside their own box
    wide = {}
    for f in sorted(site.glob('*.html')):
        page.goto(f.as_uri())
        width = page.evaluate('() => document.documentElement.scrollWidth')
        if width > 420: wide[f.name] = width
    assert not wide, f'pages wider than the 420 px screen: {wide}'
    page.assert_clean()


def test_a_collapsed_tree_expands_and_the_flow_graph_is_drawn(site, browser):
    page = Page(browser.new_context().new_page())
    page.goto((site / 'views.explanations.html').as_uri())
    page.locator('main details:not([open])').first.wait_for(state='attached')
    closed = page.locator('main details:not([open])').first.element_handle()  # a handle: the locator would move on once it opens
    closed.query_selector(':scope > summary').click()
    assert closed.evaluate('d => d.open')
    page.goto((site / 'views.flow.html').as_uri())
    graph = page.locator('main svg').first
    graph.wait_for()
    assert graph.evaluate('s => s.querySelectorAll("rect, path, line").length') > 10
    page.assert_clean()


def test_walkthroughs_open_in_colab_and_the_readme_links_reach_them(site, browser):
    page = Page(browser.new_context().new_page())
    walkthroughs = sorted((REPO / 'nbs').glob('3[0-9]_*.ipynb'))
    assert len(walkthroughs) >= 5, [p.name for p in walkthroughs]
    for nb in walkthroughs:
        name = nb.stem.split('_', 1)[1] + '.html'
        page.goto((site / name).as_uri())
        badge = page.locator('main a[href^="https://colab.research.google.com/github/dnn-cool/dnn_cool/blob/main/nbs/"] img')
        assert badge.count() == 1, f'{name}: no Open in Colab badge'
        assert badge.evaluate('i => i.complete && i.naturalWidth > 0'), f'{name}: the badge image did not load'
        href = page.locator('main a[href^="https://colab.research.google.com"]').first.get_attribute('href')
        assert href.endswith(f'/nbs/{nb.name}'), href  # the badge opens this notebook, not another
        assert page.locator('main .cell .outs').count() > 3, f'{name}: saved without outputs?'
    page.goto((site / 'index.html').as_uri())
    linked = page.eval_on_selector_all('main a[href$=".html"]', 'els => els.map(e => e.getAttribute("href"))')
    for nb in walkthroughs:
        assert nb.stem.split('_', 1)[1] + '.html' in linked, f'the README does not link {nb.name}'
    page.assert_clean()
