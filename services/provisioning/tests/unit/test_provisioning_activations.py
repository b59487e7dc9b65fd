"""Activations: one per renewal, each platform outcome, retries, the deadline, crash safety."""

import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from esim_core.clock import as_utc, utcnow
from esim_core.messaging.consumer import MessageInfo, PermanentEventError
from esim_core.persistence.db import Database
from esim_core.testing import event, expire_leases, published, with_tables
from provisioning.bootstrap import Provisioning
from provisioning.domain import ActivationState, activation_id_for, event_id
from provisioning.platforms import BundleOrderRequest
from provisioning.store import Activation, Bundle
from provisioning_testkit import (
    ACTIVATED,
    BILLING,
    DUE_TABLES,
    FAILED,
    OTHER_ICCID,
    QUEUED_FROM,
    UNKNOWN_ICCID,
    FakePlatform,
    activation_of,
    activations,
    fast_forward,
    handle,
    pass_deadline,
    payment_settled,
    run_until_final,
)
from sqlalchemy import update
from sqlmodel import col, select


def _close(moment: datetime | None, expected: datetime, tolerance_s: float = 2.0) -> bool:
    assert moment is not None
    return abs((as_utc(moment) - expected).total_seconds()) <= tolerance_s


async def test_a_paid_renewal_is_ordered_followed_and_activated(
    provisioning: Provisioning, database: Database, platform: FakePlatform
) -> None:
    data = payment_settled()
    await handle(provisioning, data)

    row = await activation_of(database, data.renewal_id)
    assert row.id == activation_id_for(data.renewal_id)
    assert (row.state, row.attempts, row.order_id) == (ActivationState.ORDERING, 0, None)
    assert (row.iccid, row.plan_code, row.data_mb, row.validity_days, row.start) == (
        data.iccid,
        "JP-30D-10GB",
        10240,
        30,
        "now",
    )
    assert _close(row.due_at, utcnow())
    assert _close(row.deadline_at, as_utc(row.created_at) + timedelta(days=1), 0.001)

    assert await provisioning.activations.run_once() == 1
    [request] = platform.order_calls
    assert request == BundleOrderRequest(
        idempotency_key=f"bundle:{data.renewal_id}",
        iccid=data.iccid,
        bundle_code="JP-30D-10GB",
        data_mb=10240,
        validity_days=30,
        start="now",
        reference=str(data.renewal_id),
    )
    [order] = platform.orders.values()
    row = await activation_of(database, data.renewal_id)
    assert (row.state, row.order_id, row.attempts) == (
        ActivationState.FOLLOWING,
        order.order_id,
        1,
    )
    assert row.lease_until is None
    assert _close(row.due_at, utcnow() + timedelta(seconds=0.5), 0.3)
    assert await provisioning.activations.run_once() == 0, "not due before the poll interval"

    await fast_forward(database)
    await provisioning.activations.run_once()  # the bundle is still processing
    row = await activation_of(database, data.renewal_id)
    assert (row.state, row.polls, row.attempts) == (ActivationState.FOLLOWING, 1, 2)
    assert _close(row.due_at, utcnow() + timedelta(seconds=0.75), 0.3)

    row = await run_until_final(provisioning, data.renewal_id)
    assert (row.state, row.bundle_state, row.attempts) == (ActivationState.ACTIVATED, "active", 3)
    assert row.due_at is None and row.activated_at is not None
    [activated] = await published(database, ACTIVATED)
    assert activated["id"] == event_id("profile-activated", data.renewal_id)
    assert activated["_topic"] == "esim.profile.activated"
    assert activated["_key"] == data.iccid and activated["subject"] == data.iccid
    assert activated["renewalid"] == str(data.renewal_id)
    assert activated["source"] == "/services/provisioning"
    valid_from = order.created_at
    assert activated["data"] | {"activated_at": None} == {
        "renewal_id": str(data.renewal_id),
        "iccid": data.iccid,
        "plan_code": "JP-30D-10GB",
        "data_mb": 10240,
        "valid_from": valid_from.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "valid_until": (valid_from + timedelta(days=30))
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z"),
        "bundle_state": "active",
        "platform_reference": order.order_id,
        "activated_at": None,
    }
    assert _close(datetime.fromisoformat(activated["data"]["activated_at"]), utcnow())
    assert await published(database, FAILED) == []

    await fast_forward(database)
    assert await provisioning.activations.run_once() == 0
    assert (len(platform.order_calls), len(platform.status_calls)) == (1, 2)


