"""Headless Chromium for the browser tests: the one browser, a page helper, axe-core, screenshots.

Chromium and chromedriver are Debian's (`deploy/chromium/ensure.sh` installs them when
missing); Selenium drives them through the system chromedriver, never a downloaded one.
The browser reaches no host but `localhost` and 127.0.0.1: anything a page tries to load from
outside the machine fails, shows in the console, and so fails the test.

axe-core is vendored in `vendor/axe-core-4.14.1/` as npm ships it (`npm pack axe-core@4.14.1`,
`package/axe.min.js`; integrity sha512-FHfa+lmNjQZfJz1q8wKqIDwC6DExcHt/pkjNQb09a3NPjCKg2rhu5qb2
S4r76ASyFNNtuFooJpZe37OgudVGtQ==), with its licence (MPL-2.0) and third-party notices.
"""

import base64
import re
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.command import Command
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from tests.support.infra import ROOT

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ENSURE_CHROMIUM = ROOT / "deploy/chromium/ensure.sh"
AXE_JS = Path(__file__).with_name("vendor") / "axe-core-4.14.1" / "axe.min.js"
SCREENSHOTS = ROOT / "var/screenshots"

DESKTOP = (1366, 900)
PHONE = (390, 844)  # a common phone's CSS viewport
# axe's impact levels that fail a test.
FAILING_IMPACTS = ("serious", "critical")
# A full-page screenshot stops here: a person looks at the top of a very long page anyway.
MAX_SCREENSHOT_HEIGHT = 8000


def ensure_chromium() -> None:
    """Install Debian's chromium and chromium-driver if either is missing (once per machine)."""
    if CHROMIUM.exists() and CHROMEDRIVER.exists():
        return
    subprocess.run([str(ENSURE_CHROMIUM)], check=True, stdin=subprocess.DEVNULL)


def start_chromium() -> webdriver.Chrome:
    """One headless Chromium through the system chromedriver, logging the page's console."""
    ensure_chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        # Tests run as root (CI, containers), where Chromium's sandbox cannot start.
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={DESKTOP[0]},{DESKTOP[1]}",
        "--lang=en-US",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-extensions",
        # Nothing outside the machine: any other host name fails to resolve.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    # axe-core on a whole API reference (ReDoc's page holds every operation and schema) took
    # 38 s of one run on a loaded 2-core machine and over 30 s in another: a bound against a
    # script that hangs, not a measure of speed.
    driver.set_script_timeout(120)
    return driver


def browser_log(driver: webdriver.Chrome) -> list[dict[str, Any]]:
    """The console entries since the last read (chromedriver's "browser" log, then emptied)."""
    entries: list[dict[str, Any]] = driver.execute(Command.GET_LOG, {"type": "browser"})["value"]
    return entries


@dataclass
class ConsoleEntry:
    """One message from the page's console (or the browser's own, such as a failed load)."""

    level: str
    source: str
    message: str

    def __str__(self) -> str:
        return f"[{self.level} {self.source}] {self.message}"


@dataclass
class Violation:
    """One axe rule that failed, with the elements it failed on."""

    rule: str
    impact: str
    help: str
    help_url: str
    nodes: list[dict[str, Any]]

    def describe(self, max_nodes: int = 5) -> str:
        """A few lines a person can act on: the rule, where it failed, and what to fix."""
        lines = [f"- [{self.impact}] {self.rule}: {self.help} ({self.help_url})"]
        for node in self.nodes[:max_nodes]:
            target = " ".join(str(part) for part in node.get("target", []))
            summary = " ".join(str(node.get("failureSummary", "")).split())
            lines.append(f"    at {target}: {summary}")
        if len(self.nodes) > max_nodes:
            lines.append(f"    ... and {len(self.nodes) - max_nodes} more elements")
        return "\n".join(lines)


