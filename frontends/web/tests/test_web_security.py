"""The site's security rules: CSRF, cross-site posts, cookies, CSP, escaping, nothing in URLs."""

import re

import pytest
from esim_core.production import LocalDefaultsError, refuse_local_defaults
from fastapi.testclient import TestClient
from pydantic import ValidationError
from web.app import create_app
from web.settings import WebSettings
from web_fake_accounts import FakeAccounts
from web_testkit import EMAIL, PASSWORD, Clock, csrf_of, sign_in

ICCID = "8986012345678901234"
#: Every state-changing form of the site, with a body that would otherwise be valid.
POSTS = [
    ("/signup", {"email": "new@example.com", "password": "a long password"}),
    ("/signin", {"email": EMAIL, "password": PASSWORD}),
    ("/signout", {}),
    ("/password/forgot", {"email": EMAIL}),
    ("/password/reset", {"email": EMAIL, "code": "123456", "new_password": "another password"}),
    ("/profile", {"name": "Li"}),
    ("/locale", {"locale": "zh-CN"}),
    ("/cards", {"iccid": "8986000000000000001", "activation_code": "LPA:1$x$y"}),
    (f"/cards/{ICCID}/quote", {"plan_code": "JP-30D-10GB"}),
    (
        f"/cards/{ICCID}/renewals",
        {"plan_code": "JP-30D-10GB", "method": "card", "token": "card_ok"},
    ),
    (f"/cards/{ICCID}/auto-renew", {"enabled": "on"}),
    ("/renewals/11111111-1111-1111-1111-111111111111/cancel", {"understood": "on"}),
]


@pytest.mark.parametrize(("path", "form"), POSTS)
def test_a_form_without_its_csrf_token_is_refused_with_403(
    traveller: TestClient, fake: FakeAccounts, path: str, form: dict[str, str]
) -> None:
    before = len(fake.requests)

    answer = traveller.post(path, data=form)

    assert answer.status_code == 403
    assert "sent from another site" in answer.text
    assert len(fake.requests) == before, "nothing may reach accounts"


@pytest.mark.parametrize(("path", "form"), POSTS)
def test_a_form_with_a_wrong_csrf_token_is_refused_with_403(
    traveller: TestClient, path: str, form: dict[str, str]
) -> None:
    answer = traveller.post(path, data={**form, "csrf_token": "0" * 64})

    assert answer.status_code == 403


def test_a_token_from_another_session_is_refused(client: TestClient, fake: FakeAccounts) -> None:
    fake.add_user(EMAIL, PASSWORD)
    stolen = csrf_of(client)
    client.cookies.clear()

    answer = client.post(
        "/signin", data={"email": EMAIL, "password": PASSWORD, "csrf_token": stolen}
    )

    assert answer.status_code == 403


