"""The rules of the offline site's builder (`.ci/build_docs.py`) without building it: page names, heading ids, the
methods listed under a class with the ids nbdev links to, and links checked against the ids each page has (the
browser test, tests/browser/test_docs_site.py, checks the built site itself)."""
import importlib.util
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location('build_docs', REPO / '.ci' / 'build_docs.py')
bd = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bd)


def test_each_notebook_gets_its_own_page_whatever_the_names():
    names = ['00_core.ipynb', '00a_distributed.ipynb', '03b_thresholds.ipynb', '07b_distributed.ipynb',
             '20a_views.flow.ipynb', '20e_views.thresholds.ipynb', '35_deploy.ipynb', '90_api.ipynb',
             '95_reference.ipynb', 'index.ipynb']
    pages = bd.page_names(names)
    assert pages == {'00_core.ipynb': 'core.html', '00a_distributed.ipynb': '00a_distributed.html',
                     '03b_thresholds.ipynb': 'thresholds.html', '07b_distributed.ipynb': '07b_distributed.html',
                     '20a_views.flow.ipynb': 'views.flow.html', '20e_views.thresholds.ipynb': 'views.thresholds.html',
                     '35_deploy.ipynb': 'deploy.html', '90_api.ipynb': 'api.html',
                     '95_reference.ipynb': '95_reference.html',  # reference.html is the API reference's
                     'index.ipynb': 'index.html'}
    assert bd.API_PAGE == 'reference.html' and bd.API_PAGE not in pages.values()
    assert bd.page_names(list(reversed(names))) == pages  # the order of the notebooks plays no part
    # nbdev's own name where it is unique, which is where nbdev's links point
    assert all(bd.short_name(n) == p for n, p in pages.items() if p[0].isalpha())


def test_notebooks_that_would_share_a_page_stop_the_build():
    with pytest.raises(SystemExit, match=r"00a_x\.html.*\['00a_x\.ipynb', '12_00a_x\.ipynb'\]"):
        bd.page_names(['00a_x.ipynb', '07b_x.ipynb', '12_00a_x.ipynb'])


@pytest.mark.parametrize('heading, expected', [
    ('ITask.decode', 'itask.decode'), ('The task interface', 'the-task-interface'),
    ('The Trainer class: fast!', 'the-trainer-class-fast'), ('3 steps, then stop', 'steps-then-stop'),
    ('_private_helper', '_private_helper'), ('TaskFlow.__init__', 'taskflow.__init__'), ('¿?', 'section')])
def test_heading_ids_are_the_ones_pandoc_gives_and_nbdev_links_to(heading, expected):
    assert bd.heading_id(heading) == expected


@pytest.fixture
def renderer(monkeypatch):
    monkeypatch.chdir(REPO)  # nbdev reads settings.ini from here
    return bd.Renderer('https://dnn-cool.github.io/dnn_cool', {'02_tasks.ipynb': 'tasks.html'})


def test_a_class_lists_its_methods_with_the_ids_nbdev_links_them_by(renderer):
    from dnn_cool._modidx import d
    from dnn_cool.tasks import ITask
    block = renderer.members(ITask, set())
    ids = set(re.findall(r'<dt id="([^"]+)"', block))
    # the reference: every public method nbdev indexes for ITask, with the fragment of its doc link
    linked = {link.split('#')[1] for name, (link, _) in d['syms']['dnn_cool.tasks'].items()
              if name.startswith('dnn_cool.tasks.ITask.') and not name.rsplit('.', 1)[1].startswith('_')}
    assert len(linked) >= 8 and ids == linked, (ids, linked)
    assert 'decode(activated: torch.Tensor) -&gt; torch.Tensor' in block and 'Activated values to answers.' in block
    assert 'id="itask.decode"' not in renderer.members(ITask, {'itask.decode'})  # it has a card of its own
    card = renderer.card('---\n\n[source](https://x/tasks.py#L80)\n\n### ITask\n\n```python\ndef ITask(\n    *args, '
                         '**kwargs\n):\n```\n\n*What the engine needs.*', ITask)
    assert 'class</span><span class="w"> </span><span class="nc">ITask</span>' in card and 'args' not in card
    assert re.search(r'<h3 id="itask"><a class="source" href="https://x/tasks.py#L80">source</a>ITask', card)


def test_headings_repeated_on_a_page_get_distinct_ids(renderer):
    renderer.start_page(None)
    out = renderer.markdown('## Example\n\n## Example\n\n### The `Trainer`')
    assert re.findall(r'<h\d id="([^"]+)">', out) == ['example', 'example-1', 'the-trainer']
    assert 'href="#example-1"' in out


def test_links_go_to_the_page_that_has_the_id_or_stop_the_build(tmp_path):
    (tmp_path / 'static').mkdir()
    (tmp_path / 'static' / 'a.png').write_bytes(b'')
    pages = {'00a_x.html': '<h2 id="helper">Helper</h2>', '07b_x.html': '<h2 id="training">Training</h2>',
             'tasks.html': '<h3 id="itask">ITask</h3><a href="x.html#helper">h</a><a href="#itask.__init__">i</a>'
                           '<a href="https://github.com/o/r/blob/main/x.py#L3">src</a><img src="static/a.png">'
                           '<a href="static/a.png">a</a><a href="x.html#training">t</a>'}
    short = {'x.html': ['00a_x.html', '07b_x.html'], 'tasks.html': ['tasks.html']}
    notebooks = {'00a_x.html': '00a_x.ipynb', '07b_x.html': '07b_x.ipynb', 'tasks.html': '02_tasks.ipynb'}
    out = bd.resolve_links(pages, short, tmp_path, notebooks)['tasks.html']
    assert re.findall(r'href="([^"]+)"', out) == ['00a_x.html#helper', '#itask', 'https://github.com/o/r/blob/main/x.py#L3',
                                                  'static/a.png', '07b_x.html#training']
    for bad, why in [('tasks.html#itask.decode', 'no id "itask.decode"'), ('x.html', "which of ['00a_x.html', '07b_x.html']"),
                     ('gone.html#a', 'no such page'), ('static/b.png', 'no such file'), ('#Decoders', 'no id "Decoders"')]:
        broken = {**pages, 'tasks.html': pages['tasks.html'] + f'<a href="{bad}">bad</a>'}
        with pytest.raises(SystemExit, match=re.escape(f'02_tasks.ipynb: a link to {bad}: {why}')):
            bd.resolve_links(broken, short, tmp_path, notebooks)