async def test_an_early_renewal_is_queued_behind_the_current_plan(
    provisioning: Provisioning, database: Database, platform: FakePlatform
) -> None:
    platform.modes[OTHER_ICCID] = "queued"
    data = payment_settled(iccid=OTHER_ICCID, start="after_current")
    await handle(provisioning, data)

    row = await run_until_final(provisioning, data.renewal_id)

    assert (row.state, row.bundle_state) == (ActivationState.ACTIVATED, "queued")
    assert platform.order_calls[0].start == "after_current"
    [activated] = await published(database, ACTIVATED)
    assert activated["data"]["bundle_state"] == "queued"
    assert activated["data"]["valid_from"] == "2026-12-20T00:00:00.000Z"
    assert activated["data"]["valid_until"] == "2027-01-19T00:00:00.000Z"
    assert as_utc(row.valid_from) == QUEUED_FROM  # type: ignore[arg-type]


async def test_a_repeated_payment_settled_changes_nothing(
    provisioning: Provisioning, database: Database, platform: FakePlatform
) -> None:
    data = payment_settled()
    await handle(provisioning, data)
    await run_until_final(provisioning, data.renewal_id)
    await handle(provisioning, data)  # a new event id: billing published it again
    await handle(provisioning, payment_settled(data.renewal_id, settled_at=utcnow()))

    assert len(await activations(database)) == 1
    await fast_forward(database)
    assert await provisioning.activations.run_once() == 0
    assert len(platform.order_calls) == 1
    assert len(await published(database, ACTIVATED)) == 1


async def test_a_duplicate_before_the_first_order_still_orders_once(
    provisioning: Provisioning, database: Database, platform: FakePlatform
) -> None:
    data = payment_settled()
    await handle(provisioning, data)
    await handle(provisioning, data)

    await run_until_final(provisioning, data.renewal_id)

    assert len(platform.order_calls) == 1
    assert len(platform.orders_of(data.renewal_id)) == 1


async def test_the_consumer_drops_a_redelivery_and_handles_a_repeat_once(
    provisioning: Provisioning, database: Database, platform: FakePlatform
) -> None:
    consumer = provisioning.runtime.subscribe()
    assert consumer is not None
    data = payment_settled()
    body = event(data, "evt-1", source=BILLING).to_json()
    info = MessageInfo(topic="esim.payment.settled", partition=0, offset=7, key=None)

    await consumer.handle(body, info)
    await consumer.handle(body, info)  # redelivered: the inbox drops it
    await consumer.handle(event(data, "evt-2", source=BILLING).to_json(), info)

    await run_until_final(provisioning, data.renewal_id)
    assert len(await activations(database)) == 1
    assert len(platform.order_calls) == 1
    assert len(await published(database, ACTIVATED)) == 1


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"iccid": OTHER_ICCID}, "iccid"),
        ({"plan": {"code": "JP-7D-3GB", "data_mb": 3072, "validity_days": 7}}, "plan_code"),
        ({"start": "after_current"}, "start"),
    ],
)
async def test_a_renewal_id_reused_with_other_content_is_rejected(
    provisioning: Provisioning, database: Database, change: dict[str, Any], field: str
) -> None:
    data = payment_settled()
    await handle(provisioning, data)

    with pytest.raises(PermanentEventError, match=f"conflicting PaymentSettled .*{field}"):
        await handle(provisioning, payment_settled(data.renewal_id, **change))

    row = await activation_of(database, data.renewal_id)
    assert (row.iccid, row.plan_code, row.start) == (data.iccid, "JP-30D-10GB", "now")


async def test_a_failed_bundle_fails_the_activation(
    provisioning: Provisioning, database: Database, platform: FakePlatform
) -> None:
    platform.modes[OTHER_ICCID] = "fail"
    data = payment_settled(iccid=OTHER_ICCID)
    await handle(provisioning, data)

    row = await run_until_final(provisioning, data.renewal_id)

    assert (row.state, row.failure_reason, row.attempts) == (
        ActivationState.FAILED,
        "bundle_rejected",
        3,
    )
    assert row.due_at is None and row.failed_at is not None
    [failed] = await published(database, FAILED)
    assert failed["id"] == event_id("activation-failed", data.renewal_id)
    assert failed["_topic"] == "esim.activation.failed" and failed["_key"] == OTHER_ICCID
    assert failed["data"] | {"failed_at": None} == {
        "renewal_id": str(data.renewal_id),
        "iccid": OTHER_ICCID,
        "reason": "bundle_rejected",
        "attempts": 3,
        "failed_at": None,
    }
    assert await published(database, ACTIVATED) == []
    await fast_forward(database)
    assert await provisioning.activations.run_once() == 0


