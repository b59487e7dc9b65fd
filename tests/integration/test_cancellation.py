"""Cancelling a queued plan and replacing a live one, end to end over the real broker."""

from collections.abc import Iterator

import httpx
import pytest

from tests.integration.test_usage import active_card, events_of, live_plans, sandbox
from tests.support.client import PlainKafka, Traveller, ledger
from tests.support.infra import Platform, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def kafka_client(platform: Platform) -> Iterator[PlainKafka]:
    client = PlainKafka(platform.kafka)
    yield client
    client.close()


def captured_after_activation(traveller: Traveller, renewal_id: str) -> None:
    """Wait for a card's hold to be captured, just after the activation: until then a cancel
    is refused with "try again in a moment" (the refund needs the capture), so a user waits."""

    def captured() -> bool:
        timeline = traveller.get(f"/v1/renewals/{renewal_id}").json()["timeline"]
        return any(step["step"] == "payment_captured" for step in timeline)

    wait_until(captured, timeout=60, what="the capture after the activation")


def test_a_queued_plan_is_cancelled_at_the_platform_refunded_and_ends_cancelled(
    platform: Platform, kafka_client: PlainKafka
) -> None:
    """About 8 s: two renewals, then a cancellation at the platform and a refund, each a round
    trip over the broker."""
    traveller, iccid, current = active_card(platform)
    queued = traveller.renew(iccid, "card_ok", start="after_current").json()["renewal_id"]
    traveller.wait_for_status(queued, "ACTIVATED")
    card = traveller.get(f"/v1/cards/{iccid}").json()
    assert [q["renewal_id"] for q in card["queued"]] == [queued]
    captured_after_activation(traveller, queued)

    url = f"{platform.url('accounts')}/v1/renewals/{queued}/cancel"
    first = httpx.post(url, headers=traveller.headers)
    again = httpx.post(url, headers=traveller.headers)

    assert first.status_code == 202, first.text
    assert first.json()["status"] == "CANCELLING"
    assert again.status_code == 409 and again.json()["type"].endswith("not-cancellable")
    saga = traveller.wait_for_status(queued, "CANCELLED", timeout=90)
    steps = [step["step"] for step in saga["timeline"]]
    assert steps.index("cancel_requested") < steps.index("refund_requested")
    [cancelled] = events_of(kafka_client, platform, "esim.bundle.cancelled", iccid)
    assert (cancelled["data"]["renewal_id"], cancelled["data"]["reason"]) == (
        queued,
        "cancelled_by_user",
    )
    refunds = events_of(kafka_client, platform, "esim.payment.refunded", iccid, renewal_id=queued)
    assert len({event["id"] for event in refunds}) == 1
    assert len(ledger(platform, "esim", reference=queued)["cancellations"]) == 1
    # Captured after the activation and refunded, or, cancelled before the capture, released:
    # either way nothing is taken and nothing is held.
    payments = ledger(platform, "payment", reference=queued)
    taken = len(payments["captures"]) - len(payments["refunds"])
    held = len(payments["authorizations"]) - len(payments["captures"]) - len(payments["voids"])
    assert (taken, held) == (0, 0), payments
    card = traveller.get(f"/v1/cards/{iccid}").json()
    assert (card["queued"], card["plan_code"]) == ([], "JP-30D-10GB")
    history = {
        h["renewal_id"]: h["state"] for h in traveller.get(f"/v1/cards/{iccid}/plans").json()
    }
    assert history == {current: "active", queued: "cancelled"}
    assert live_plans(kafka_client, platform, iccid) == current


def test_a_live_plan_is_not_cancellable(platform: Platform) -> None:
    traveller, _, live = active_card(platform)

    answer = httpx.post(
        f"{platform.url('accounts')}/v1/renewals/{live}/cancel", headers=traveller.headers
    )

    assert answer.status_code == 409, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["type"].endswith("not-cancellable")
    assert traveller.get(f"/v1/renewals/{live}").json()["status"] == "ACTIVATED"


