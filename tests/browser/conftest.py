"""Browser tests: a real JupyterLab 4 on 127.0.0.1, a real kernel, Debian's Chromium driven by Playwright.

Without Chromium (or Playwright) these tests skip with a message saying how to run them; under `CI=true` they fail
instead, so CI can never pass without having run them. Everything the browser asks for beyond 127.0.0.1 is blocked
and counted: a view that reaches for a CDN fails its test.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from urllib.request import urlopen

import pytest



from harness import CHROMIUM_ARGS, Lab, Page, _free_port


def _unavailable() -> str | None:
    "Why browser tests can't run here, or None."
    if shutil.which('chromium') is None: return 'Chromium is not installed (as root: apt-get install -y chromium)'
    try: import playwright.sync_api  # noqa: F401
    except ImportError: return "Playwright's Python package is missing (pip install -e '.[dev]')"
    return None


def pytest_collection_modifyitems(config, items):
    why = _unavailable()
    if why is None: return
    if os.environ.get('CI') == 'true':
        raise pytest.UsageError(f'browser tests cannot run under CI=true: {why}')
    mark = pytest.mark.skip(reason=f'{why}; then run: pytest tests/browser')
    for item in items:
        if 'browser' in item.nodeid: item.add_marker(mark)


@pytest.fixture(scope='session')
def lab(tmp_path_factory):
    "A JupyterLab server on 127.0.0.1 with no token, stopped by its PID at the end of the session."
    root = tmp_path_factory.mktemp('lab')
    settings = tmp_path_factory.mktemp('lab-settings')
    # no news or update checks: they would reach for the network and pop notifications over the page
    (settings / '@jupyterlab' / 'apputils-extension').mkdir(parents=True)
    (settings / '@jupyterlab' / 'apputils-extension' / 'notification.jupyterlab-settings').write_text(
        json.dumps({'fetchNews': 'false', 'checkForUpdates': False}))
    port = _free_port()
    env = {**os.environ, 'JUPYTERLAB_SETTINGS_DIR': str(settings), 'JUPYTER_CONFIG_DIR': str(settings / 'config'),
           'OMP_NUM_THREADS': '1', 'PYTHONHASHSEED': '0'}
    cmd = [sys.executable, '-m', 'jupyter', 'lab', '--no-browser', '--ip=127.0.0.1', f'--port={port}', '--port-retries=0',
           '--allow-root', "--ServerApp.token=''", "--ServerApp.password=''", '--ServerApp.disable_check_xsrf=True',
           f'--ServerApp.root_dir={root}', '--LabApp.expose_app_in_browser=True', '--LabApp.news_url=None']
    log = open(root.parent / f'lab-{port}.log', 'w')
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 90
        while True:
            try:
                with urlopen(f'http://127.0.0.1:{port}/api/status', timeout=2): break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f'JupyterLab did not start; see {log.name}')
                time.sleep(0.5)
        yield Lab(root, port, proc)
    finally:
        proc.terminate()
        try: proc.wait(timeout=20)
        except subprocess.TimeoutExpired: proc.kill()
        log.close()


@pytest.fixture(scope='session')
def browser():
    "Debian's Chromium, headless, through Playwright (which cannot download its own browser here)."
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=shutil.which('chromium'), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={'width': 1280, 'height': 900}, device_scale_factor=1)
    p = Page(context.new_page())
    yield p
    context.close()