async def test_an_unknown_card_fails_at_once(
    provisioning: Provisioning, database: Database, platform: FakePlatform
) -> None:
    data = payment_settled(iccid=UNKNOWN_ICCID)
    await handle(provisioning, data)

    await provisioning.activations.run_once()

    row = await activation_of(database, data.renewal_id)
    assert (row.state, row.failure_reason, row.attempts) == (
        ActivationState.FAILED,
        "unknown_iccid",
        1,
    )
    assert UNKNOWN_ICCID in (row.last_error or "")
    [failed] = await published(database, FAILED)
    assert (failed["data"]["reason"], failed["data"]["attempts"]) == ("unknown_iccid", 1)
    assert len(platform.order_calls) == 1, "an unknown card is not retried"
    assert platform.status_calls == []


async def test_a_flaky_platform_is_retried_within_the_round_and_orders_once(
    provisioning: Provisioning, database: Database, platform: FakePlatform
) -> None:
    platform.modes[OTHER_ICCID] = "flaky"
    data = payment_settled(iccid=OTHER_ICCID)
    await handle(provisioning, data)

    await provisioning.activations.run_once()

    row = await activation_of(database, data.renewal_id)
    assert (row.state, row.attempts, row.unavailable_rounds) == (ActivationState.FOLLOWING, 1, 0)
    assert len(platform.order_calls) == 3  # two 503s, then the order
    assert {call.idempotency_key for call in platform.order_calls} == {f"bundle:{data.renewal_id}"}
    row = await run_until_final(provisioning, data.renewal_id)
    assert row.state == ActivationState.ACTIVATED
    assert len(platform.orders_of(data.renewal_id)) == 1
    assert len(await published(database, ACTIVATED)) == 1


async def test_an_outage_longer_than_a_round_is_rescheduled_with_backoff(
    provisioning: Provisioning, database: Database, platform: FakePlatform
) -> None:
    platform.outage = True
    data = payment_settled()
    await handle(provisioning, data)

    await provisioning.activations.run_once()
    row = await activation_of(database, data.renewal_id)
    assert (row.state, row.attempts, row.unavailable_rounds) == (ActivationState.ORDERING, 1, 1)
    assert len(platform.order_calls) == 4, "the round's tries are bounded"
    assert "503" in (row.last_error or "")
    assert row.due_at is not None
    first_wait = (as_utc(row.due_at) - as_utc(row.updated_at)).total_seconds()
    assert 0.75 <= first_wait <= 1.0

    await fast_forward(database)
    await provisioning.activations.run_once()
    row = await activation_of(database, data.renewal_id)
    assert row.unavailable_rounds == 2 and row.due_at is not None
    second_wait = (as_utc(row.due_at) - as_utc(row.updated_at)).total_seconds()
    assert 1.5 <= second_wait <= 2.0
    assert await published(database) == []

    platform.outage = False
    row = await run_until_final(provisioning, data.renewal_id)
    assert (row.state, row.unavailable_rounds, row.last_error) == (
        ActivationState.ACTIVATED,
        0,
        None,
    )
    assert row.attempts == 5  # two rounds without an answer, the order, two status checks
    assert len(platform.orders_of(data.renewal_id)) == 1


async def test_an_outage_while_following_keeps_the_order(
    provisioning: Provisioning, database: Database, platform: FakePlatform
) -> None:
    data = payment_settled()
    await handle(provisioning, data)
    await provisioning.activations.run_once()
    platform.outage = True
    await fast_forward(database)
    await provisioning.activations.run_once()

    row = await activation_of(database, data.renewal_id)
    assert (row.state, row.unavailable_rounds) == (ActivationState.FOLLOWING, 1)

    platform.outage = False
    row = await run_until_final(provisioning, data.renewal_id)
    assert row.state == ActivationState.ACTIVATED
    assert len(platform.order_calls) == 1


