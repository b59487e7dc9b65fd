"""Each service's API docs in Chromium: Swagger UI and ReDoc render from the machine alone.

The browser reaches nothing outside the machine (tests.browser.harness), so a page that still
loaded a script, stylesheet, font or image from a CDN would log an error and fail here.
"""

import pytest
from selenium.webdriver.common.keys import Keys

from tests.browser.harness import Browser
from tests.support.infra import Platform

pytestmark = [pytest.mark.integration, pytest.mark.browser]

SERVICES = ("accounts", "billing", "provisioning", "notifier")


@pytest.mark.parametrize("service", SERVICES)
def test_swagger_ui_shows_the_services_operations_and_passes_axe(
    platform: Platform, desktop: Browser, service: str
) -> None:
    desktop.open(platform.url(service) + "/docs")
    # The first page of a run waits for Swagger UI's script and the service's first
    # /openapi.json (FastAPI builds the schema then): on a loaded 2-core machine over 10 s once.
    title = desktop.find(".swagger-ui .info .title", timeout=30)
    assert f"eSIM {service}" in title.text
    operations = desktop.find_all(".swagger-ui .opblock")
    assert operations, f"{service}'s Swagger UI lists no operation"
    assert all(operation.is_displayed() for operation in operations)
    desktop.step("operations")
    desktop.check_accessibility(name="operations listed")

    # An operation opened: its parameters, request body and responses.
    desktop.find(".swagger-ui .opblock-summary-control").click()
    desktop.find(".swagger-ui .opblock.is-open .responses-wrapper")
    desktop.step("first operation open")
    desktop.check_accessibility(name="an operation open")


@pytest.mark.parametrize("service", SERVICES)
def test_redoc_shows_the_services_reference_and_passes_axe(
    platform: Platform, desktop: Browser, service: str
) -> None:
    desktop.open(platform.url(service) + "/redoc")
    heading = desktop.find(".api-info h1", timeout=20)
    assert f"eSIM {service}" in heading.text
    assert desktop.find_all(".api-content [id^='operation/'], .api-content [id^='tag/']")
    desktop.step("reference")
    desktop.check_accessibility(name="reference")


def test_the_accounts_docs_work_at_a_phones_width(platform: Platform, phone: Browser) -> None:
    phone.open(platform.url("accounts") + "/docs")
    phone.find(".swagger-ui .opblock")
    width = phone.driver.execute_script("return document.documentElement.scrollWidth")
    assert width <= 390 + 1, f"the page scrolls sideways at a phone's width ({width} px wide)"
    phone.step("operations")
    phone.check_accessibility(name="phone")


def test_an_operation_opens_and_closes_from_the_keyboard(
    platform: Platform, desktop: Browser
) -> None:
    desktop.open(platform.url("accounts") + "/docs")
    desktop.find(".swagger-ui .opblock")
    control = desktop.tab_to(".opblock-summary-control")
    assert control.get_attribute("aria-expanded") == "false"
    desktop.keys(Keys.ENTER)
    desktop.find(".swagger-ui .opblock.is-open .responses-wrapper")
    assert desktop.focused().get_attribute("aria-expanded") == "true"
    desktop.step("opened by keyboard")
    desktop.keys(Keys.ENTER)
    assert not desktop.find_all(".swagger-ui .opblock.is-open")
