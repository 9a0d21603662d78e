"""nbdev's quarto path (`nbdev_docs`, for users who have quarto) is configured: `_quarto.yml` and every file it refers
to exist once nbdev has generated its own (`nbdev.yml`, `sidebar.yml`), and the sidebar lists every notebook."""
import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def test_quarto_config_refers_only_to_files_that_exist(tmp_path):
    # generate nbdev.yml and sidebar.yml the way nbdev_docs does, without quarto
    subprocess.run([sys.executable, '-c', 'from nbdev.quarto import refresh_quarto_yml, nbdev_sidebar; '
                    'refresh_quarto_yml(); nbdev_sidebar.__wrapped__()'], check=True, cwd=REPO,
                   env={**os.environ, 'PYTHONPATH': str(REPO)})
    nbs = REPO / 'nbs'
    quarto = yaml.safe_load((nbs / '_quarto.yml').read_text())
    referred = [quarto['format']['html']['css'], *quarto['metadata-files']]
    missing = [f for f in referred if not (nbs / f).exists()]
    assert not missing, f'_quarto.yml refers to missing files: {missing}'
    sidebar = (nbs / 'sidebar.yml').read_text()
    notebooks = [p.name for p in nbs.glob('*.ipynb')]
    assert all(n in sidebar for n in notebooks), [n for n in notebooks if n not in sidebar]