async def test_a_bundle_not_live_by_the_deadline_is_cancelled_then_times_out(
    provisioning: Provisioning, database: Database, platform: FakePlatform
) -> None:
    platform.modes[OTHER_ICCID] = "slow"
    data = payment_settled(iccid=OTHER_ICCID)
    await handle(provisioning, data)
    for _ in range(4):
        await provisioning.activations.run_once()
        await fast_forward(database)
    row = await activation_of(database, data.renewal_id)
    assert (row.state, row.attempts) == (ActivationState.FOLLOWING, 4)

    await pass_deadline(database, data.renewal_id)
    await provisioning.activations.run_once()

    row = await activation_of(database, data.renewal_id)
    assert row.state == ActivationState.CANCELLING
    assert row.last_error == (
        "bundle still 'processing' at the deadline; cancelling it at the platform"
    )
    assert await published(database, FAILED) == []

    await provisioning.activations.run_once()

    row = await activation_of(database, data.renewal_id)
    assert (row.state, row.failure_reason, row.attempts) == (
        ActivationState.FAILED,
        "activation_timeout",
        6,
    )
    assert row.last_error == "not live by the deadline; cancelled at the platform"
    assert platform.cancel_calls == [row.order_id]
    [failed] = await published(database, FAILED)
    assert (failed["data"]["reason"], failed["data"]["attempts"]) == ("activation_timeout", 6)
    assert await published(database, ACTIVATED) == []


async def test_a_bundle_that_went_live_before_the_cancel_at_the_deadline_stays(
    provisioning: Provisioning, database: Database, platform: FakePlatform
) -> None:
    platform.modes[OTHER_ICCID] = "slow"
    data = payment_settled(iccid=OTHER_ICCID)
    await handle(provisioning, data)
    await provisioning.activations.run_once()
    await pass_deadline(database, data.renewal_id)
    await fast_forward(database)
    await provisioning.activations.run_once()  # processing at the deadline: cancelling
    platform.cancel_refusal = "active"  # ... but it went live meanwhile

    row = await run_until_final(provisioning, data.renewal_id)

    assert (row.state, row.bundle_state) == (ActivationState.ACTIVATED, "active")
    [activated] = await published(database, ACTIVATED)
    assert activated["data"]["platform_reference"] == row.order_id
    assert await published(database, FAILED) == []


async def test_a_cancel_at_the_deadline_is_asked_again_until_the_platform_answers(
    provisioning: Provisioning, database: Database, platform: FakePlatform
) -> None:
    platform.modes[OTHER_ICCID] = "slow"
    data = payment_settled(iccid=OTHER_ICCID)
    await handle(provisioning, data)
    await provisioning.activations.run_once()
    await pass_deadline(database, data.renewal_id)
    await fast_forward(database)
    await provisioning.activations.run_once()
    platform.outage = True

    for _ in range(3):
        await provisioning.activations.run_once()
        await fast_forward(database)

    row = await activation_of(database, data.renewal_id)
    assert (row.state, row.unavailable_rounds) == (ActivationState.CANCELLING, 3)
    assert row.due_at is not None and as_utc(row.due_at) > as_utc(row.deadline_at)
    assert await published(database, FAILED) == []

    platform.outage = False
    row = await run_until_final(provisioning, data.renewal_id)
    assert (row.state, row.failure_reason) == (ActivationState.FAILED, "activation_timeout")
    assert len(await published(database, FAILED)) == 1


async def test_no_answer_while_following_at_the_deadline_cancels_too(
    provisioning: Provisioning, database: Database, platform: FakePlatform
) -> None:
    platform.modes[OTHER_ICCID] = "slow"
    data = payment_settled(iccid=OTHER_ICCID)
    await handle(provisioning, data)
    await provisioning.activations.run_once()
    platform.outage = True
    await pass_deadline(database, data.renewal_id)
    await fast_forward(database)
    await provisioning.activations.run_once()

    row = await activation_of(database, data.renewal_id)
    assert row.state == ActivationState.CANCELLING
    platform.outage = False
    row = await run_until_final(provisioning, data.renewal_id)
    assert row.state == ActivationState.FAILED
    assert platform.cancel_calls == [row.order_id]


