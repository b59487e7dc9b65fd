"""The travellers' website in a real Chromium, against the whole platform: the seed's journey.

Each test takes a new traveller from sign-up on, binds a card of the demo inventory, and walks
the pages a person would, checking each with axe-core and leaving a screenshot of every step
under `var/screenshots/<test>/` (tests/browser/conftest.py). These run for tens of seconds each:
a renewal goes through Kafka, billing, the payment sandbox and provisioning for real.
"""

import re

import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement

from tests.browser.harness import Browser
from tests.browser.steps import (
    bind_a_card,
    fill,
    mail_to,
    new_traveller,
    press,
    renew,
    sentence,
    text_of,
    to_the_providers_page,
    until,
    waiting_for_approval,
)
from tests.support.infra import Platform

pytestmark = [pytest.mark.integration, pytest.mark.browser]


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
    # The same swap brings what was not known when the page was opened: the amount, the receipt.
    progress = text_of(desktop, "#progress")
    assert "Amount" in progress and "Receipt" in progress, progress
    desktop.step("renewal live")
    desktop.check_accessibility(name="renewal")
    receipt = mail_to(platform, address, renewal_id)
    assert renewal_id in receipt

    desktop.open(f"{site}/cards/{iccid}/history")
    desktop.step("history with the receipt")
    desktop.check_accessibility(name="history")
    desktop.find(f"a[href='/renewals/{renewal_id}/receipt']").click()
    until(lambda: "/receipt" in desktop.driver.current_url, "the receipt page opening", 30)
    assert renewal_id in text_of(desktop, "main")
    desktop.step("receipt")
    desktop.check_accessibility(name="receipt")
    desktop.open(f"{site}/cards/{iccid}")
    assert "Measured at" in desktop.find("main").text
    desktop.step("card with its live plan")
    desktop.check_accessibility(name="card with its live plan")


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

    # Starting another plan now: the quote says what the live plan gives up, and the public
    # offer's discount, before anything is paid (nothing is: the traveller goes back).
    desktop.open(f"{site}/cards/{iccid}/renew")
    desktop.find("input[name=start][value=now]").click()
    fill(desktop, "Promotion code (optional)", "WELCOME10")
    press(desktop, "See the price")
    warning = text_of(desktop, ".warning")
    assert "you give up" in warning and re.search(r"\d+ days?", warning), warning
    assert "Discount (WELCOME10)" in text_of(desktop, ".facts")
    desktop.step("quote of starting now, its forfeit and the offer's discount")
    desktop.check_accessibility(name="quote with a forfeit")

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
