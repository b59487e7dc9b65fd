"""The steps a traveller takes on the website, shared by the browser tests of its pages.

Each finds a control as a person does (by its label or its button's text) and waits for what
the step leads to, bounded, failing with what did not happen.
"""

import email
import email.policy
import time
import uuid
from collections.abc import Callable

from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser.harness import Browser
from tests.support.client import next_card
from tests.support.infra import Platform

PASSWORD = "a long password"
#: How long a renewal may take to reach its end through the real services.
SAGA_S = 60.0


def until(condition: Callable[[], bool], what: str, timeout: float = SAGA_S) -> None:
    """Wait for `condition`, polling (bounded); fail saying `what` did not happen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.3)
    raise AssertionError(f"{what} did not happen within {timeout:.0f} s")


def fill(browser: Browser, label: str, value: str) -> WebElement:
    """Type into the control a label names (as a person finds it: by its label)."""
    xpath = f"//label[normalize-space()={label!r}]"
    until(
        lambda: bool(browser.driver.find_elements(By.XPATH, xpath)),
        f"a field labelled {label!r}",
        timeout=10,
    )
    target = browser.driver.find_element(By.XPATH, xpath)
    field = browser.find(f"#{target.get_attribute('for')}")
    field.clear()
    field.send_keys(value)
    return field


def press(browser: Browser, text: str) -> None:
    """Click the button whose text is `text`, and wait for the page its form leads to."""
    page = browser.driver.find_element(By.TAG_NAME, "html")
    browser.driver.find_element(By.XPATH, f"//button[normalize-space()={text!r}]").click()

    def left(_: object) -> bool:
        # The old page is gone once its element cannot be read. Chromium may say so as a stale
        # element or, caught mid-navigation, as "Node ... does not belong to the document".
        try:
            page.is_enabled()
        except WebDriverException:
            return True
        return False

    WebDriverWait(browser.driver, 30).until(left)


def text_of(browser: Browser, css: str) -> str:
    """The text of the element `css` names now, or "" while there is none; read in one script
    call, since a navigation or an htmx swap may replace it at any moment (a WebElement found
    before that goes stale)."""
    text = browser.driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e === null ? '' : e.innerText;",
        css,
    )
    return str(text)


def sentence(browser: Browser) -> str:
    """The renewal page's sentence of how the renewal stands."""
    return text_of(browser, "#progress .sentence")


def new_traveller(browser: Browser, site: str) -> str:
    """Sign up through the form; the traveller lands on their (empty) cards page."""
    address = f"web-{uuid.uuid4().hex[:10]}@example.com"
    browser.open(f"{site}/signup")
    fill(browser, "E-mail address", address)
    fill(browser, "Password", PASSWORD)
    browser.step("sign-up form")
    browser.check_accessibility(name="sign up")
    press(browser, "Create account")
    browser.find(".flash")
    return address


def bind_a_card(browser: Browser, platform: Platform) -> str:
    """Bind the next demo card no test on this platform has had (`next_card`, which the API
    tests take theirs from too: a card picked at random here had been handed to one of them
    later, which then found it bound)."""
    for _ in range(10):
        iccid, code = next_card(platform)
        fill(browser, "ICCID", iccid)
        fill(browser, "Activation code", code)
        browser.allow_console_error(r"status of 409")
        press(browser, "Bind the card")
        if browser.driver.current_url.endswith(f"/cards/{iccid}"):
            browser.step("card bound")
            return iccid
    raise AssertionError("no free demo card could be bound")


def renew(
    browser: Browser, site: str, iccid: str, start: str, token: str = "", method: str = "card"
) -> str:
    """Choose the first plan, see the quote, pay with a saved card (or by PayPal or Alipay,
    which need none); the renewal's id."""
    browser.open(f"{site}/cards/{iccid}/renew")
    browser.find("input[name=plan_code]")
    browser.find(f"input[name=start][value={start}]").click()
    browser.step(f"plan chosen ({start})")
    browser.check_accessibility(name="renew")
    press(browser, "See the price")
    browser.find("input[name=token]")
    browser.step("quote")
    browser.check_accessibility(name="quote")
    overflow = browser.driver.execute_script(
        "const page = document.documentElement; return page.scrollWidth - page.clientWidth;"
    )
    assert overflow <= 0, "the payment step (its long test card names too) fits the screen"
    browser.find(f"input[name=method][value={method}]").click()
    if token:
        fill(browser, "Saved card (for Card)", token)
    browser.driver.find_element(By.CSS_SELECTOR, "form[action$='/renewals'] button").click()
    browser.find("#progress")
    return browser.driver.current_url.rsplit("/", 1)[1]


def to_the_providers_page(browser: Browser, site: str) -> None:
    """Follow the renewal page's link to the provider's page (3-D Secure, PayPal, Alipay).

    The link is inside the progress that htmx swaps every second, so a link found just before
    a swap goes stale: find and click it again until the browser has left the site."""

    def clicked() -> bool:
        try:
            browser.driver.find_element(By.CSS_SELECTOR, "#progress a.button").click()
        except StaleElementReferenceException:
            return False
        return not browser.driver.current_url.startswith(site)

    until(clicked, "leaving for the provider's page", timeout=30)
    # The sandbox serves the provider's page and no icon: the browser's own favicon request.
    browser.allow_console_error(r"/favicon\.ico ")


def waiting_for_approval(browser: Browser) -> None:
    """Wait until the renewal page asks the buyer to approve at the provider."""
    until(
        lambda: (
            "needs your approval" in sentence(browser)
            and "Approve before" in text_of(browser, "#progress")
        ),
        "the renewal asking for the buyer's approval",
    )


def mail_to(platform: Platform, address: str, containing: str) -> str:
    """The text of the mail the SMTP sink received for `address` that mentions `containing`."""
    found: list[str] = []

    def arrived() -> bool:
        for path in sorted(platform.mail_dir.glob("*.eml")):
            message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            if address not in str(message["To"]):
                continue
            body = message.get_body(("plain",))
            text = body.get_content() if body is not None else ""
            if containing in text or containing in str(message["Subject"]):
                found.append(text)
                return True
        return False

    until(arrived, f"a mail to {address} about {containing}")
    return found[0]