async def test_a_bundle_that_goes_live_at_the_deadline_is_activated(
    provisioning: Provisioning, database: Database, platform: FakePlatform
) -> None:
    data = payment_settled()
    await handle(provisioning, data)
    await provisioning.activations.run_once()
    await fast_forward(database)
    await provisioning.activations.run_once()  # still processing
    await pass_deadline(database, data.renewal_id)
    await fast_forward(database)

    await provisioning.activations.run_once()

    row = await activation_of(database, data.renewal_id)
    assert row.state == ActivationState.ACTIVATED
    assert await published(database, FAILED) == []


async def test_an_activation_never_sent_by_the_deadline_fails_without_ordering(
    provisioning: Provisioning, database: Database, platform: FakePlatform
) -> None:
    data = payment_settled()
    await handle(provisioning, data)
    await pass_deadline(database, data.renewal_id)

    await provisioning.activations.run_once()

    assert platform.order_calls == []
    row = await activation_of(database, data.renewal_id)
    assert (row.state, row.failure_reason) == (ActivationState.FAILED, "activation_timeout")
    assert row.last_error == "not sent to the platform by the deadline"
    [failed] = await published(database, FAILED)
    assert failed["data"]["attempts"] == 1


async def test_an_order_unanswered_by_the_deadline_is_asked_for_again_and_cancelled(
    provisioning: Provisioning, database: Database, platform: FakePlatform
) -> None:
    platform.outage = True
    data = payment_settled()
    await handle(provisioning, data)
    await provisioning.activations.run_once()
    await pass_deadline(database, data.renewal_id)
    await fast_forward(database)

    await provisioning.activations.run_once()

    # The unanswered order may exist at the platform: nothing is given up before it says.
    row = await activation_of(database, data.renewal_id)
    assert (row.state, row.unavailable_rounds) == (ActivationState.ORDERING, 2)
    assert row.due_at is not None and as_utc(row.due_at) > as_utc(row.deadline_at)
    assert await published(database, FAILED) == []

    platform.outage = False
    row = await run_until_final(provisioning, data.renewal_id)

    [order] = platform.orders_of(data.renewal_id)
    assert {request.idempotency_key for request in platform.order_calls} == {
        f"bundle:{data.renewal_id}"
    }
    assert platform.cancel_calls == [order.order_id]
    assert (row.state, row.failure_reason) == (ActivationState.FAILED, "activation_timeout")
    assert len(await published(database, FAILED)) == 1
    assert await published(database, ACTIVATED) == []


async def test_the_next_round_is_never_later_than_the_deadline(
    tmp_path: Any, platform: FakePlatform
) -> None:
    from provisioning import bootstrap
    from provisioning_testkit import NO_WAIT, settings_for

    built = bootstrap.build(
        settings_for(tmp_path, activation_deadline_s=60.0, retry_backoff_s=100.0),
        platform=platform,
        tries=NO_WAIT,
    )
    async with with_tables(built.runtime):
        platform.outage = True
        data = payment_settled()
        await handle(built, data)
        await built.activations.run_once()
        row = await activation_of(built.runtime.database, data.renewal_id)
        assert row.due_at is not None
        assert as_utc(row.due_at) == as_utc(row.deadline_at)


