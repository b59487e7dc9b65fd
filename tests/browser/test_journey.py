"""The travellers' website in a real Chromium, against the whole platform: the seed's journey.

Each test takes a new traveller from sign-up on, binds a card of the demo inventory, and walks
the pages a person would, checking each with axe-core and leaving a screenshot of every step
under `var/screenshots/<test>/` (tests/browser/conftest.py). These run for tens of seconds each:
a renewal goes through Kafka, billing, the payment sandbox and provisioning for real.
"""

import email
import email.policy
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser.harness import Browser
from tests.support.client import next_card
from tests.support.infra import Platform, Process, free_port, http_ok

pytestmark = [pytest.mark.integration, pytest.mark.browser]

PASSWORD = "a long password"
#: How long a renewal may take to reach its end through the real services.
SAGA_S = 60.0


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


def test_a_new_traveller_renews_a_card_to_a_live_plan_and_gets_the_receipt(
    platform: Platform, site: str, desktop: Browser
) -> None:
    """Sign-up, binding, the quote, paying by card and the saga to ACTIVATED (some 20 s)."""
    address = new_traveller(desktop, site)
    desktop.check_accessibility(name="cards")
    iccid = bind_a_card(desktop, platform)
    desktop.check_accessibility(name="card")

    renewal_id = renew(desktop, site, iccid, "now", "card_ok")
    desktop.step("renewal running")

    # htmx swaps the progress in place: the page itself is never reloaded here.
    until(lambda: "Live now" in sentence(desktop), "the renewal going live")
    desktop.step("renewal live")
    desktop.check_accessibility(name="renewal")
    receipt = mail_to(platform, address, renewal_id)
    assert renewal_id in receipt

    desktop.open(f"{site}/cards/{iccid}/history")
    desktop.find(f"a[href='/renewals/{renewal_id}/receipt']").click()
    until(lambda: "/receipt" in desktop.driver.current_url, "the receipt page opening", 30)
    assert renewal_id in text_of(desktop, "main")
    desktop.step("receipt")
    desktop.check_accessibility(name="receipt")
    desktop.open(f"{site}/cards/{iccid}")
    assert "Measured at" in desktop.find("main").text
    desktop.step("card with its live plan")


def test_a_paypal_renewal_approved_at_paypals_page_comes_back_and_goes_live(
    platform: Platform, site: str, desktop: Browser
) -> None:
    """PayPal without a saved account: the buyer approves at PayPal's page (the payment
    sandbox's), comes back to the renewal, which goes on to a live plan (some 20 s)."""
    new_traveller(desktop, site)
    iccid = bind_a_card(desktop, platform)

    renewal_id = renew(desktop, site, iccid, "now", method="paypal")
    waiting_for_approval(desktop)
    desktop.step("waiting for the approval at PayPal")
    desktop.check_accessibility(name="approval step")

    to_the_providers_page(desktop, site)
    desktop.find("button[name=decision][value=approve]")
    desktop.step("PayPal's approval page")
    press(desktop, "Approve and continue")

    # Back on the renewal's own page, the provider's order id and payer id left out of it.
    assert desktop.driver.current_url == f"{site}/renewals/{renewal_id}"
    assert "Welcome back from the payment provider" in text_of(desktop, ".flash")
    desktop.step("back from PayPal")
    until(lambda: "Live now" in sentence(desktop), "the approved renewal going live")
    assert "Waiting for your approval" in text_of(desktop, "#progress .timeline")
    desktop.step("live after the approval")
    desktop.check_accessibility(name="renewal after the approval")


