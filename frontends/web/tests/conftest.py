"""The website with its accounts API faked: a TestClient, the fake, and a signed-in traveller."""

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from web.app import create_app
from web.settings import WebSettings
from web_fake_accounts import FakeAccounts
from web_testkit import EMAIL, PASSWORD, Clock, sign_in


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


@pytest.fixture
def traveller(client: TestClient, fake: FakeAccounts) -> TestClient:
    """The client signed in as a traveller with one card."""
    fake.add_user(EMAIL, PASSWORD)
    fake.add_card(EMAIL)
    sign_in(client, fake)
    return client
