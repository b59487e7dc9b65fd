"""Renewing from a card: the quote, the payment sent, following the saga, each way it ends."""

import json
import re
from typing import Any

import pytest
from fastapi.testclient import TestClient
from web.i18n import use_locale
from web.outcomes import outcome
from web_fake_accounts import FakeAccounts
from web_testkit import EMAIL, PASSWORD, csrf_of, sign_in

ICCID = "8986012345678901234"


def quote(client: TestClient, **form: str) -> str:
    token = csrf_of(client, "/plans")
    answer = client.post(
        f"/cards/{ICCID}/quote", data={"plan_code": "JP-30D-10GB", "csrf_token": token, **form}
    )
    assert answer.status_code == 200, answer.text
    return answer.text


def pay(client: TestClient, page: str, **form: str) -> Any:
    fields = dict(re.findall(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)"', page))
    return client.post(f"/cards/{ICCID}/renewals", data={**fields, **form})


def sent_payment(fake: FakeAccounts) -> dict[str, Any]:
    request = [r for r in fake.requests if r.url.path.endswith("/renewals") and r.method == "POST"][
        -1
    ]
    body: dict[str, Any] = json.loads(request.read())
    return body


def test_the_quote_shows_what_starting_now_forfeits_and_the_promotions_discount(
    traveller: TestClient,
) -> None:
    page = quote(traveller, start="now", promo_code="WELCOME10")

    assert "you give up 3.5 GB of data and 14 days" in page
    assert "Discount (WELCOME10)" in page and "\u2212$1.90" in page
    assert "Pay $17.10 now" in page


def test_the_quote_after_the_current_plan_says_it_waits_in_the_queue(traveller: TestClient) -> None:
    page = quote(traveller)

    assert "starts when the current plan ends, on Dec 20, 2026" in page
    assert "give up" not in page


def test_the_quote_states_the_refund_rules_before_paying(traveller: TestClient) -> None:
    page = quote(traveller)

    assert "a plan waiting in the queue can be cancelled" in page
    assert "a plan that has started is not refunded" in page

    traveller.post("/locale", data={"locale": "zh-CN", "csrf_token": csrf_of(traveller, "/plans")})
    assert "已开始的套餐不予退款" in quote(traveller)


def test_paying_by_card_sends_the_saved_card_and_the_return_page_then_follows_the_renewal(
    traveller: TestClient, fake: FakeAccounts
) -> None:
    page = quote(traveller)

    answer = pay(traveller, page, method="card", token="pm_card_visa")

    key = re.search(r'name="renewal_key" value="([^"]+)"', page).group(1)
    assert answer.status_code == 303 and answer.headers["location"] == f"/renewals/{key}"
    assert sent_payment(fake)["payment"] == {
        "method": "card",
        "token": "pm_card_visa",
        "return_url": f"http://testserver/renewals/{key}",
    }
    request = [r for r in fake.requests if r.url.path.endswith("/renewals")][-1]
    assert request.headers["idempotency-key"] == key


def test_sending_the_payment_form_twice_renews_once(
    traveller: TestClient, fake: FakeAccounts
) -> None:
    page = quote(traveller)

    pay(traveller, page, method="card", token="card_ok")
    pay(traveller, page, method="card", token="card_ok")

    keys = {r.headers["idempotency-key"] for r in fake.requests if r.url.path.endswith("/renewals")}
    assert len(keys) == 1 and len(fake.renewals) == 1


def test_paypal_and_alipay_go_without_a_token_to_the_providers_page(
    traveller: TestClient, fake: FakeAccounts
) -> None:
    pay(traveller, quote(traveller), method="paypal")
    assert "token" not in sent_payment(fake)["payment"]

    pay(traveller, quote(traveller), method="alipay")
    assert sent_payment(fake)["payment"]["method"] == "alipay"


def test_a_card_typed_before_switching_to_paypal_is_not_sent_to_paypal(
    traveller: TestClient, fake: FakeAccounts
) -> None:
    pay(traveller, quote(traveller), method="paypal", token="pm_card_visa")

    key = next(iter(fake.renewals))
    assert sent_payment(fake)["payment"] == {
        "method": "paypal",
        "return_url": f"http://testserver/renewals/{key}",
    }


def test_the_payment_step_says_what_each_test_card_does(traveller: TestClient) -> None:
    page = quote(traveller)

    assert "<li><code>pm_card_visa</code>: approved</li>" in page
    assert (
        "<li><code>pm_card_authenticationRequired</code>: asks for 3-D Secure at the bank's "
        "page first</li>"
    ).replace("'", "&#39;") in page
    assert '<option value="card_declined" label="declined">' in page


def test_a_card_payment_without_a_saved_card_is_said_beside_the_card_field(
    traveller: TestClient, fake: FakeAccounts
) -> None:
    answer = pay(traveller, quote(traveller), method="card", token="")

    assert answer.status_code == 422
    assert '<p class="error" id="e-token">Choose a saved card.</p>' in answer.text
    assert not fake.renewals


def test_the_renewal_page_polls_while_the_saga_runs_and_stops_at_its_end(
    traveller: TestClient, fake: FakeAccounts
) -> None:
    pay(traveller, quote(traveller), method="card", token="card_ok")
    renewal_id = next(iter(fake.renewals))

    running = traveller.get(f"/renewals/{renewal_id}", headers={"HX-Request": "true"}).text
    assert 'hx-trigger="every 2s"' in running and "<html" not in running
    assert f'<a href="/renewals/{renewal_id}">Reload</a>' in running

    fake.renewals[renewal_id].update(
        status="ACTIVATED", bundle_state="active", valid_until="2027-01-19T00:00:00Z"
    )
    ended = traveller.get(f"/renewals/{renewal_id}", headers={"HX-Request": "true"}).text
    assert "hx-trigger" not in ended
    assert "Live now: the plan is active until Jan 19, 2027." in ended


def test_the_amount_and_the_receipt_come_with_the_update_once_accounts_has_them(
    traveller: TestClient, fake: FakeAccounts
) -> None:
    pay(traveller, quote(traveller), method="card", token="card_ok")
    renewal_id = next(iter(fake.renewals))
    # Accounts prices a renewal as its saga starts, a moment after the 202.
    fake.renewals[renewal_id].pop("price", None)

    first = traveller.get(f"/renewals/{renewal_id}").text
    assert "Amount" not in first and "/receipt" not in first

    fake.renewals[renewal_id].update(
        status="ACTIVATED",
        bundle_state="active",
        valid_until="2027-01-19T00:00:00Z",
        price={"amount": 1900, "currency": "USD"},
    )
    update = traveller.get(f"/renewals/{renewal_id}", headers={"HX-Request": "true"}).text

    assert "<dt>Amount</dt><dd>$19.00</dd>" in update
    assert f'href="/renewals/{renewal_id}/receipt"' in update


def test_without_scripts_the_running_renewal_offers_reload_and_promises_no_update(
    traveller: TestClient, fake: FakeAccounts
) -> None:
    pay(traveller, quote(traveller), method="card", token="card_ok")
    renewal_id = next(iter(fake.renewals))

    page = traveller.get(f"/renewals/{renewal_id}").text

    # The promise is for htmx to keep; a browser without scripts loads noscript.css, hiding it.
    assert '<span class="js-only">This page updates by itself.</span>' in page
    assert '<noscript><link rel="stylesheet" href="/static/noscript.css"></noscript>' in page
    assert ".js-only { display: none; }" in traveller.get("/static/noscript.css").text


def test_an_approval_step_shows_the_providers_page_to_open(
    traveller: TestClient, fake: FakeAccounts
) -> None:
    pay(traveller, quote(traveller), method="paypal")
    renewal_id = next(iter(fake.renewals))
    fake.renewals[renewal_id].update(
        status="PAYMENT_ACTION_REQUIRED",
        payment_action={
            "type": "redirect",
            "url": "http://127.0.0.1:8010/paypal/checkoutnow?token=5O190127TN364715T",
            "expires_at": "2026-12-06T06:00:00Z",
        },
    )

    page = traveller.get(f"/renewals/{renewal_id}").text

    assert 'href="http://127.0.0.1:8010/paypal/checkoutnow?token=5O190127TN364715T"' in page
    assert "Approve before Dec 6, 2026 06:00 UTC." in page


def test_the_approval_step_is_in_chinese_for_a_chinese_traveller(
    client: TestClient, fake: FakeAccounts
) -> None:
    fake.add_user(EMAIL, PASSWORD, locale="zh-CN")
    fake.add_card(EMAIL, ICCID)
    sign_in(client, fake)
    pay(client, quote(client), method="alipay")
    renewal_id = next(iter(fake.renewals))
    fake.renewals[renewal_id].update(
        status="PAYMENT_ACTION_REQUIRED",
        payment_action={
            "type": "redirect",
            "url": "http://127.0.0.1:8010/alipay/gateway.do?method=alipay.trade.page.pay",
            "expires_at": "2026-12-06T06:00:00Z",
        },
    )

    page = client.get(f"/renewals/{renewal_id}").text

    assert "支付机构需要您确认" in page and ">打开支付页面</a>" in page
    assert "请在 2026年12月6日 06:00 UTC 前完成确认。" in page


def test_back_from_the_provider_the_buyer_lands_on_the_clean_renewal_page(
    traveller: TestClient, fake: FakeAccounts
) -> None:
    pay(traveller, quote(traveller), method="paypal")
    renewal_id = next(iter(fake.renewals))

    back = traveller.get(f"/renewals/{renewal_id}?token=5O190127TN364715T&PayerID=QYR5Z8XDVJNXQ")

    assert back.status_code == 303 and back.headers["location"] == f"/renewals/{renewal_id}"
    page = traveller.get(back.headers["location"]).text
    assert "Welcome back from the payment provider" in page
    assert "5O190127TN364715T" not in page


@pytest.mark.parametrize(
    "query",
    ["cancelled=true&token=5O190127TN364715T", "payment_intent=pi_1&redirect_status=failed"],
)
def test_a_buyer_who_cancelled_at_the_provider_is_told_nothing_is_charged(
    traveller: TestClient, fake: FakeAccounts, query: str
) -> None:
    pay(traveller, quote(traveller), method="paypal")
    renewal_id = next(iter(fake.renewals))

    back = traveller.get(f"/renewals/{renewal_id}?{query}")

    assert "You did not approve the payment" in traveller.get(back.headers["location"]).text


def test_the_default_return_page_finds_an_alipay_renewal_by_its_trade_number(
    traveller: TestClient,
) -> None:
    renewal_id = "0b6f5bde-64a4-4c37-9d35-5f1b1c5a8a11"

    back = traveller.get(f"/renewals/return?out_trade_no={renewal_id}&trade_no=2026120622001")

    assert back.status_code == 303 and back.headers["location"] == f"/renewals/{renewal_id}"


@pytest.mark.parametrize("query", ["token=5O190127TN364715T", "out_trade_no=%3Cscript%3E"])
def test_the_default_return_page_sends_other_returns_to_the_cards(
    traveller: TestClient, query: str
) -> None:
    back = traveller.get(f"/renewals/return?{query}")

    assert back.status_code == 303 and back.headers["location"] == "/cards"
    assert "Welcome back from the payment provider" in traveller.get("/cards").text


RENEWAL = {"valid_from": "2026-12-20T00:00:00Z", "valid_until": "2027-01-19T00:00:00Z"}


@pytest.mark.parametrize(
    ("fields", "sentence", "ended"),
    [
        (
            {"status": "ACTIVATED", "bundle_state": "active"},
            "Live now: the plan is active until Jan 19, 2027.",
            True,
        ),
        (
            {"status": "ACTIVATED", "bundle_state": "queued"},
            "Paid and queued: the plan starts on Dec 20, 2026",
            True,
        ),
        ({"status": "PAYMENT_FAILED", "reason": "declined"}, "declined by the card's bank", True),
        ({"status": "PAYMENT_FAILED", "reason": "insufficient_funds"}, "insufficient funds", True),
        (
            {"status": "PAYMENT_FAILED", "reason": "not_approved"},
            "not approved (cancelled or timed out)",
            True,
        ),
        (
            {"status": "PAYMENT_FAILED", "reason": "something_new"},
            "The payment failed. Nothing was charged.",
            True,
        ),
        (
            {"status": "REJECTED", "reason": "unknown-plan", "detail": "no plan X"},
            "refused before any payment: no plan X",
            True,
        ),
        ({"status": "REFUNDED"}, "your payment was refunded in full", True),
        ({"status": "REFUNDED", "via": "void"}, "the hold on your money is released", True),
        ({"status": "CANCELLED"}, "cancelled and your payment refunded", True),
        ({"status": "PAYMENT_ACTION_REQUIRED"}, "needs your approval", False),
        ({"status": "AUTHORIZED"}, "The money is held (not yet charged)", False),
        ({"status": "PAID"}, "being activated", False),
        ({"status": "REFUNDING"}, "being returned", False),
        ({"status": "PAYMENT_PENDING"}, "being processed", False),
    ],
)
def test_each_way_a_renewal_can_end_has_its_own_sentence(
    fields: dict[str, str], sentence: str, ended: bool
) -> None:
    use_locale("en")

    said = outcome({**RENEWAL, **fields})

    assert sentence in said.sentence
    assert said.ended is ended


def test_the_timeline_names_the_capture_after_activation_rather_than_repeat_active(
    traveller: TestClient, fake: FakeAccounts
) -> None:
    pay(traveller, quote(traveller), method="card", token="pm_card_visa")
    renewal_id = next(iter(fake.renewals))
    at = "2026-12-06T05:00:00Z"
    fake.renewals[renewal_id].update(
        status="ACTIVATED",
        bundle_state="active",
        **RENEWAL,
        timeline=[
            {"step": "payment_authorized", "status": "AUTHORIZED", "at": at},
            {"step": "profile_activated", "status": "ACTIVATED", "at": at},
            {"step": "payment_settled", "status": "ACTIVATED", "at": at},
        ],
    )

    page = traveller.get(f"/renewals/{renewal_id}").text
    steps = re.findall(r"UTC</span> ([^<]+)</li>", page)

    assert steps == ["Money held", "Active", "Charged"]


def test_the_sentences_are_chinese_in_chinese() -> None:
    use_locale("zh-CN")
    try:
        said = outcome({**RENEWAL, "status": "ACTIVATED", "bundle_state": "queued"})
    finally:
        use_locale("en")

    assert said.sentence.startswith("已支付并排队") and "2026年12月20日" in said.sentence


def test_history_lists_renewals_with_their_receipts(
    traveller: TestClient, fake: FakeAccounts
) -> None:
    pay(traveller, quote(traveller), method="card", token="card_ok")
    renewal_id = next(iter(fake.renewals))
    fake.renewals[renewal_id].update(status="ACTIVATED", bundle_state="active", **RENEWAL)

    history = traveller.get(f"/cards/{ICCID}/history").text
    receipt = traveller.get(f"/renewals/{renewal_id}/receipt").text

    assert f'href="/renewals/{renewal_id}/receipt"' in history
    assert renewal_id in receipt and "$19.00" in receipt and "Japan 30 days 10 GB" in receipt


def test_cancelling_a_queued_plan_follows_its_refund(
    traveller: TestClient, fake: FakeAccounts
) -> None:
    pay(traveller, quote(traveller), method="card", token="card_ok")
    renewal_id = next(iter(fake.renewals))
    fake.renewals[renewal_id].update(status="ACTIVATED", bundle_state="queued", **RENEWAL)

    answer = traveller.post(
        f"/renewals/{renewal_id}/cancel",
        data={"understood": "on", "iccid": ICCID, "csrf_token": csrf_of(traveller, "/plans")},
    )

    assert answer.headers["location"] == f"/renewals/{renewal_id}"
    assert "Your money is being returned." in traveller.get(answer.headers["location"]).text
