"""Browser tests: pages of the running platform in a real headless Chromium.

How to write one
----------------
Take `platform` (the session's whole platform, the same one the integration tests use: see
tests/conftest.py) and either `desktop` or `phone` (not both), then drive the page::

    def test_the_accounts_docs_list_the_operations(platform: Platform, desktop: Browser) -> None:
        desktop.open(platform.url("accounts") + "/docs")
        desktop.find(".opblock")            # waits until visible (10 s by default)
        desktop.step("operations listed")   # screenshot + no console error so far
        desktop.check_accessibility()       # axe-core: no serious or critical violation

Fixtures
--------
`chromium` (session)
    The one headless Chromium (Selenium `webdriver.Chrome`) for the whole session: Debian's
    `/usr/bin/chromium` through the system `/usr/bin/chromedriver`. If either is missing,
    `deploy/chromium/ensure.sh` installs both with apt-get first (as `make test`'s `chromium`
    target does). It resolves no host name but `localhost`, so anything a page loads from
    outside the machine fails and shows as a console error.
`desktop` / `phone` (function)
    A `tests.browser.harness.Browser` on that Chromium, reset for the test (no cookies, no
    cache, `Accept-Language: en-US`, the page `about:blank`), at 1366x900, or at a phone's
    390x844 with mobile viewport and touch emulation. Its methods:

    - `open(url)`; `find(css, timeout=10)` (visible element or a clear failure);
      `find_all(css)`; `driver` for anything else Selenium does.
    - keyboard: `keys(*keys)` types to the focused element (`Keys.TAB`, `Keys.ENTER`, text),
      `tab_to(css)` presses Tab until an element matching `css` has the focus (fails after
      100 presses), `focused()`; `wait_until_url(fragment)` after a redirect or a post.
    - `step(name)`: writes `var/screenshots/<test>/<NN>-<name>.png` (full page) and fails
      if the console has logged an error since the last check. Call it after each step a
      person would see; the screenshots are written on every run, passed or failed, and
      replace that test's screenshots of the previous run.
    - `check_accessibility(exclude=(), name="")`: injects the vendored axe-core 4.14.1
      (`vendor/axe-core-4.14.1/axe.min.js`, MPL-2.0) and fails on any serious or critical
      violation, listing rule, elements and the fix.
    - `allow_console_error(regex)`: accept an error the test causes on purpose (a form
      answered 400 logs "Failed to load resource: ... 400").
    - `set_accept_language("zh-CN,zh;q=0.9")`: the language the site sees before sign-in.

    When the test ends the console is checked once more (an error fails the test), and a
    failed test also leaves `failed.png` beside its steps.
`site` (module)
    The travellers' website (`python -m web`) on a free port in front of the platform's
    accounts; its address. `tests.browser.steps` has a traveller's steps on it (`new_traveller`,
    `bind_a_card`, `renew`, `fill` a field by its label, `press` a button by its text, ...).

Where they run
--------------
Every test here is marked `integration` and `browser`: `make test` runs them on a
platform of their own (the `browser` group of tests/conftest.py's `work_unit`), on the run's
shared broker; `make test-unit` leaves them out. With two databases (CI: sqlite and postgres) they
run on the first database's platform only: a page does not depend on where the services keep
their data. CI keeps `var/screenshots/` (see .ci/run).
"""

import sys
from collections.abc import Generator, Iterator

import pytest
from selenium import webdriver

from tests.browser.harness import (
    DESKTOP,
    PHONE,
    Browser,
    reset,
    screenshot_dir,
    start_chromium,
)
from tests.conftest import BROWSER, MODES
from tests.support.infra import Platform, Process, free_port, http_ok


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by mark
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the browser tests, and keep only those on the first database's platform."""
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        if not item.nodeid.startswith(BROWSER):
            kept.append(item)
            continue
        item.add_marker(pytest.mark.integration)
        item.add_marker(pytest.mark.browser)
        callspec = getattr(item, "callspec", None)
        mode = callspec.params.get("platform", MODES[0]) if callspec else MODES[0]
        (kept if mode == MODES[0] else dropped).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report on the item, so a fixture can tell that the test failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture(scope="package")
def chromium() -> Iterator[webdriver.Chrome]:
    """The browser tests' one headless Chromium (installed from Debian's packages when missing),
    closed when the worker moves on to other tests."""
    driver = start_chromium()
    try:
        yield driver
    finally:
        driver.quit()


_in_use: set[str] = set()


def _browser(
    request: pytest.FixtureRequest, driver: webdriver.Chrome, size: str
) -> Iterator[Browser]:
    if _in_use:
        pytest.fail("a test takes either `desktop` or `phone`: one browser, one size")
    _in_use.add(size)
    try:
        reset(driver, DESKTOP if size == "desktop" else PHONE, phone=size == "phone")
        browser = Browser(driver=driver, screenshots=screenshot_dir(request.node.name), size=size)
        yield browser
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:
            browser.screenshot(browser.screenshots / "failed.png")
        browser.assert_no_console_errors("the end of the test")
    finally:
        _in_use.clear()


@pytest.fixture
def desktop(request: pytest.FixtureRequest, chromium: webdriver.Chrome) -> Iterator[Browser]:
    """The browser at a desktop's size (1366x900)."""
    yield from _browser(request, chromium, "desktop")


@pytest.fixture
def phone(request: pytest.FixtureRequest, chromium: webdriver.Chrome) -> Iterator[Browser]:
    """The browser at a phone's width (390x844, mobile viewport, touch)."""
    yield from _browser(request, chromium, "phone")


@pytest.fixture(scope="module")
def site(platform: Platform) -> Iterator[str]:
    """The website (`python -m web`) on a free port, in front of the platform's accounts."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = Process(
        "web",
        [sys.executable, "-m", "web"],
        {
            "ESIM_ENV": "local",
            "WEB_HTTP_PORT": str(port),
            "WEB_ACCOUNTS_URL": platform.url("accounts"),
            "WEB_PUBLIC_URL": base,
            "WEB_SECURE_COOKIES": "false",
            "WEB_POLL_INTERVAL_S": "1",
            "PYTHONUNBUFFERED": "1",
        },
        platform.workdir / "web.log",
        http_ok(f"{base}/health/ready"),
    ).launch()
    try:
        process.wait_ready()
        yield base
    finally:
        process.stop()
