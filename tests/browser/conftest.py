"""Browser tests: a real JupyterLab 4 (and a Notebook 7) on 127.0.0.1, real kernels, Debian's Chromium driven by Playwright.

Without Chromium (or Playwright) these tests skip with a message saying how to run them; under `CI=true` they fail
instead, so CI can never pass without having run them. Everything the browser asks for beyond 127.0.0.1 is blocked
and counted: a view that reaches for a CDN fails its test.
"""
from __future__ import annotations

import os
import shutil

import pytest



from harness import CHROMIUM_ARGS, Page, start_server


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
def jupyter_data(tmp_path_factory):
    "A Jupyter data folder of the test session's own (notebook signatures, runtime files), shared by its servers."
    return tmp_path_factory.mktemp('jupyter-data')


@pytest.fixture(scope='session')
def lab(tmp_path_factory, jupyter_data):
    "A JupyterLab server on 127.0.0.1 with no token, stopped by its PID at the end of the session."
    with start_server('lab', tmp_path_factory.mktemp('lab'), tmp_path_factory.mktemp('lab-settings'), jupyter_data) as server:
        yield server


@pytest.fixture(scope='session')
def notebook7(tmp_path_factory, jupyter_data):
    "A Notebook 7 server (the `notebook` package) on 127.0.0.1, sharing the session's notebook signatures with `lab`."
    with start_server('notebook', tmp_path_factory.mktemp('nb7'), tmp_path_factory.mktemp('nb7-settings'), jupyter_data) as server:
        yield server


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


