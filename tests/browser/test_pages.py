"""Every page of the travellers' website in Chromium, each checked by axe-core, and what the
journey's tests leave out: the profile, auto-renew with its cap, and a renewal with JavaScript
turned off (the site is plain HTML; htmx only spares a reload).

Screenshots go under `var/screenshots/<test>/` as in test_journey.py.
"""

import uuid

import pytest
from selenium.webdriver.common.by import By

from tests.browser.harness import Browser
from tests.browser.steps import (
    PASSWORD,
    bind_a_card,
    fill,
    new_traveller,
    press,
    sentence,
    text_of,
    until,
)
from tests.support.infra import Platform

pytestmark = [pytest.mark.integration, pytest.mark.browser]

#: What a visitor reaches before signing in: the path and its heading, in English.
PUBLIC_PAGES = (
    ("/", "Keep your travel eSIM running"),
    ("/plans", "Plans"),
    ("/plans?country=JP&kind=monthly", "Plans"),
    ("/phones", "Does my phone support eSIM?"),
    ("/phones?q=pixel", "Does my phone support eSIM?"),
    ("/offers", "Current offers"),
    ("/signin", "Sign in"),
    ("/signup", "Create your account"),
    ("/password/forgot", "Forgot your password?"),
    ("/password/reset", "Set a new password"),
)


def heading(browser: Browser) -> str:
    """The page's first-level heading."""
    return browser.find("h1").text


def test_every_public_and_signed_in_page_passes_axe_at_a_desktops_size(
    platform: Platform, site: str, desktop: Browser
) -> None:
    """Each page once (no renewal is paid here), its heading, a screenshot and axe."""
    for path, title in PUBLIC_PAGES:
        desktop.open(f"{site}{path}")
        assert heading(desktop) == title, path
        if path == "/offers":
            assert "WELCOME10" in text_of(desktop, "main"), "the local run's public promotion"
        if path == "/phones?q=pixel":
            assert "Pixel" in text_of(desktop, "main")
        desktop.step(path.strip("/").replace("?", " ") or "home")
        desktop.check_accessibility(name=path)

    # A form answered with a problem: the sentence beside its field, still accessible.
    desktop.open(f"{site}/signin")
    fill(desktop, "E-mail address", "nobody-here@example.com")
    fill(desktop, "Password", "not the password")
    desktop.allow_console_error(r"/signin - Failed to load resource: the server responded")
    press(desktop, "Sign in")
    assert text_of(desktop, ".error, .problem"), "the refusal is said on the page"
    desktop.step("sign-in refused")
    desktop.check_accessibility(name="sign-in refused")

    desktop.allow_console_error(r"/no-such-page - Failed to load resource: .* 404")
    desktop.open(f"{site}/no-such-page")
    assert "There is no such page." in text_of(desktop, "main")
    desktop.step("missing page")
    desktop.check_accessibility(name="missing page")

    new_traveller(desktop, site)
    iccid = bind_a_card(desktop, platform)
    for path, name in (
        ("/cards", "my cards"),
        (f"/cards/{iccid}", "card without a plan"),
        (f"/cards/{iccid}/history", "card's history, empty"),
        ("/profile", "profile"),
    ):
        desktop.open(f"{site}{path}")
        desktop.find("h1")
        desktop.step(name)
        desktop.check_accessibility(name=path)


def test_the_profile_keeps_name_phone_language_and_channels_and_shows_markup_as_text(
    platform: Platform, site: str, desktop: Browser
) -> None:
    """A name with a script tag is kept and shown as text; the language switches the site."""
    new_traveller(desktop, site)
    desktop.open(f"{site}/profile")
    name = "<script>window.pwned = 1</script>Mei <b>Li</b>"
    fill(desktop, "Name", name)
    fill(desktop, "Mobile number", "+8613800138000")
    desktop.find("#f-locale option[value='zh-CN']").click()
    desktop.find("input[name=notify_email]").click()  # mail off, SMS stays on
    desktop.step("profile filled")
    press(desktop, "Save")

    assert desktop.find("html").get_attribute("lang") == "zh-Hans-CN"
    assert heading(desktop) == "个人资料"
    assert desktop.find("#f-name").get_attribute("value") == name
    assert desktop.find("#f-phone").get_attribute("value") == "+8613800138000"
    assert not desktop.find("input[name=notify_email]").is_selected()
    assert desktop.find("input[name=notify_sms]").is_selected()
    assert desktop.driver.execute_script("return typeof window.pwned") == "undefined"
    assert not desktop.find_all("main script, main b")
    desktop.step("profile saved, in Chinese")
    desktop.check_accessibility(name="profile saved")


