"""Browser helpers: Debian's Chromium driven by Playwright's Python package.

Playwright's own browser download does not work in our environments, so we
launch the system Chromium (/usr/bin/chromium, `apt-get install -y chromium`;
tests/setup_tools.py and CI install it). Without it the browser tests skip.
"""

import os

import pytest

CHROMIUM = os.environ.get("CLICKSTREAM_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(
    scope="package"
)  # Playwright's sync API keeps a loop running: end it with the package
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip(
            f"{CHROMIUM} not found: install Debian's Chromium "
            "(apt-get install -y chromium chromium-driver) to run the browser tests"
        )
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')"
    )
    pw = sync_api.sync_playwright().start()
    try:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    except Exception as e:
        pw.stop()
        pytest.skip(f"could not launch {CHROMIUM}: {e}")
    yield b
    b.close()
    pw.stop()


@pytest.fixture
def context(browser):
    """A fresh profile per test: no cookies, no localStorage."""
    ctx = browser.new_context()
    yield ctx
    ctx.close()


@pytest.fixture
def page(context):
    return context.new_page()


@pytest.fixture
def page_errors(page):
    """Uncaught exceptions thrown in the page (the tracker must cause none)."""
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return errors
