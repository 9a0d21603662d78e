"""Render README.md from nbs/index.ipynb (nbdev 2's nbdev_readme needs quarto, which is not installable here).

usage: python .ci/render_readme.py          # write README.md
       python .ci/render_readme.py --check  # exit 1 if README.md differs from what index.ipynb renders to
"""
import sys
from pathlib import Path

import nbformat
from nbconvert.exporters import MarkdownExporter

ROOT = Path(__file__).resolve().parent.parent

def render() -> str:
    nb = nbformat.read(ROOT / 'nbs' / 'index.ipynb', as_version=4)
    # nbdev directives: `#| hide` cells are for the notebook only; drop directive lines from shown code
    cells = []
    for cell in nb.cells:
        lines = cell.source.splitlines()
        if cell.cell_type == 'code' and any(l.strip().replace(' ', '') in ('#|hide', '#|exporti', '#|export') for l in lines):
            continue
        if cell.cell_type == 'code': cell.source = '\n'.join(l for l in lines if not l.lstrip().startswith('#|'))
        cells.append(cell)
    nb.cells = cells
    nb.metadata['language_info'] = {'name': 'python'}  # fenced code blocks tagged as python
    body, _ = MarkdownExporter(exclude_output=False).from_notebook_node(nb)
    text = body.strip() + '\n'
    return '<!-- Generated from nbs/index.ipynb by .ci/render_readme.py: edit the notebook, not this file. -->\n\n' + text

if __name__ == '__main__':
    text = render()
    readme = ROOT / 'README.md'
    if '--check' in sys.argv:
        if not readme.exists() or readme.read_text() != text:
            sys.exit('README.md differs from nbs/index.ipynb: run `python .ci/render_readme.py` and commit')
        print('README.md matches nbs/index.ipynb')
    else:
        readme.write_text(text)
        print('wrote', readme)
