"""Each problem answer of the accounts API becomes a sentence beside the field it concerns."""

import re

import pytest
from fastapi.testclient import TestClient
from web_fake_accounts import FakeAccounts, problem
from web_testkit import EMAIL, PASSWORD, csrf_of

ICCID = "8986012345678901234"


def error_of(page: str, field: str) -> str:
    """The sentence shown under a field (tied to it by aria-describedby)."""
    found = re.search(rf'<p class="error" id="e-{field}">([^<]*)</p>', page)
    assert found, f"no error beside {field}"
    assert 'aria-describedby="' in page and f"e-{field}" in page
    return found.group(1)


def test_a_taken_address_is_said_beside_the_email_field(
    client: TestClient, fake: FakeAccounts
) -> None:
    fake.add_user(EMAIL, PASSWORD)

    page = client.post(
        "/signup", data={"email": EMAIL, "password": PASSWORD, "csrf_token": csrf_of(client)}
    )

    assert page.status_code == 409
    assert "already has an account" in error_of(page.text, "email")
    assert "{" not in page.text.split("<main")[1].split("</main>")[0], "no raw JSON"


def test_a_short_password_is_said_beside_the_password_field(client: TestClient) -> None:
    page = client.post(
        "/signup",
        data={"email": "a@example.com", "password": "short", "csrf_token": csrf_of(client)},
    )

    assert page.status_code == 422
    assert error_of(page.text, "password") == "The password needs at least 8 characters."


def test_wrong_credentials_are_said_for_the_whole_form(
    client: TestClient, fake: FakeAccounts
) -> None:
    fake.add_user(EMAIL, PASSWORD)

    page = client.post(
        "/signin", data={"email": EMAIL, "password": "wrong one", "csrf_token": csrf_of(client)}
    )

    assert page.status_code == 401
    assert (
        '<div class="problem" role="alert">The e-mail address or the password is wrong.'
        in page.text
    )
    assert f'value="{EMAIL}"' in page.text, "the address is kept"


def test_too_many_tries_say_how_long_to_wait(client: TestClient, fake: FakeAccounts) -> None:
    fake.forced[("POST", "/v1/auth/token")] = problem(429, "rate-limited", "slow down")

    page = client.post(
        "/signin", data={"email": EMAIL, "password": "x" * 9, "csrf_token": csrf_of(client)}
    )

    assert page.status_code == 429
    assert "wait 42 seconds" in page.text


def test_a_wrong_reset_code_is_said_beside_the_code_field(
    client: TestClient, fake: FakeAccounts
) -> None:
    fake.add_user(EMAIL, PASSWORD)

    page = client.post(
        "/password/reset",
        data={
            "email": EMAIL,
            "code": "000000",
            "new_password": "a new password",
            "csrf_token": csrf_of(client),
        },
    )

    assert page.status_code == 400
    assert "wrong, already used or expired" in error_of(page.text, "code")


def test_the_mailed_code_sets_the_new_password(client: TestClient, fake: FakeAccounts) -> None:
    fake.add_user(EMAIL, PASSWORD)
    token = csrf_of(client, "/password/forgot")
    asked = client.post("/password/forgot", data={"email": EMAIL, "csrf_token": token})
    assert "a code is on its way" in asked.text

    done = client.post(
        "/password/reset",
        data={
            "email": EMAIL,
            "code": fake.reset_code,
            "new_password": "a new password",
            "csrf_token": token,
        },
    )

    assert done.status_code == 303 and done.headers["location"] == "/signin"
    assert fake.passwords[EMAIL] == "a new password"


@pytest.mark.parametrize(
    ("iccid", "sentence"),
    [
        (ICCID, "already bound to another account"),
        ("1234567890123456789", "No card has this ICCID"),
    ],
)
def test_a_card_that_cannot_be_bound_is_said_beside_the_iccid(
    traveller: TestClient, fake: FakeAccounts, iccid: str, sentence: str
) -> None:
    if iccid == ICCID:
        fake.owners[ICCID] = "someone.else@example.com"
    page = traveller.post(
        "/cards",
        data={
            "iccid": iccid,
            "activation_code": "LPA:1$a$b",
            "csrf_token": csrf_of(traveller, "/plans"),
        },
    )

    assert sentence in error_of(page.text, "iccid")


def test_a_bound_card_goes_to_its_page(traveller: TestClient) -> None:
    answer = traveller.post(
        "/cards",
        data={
            "iccid": "8986 0000 0000 0000 0007",
            "activation_code": "LPA:1$a$b",
            "csrf_token": csrf_of(traveller, "/plans"),
        },
    )

    assert answer.headers["location"] == "/cards/89860000000000000007"


def test_an_unknown_promotion_code_is_said_beside_its_field(traveller: TestClient) -> None:
    page = traveller.post(
        f"/cards/{ICCID}/quote",
        data={
            "plan_code": "JP-30D-10GB",
            "promo_code": "NOPE",
            "csrf_token": csrf_of(traveller, "/plans"),
        },
    )

    assert page.status_code == 422
    assert error_of(page.text, "promo_code") == "No promotion has this code."
    assert 'value="NOPE"' in page.text


