"""The documentation site, built by `.ci/build_docs.py`, opened from disk in Chromium with the network blocked: every
page reached through the sidebar loads with content, no console error and no request beyond the files themselves;
a collapsed tree expands; the flow graph is drawn."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
from harness import REPO, Page


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
    assert {'index.html', 'api.html'} <= set(visited)
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