@dataclass
class Browser:
    """The session's Chromium, sized for one test, with the steps a test takes on a page.

    `driver` is the Selenium WebDriver for anything not covered here.
    """

    driver: webdriver.Chrome
    screenshots: Path
    size: str
    console: list[ConsoleEntry] = field(default_factory=list)
    allowed: list[re.Pattern[str]] = field(default_factory=list)
    steps: int = 0

    def open(self, url: str) -> None:
        """Load `url` and wait for the document (not for what its scripts fetch later)."""
        self.driver.get(url)

    def find(self, css: str, timeout: float = 10) -> WebElement:
        """The first element matching `css` once it is visible; fails after `timeout` seconds."""
        element: WebElement = WebDriverWait(self.driver, timeout).until(
            expected_conditions.visibility_of_element_located(("css selector", css)),
            f"nothing visible matches {css!r} on {self.driver.current_url} after {timeout} s",
        )
        return element

    def find_all(self, css: str) -> list[WebElement]:
        """Every element matching `css` now (possibly none)."""
        return list(self.driver.find_elements("css selector", css))

    def focused(self) -> WebElement:
        """The element that has the keyboard's focus."""
        return self.driver.switch_to.active_element

    def keys(self, *keys: str) -> None:
        """Type `keys` as a keyboard would, to whatever has the focus (`Keys.TAB`, text, ...)."""
        ActionChains(self.driver).send_keys(*keys).perform()

    def tab_to(self, css: str, limit: int = 100) -> WebElement:
        """Press Tab until an element matching `css` has the focus; fails after `limit` presses.

        For keyboard-only journeys: what a person reaches by Tab, in the page's order.
        """
        for _ in range(limit):
            self.keys(Keys.TAB)
            element = self.focused()
            if self.driver.execute_script(
                "return arguments[0].matches(arguments[1])", element, css
            ):
                return element
        raise AssertionError(
            f"{limit} presses of Tab never reached {css!r} on {self.driver.current_url}"
        )

    def wait_until_url(self, fragment: str, timeout: float = 10) -> str:
        """Wait until the address contains `fragment` (after a redirect or a form post)."""
        WebDriverWait(self.driver, timeout).until(
            expected_conditions.url_contains(fragment),
            f"the address never contained {fragment!r} (it is {self.driver.current_url})",
        )
        return self.driver.current_url

    def step(self, name: str, *, full_page: bool = True) -> Path:
        """Record a step: a screenshot `NN-<name>.png`, and no console error so far.

        Fails with the console's errors (those not allowed by `allow_console_error`).
        """
        self.steps += 1
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "step"
        path = self.screenshots / f"{self.steps:02d}-{slug}.png"
        self.screenshot(path, full_page=full_page)
        self.assert_no_console_errors(f"step {name!r}")
        return path

    def screenshot(self, path: Path, *, full_page: bool = True) -> None:
        """Write a PNG of the page: the whole page (up to a limit) or the viewport."""
        path.parent.mkdir(parents=True, exist_ok=True)
        if not full_page:
            self.driver.save_screenshot(str(path))
            return
        metrics = self.driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
        content = metrics["cssContentSize"]
        viewport = metrics["cssLayoutViewport"]
        shot = self.driver.execute_cdp_cmd(
            "Page.captureScreenshot",
            {
                "format": "png",
                # Faster encoding, larger files: a full page of ReDoc took 1.0 s of Chromium's
                # CPU at the default compression, 0.7 s so (650 KiB -> 870 KiB).
                "optimizeForSpeed": True,
                "captureBeyondViewport": True,
                "clip": {
                    "x": 0,
                    "y": 0,
                    "width": viewport["clientWidth"],
                    "height": min(max(content["height"], 1), MAX_SCREENSHOT_HEIGHT),
                    "scale": 1,
                },
            },
        )
        path.write_bytes(base64.b64decode(shot["data"]))

    def allow_console_error(self, pattern: str) -> None:
        """Accept console errors matching `pattern` (a regex) for the rest of the test.

        For an error the test causes on purpose, such as a form answered with 400.
        """
        self.allowed.append(re.compile(pattern))

    def read_console(self) -> list[ConsoleEntry]:
        """The console messages since the last read (they are kept in `console` too)."""
        entries = [
            ConsoleEntry(
                level=str(entry.get("level", "")),
                source=str(entry.get("source", "")),
                message=str(entry.get("message", "")),
            )
            for entry in browser_log(self.driver)
        ]
        self.console.extend(entries)
        return entries

    def console_errors(self) -> list[ConsoleEntry]:
        """The errors logged since the last check and not allowed."""
        return [
            entry
            for entry in self.read_console()
            if entry.level == "SEVERE"
            and not any(pattern.search(entry.message) for pattern in self.allowed)
        ]

    def assert_no_console_errors(self, where: str = "the page") -> None:
        """Fail with every console error logged since the last check."""
        errors = self.console_errors()
        if errors:
            listed = "\n".join(f"  {entry}" for entry in errors)
            raise AssertionError(
                f"{len(errors)} console error(s) at {where} ({self.driver.current_url}):\n{listed}"
            )

    def check_accessibility(self, *, exclude: Iterable[str] = (), name: str = "") -> None:
        """Run axe-core on the page; fail on any serious or critical violation.

        `exclude` takes CSS selectors of parts that are not the page's own (rarely needed).
        """
        if not self.driver.execute_script("return typeof window.axe !== 'undefined'"):
            self.driver.execute_script(AXE_JS.read_text(encoding="utf-8"))
        context = {"exclude": [[selector] for selector in exclude]} if exclude else None
        outcome = self.driver.execute_async_script(
            """
            const [context, done] = [arguments[0], arguments[arguments.length - 1]];
            window.axe.run(context || document, {resultTypes: ['violations']})
              .then((result) => done({violations: result.violations}))
              .catch((error) => done({error: String(error)}));
            """,
            context,
        )
        if "error" in outcome:
            raise AssertionError(f"axe-core could not run on {self.driver.current_url}: {outcome}")
        violations = [
            Violation(
                rule=item["id"],
                impact=item.get("impact") or "",
                help=item.get("help", ""),
                help_url=item.get("helpUrl", ""),
                nodes=item.get("nodes", []),
            )
            for item in outcome["violations"]
        ]
        failing = [violation for violation in violations if violation.impact in FAILING_IMPACTS]
        if failing:
            where = f" ({name})" if name else ""
            raise AssertionError(
                f"axe-core: {len(failing)} serious or critical accessibility violation(s) on "
                f"{self.driver.current_url}{where} ({self.size}):\n"
                + "\n".join(violation.describe() for violation in failing)
            )

    def set_accept_language(self, languages: str) -> None:
        """Send `Accept-Language: <languages>` from now on (e.g. "zh-CN,zh;q=0.9")."""
        agent = self.driver.execute_script("return navigator.userAgent")
        self.driver.execute_cdp_cmd(
            "Network.setUserAgentOverride", {"userAgent": agent, "acceptLanguage": languages}
        )


def reset(driver: webdriver.Chrome, size: tuple[int, int], *, phone: bool) -> None:
    """Make the shared browser new for a test: no cookies, no page, scripts on, the given screen."""
    driver.get("about:blank")
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.clearBrowserCookies", {})
    driver.execute_cdp_cmd("Network.clearBrowserCache", {})
    agent = driver.execute_script("return navigator.userAgent")
    driver.execute_cdp_cmd(
        "Network.setUserAgentOverride", {"userAgent": agent, "acceptLanguage": "en-US,en;q=0.9"}
    )
    width, height = size
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": phone},
    )
    driver.execute_cdp_cmd(
        "Emulation.setTouchEmulationEnabled", {"enabled": phone, "maxTouchPoints": 5}
    )
    # A test may have turned the page's scripts off (the site without JavaScript).
    driver.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": False})
    browser_log(driver)  # what earlier tests left in the console


def screenshot_dir(test_name: str) -> Path:
    """`var/screenshots/<test>/`, emptied: each run's screenshots replace the last run's."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", test_name).strip("-")
    directory = SCREENSHOTS / slug
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    return directory
