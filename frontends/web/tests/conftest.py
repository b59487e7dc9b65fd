"""The website with its accounts API faked: a TestClient, the fake, and a signed-in traveller."""

import re
from collections.abc import Iterator

import pytest
from fake_accounts import FakeAccounts
from fastapi.testclient import TestClient
from web.app import create_app
from web.settings import WebSettings

EMAIL = "li.wei@example.com"
PASSWORD = "a long password"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


class Clock:
    """A clock the tests move forward (the access token's expiry is judged by it)."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fake() -> FakeAccounts:
    return FakeAccounts()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def settings() -> WebSettings:
    return WebSettings(
        secure_cookies=False,
        cookie_secret="a cookie secret of the tests, 32+ characters",
        csrf_secret="a csrf secret of the tests, at least 32 chars",
        public_url="http://testserver",
    )


@pytest.fixture
def client(fake: FakeAccounts, clock: Clock, settings: WebSettings) -> Iterator[TestClient]:
    app = create_app(settings, transport=fake.transport(), clock=clock)
    with TestClient(app, follow_redirects=False) as test_client:
        yield test_client


def csrf_of(client: TestClient, path: str = "/signin") -> str:
    """The CSRF token of the forms on a page."""
    found = CSRF.search(client.get(path).text)
    assert found, f"no CSRF token on {path}"
    return found.group(1)


def sign_in(client: TestClient, fake: FakeAccounts, locale: str = "en") -> None:
    """Register the traveller at the fake and sign in through the site."""
    if EMAIL not in fake.users:
        fake.add_user(EMAIL, PASSWORD, locale=locale)
    answer = client.post(
        "/signin", data={"email": EMAIL, "password": PASSWORD, "csrf_token": csrf_of(client)}
    )
    assert answer.status_code == 303, answer.text


@pytest.fixture
def traveller(client: TestClient, fake: FakeAccounts) -> TestClient:
    """The client signed in as a traveller with one card."""
    fake.add_user(EMAIL, PASSWORD)
    fake.add_card(EMAIL)
    sign_in(client, fake)
    return client