def test_a_start_now_plan_replaces_the_live_one_and_says_so_once(
    platform: Platform, kafka_client: PlainKafka
) -> None:
    """About 9 s: two renewals, then a usage poll that must announce no end of the replaced plan."""
    traveller, iccid, first = active_card(platform, plan_code="JP-1D-1GB")

    second = traveller.renew(iccid, "card_ok", start="now").json()["renewal_id"]
    traveller.wait_for_status(second, "ACTIVATED")

    [replaced] = events_of(kafka_client, platform, "esim.bundle.cancelled", iccid)
    assert (replaced["data"]["renewal_id"], replaced["data"]["reason"]) == (first, "replaced")
    assert live_plans(kafka_client, platform, iccid) == second

    def reflected() -> dict[str, str] | None:
        plans = traveller.get(f"/v1/cards/{iccid}/plans").json()
        states = {h["renewal_id"]: h["state"] for h in plans}
        return states if states.get(first) == "replaced" else None

    assert wait_until(reflected, what="the replaced plan in the card's history") == {
        first: "replaced",
        second: "active",
    }
    card = traveller.get(f"/v1/cards/{iccid}").json()
    assert (card["plan_code"], card["state"]) == ("JP-30D-10GB", "active")
    assert traveller.get(f"/v1/renewals/{first}").json()["status"] == "ACTIVATED"
    assert ledger(platform, "payment", reference=first)["refunds"] == []
    # A poll that sees the replaced bundle expired announces no end of it (carriers were told):
    # use on the new plan makes the next poll publish, so one has run.
    sandbox(platform, "/sandbox/usage", {"iccid": iccid, "data_used_mb": 1})
    events_of(kafka_client, platform, "esim.usage.updated", iccid, renewal_id=second)
    ended = events_of(
        kafka_client, platform, "esim.bundle.ended", iccid, at_least=0, renewal_id=first
    )
    assert ended == []
    assert len(events_of(kafka_client, platform, "esim.bundle.cancelled", iccid)) == 1


def test_a_cancel_that_races_the_plans_start_keeps_the_plan(
    platform: Platform, kafka_client: PlainKafka
) -> None:
    """About 7 s: two renewals, then the plan's start at the sandbox races the cancel."""
    traveller, iccid, current = active_card(platform)
    queued = traveller.renew(iccid, "card_ok", start="after_current").json()["renewal_id"]
    traveller.wait_for_status(queued, "ACTIVATED")
    captured_after_activation(traveller, queued)

    # The current plan ends now at the platform: the queued one starts before anyone is told.
    sandbox = httpx.post(
        f"{platform.url('esim')}/sandbox/validity", json={"iccid": iccid, "ends_in_s": 0}
    )
    assert sandbox.status_code == 200, sandbox.text
    answer = httpx.post(
        f"{platform.url('accounts')}/v1/renewals/{queued}/cancel", headers=traveller.headers
    )

    # Accepted before accounts heard of the start (then refused by the platform), or refused
    # at once: either way the plan stays, nothing is cancelled and nothing refunded.
    assert answer.status_code in (202, 409), answer.text
    events_of(kafka_client, platform, "esim.bundle.started", iccid, renewal_id=queued)

    def settled() -> dict[str, object] | None:
        saga: dict[str, object] = traveller.get(f"/v1/renewals/{queued}").json()
        return saga if saga["status"] == "ACTIVATED" else None

    saga = wait_until(settled, what="the renewal ACTIVATED again")
    steps = [step["step"] for step in saga["timeline"]]  # type: ignore[attr-defined]
    if answer.status_code == 202:
        assert steps[-1] == "cancel_refused", steps
    assert ledger(platform, "esim", reference=queued)["cancellations"] == []
    assert ledger(platform, "payment", reference=queued)["refunds"] == []
    assert (
        events_of(
            kafka_client, platform, "esim.bundle.cancelled", iccid, at_least=0, renewal_id=queued
        )
        == []
    )
    assert live_plans(kafka_client, platform, iccid) == queued
    assert current != queued
