"""Payments the way each provider takes them, end to end on the real broker and the payment
sandbox's Stripe, PayPal and Alipay (the adapters billing runs, over the providers' libraries):
the buyer's approval given or refused, a hold captured once after activation, forged
webhooks refused, and reconciliation finding a capture billing never asked for."""

import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.support.client import captures_of, ledger
from tests.support.infra import Platform, wait_until
from tests.support.payments import answer_at_the_provider, ask_the_buyer, held_at_the_end

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("method", "token"),
    [("card", "card_action"), ("paypal", "paypal_action"), ("paypal", None), ("alipay", None)],
)
def test_an_approved_payment_is_activated_and_captured_once(
    platform: Platform, method: str, token: str | None
) -> None:
    traveller, renewal_id = ask_the_buyer(platform, method, token)

    answer_at_the_provider(traveller, renewal_id, "approve")

    saga = traveller.wait_for_status(renewal_id, "ACTIVATED")
    steps = [step["step"] for step in saga["timeline"]]
    assert "payment_action_required" in steps and "profile_activated" in steps
    payments = wait_until(
        lambda: (found := ledger(platform, "payment", reference=renewal_id))["captures"] and found,
        what="the capture",
    )
    assert len(payments["captures"]) == 1
    assert len(payments["authorizations"]) == (0 if method == "alipay" else 1)
    assert payments["voids"] == [] and payments["refunds"] == []


@pytest.mark.parametrize(
    ("method", "token"), [("card", "card_action"), ("paypal", None), ("alipay", None)]
)
def test_a_cancelled_approval_fails_not_approved_with_nothing_taken_or_held(
    platform: Platform, method: str, token: str | None
) -> None:
    """PayPal tells nobody of a cancel: billing finds it when it asks at the approval's expiry
    (20 s on the test platform), so that case takes some 25 seconds."""
    traveller, renewal_id = ask_the_buyer(platform, method, token)

    answer_at_the_provider(traveller, renewal_id, "cancel")

    saga = traveller.wait_for_status(renewal_id, "PAYMENT_FAILED", timeout=90)
    assert saga["reason"] == "not_approved"
    payments = ledger(platform, "payment", reference=renewal_id)
    assert payments["captures"] == []
    assert held_at_the_end(payments) == 0
    assert ledger(platform, "esim", reference=renewal_id)["orders"] == []


@pytest.mark.parametrize(
    ("provider", "headers", "body"),
    [
        (
            "stripe",
            {"Stripe-Signature": "t=1700000000,v1=" + "0" * 64},
            b'{"id": "evt_forged", "type": "payment_intent.succeeded"}',
        ),
        (
            "paypal",
            {
                "PAYPAL-TRANSMISSION-ID": "forged",
                "PAYPAL-TRANSMISSION-TIME": "2026-12-06T00:00:00Z",
                "PAYPAL-TRANSMISSION-SIG": "Zm9yZ2Vk",
                "PAYPAL-CERT-URL": "https://api.paypal.com/cert.pem",
                "PAYPAL-AUTH-ALGO": "SHA256withRSA",
            },
            b'{"id": "WH-forged", "event_type": "PAYMENT.CAPTURE.COMPLETED", "resource": {}}',
        ),
        (
            "alipay",
            {"Content-Type": "application/x-www-form-urlencoded"},
            b"notify_id=forged&notify_type=trade_status_sync&trade_status=TRADE_SUCCESS"
            b"&out_trade_no=x&app_id=2021000000000001&sign_type=RSA2&sign=Zm9yZ2Vk",
        ),
    ],
)
def test_a_forged_webhook_of_each_provider_is_refused(
    platform: Platform, provider: str, headers: dict[str, str], body: bytes
) -> None:
    answer = httpx.post(
        f"{platform.url('billing')}/webhooks/{provider}", content=body, headers=headers
    )
    assert answer.status_code == 400, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize(("method", "currency"), [("paypal", "USD"), ("alipay", "CNY")])
def test_reconciliation_finds_a_capture_billing_never_asked_for(
    platform: Platform, method: str, currency: str
) -> None:
    since = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    reference = str(uuid.uuid4())
    planted = httpx.post(
        f"{platform.url('payment')}/sandbox/ledger/plant",
        json={"method": method, "reference": reference, "amount": 1234, "currency": currency},
    )
    assert planted.status_code in (200, 201), planted.text

    answer = httpx.get(
        f"{platform.url('billing')}/v1/payments/reconciliation",
        params={"since": since},
        headers=platform.operator_headers,
        timeout=30,
    )

    assert answer.status_code == 200, answer.text
    found = [d for d in answer.json()["differences"] if d["reference"] == reference]
    assert [(d["kind"], d["method"]) for d in found] == [("unknown_capture", method)]


@pytest.mark.parametrize(("method", "token"), [("alipay", None), ("card", "card_action")])
def test_a_lost_webhook_is_made_up_for_by_asking_at_the_expiry(
    platform: Platform, method: str, token: str | None
) -> None:
    """No webhook or notify ever reaches billing: it asks the provider when the approval
    expires (20 s on the test platform), so this takes some 25 seconds."""
    traveller, renewal_id = ask_the_buyer(platform, method, token)
    lost = httpx.post(
        f"{platform.url('payment')}/sandbox/deliveries/lose", json={"reference": renewal_id}
    )
    assert lost.status_code == 204, lost.text

    answer_at_the_provider(traveller, renewal_id, "approve")

    traveller.wait_for_status(renewal_id, "ACTIVATED", timeout=90)
    assert len(captures_of(platform, renewal_id)) == 1
    deliveries = httpx.get(
        f"{platform.url('payment')}/sandbox/deliveries", params={"reference": renewal_id}
    ).json()
    assert all(not record["attempts"] for record in deliveries)
