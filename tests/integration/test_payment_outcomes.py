"""How each provider's answers end a renewal, on the real broker and the payment sandbox's Stripe,
PayPal and Alipay, through the adapters billing runs over the providers' own libraries: hard and
soft declines, transient errors, a failed activation (the hold released, or Alipay's payment
refunded once), and every genuine webhook or notify of a payment replayed without effect."""

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.client import PlainKafka, Traveller, captures_of, cloudevent, ledger
from tests.support.infra import Platform, wait_until
from tests.support.payments import (
    LOCALE,
    answer_at_the_provider,
    billing_view,
    deliveries,
    held_at_the_end,
    request_renewal,
)

pytestmark = pytest.mark.integration

#: Charges of a soft-declined payment: the first and one per pause of the test platform's
#: dunning schedule (`BILLING_DUNNING_SCHEDULE_S` = 0.5,1).
SOFT_DECLINE_CHARGES = 3


@pytest.fixture(scope="module")
def kafka_client(platform: Platform) -> Iterator[PlainKafka]:
    client = PlainKafka(platform.kafka)
    yield client
    client.close()


def renewal_of(platform: Platform, method: str, token: str | None) -> tuple[Traveller, str, str]:
    """A new traveller of the method's currency with a new card, and a renewal of it; its ids."""
    traveller = Traveller.register(platform, locale=LOCALE[method])
    iccid = traveller.bind_new_card()
    return traveller, iccid, request_renewal(traveller, iccid, method, token)


def assert_nothing_taken_or_held(platform: Platform, renewal_id: str) -> None:
    """No capture, no authorization left standing and no bundle ordered for the renewal."""
    payments = ledger(platform, "payment", reference=renewal_id)
    assert payments["captures"] == [] and payments["refunds"] == []
    assert held_at_the_end(payments) == 0
    assert ledger(platform, "esim", reference=renewal_id)["orders"] == []


@pytest.mark.parametrize(
    ("method", "token"),
    [
        ("card", "pm_card_chargeDeclined"),
        ("paypal", "paypal_declined"),
        ("alipay", "alipay_declined"),
    ],
)
def test_a_hard_decline_fails_the_renewal_at_once_with_nothing_taken_or_held(
    platform: Platform, method: str, token: str
) -> None:
    traveller, _, renewal_id = renewal_of(platform, method, token)

    saga = traveller.wait_for_status(renewal_id, "PAYMENT_FAILED", timeout=90)

    assert saga["reason"] == "declined"
    payment = billing_view(platform, "payments", renewal_id)
    assert (payment["state"], payment["failure_reason"]) == ("failed", "declined")
    assert payment["soft_declines"] == 0 and payment["attempts"] <= 1
    assert_nothing_taken_or_held(platform, renewal_id)


@pytest.mark.parametrize(
    ("method", "token"),
    [
        ("card", "pm_card_chargeDeclinedInsufficientFunds"),
        ("paypal", "paypal_insufficient"),
        ("alipay", "alipay_insufficient"),
    ],
)
def test_a_soft_decline_is_charged_again_on_the_dunning_schedule_then_fails_insufficient_funds(
    platform: Platform, method: str, token: str
) -> None:
    traveller, _, renewal_id = renewal_of(platform, method, token)

    saga = traveller.wait_for_status(renewal_id, "PAYMENT_FAILED", timeout=90)

    assert saga["reason"] == "insufficient_funds"
    payment = billing_view(platform, "payments", renewal_id)
    assert (payment["state"], payment["failure_reason"]) == ("failed", "insufficient_funds")
    # One soft decline per charge: a provider's webhook telling of a decline the charge's own
    # answer gave is not counted again (Stripe's `payment_intent.payment_failed`).
    assert payment["soft_declines"] == payment["attempts"] == SOFT_DECLINE_CHARGES
    assert_nothing_taken_or_held(platform, renewal_id)


def test_a_card_with_funds_by_the_dunning_charge_ends_activated_with_one_hold_and_one_capture(
    platform: Platform,
) -> None:
    # Stripe replays a key's first answer: only a charge under a new key reaches the card.
    traveller, _, renewal_id = renewal_of(platform, "card", "card_tok_insufficient_once")

    traveller.wait_for_status(renewal_id, "ACTIVATED", timeout=90)

    assert len(captures_of(platform, renewal_id, timeout=60)) == 1
    payments = ledger(platform, "payment", reference=renewal_id)
    assert len(payments["authorizations"]) == 1
    assert payments["voids"] == [] and payments["refunds"] == []
    payment = wait_until(
        lambda: (
            (view := billing_view(platform, "payments", renewal_id))["state"] == "settled" and view
        ),
        timeout=60,
        what="billing to record the capture",
    )
    assert payment["soft_declines"] == 1
    assert payment["capture_overdue_at"] is None


@pytest.mark.parametrize(
    ("method", "token"),
    [("card", "card_flaky"), ("paypal", "paypal_flaky"), ("alipay", "alipay_flaky")],
)
def test_transient_provider_errors_end_activated_with_one_payment_and_one_capture(
    platform: Platform, method: str, token: str
) -> None:
    traveller, _, renewal_id = renewal_of(platform, method, token)

    traveller.wait_for_status(renewal_id, "ACTIVATED", timeout=90)

    assert len(captures_of(platform, renewal_id, timeout=60)) == 1
    payments = ledger(platform, "payment", reference=renewal_id)
    # One payment: the retries went under the first call's key, never a new one.
    assert len(payments["authorizations"]) == (0 if method == "alipay" else 1)
    assert payments["voids"] == [] and payments["refunds"] == []
    payment = wait_until(
        lambda: (
            (view := billing_view(platform, "payments", renewal_id))["state"] == "settled" and view
        ),
        timeout=60,
        what="billing to record the capture",
    )
    assert payment["capture_reference"] is not None