def test_a_phone_not_in_e164_is_said_beside_the_phone_field(traveller: TestClient) -> None:
    page = traveller.post(
        "/profile",
        data={"phone": "13800138000", "locale": "en", "csrf_token": csrf_of(traveller, "/plans")},
    )

    assert page.status_code == 422
    assert "+8613800138000" in error_of(page.text, "phone")


def test_a_plan_that_has_started_cannot_be_cancelled_and_says_why(
    traveller: TestClient, fake: FakeAccounts
) -> None:
    fake.forced[("POST", "/v1/renewals/11111111-1111-1111-1111-111111111111/cancel")] = problem(
        409, "not-cancellable", "it is live"
    )

    answer = traveller.post(
        "/renewals/11111111-1111-1111-1111-111111111111/cancel",
        data={"understood": "on", "iccid": ICCID, "csrf_token": csrf_of(traveller, "/plans")},
    )

    assert answer.headers["location"] == f"/cards/{ICCID}"
    assert "can no longer be cancelled" in traveller.get(f"/cards/{ICCID}").text


def test_cancelling_needs_the_box_ticked_that_it_cannot_be_undone(
    traveller: TestClient, fake: FakeAccounts
) -> None:
    traveller.post(
        "/renewals/11111111-1111-1111-1111-111111111111/cancel",
        data={"iccid": ICCID, "csrf_token": csrf_of(traveller, "/plans")},
    )

    assert not [r for r in fake.requests if r.url.path.endswith("/cancel")]
    assert "cannot be restored" in traveller.get(f"/cards/{ICCID}").text


def test_a_cap_in_a_currency_the_plan_is_not_sold_in_is_said_beside_it(
    traveller: TestClient, fake: FakeAccounts
) -> None:
    fake.forced[("PUT", f"/v1/cards/{ICCID}/auto-renew")] = problem(422, "cap-currency", "no")

    page = traveller.post(
        f"/cards/{ICCID}/auto-renew",
        data={
            "enabled": "on",
            "plan_code": "JP-30D-10GB",
            "method": "card",
            "token": "card_ok",
            "cap_amount": "200",
            "cap_currency": "USD",
            "csrf_token": csrf_of(traveller, "/plans"),
        },
    )

    assert "not sold in the cap" in page.text


def test_auto_renew_is_sent_with_its_plan_payment_and_monthly_cap(
    traveller: TestClient, fake: FakeAccounts
) -> None:
    traveller.post(
        f"/cards/{ICCID}/auto-renew",
        data={
            "enabled": "on",
            "plan_code": "JP-30D-10GB",
            "method": "card",
            "token": "card_ok",
            "cap_amount": "200",
            "cap_currency": "CNY",
            "csrf_token": csrf_of(traveller, "/plans"),
        },
    )

    sent = [r for r in fake.requests if r.url.path.endswith("/auto-renew")][-1]
    assert sent.read() == (
        b'{"enabled":true,"plan_code":"JP-30D-10GB","payment":{"method":"card","token":"card_ok"},'
        b'"monthly_cap":{"amount":20000,"currency":"CNY"}}'
    )
    assert "Auto-renew is on." in traveller.get(f"/cards/{ICCID}").text


def test_field_errors_of_any_form_are_mapped_from_the_api_paths() -> None:
    from web.accounts import ApiProblemError
    from web.problems import explain

    said = explain(
        ApiProblemError(
            422,
            "validation",
            "bad",
            [
                {"field": "body.payment.token", "message": "Field required", "type": "missing"},
                {"field": "body.monthly_cap.amount", "message": "too big", "type": "less_than"},
            ],
        )
    )

    assert said.fields == {"token": "This is required.", "cap_amount": "too big"}


def test_accounts_not_answering_is_a_sentence_not_a_stack_trace(
    client: TestClient, fake: FakeAccounts
) -> None:
    fake.up = False
    token = csrf_of(client)

    page = client.post("/signin", data={"email": EMAIL, "password": PASSWORD, "csrf_token": token})

    assert page.status_code == 503
    assert "not answering just now" in page.text
    assert "Traceback" not in page.text


@pytest.mark.parametrize(
    ("method", "token", "field", "said"),
    [
        ("alipay", "alipay_ok", "method", "choose a card or PayPal (Alipay asks you every time)"),
        ("paypal", "", "token", "it needs a saved card or PayPal account"),
    ],
)
def test_auto_renew_without_a_source_it_can_charge_alone_is_said_beside_the_field(
    traveller: TestClient, fake: FakeAccounts, method: str, token: str, field: str, said: str
) -> None:
    page = traveller.post(
        f"/cards/{ICCID}/auto-renew",
        data={
            "enabled": "on",
            "plan_code": "JP-30D-10GB",
            "method": method,
            "token": token,
            "csrf_token": csrf_of(traveller, "/plans"),
        },
    )

    assert page.status_code == 422
    assert re.search(rf'<p class="error"( id="e-{field}")?>[^<]*{re.escape(said)}', page.text)
    assert not [r for r in fake.requests if r.url.path.endswith("/auto-renew")]