async def test_a_crash_after_the_order_before_the_commit_orders_again_under_the_same_key(
    provisioning: Provisioning,
    database: Database,
    platform: FakePlatform,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    worker = provisioning.activations
    apply = worker._apply
    crashes = 0

    def crash_once(*args: Any) -> None:
        nonlocal crashes
        if crashes == 0:
            crashes += 1
            raise RuntimeError("the process died before the commit")
        apply(*args)

    monkeypatch.setattr(worker, "_apply", crash_once)
    data = payment_settled()
    await handle(provisioning, data)

    await worker.run_once()
    row = await activation_of(database, data.renewal_id)
    assert (row.state, row.order_id, row.attempts) == (ActivationState.ORDERING, None, 0)
    assert len(platform.orders_of(data.renewal_id)) == 1
    assert await worker.run_once() == 0, "the lease of the crashed round still holds"

    await expire_leases(database, DUE_TABLES)
    row = await run_until_final(provisioning, data.renewal_id)

    first, second = platform.order_calls
    assert first == second
    [order] = platform.orders_of(data.renewal_id)
    assert row.state == ActivationState.ACTIVATED
    assert row.order_id == order.order_id
    [activated] = await published(database, ACTIVATED)
    assert activated["data"]["platform_reference"] == order.order_id


async def test_a_round_whose_row_was_claimed_again_drops_its_outcome(
    provisioning: Provisioning, database: Database, platform: FakePlatform
) -> None:
    data = payment_settled()
    await handle(provisioning, data)

    async def another_replica_claims(_: BundleOrderRequest) -> None:
        async with database.session() as session:
            await session.exec(
                update(Activation).values(lease_until=utcnow() + timedelta(seconds=300))
            )

    platform.after_order = another_replica_claims
    await provisioning.activations.run_once()

    row = await activation_of(database, data.renewal_id)
    assert (row.state, row.order_id) == (ActivationState.ORDERING, None)
    platform.after_order = None
    await expire_leases(database, DUE_TABLES)
    await run_until_final(provisioning, data.renewal_id)
    assert len(platform.orders_of(data.renewal_id)) == 1


async def test_a_dropped_round_of_a_bundle_live_at_once_writes_nothing_of_it(
    provisioning: Provisioning, database: Database, platform: FakePlatform
) -> None:
    platform.order_answer, platform.order_describes_bundle = "active", True
    data = payment_settled()
    await handle(provisioning, data)

    async def another_replica_claims(_: BundleOrderRequest) -> None:
        async with database.session() as session:
            await session.exec(
                update(Activation).values(lease_until=utcnow() + timedelta(seconds=300))
            )

    platform.after_order = another_replica_claims
    await provisioning.activations.run_once()

    row = await activation_of(database, data.renewal_id)
    assert (row.state, row.order_id) == (ActivationState.ORDERING, None)
    assert await published(database, ACTIVATED) == []
    async with database.session() as session:
        assert (await session.exec(select(Bundle))).all() == []
    platform.after_order = None
    await expire_leases(database, DUE_TABLES)
    await run_until_final(provisioning, data.renewal_id)
    assert len(await published(database, ACTIVATED)) == 1


@pytest.mark.parametrize("status", [409, 422])
async def test_a_refused_order_fails(
    provisioning: Provisioning, database: Database, platform: FakePlatform, status: int
) -> None:
    platform.order_refusal = status
    data = payment_settled()
    await handle(provisioning, data)

    await provisioning.activations.run_once()

    row = await activation_of(database, data.renewal_id)
    assert (row.state, row.failure_reason) == (ActivationState.FAILED, "order_rejected")
    assert f"HTTP {status}" in (row.last_error or "")
    [failed] = await published(database, FAILED)
    assert failed["data"]["reason"] == "order_rejected"


async def test_an_unauthorised_order_is_retried_rather_than_failed(
    provisioning: Provisioning, database: Database, platform: FakePlatform
) -> None:
    platform.order_refusal = 401
    data = payment_settled()
    await handle(provisioning, data)

    await provisioning.activations.run_once()

    row = await activation_of(database, data.renewal_id)
    assert (row.state, row.unavailable_rounds) == (ActivationState.ORDERING, 1)
    assert len(platform.order_calls) == 1, "a refusal is not retried within the round"
    platform.order_refusal = None
    assert (await run_until_final(provisioning, data.renewal_id)).state == "activated"


async def test_an_unexpected_status_is_followed_until_it_settles(
    provisioning: Provisioning, database: Database, platform: FakePlatform
) -> None:
    data = payment_settled()
    await handle(provisioning, data)
    await provisioning.activations.run_once()
    platform.status_override = "pending_review"
    await fast_forward(database)

    await provisioning.activations.run_once()

    row = await activation_of(database, data.renewal_id)
    assert row.state == ActivationState.FOLLOWING
    assert "pending_review" in (row.last_error or "")
    platform.status_override = None
    assert (await run_until_final(provisioning, data.renewal_id)).state == "activated"


async def test_a_live_bundle_without_dates_is_reported_with_the_plans(
    provisioning: Provisioning, database: Database, platform: FakePlatform
) -> None:
    platform.with_dates = False
    data = payment_settled()
    await handle(provisioning, data)

    row = await run_until_final(provisioning, data.renewal_id)

    assert row.state == ActivationState.ACTIVATED
    [activated] = await published(database, ACTIVATED)
    valid_from = datetime.fromisoformat(activated["data"]["valid_from"])
    valid_until = datetime.fromisoformat(activated["data"]["valid_until"])
    assert _close(valid_from, utcnow())
    assert valid_until - valid_from == timedelta(days=30)


async def test_a_stale_due_time_on_a_final_activation_calls_nothing(
    provisioning: Provisioning, database: Database, platform: FakePlatform
) -> None:
    data = payment_settled()
    await handle(provisioning, data)
    await run_until_final(provisioning, data.renewal_id)
    calls = (len(platform.order_calls), len(platform.status_calls))
    async with database.session() as session:
        await session.exec(
            update(Activation)
            .where(col(Activation.renewal_id) == str(data.renewal_id))
            .values(due_at=utcnow() - timedelta(seconds=1))
        )

    assert await provisioning.activations.run_once() == 1

    assert (len(platform.order_calls), len(platform.status_calls)) == calls
    assert (await activation_of(database, data.renewal_id)).due_at is None
    assert len(await published(database)) == 1


async def test_several_renewals_are_worked_on_in_one_round(
    provisioning: Provisioning, database: Database, platform: FakePlatform
) -> None:
    renewals = [uuid.uuid4() for _ in range(5)]
    for renewal_id in renewals:
        await handle(provisioning, payment_settled(renewal_id))

    assert await provisioning.activations.run_once() == 5

    assert {call.reference for call in platform.order_calls} == {str(r) for r in renewals}


async def test_an_order_answered_as_live_is_activated_in_the_same_round(
    provisioning: Provisioning, database: Database, platform: FakePlatform
) -> None:
    platform.order_answer, platform.processing_checks = "active", 0
    data = payment_settled()
    await handle(provisioning, data)

    assert await provisioning.activations.run_once() == 1
    row = await activation_of(database, data.renewal_id)
    assert (row.state, row.bundle_state, row.attempts) == (ActivationState.ACTIVATED, "active", 1)
    assert (len(platform.order_calls), len(platform.status_calls)) == (1, 1)
    [activated] = await published(database, "esim.profile.activated.v1")
    assert activated["data"]["valid_from"] is not None


@pytest.mark.parametrize(
    ("answer", "state", "published_type"),
    [
        ("active", ActivationState.ACTIVATED, "esim.profile.activated.v1"),
        ("queued", ActivationState.ACTIVATED, "esim.profile.activated.v1"),
        ("failed", ActivationState.FAILED, "esim.activation.failed.v1"),
    ],
)
async def test_an_order_answer_that_describes_the_bundle_needs_no_status_check(
    provisioning: Provisioning,
    database: Database,
    platform: FakePlatform,
    answer: str,
    state: ActivationState,
    published_type: str,
) -> None:
    platform.order_answer, platform.order_describes_bundle = answer, True
    data = payment_settled()
    await handle(provisioning, data)

    assert await provisioning.activations.run_once() == 1
    row = await activation_of(database, data.renewal_id)
    assert (row.state, row.attempts) == (state, 1)
    assert (len(platform.order_calls), platform.status_calls) == (1, [])
    [event] = await published(database, published_type)
    if answer != "failed":
        assert event["data"]["bundle_state"] == answer
        assert event["data"]["valid_from"] is not None


async def test_an_order_answered_as_live_without_dates_is_looked_up_in_the_same_round(
    provisioning: Provisioning, database: Database, platform: FakePlatform
) -> None:
    platform.order_answer, platform.processing_checks = "active", 0
    platform.order_describes_bundle, platform.with_dates = True, False
    data = payment_settled()
    await handle(provisioning, data)

    assert await provisioning.activations.run_once() == 1
    assert (len(platform.order_calls), len(platform.status_calls)) == (1, 1)


async def test_an_order_answered_as_live_without_a_status_is_followed_later(
    provisioning: Provisioning, database: Database, platform: FakePlatform
) -> None:
    platform.order_answer, platform.processing_checks = "active", 0

    async def outage_after_order(_: BundleOrderRequest) -> None:
        platform.outage = True

    platform.after_order = outage_after_order
    data = payment_settled()
    await handle(provisioning, data)

    await provisioning.activations.run_once()
    row = await activation_of(database, data.renewal_id)
    assert (row.state, row.attempts) == (ActivationState.FOLLOWING, 1)
    assert row.order_id is not None and row.due_at is not None
    assert await published(database, "esim.profile.activated.v1") == []

    platform.outage, platform.after_order = False, None
    row = await run_until_final(provisioning, data.renewal_id)
    assert row.state == ActivationState.ACTIVATED
    assert len(platform.orders) == 1, "one bundle"