def refunded_event(kafka: PlainKafka, platform: Platform, renewal_id: str) -> dict[str, Any]:
    """The data of the renewal's one PaymentRefunded on the broker."""
    [record] = kafka.records(
        platform.topic("esim.payment.refunded"),
        lambda r: cloudevent(r).get("renewalid") == renewal_id,
        timeout=60,
    )
    data: dict[str, Any] = cloudevent(record)["data"]
    return data


@pytest.mark.parametrize(
    ("method", "token"), [("card", "pm_card_visa"), ("paypal", None), ("alipay", None)]
)
def test_a_failed_activation_releases_the_hold_or_refunds_alipay_once(
    platform: Platform, kafka_client: PlainKafka, method: str, token: str | None
) -> None:
    """PayPal and Alipay without a saved source: the buyer approves at the provider's page first;
    the eSIM platform sandbox then fails the card's order for good."""
    traveller = Traveller.register(platform, locale=LOCALE[method])
    iccid = traveller.bind_new_card()
    fault = httpx.post(
        f"{platform.url('esim')}/sandbox/faults", json={"iccid": iccid, "mode": "fail"}
    )
    assert fault.status_code == 200, fault.text
    renewal_id = request_renewal(traveller, iccid, method, token)
    if token is None:
        traveller.wait_for_status(renewal_id, "PAYMENT_ACTION_REQUIRED")
        answer_at_the_provider(traveller, renewal_id, "approve")

    saga = traveller.wait_for_status(renewal_id, "REFUNDED", timeout=90)

    assert "refund_requested" in [step["step"] for step in saga["timeline"]]
    payments = ledger(platform, "payment", reference=renewal_id)
    refund = billing_view(platform, "refunds", renewal_id)
    event = refunded_event(kafka_client, platform, renewal_id)
    if method == "alipay":
        assert len(payments["captures"]) == 1 and payments["voids"] == []
        [refunded] = payments["refunds"]
        assert refunded["amount"] == payments["captures"][0]["amount"]
        assert refund["via"] == "refund"
        assert event.get("via", "refund") == "refund"
    else:
        assert payments["captures"] == [] and payments["refunds"] == []
        assert len(payments["authorizations"]) == 1 and len(payments["voids"]) == 1
        assert payments["voids"][0]["amount"] == payments["authorizations"][0]["amount"]
        assert refund["via"] == "void"
        assert event["via"] == "void"
        assert billing_view(platform, "payments", renewal_id)["state"] == "voided"
        assert held_at_the_end(payments) == 0


def replay(platform: Platform, delivery_id: str) -> dict[str, Any]:
    """Have the payment sandbox send billing one of its calls again, exactly as before."""
    answer = httpx.post(
        f"{platform.url('payment')}/sandbox/deliveries/{delivery_id}/replay", timeout=30
    )
    assert answer.status_code == 200, answer.text
    replayed: dict[str, Any] = answer.json()
    return replayed


#: The saga's steps that say the money was taken: a capture after activation, or a payment
#: settled at once (Alipay).
MONEY_TAKEN = {"payment_captured", "payment_settled"}


@pytest.mark.parametrize(
    ("method", "token"), [("card", "card_action"), ("paypal", None), ("alipay", None)]
)
def test_every_genuine_webhook_of_a_payment_replayed_is_acknowledged_and_changes_nothing(
    platform: Platform, method: str, token: str | None
) -> None:
    """About 5 s each: the whole approved payment first, then a 3 s pause after the replays for
    anything they might have set going (an event, a provider call) to show."""
    traveller, _, renewal_id = renewal_of(platform, method, token)
    traveller.wait_for_status(renewal_id, "PAYMENT_ACTION_REQUIRED")
    answer_at_the_provider(traveller, renewal_id, "approve")
    traveller.wait_for_status(renewal_id, "ACTIVATED", timeout=90)
    captures_of(platform, renewal_id, timeout=60)
    payment = wait_until(
        lambda: (
            (view := billing_view(platform, "payments", renewal_id))["state"] == "settled" and view
        ),
        timeout=60,
        what="billing to record the capture",
    )
    sent = wait_until(
        lambda: (
            (found := deliveries(platform, renewal_id))
            and all(record["delivered"] for record in found)
            and found
        ),
        timeout=60,
        what="every webhook to be acknowledged",
    )
    payments = ledger(platform, "payment", reference=renewal_id)
    # The saga as it stands once accounts has heard of the money taken: a capture after the
    # activation reaches its timeline a moment after billing records it.
    saga = wait_until(
        lambda: (
            (view := traveller.get(f"/v1/renewals/{renewal_id}").json())
            and MONEY_TAKEN & {step["step"] for step in view["timeline"]}
            and view
        ),
        timeout=60,
        what="the saga's timeline to show the money taken",
    )

    answers = [replay(platform, record["id"]) for record in sent]
    time.sleep(3)

    for answer in answers:
        assert answer["status"] == 200, answer
        if method == "alipay":
            assert answer["body"] == "success"
    assert billing_view(platform, "payments", renewal_id) == payment
    assert ledger(platform, "payment", reference=renewal_id) == payments
    assert traveller.get(f"/v1/renewals/{renewal_id}").json() == saga
    assert [len(r["replays"]) for r in deliveries(platform, renewal_id)] == [1] * len(sent)