def test_an_alipay_payment_cancelled_at_the_cashier_ends_not_approved_in_chinese(
    platform: Platform, site: str, desktop: Browser
) -> None:
    """Alipay: the approval step in Chinese, the buyer cancels at Alipay's cashier (the
    payment sandbox's), and the renewal ends with the not-approved sentence (some 15 s)."""
    new_traveller(desktop, site)
    iccid = bind_a_card(desktop, platform)
    renewal_id = renew(desktop, site, iccid, "now", method="alipay")
    waiting_for_approval(desktop)

    desktop.find("#language option[value='zh-CN']").click()
    press(desktop, "Change")
    assert desktop.driver.current_url == f"{site}/renewals/{renewal_id}"
    until(
        lambda: (
            "支付机构需要您确认" in sentence(desktop)
            and "打开支付页面" in text_of(desktop, "#progress a.button")
        ),
        "the approval step in Chinese",
        timeout=10,
    )
    assert "请在" in text_of(desktop, "#progress")
    desktop.step("approval step in Chinese")
    desktop.check_accessibility(name="approval step in Chinese")

    to_the_providers_page(desktop, site)
    desktop.find("button[name=decision][value=cancel]")
    desktop.step("Alipay's cashier")
    press(desktop, "Cancel payment")

    assert desktop.driver.current_url == f"{site}/renewals/{renewal_id}"
    until(lambda: "付款未获确认" in sentence(desktop), "the renewal ending not approved")
    assert "未扣任何费用" in sentence(desktop)
    desktop.step("not approved, in Chinese")
    desktop.check_accessibility(name="not approved")


def test_a_card_asking_for_3d_secure_is_approved_at_the_banks_page_on_a_phone(
    platform: Platform, site: str, phone: Browser
) -> None:
    """At a phone's width, Stripe's test card that needs 3-D Secure: the bank's page (the
    payment sandbox's), then back to a live plan (some 20 s)."""
    new_traveller(phone, site)
    iccid = bind_a_card(phone, platform)

    renewal_id = renew(phone, site, iccid, "now", "pm_card_authenticationRequired")
    width = phone.driver.execute_script("return document.documentElement.scrollWidth")
    assert width <= 400, "the approval step fits the phone's screen"
    waiting_for_approval(phone)
    phone.step("waiting for 3-D Secure")

    to_the_providers_page(phone, site)
    phone.find("button[name=decision][value=approve]")
    phone.step("the bank's 3-D Secure page")
    press(phone, "Approve payment")

    assert phone.driver.current_url == f"{site}/renewals/{renewal_id}"
    until(lambda: "Live now" in sentence(phone), "the confirmed card payment going live")
    phone.step("live after 3-D Secure")
    phone.check_accessibility(name="renewal after 3-D Secure")


def test_an_early_renewal_waits_in_the_queue_with_its_dates_and_can_be_cancelled(
    platform: Platform, site: str, desktop: Browser
) -> None:
    """Two renewals (now, then after the current plan), then a cancel (some 30 s)."""
    new_traveller(desktop, site)
    iccid = bind_a_card(desktop, platform)
    renew(desktop, site, iccid, "now", "card_ok")
    until(lambda: "Live now" in sentence(desktop), "the first renewal going live")

    queued_id = renew(desktop, site, iccid, "after_current", "card_ok")
    until(lambda: "Paid and queued" in sentence(desktop), "the early renewal being queued")
    assert re.search(r"starts on \w+ \d+, \d{4}", sentence(desktop))
    desktop.step("early renewal queued")

    # The card's hold is captured just after the activation; a cancel before that is refused
    # with "try again in a moment", so wait for the "Charged" step as a traveller would.
    def charged() -> bool:
        desktop.open(f"{site}/renewals/{queued_id}")
        return "Charged" in text_of(desktop, "main")

    until(charged, "the capture after the activation", 60)
    desktop.open(f"{site}/cards/{iccid}")
    queued = desktop.find(".queued li").text
    assert re.search(r"From .+ until .+", queued)
    desktop.step("queued plan with its dates")
    desktop.check_accessibility(name="card with a queued plan")
    desktop.find(".queued input[name=understood]").click()
    press(desktop, "Cancel this plan")
    assert desktop.driver.current_url.endswith(f"/renewals/{queued_id}")
    until(lambda: "cancelled and your payment refunded" in sentence(desktop), "the refund")
    desktop.step("queued plan cancelled")


