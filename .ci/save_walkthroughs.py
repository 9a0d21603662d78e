"""Run walkthrough notebooks at full size in a Jupyter kernel and save them with their outputs (for GitHub and the site).

A view displays as two outputs in a kernel: its static HTML, then its widget (see `nbs/20_views.core.ipynb`). The
saved notebook keeps the static output as is and drops the widget's view (`application/vnd.jupyter.widget-view+json`,
and the widget state), keeping that output as an empty text: the static view's CSS hides it and says that rerunning
the cell brings the widget back, and no front end is asked for a widget model that isn't there. `IN_TEST` is unset,
so the notebooks run at the size they show; the test run (`.ci/build_docs.py`, `nbdev_test`) runs them again small.

usage: python .ci/save_walkthroughs.py nbs/30_*.ipynb [--timeout 900]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

WIDGET_MIME = 'application/vnd.jupyter.widget-view+json'


def strip_widgets(nb) -> int:
    "Drop the widget's view from every output that has one (an empty text stays in its place); returns how many."
    n = 0
    for cell in nb.cells:
        for out in cell.get('outputs', []):
            if WIDGET_MIME in out.get('data', {}):
                del out['data'][WIDGET_MIME]
                n += 1
        cell.get('metadata', {}).pop('widgets', None)
    nb.metadata.pop('widgets', None)
    return n


def save(path: Path, timeout: int) -> float:
    import nbformat
    from nbclient import NotebookClient
    nb = nbformat.read(path, as_version=4)
    env_before = os.environ.pop('IN_TEST', None)
    start = time.time()
    try:
        NotebookClient(nb, timeout=timeout, kernel_name='python3', resources={'metadata': {'path': str(path.parent)}}).execute()
    finally:
        if env_before is not None: os.environ['IN_TEST'] = env_before
    dropped = strip_widgets(nb)
    nbformat.write(nb, path)
    subprocess.run(['nbdev_clean', '--fname', str(path)], check=True)
    secs = time.time() - start
    print(f'{path}: ran in {secs:.0f}s, {dropped} widget outputs kept as their static view, '
          f'{path.stat().st_size / 1e6:.2f} MB')
    return secs


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('paths', nargs='+', type=Path)
    ap.add_argument('--timeout', type=int, default=900, help='seconds per cell')
    args = ap.parse_args()
    os.environ.setdefault('OMP_NUM_THREADS', '1')
    for p in args.paths: save(p, args.timeout)