def test_auto_renew_is_turned_on_with_a_monthly_cap_from_the_cards_page(
    platform: Platform, site: str, desktop: Browser
) -> None:
    new_traveller(desktop, site)
    iccid = bind_a_card(desktop, platform)
    desktop.find("input[name=enabled]").click()
    fill(desktop, "Saved card or account (token)", "card_ok")
    fill(desktop, "Monthly cap (optional)", "50.00")
    desktop.step("auto-renew filled")
    press(desktop, "Save auto-renew")

    assert desktop.driver.current_url.endswith(f"/cards/{iccid}")
    said = text_of(desktop, "section[aria-labelledby=auto-title] > p")
    assert said.startswith("On:") and "a month" in said and "50" in said, said
    assert desktop.find("input[name=enabled]").is_selected()
    desktop.step("auto-renew on with its cap")
    desktop.check_accessibility(name="auto-renew on")


def test_a_whole_renewal_works_with_javascript_turned_off(
    platform: Platform, site: str, desktop: Browser
) -> None:
    """No script runs on the site's pages (Chromium's own switch): sign-up, binding, the
    quote, paying and following the renewal by reloading its page, to a live plan (some 20 s).
    axe-core cannot run on such a page (it needs the page's scripts): the other tests check
    these pages with it."""
    desktop.driver.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": True})
    desktop.open(f"{site}/signup")
    fill(desktop, "E-mail address", f"no-script-{uuid.uuid4().hex[:10]}@example.com")
    fill(desktop, "Password", PASSWORD)
    press(desktop, "Create account")
    assert desktop.driver.current_url.endswith("/cards")
    assert desktop.driver.execute_script("return typeof window.htmx") == "undefined", (
        "the site's script did not run"
    )
    iccid = bind_a_card(desktop, platform)

    desktop.open(f"{site}/cards/{iccid}/renew")
    desktop.find("input[name=start][value=now]").click()
    press(desktop, "See the price")
    desktop.find("input[name=method][value=card]").click()
    fill(desktop, "Saved card (for Card)", "card_ok")
    desktop.step("payment filled, without JavaScript")
    desktop.driver.find_element(By.CSS_SELECTOR, "form[action$='/renewals'] button").click()
    desktop.find("#progress")
    renewal_id = desktop.driver.current_url.rsplit("/", 1)[1]

    def live_after_a_reload() -> bool:
        # A person without scripts follows the saga with the page's own "Reload" link (opened
        # here by its address, so the next look waits for the reloaded page).
        if "Live now" in sentence(desktop):
            return True
        reload = desktop.driver.find_element(By.LINK_TEXT, "Reload").get_attribute("href")
        assert reload == f"{site}/renewals/{renewal_id}"
        desktop.open(reload)
        return False

    if "Live now" not in sentence(desktop):
        assert "updates by itself" not in text_of(desktop, "#progress"), "no promise scripts keep"
        desktop.step("renewal running, without JavaScript")
    until(live_after_a_reload, "the renewal going live, seen by reloading its page")
    assert desktop.driver.current_url == f"{site}/renewals/{renewal_id}"
    desktop.step("live, without JavaScript")
    desktop.open(f"{site}/cards/{iccid}")
    assert "Measured at" in text_of(desktop, "main")
    press(desktop, "Sign out")
    assert "You are signed out." in text_of(desktop, ".flash")
    desktop.step("signed out, without JavaScript")