@pytest.mark.parametrize(
    "headers",
    [{"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}, {"Origin": "null"}],
)
def test_a_cross_site_post_is_refused_even_with_the_right_token(
    traveller: TestClient, headers: dict[str, str]
) -> None:
    token = csrf_of(traveller, "/cards")

    answer = traveller.post("/locale", data={"locale": "en", "csrf_token": token}, headers=headers)

    assert answer.status_code == 403


def test_a_same_origin_post_with_the_token_is_accepted(traveller: TestClient) -> None:
    token = csrf_of(traveller, "/cards")

    answer = traveller.post(
        "/locale",
        data={"locale": "en", "csrf_token": token},
        headers={"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"},
    )

    assert answer.status_code == 303


def test_the_session_cookie_is_httponly_samesite_lax_and_sealed(
    client: TestClient, fake: FakeAccounts
) -> None:
    fake.add_user(EMAIL, PASSWORD)
    answer = client.post(
        "/signin", data={"email": EMAIL, "password": PASSWORD, "csrf_token": csrf_of(client)}
    )

    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie.replace("Lax", "lax")
    assert "Secure" not in cookie  # the local run's setting in these tests
    for token in [*fake.access, *fake.refresh]:
        assert token not in cookie, "tokens travel sealed, never readable"


def test_cookies_are_secure_outside_the_local_run(fake: FakeAccounts) -> None:
    settings = WebSettings(
        cookie_secret="c" * 40, csrf_secret="s" * 40, public_url="http://testserver"
    )
    with TestClient(create_app(settings, transport=fake.transport(), clock=Clock())) as client:
        answer = client.get("/signin")

    assert "Secure" in answer.headers["set-cookie"]


def test_secrets_are_required_outside_the_local_run() -> None:
    with pytest.raises(ValidationError, match="WEB_COOKIE_SECRET is required"):
        WebSettings(secure_cookies=True, csrf_secret="s" * 40)
    with pytest.raises(ValidationError, match="at least 32"):
        WebSettings(secure_cookies=False, cookie_secret="short")


def test_an_altered_cookie_is_a_fresh_anonymous_session(traveller: TestClient) -> None:
    sealed = traveller.cookies["esim_session"]
    traveller.cookies.set(
        "esim_session", sealed[:-4] + ("AAAA" if not sealed.endswith("AAAA") else "BBBB")
    )

    answer = traveller.get("/cards")

    assert answer.status_code == 303 and answer.headers["location"] == "/signin"


def test_every_page_sends_a_csp_without_inline_scripts(client: TestClient) -> None:
    for path in ("/", "/signin", "/static/site.css", "/nowhere"):
        policy = client.get(path).headers["content-security-policy"]
        assert "script-src 'self'" in policy
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
        assert "frame-ancestors 'none'" in policy


def test_pages_load_nothing_from_outside_the_site(client: TestClient) -> None:
    page = client.get("/").text

    sources = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert sources and all(source.startswith(("/", "#")) for source in sources), sources
    # Nothing inline for the CSP to refuse: no script body, no style or event attribute.
    assert "<script>" not in page and " style=" not in page
    assert not re.search(r"\son[a-z]+=", page)
    assert client.get("/static/vendor/htmx/htmx.min.js").status_code == 200


def test_a_name_with_a_script_tag_shows_as_text(traveller: TestClient, fake: FakeAccounts) -> None:
    fake.users[EMAIL]["name"] = "<script>alert(1)</script>"
    fake.cards[ICCID]["plan_code"] = '"><img src=x onerror=alert(1)>'

    profile = traveller.get("/profile").text
    card = traveller.get(f"/cards/{ICCID}").text

    assert "<script>alert(1)</script>" not in profile
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in profile
    assert "<img src=x" not in card and "&lt;img src=x" in card


def test_no_token_or_code_ever_appears_in_a_url(traveller: TestClient, fake: FakeAccounts) -> None:
    token = csrf_of(traveller, "/cards")
    traveller.post("/password/forgot", data={"email": EMAIL, "csrf_token": token})
    traveller.post(
        "/password/reset",
        data={"email": EMAIL, "code": "654321", "new_password": "x" * 10, "csrf_token": token},
    )
    secrets_seen = [*fake.access, *fake.refresh, "654321", PASSWORD]
    pages = [traveller.get(p).text for p in ("/", "/plans", "/phones", "/offers", "/signin")]

    for request in fake.requests:
        assert not any(secret in str(request.url) for secret in secrets_seen), request.url
    for page in pages:
        for url in re.findall(r'(?:href|action|src|hx-get)="([^"]*)"', page):
            assert not any(secret in url for secret in secrets_seen), url


def test_the_travellers_address_goes_to_accounts_in_x_forwarded_for(
    client: TestClient, fake: FakeAccounts
) -> None:
    fake.add_user(EMAIL, PASSWORD)
    sign_in(client, fake)

    signin = next(r for r in fake.requests if r.url.path == "/v1/auth/token")
    assert signin.headers["x-forwarded-for"] == "testclient"
    assert all("x-forwarded-for" in r.headers for r in fake.requests)


def test_sign_out_ends_the_session_at_accounts_and_here(
    traveller: TestClient, fake: FakeAccounts
) -> None:
    refresh = next(iter(fake.refresh))

    answer = traveller.post("/signout", data={"csrf_token": csrf_of(traveller, "/cards")})

    assert answer.status_code == 303
    assert fake.logged_out == [refresh]
    assert traveller.get("/cards").headers["location"] == "/signin"


def test_back_from_the_provider_its_parameters_are_dropped_from_the_address(
    traveller: TestClient,
) -> None:
    answer = traveller.get(
        "/renewals/11111111-1111-1111-1111-111111111111?token=EC-123&PayerID=ABC"
    )

    assert answer.status_code == 303
    assert answer.headers["location"] == "/renewals/11111111-1111-1111-1111-111111111111"


def test_production_refuses_the_local_runs_website_settings_by_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("ESIM_ENV", raising=False)
    settings = WebSettings(
        secure_cookies=False,
        cookie_secret="compose-demo-only-cookie-secret-change-me-0123456789",
        csrf_secret="Jq8Zr2Lx7Vm3Pt9KaWn4Yb6Hd1Fs5Gc0",
    )

    with pytest.raises(LocalDefaultsError) as caught:
        refuse_local_defaults(settings)

    message = str(caught.value)
    for setting in (
        "WEB_PUBLIC_URL: points at this machine (http://127.0.0.1:8080)",
        "WEB_ACCOUNTS_URL: points at this machine",
        "WEB_SECURE_COOKIES: is off",
        "WEB_TEST_CARD_TOKENS: offers the sandbox's test cards",
        "WEB_COOKIE_SECRET: is a demo or placeholder value",
    ):
        assert setting in message
    assert "WEB_CSRF_SECRET" not in message
    assert "compose-demo-only" not in message


def test_production_website_settings_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ESIM_ENV", raising=False)
    settings = WebSettings(
        public_url="https://www.travel.example.com",
        accounts_url="http://accounts.esim.svc.cluster.local:8000",
        cookie_secret="Kq8Zr2Lx7Vm3Pt9KaWn4Yb6Hd1Fs5Gc0",
        csrf_secret="Jq8Zr2Lx7Vm3Pt9KaWn4Yb6Hd1Fs5Gc0",
        test_card_tokens="",
    )

    refuse_local_defaults(settings)
