"""Helpers of the website's tests: the traveller, a clock, CSRF tokens, signing in."""

import re

from fastapi.testclient import TestClient
from web_fake_accounts import FakeAccounts

EMAIL = "li.wei@example.com"
PASSWORD = "a long password"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


class Clock:
    """A clock the tests move forward (the access token's expiry is judged by it)."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def csrf_of(client: TestClient, path: str = "/signin") -> str:
    """The CSRF token of the forms on a page."""
    found = CSRF.search(client.get(path).text)
    assert found, f"no CSRF token on {path}"
    return found.group(1)


def sign_in(client: TestClient, fake: FakeAccounts, locale: str = "en") -> None:
    """Register the traveller at the fake (unless there) and sign in through the site."""
    if EMAIL not in fake.users:
        fake.add_user(EMAIL, PASSWORD, locale=locale)
    answer = client.post(
        "/signin", data={"email": EMAIL, "password": PASSWORD, "csrf_token": csrf_of(client)}
    )
    assert answer.status_code == 303, answer.text
