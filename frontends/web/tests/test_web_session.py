"""The API's tokens kept fresh: refreshed when the access token expires, the session ended when
the refresh token no longer works."""

from fastapi.testclient import TestClient
from web_fake_accounts import FakeAccounts, problem
from web_testkit import Clock


def grants(fake: FakeAccounts) -> list[str]:
    return [
        r.content.decode().split("grant_type=")[1].split("&")[0]
        for r in fake.requests
        if r.url.path == "/v1/auth/token"
    ]


def test_an_expired_access_token_is_refreshed_before_the_call(
    traveller: TestClient, fake: FakeAccounts, clock: Clock
) -> None:
    first = set(fake.access)
    clock.now += 901  # past expires_in

    answer = traveller.get("/cards")

    assert answer.status_code == 200
    assert grants(fake) == ["password", "refresh_token"]
    cards_call = [r for r in fake.requests if r.url.path == "/v1/cards"][-1]
    assert cards_call.headers["authorization"].removeprefix("Bearer ") not in first


def test_a_fresh_access_token_is_used_as_it_is(
    traveller: TestClient, fake: FakeAccounts, clock: Clock
) -> None:
    clock.now += 600

    traveller.get("/cards")

    assert grants(fake) == ["password"]


def test_an_access_token_refused_early_is_refreshed_once_and_the_call_repeated(
    traveller: TestClient, fake: FakeAccounts
) -> None:
    fake.access.clear()  # revoked at accounts, e.g. by a password reset elsewhere... but
    # the refresh token still works here, as after an access token's early rotation.

    answer = traveller.get("/cards")

    assert answer.status_code == 200
    assert grants(fake) == ["password", "refresh_token"]


def test_a_refused_refresh_token_ends_the_session_and_asks_to_sign_in(
    traveller: TestClient, fake: FakeAccounts, clock: Clock
) -> None:
    fake.refresh.clear()
    clock.now += 901

    answer = traveller.get("/cards")

    assert answer.status_code == 303 and answer.headers["location"] == "/signin"
    assert "Please sign in to continue." in traveller.get("/signin").text
    assert traveller.get("/cards").status_code == 303


def test_htmx_polling_after_the_session_ended_redirects_the_whole_page(
    traveller: TestClient, fake: FakeAccounts, clock: Clock
) -> None:
    fake.refresh.clear()
    clock.now += 901

    answer = traveller.get(
        "/renewals/11111111-1111-1111-1111-111111111111", headers={"HX-Request": "true"}
    )

    assert answer.headers["hx-redirect"] == "/signin"


def test_a_signed_out_visitor_is_sent_to_sign_in(client: TestClient) -> None:
    for path in ("/cards", "/profile", "/renewals/11111111-1111-1111-1111-111111111111"):
        answer = client.get(path)
        assert answer.status_code == 303 and answer.headers["location"] == "/signin"


def test_a_refresh_token_that_accounts_cannot_check_now_keeps_the_session(
    traveller: TestClient, fake: FakeAccounts, clock: Clock
) -> None:
    clock.now += 901
    fake.up = False

    answer = traveller.get("/cards")

    assert answer.status_code == 503
    assert "not answering just now" in answer.text
    fake.up = True
    assert traveller.get("/cards").status_code == 200


def test_accounts_not_ready_makes_the_site_not_ready(
    client: TestClient, fake: FakeAccounts
) -> None:
    assert client.get("/health/ready").status_code == 200
    fake.forced[("GET", "/health/live")] = problem(503, "not-ready", "down")

    answer = client.get("/health/ready")

    assert answer.status_code == 503
    assert answer.json()["checks"] == {"accounts": "unreachable"}
    assert client.get("/health/live").status_code == 200
    assert "esim_web_requests_total" in client.get("/metrics").text
