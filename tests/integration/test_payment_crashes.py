"""Billing SIGKILLed between sending a payment's call to its provider and recording the answer.

The payment sandbox holds a `_slow` source's call for 2 s and lists it meanwhile
(`GET /sandbox/slow-calls`), so billing is killed while the call is in flight; the provider
finishes it with nobody to hear the answer. The renewal's webhooks are lost too
(`POST /sandbox/deliveries/lose`): the billing that starts again learns what happened only by
asking the provider (the same key, the order, the trade), and must end with exactly one payment
and one capture.

Every test here restarts billing, so this file runs in the `restarts` platform group.
"""

import pytest

from tests.support.client import Traveller, captures_of, ledger
from tests.support.infra import Platform, wait_until
from tests.support.payments import (
    LOCALE,
    billing_view,
    lose_deliveries,
    request_renewal,
    slow_calls,
)

pytestmark = pytest.mark.integration


def kill_billing_during(platform: Platform, renewal_id: str, call: str, landed: str) -> None:
    """SIGKILL billing while the sandbox holds the renewal's `call`; start it again once the
    provider has made it (its `landed` ledger entry is there) with billing dead."""
    wait_until(
        lambda: any(c["call"] == call for c in slow_calls(platform, renewal_id)),
        timeout=90,
        interval=0.05,
        what=f"billing's {call} call to be in flight",
    )
    platform.processes["billing"].kill()
    wait_until(
        lambda: ledger(platform, "payment", reference=renewal_id)[landed],
        timeout=30,
        what=f"the provider to finish the {call} billing never heard back from",
    )
    platform.restart("billing")


def settled(platform: Platform, renewal_id: str) -> dict[str, object]:
    """Billing's payment once it records the capture."""
    payment: dict[str, object] = wait_until(
        lambda: (
            (view := billing_view(platform, "payments", renewal_id))["state"] == "settled" and view
        ),
        timeout=90,
        what="billing to record the capture",
    )
    return payment


@pytest.mark.parametrize(
    ("method", "token"),
    [("card", "card_slow"), ("paypal", "paypal_slow"), ("alipay", "alipay_slow")],
)
def test_billing_killed_while_its_payment_is_in_flight_pays_once_and_captures_once(
    platform: Platform, method: str, token: str
) -> None:
    """About 20 s each: billing starts again, and the payment the killed billing had claimed is
    taken up only when its lease (15 s on the test platform) runs out."""
    traveller = Traveller.register(platform, locale=LOCALE[method])
    iccid = traveller.bind_new_card()
    renewal_id = request_renewal(traveller, iccid, method, token)
    lose_deliveries(platform, renewal_id)

    # Card and PayPal hold the money first; Alipay takes it at once.
    kill_billing_during(
        platform, renewal_id, "pay", "captures" if method == "alipay" else "authorizations"
    )

    traveller.wait_for_status(renewal_id, "ACTIVATED", timeout=90)
    settled(platform, renewal_id)
    assert len(captures_of(platform, renewal_id)) == 1
    payments = ledger(platform, "payment", reference=renewal_id)
    assert len(payments["authorizations"]) == (0 if method == "alipay" else 1)
    assert payments["voids"] == [] and payments["refunds"] == []


def test_billing_killed_while_its_capture_is_in_flight_captures_once_by_asking(
    platform: Platform,
) -> None:
    """About 20 s: PayPal's `_slow` source holds the authorization and then the capture 2 s each,
    and the restarted billing takes the capture up when the killed one's lease (15 s) runs out.
    (Only PayPal's sandbox holds a capture: Stripe's holds the PaymentIntent's creation.)"""
    traveller = Traveller.register(platform)
    iccid = traveller.bind_new_card()
    renewal_id = request_renewal(traveller, iccid, "paypal", "paypal_slow")
    lose_deliveries(platform, renewal_id)

    # The capture follows the authorization and the activation.
    kill_billing_during(platform, renewal_id, "capture", "captures")

    payment = settled(platform, renewal_id)
    payments = ledger(platform, "payment", reference=renewal_id)
    assert len(payments["captures"]) == 1 and len(payments["authorizations"]) == 1
    assert payment["capture_reference"] == payments["captures"][0]["id"]
    assert payments["voids"] == [] and payments["refunds"] == []
    assert traveller.get(f"/v1/renewals/{renewal_id}").json()["status"] == "ACTIVATED"