def test_a_forgotten_password_is_reset_with_the_mailed_code_on_a_phone(
    platform: Platform, site: str, phone: Browser
) -> None:
    """At a phone's width: ask for a code, read it from the mail, set a new password."""
    address = new_traveller(phone, site)
    press(phone, "Sign out")

    phone.open(f"{site}/password/forgot")
    phone.check_accessibility(name="forgot")
    fill(phone, "E-mail address", address)
    press(phone, "Send me a code")
    phone.step("code asked")
    code = re.search(r"\b(\d{6})\b", mail_to(platform, address, "code"))
    assert code, "the mail carries a 6-digit code"
    fill(phone, "Code", code.group(1))
    fill(phone, "New password", "another long password")
    phone.check_accessibility(name="reset")
    press(phone, "Set the new password")
    assert phone.driver.current_url.endswith("/signin")
    fill(phone, "E-mail address", address)
    fill(phone, "Password", "another long password")
    phone.step("sign in with the new password")
    press(phone, "Sign in")
    phone.find(".flash, h1")
    assert phone.driver.current_url.endswith("/cards")
    phone.step("signed in again")
    width = phone.driver.execute_script("return document.documentElement.scrollWidth")
    assert width <= 400, "nothing is wider than the phone's screen"


def test_the_language_switch_turns_every_page_into_chinese(
    platform: Platform, site: str, phone: Browser
) -> None:
    """The switch in the header, then each page of the journey in Chinese, at a phone's width."""
    phone.open(f"{site}/")
    phone.find("#language option[value='zh-CN']").click()
    press(phone, "Change")
    assert phone.find("html").get_attribute("lang") == "zh-Hans-CN"
    phone.step("home in Chinese")
    lines = phone.driver.execute_script(
        "const label = document.querySelector('.language label');"
        "const line = parseFloat(getComputedStyle(label).lineHeight);"
        "return label.getBoundingClientRect().height / line;"
    )
    assert lines < 1.5, "the switch's label (语言) stays on one line at a phone's width"
    for path, heading in [
        ("/plans", "套餐"),
        ("/phones", "我的手机支持 eSIM 吗\uff1f"),
        ("/offers", "当前优惠"),
        ("/signup", "创建您的账户"),
    ]:
        phone.open(f"{site}{path}")
        assert phone.find("h1").text == heading
        if path == "/plans":
            # The catalogue's English names and country codes, in Chinese.
            assert "日本 10 GB / 30 天" in text_of(phone, ".plans") and "Japan" not in text_of(
                phone, ".plans"
            )
            assert "日本、韩国" in text_of(phone, ".plans")
        phone.step(f"{path.strip('/')} in Chinese")
        phone.check_accessibility(name=path)


def test_a_whole_renewal_can_be_done_with_the_keyboard_alone(
    platform: Platform, site: str, desktop: Browser
) -> None:
    """Tab, the arrow keys, typing and Enter only, from the card's page to the live plan
    (some 20 s)."""
    new_traveller(desktop, site)
    iccid = bind_a_card(desktop, platform)

    def tab_to(css: str) -> WebElement:
        for _ in range(120):
            ActionChains(desktop.driver).send_keys(Keys.TAB).perform()
            active = desktop.driver.switch_to.active_element
            if desktop.driver.execute_script(
                "return arguments[0].matches(arguments[1])", active, css
            ):
                return active
        raise AssertionError(f"{css} cannot be reached with the Tab key")

    tab_to(f"a[href='/cards/{iccid}/renew']").send_keys(Keys.ENTER)
    desktop.find("input[name=plan_code]")
    # A radio group is one Tab stop; the arrow keys choose within it.
    tab_to("input[name=start]").send_keys(Keys.ARROW_DOWN)
    assert desktop.find("input[name=start][value=now]").is_selected()
    tab_to("form[action$='/quote'] button").send_keys(Keys.ENTER)
    desktop.find("input[name=token]")
    tab_to("input[name=token]").send_keys("card_ok")
    desktop.step("payment filled by keyboard")
    tab_to("form[action$='/renewals'] button").send_keys(Keys.ENTER)
    until(lambda: "Live now" in sentence(desktop), "the renewal going live")
    desktop.step("live after a keyboard-only renewal")
