"""Cancellations: a queued bundle cancelled once at the platform, a refusal, a replaced plan."""

import uuid
from typing import Any

from esim_core.clock import as_utc, utcnow
from esim_core.messaging.consumer import MessageInfo
from esim_core.persistence.db import Database
from esim_core.testing import event, expire_leases, published
from esim_schemas import BundleCancelRequested
from provisioning.bootstrap import Provisioning
from provisioning.domain import CancellationState, event_id
from provisioning.store import Bundle, Cancellation, UsageWatch
from provisioning_testkit import (
    DUE_TABLES,
    ICCID,
    FakePlatform,
    fast_forward,
    handle,
    payment_settled,
    poll,
    run_until_final,
)
from sqlmodel import select

CANCELLED = "esim.bundle.cancelled.v1"
STARTED = "esim.bundle.started.v1"
ENDED = "esim.bundle.ended.v1"


async def activate(provisioning: Provisioning, **changes: Any) -> uuid.UUID:
    data = payment_settled(**changes)
    await handle(provisioning, data)
    await run_until_final(provisioning, data.renewal_id)
    return data.renewal_id


async def request_cancel(
    provisioning: Provisioning,
    renewal_id: uuid.UUID,
    event_id: str | None = None,
    reason: str = "cancelled_by_user",
) -> None:
    data = BundleCancelRequested(
        renewal_id=renewal_id, iccid=ICCID, reason=reason, requested_at=utcnow()
    )
    async with provisioning.runtime.database.session() as session:
        await provisioning.handlers.on_bundle_cancel_requested(session, event(data, event_id))


async def cancellation(database: Database, renewal_id: uuid.UUID) -> Cancellation:
    async with database.session() as session:
        row = await session.get(Cancellation, str(renewal_id))
    assert row is not None
    return row


async def bundle_of(database: Database, renewal_id: uuid.UUID) -> Bundle:
    async with database.session() as session:
        row = (
            await session.exec(select(Bundle).where(Bundle.renewal_id == str(renewal_id)))
        ).first()
    assert row is not None
    return row


async def test_a_queued_bundle_is_cancelled_once_and_carriers_are_told(
    provisioning: Provisioning, database: Database, platform: FakePlatform
) -> None:
    platform.modes[ICCID] = "queued"
    renewal_id = await activate(provisioning)
    await request_cancel(provisioning, renewal_id, event_id="cancel-1")
    await request_cancel(provisioning, renewal_id, event_id="cancel-1")  # redelivered
    await request_cancel(provisioning, renewal_id, event_id="cancel-2")  # asked again

    assert await provisioning.cancellations.run_once() == 1
    assert await provisioning.cancellations.run_once() == 0

    bundle = await bundle_of(database, renewal_id)
    assert platform.cancel_calls == [bundle.order_id]
    row = await cancellation(database, renewal_id)
    assert (row.state, row.order_id, row.bundle_status, row.request_event_id) == (
        CancellationState.CANCELLED,
        bundle.order_id,
        "revoked",
        "cancel-1",
    )
    assert bundle.cancel_reason == "cancelled_by_user" and bundle.cancelled_at is not None
    [cancelled] = await published(database, CANCELLED)
    assert cancelled["id"] == event_id("bundle-cancelled", bundle.order_id)
    assert cancelled["_key"] == ICCID
    assert cancelled["data"] | {"cancelled_at": None} == {
        "renewal_id": str(renewal_id),
        "iccid": ICCID,
        "plan_code": "JP-30D-10GB",
        "reason": "cancelled_by_user",
        "cancelled_at": None,
        "platform_reference": bundle.order_id,
    }


async def test_a_cancelled_bundle_is_no_longer_followed(
    provisioning: Provisioning, database: Database, platform: FakePlatform
) -> None:
    platform.modes[ICCID] = "queued"
    renewal_id = await activate(provisioning)
    await request_cancel(provisioning, renewal_id)
    await provisioning.cancellations.run_once()
    platform.set_usage(renewal_id, 0, status="expired")

    await poll(provisioning)

    assert await published(database, ENDED) == []
    async with database.session() as session:
        watch = await session.get(UsageWatch, ICCID)
    assert watch is not None and watch.due_at is None


async def test_a_round_redone_after_a_crash_publishes_one_cancellation(
    provisioning: Provisioning, database: Database, platform: FakePlatform
) -> None:
    platform.modes[ICCID] = "queued"
    renewal_id = await activate(provisioning)
    await request_cancel(provisioning, renewal_id)
    order_id = (await bundle_of(database, renewal_id)).order_id
    # The first round's answer is lost (the replica died between the call and its commit).
    await platform.cancel_bundle(order_id)
    await expire_leases(database, DUE_TABLES)

    await provisioning.cancellations.run_once()

    assert platform.cancel_calls == [order_id, order_id]
    assert len(await published(database, CANCELLED)) == 1
    assert (await cancellation(database, renewal_id)).state == CancellationState.CANCELLED


async def test_a_bundle_that_started_first_is_kept_and_its_start_announced(
    provisioning: Provisioning, database: Database, platform: FakePlatform
) -> None:
    platform.modes[ICCID] = "queued"
    renewal_id = await activate(provisioning)
    await request_cancel(provisioning, renewal_id)
    platform.cancel_refusal = "active"
    platform.set_usage(renewal_id, 10, status="active")

    await provisioning.cancellations.run_once()

    row = await cancellation(database, renewal_id)
    assert (row.state, row.bundle_status) == (CancellationState.REFUSED, "active")
    assert row.last_error == "the platform did not cancel: bundle active"
    assert await published(database, CANCELLED) == []
    async with database.session() as session:
        watch = await session.get(UsageWatch, ICCID)
    assert watch is not None and watch.due_at is not None
    assert as_utc(watch.due_at) <= utcnow()
    await poll(provisioning)
    [started] = await published(database, STARTED)
    assert started["data"]["renewal_id"] == str(renewal_id)
    assert (await bundle_of(database, renewal_id)).cancelled_at is None


async def test_an_outage_is_retried_until_the_platform_cancels(
    provisioning: Provisioning, database: Database, platform: FakePlatform
) -> None:
    platform.modes[ICCID] = "queued"
    renewal_id = await activate(provisioning)
    await request_cancel(provisioning, renewal_id)
    platform.outage = True

    await provisioning.cancellations.run_once()
    await fast_forward(database)
    await provisioning.cancellations.run_once()

    row = await cancellation(database, renewal_id)
    assert (row.state, row.unavailable_rounds) == (CancellationState.PENDING, 2)
    assert row.due_at is not None and as_utc(row.due_at) > utcnow()
    assert "unavailable" in (row.last_error or "")
    platform.outage = False
    await fast_forward(database)
    await provisioning.cancellations.run_once()
    assert (await cancellation(database, renewal_id)).state == CancellationState.CANCELLED
    assert len(await published(database, CANCELLED)) == 1


async def test_a_cancel_before_the_bundle_is_live_here_waits_for_it(
    provisioning: Provisioning, database: Database, platform: FakePlatform
) -> None:
    platform.modes[ICCID] = "queued"
    data = payment_settled()
    await handle(provisioning, data)
    await request_cancel(provisioning, data.renewal_id)

    await provisioning.cancellations.run_once()

    assert platform.cancel_calls == []
    assert (await cancellation(database, data.renewal_id)).state == CancellationState.PENDING
    await run_until_final(provisioning, data.renewal_id)
    await fast_forward(database)
    await provisioning.cancellations.run_once()
    assert (await cancellation(database, data.renewal_id)).state == CancellationState.CANCELLED


async def test_nothing_is_cancelled_for_a_failed_activation(
    provisioning: Provisioning, database: Database, platform: FakePlatform
) -> None:
    platform.modes[ICCID] = "fail"
    renewal_id = await activate(provisioning)
    await request_cancel(provisioning, renewal_id)

    await provisioning.cancellations.run_once()

    row = await cancellation(database, renewal_id)
    assert row.state == CancellationState.ABANDONED
    assert platform.cancel_calls == []
    assert await published(database, CANCELLED) == []


async def test_a_start_now_renewal_replaces_the_live_plan_once(
    provisioning: Provisioning, database: Database, platform: FakePlatform
) -> None:
    first = await activate(provisioning)
    platform.modes[ICCID] = "queued"
    queued = await activate(provisioning, start="after_current")
    platform.modes[ICCID] = "none"

    second = await activate(provisioning, start="now")

    [replaced] = await published(database, CANCELLED)
    old = await bundle_of(database, first)
    assert (replaced["data"]["renewal_id"], replaced["data"]["reason"]) == (str(first), "replaced")
    assert replaced["data"]["platform_reference"] == old.order_id
    # The new plan's ProfileActivated names the plan it ended, for the traveller's receipt.
    assert replaced["data"]["replaced_by"] == str(second)
    replaces = {
        e["data"]["renewal_id"]: e["data"].get("replaces") for e in await activated(database)
    }
    assert replaces == {str(first): None, str(queued): None, str(second): [old.plan_code]}
    assert (await bundle_of(database, queued)).cancelled_at is None
    assert (await bundle_of(database, second)).cancelled_at is None
    assert platform.cancel_calls == []  # the platform replaced it by itself

    platform.set_usage(first, 0, status="expired")
    await poll(provisioning)
    await activate(provisioning, start="now")
    cancelled = await published(database, CANCELLED)
    assert [e["data"]["renewal_id"] for e in cancelled] == [str(first), str(second)]
    assert [e["data"]["renewal_id"] for e in await published(database, ENDED)] == []


async def test_a_requested_cancel_of_a_replaced_bundle_publishes_nothing_more(
    provisioning: Provisioning, database: Database, platform: FakePlatform
) -> None:
    first = await activate(provisioning)
    await activate(provisioning, start="now")
    await request_cancel(provisioning, first, reason="replaced")

    await provisioning.cancellations.run_once()

    row = await cancellation(database, first)
    assert (row.state, row.last_error) == (CancellationState.CANCELLED, "already replaced")
    assert platform.cancel_calls == []
    assert len(await published(database, CANCELLED)) == 1


async def test_a_replaced_plan_a_poll_saw_expired_first_is_still_announced_replaced(
    provisioning: Provisioning, database: Database, platform: FakePlatform
) -> None:
    first = await activate(provisioning)
    platform.set_usage(first, 0, status="expired")  # the platform ended it for the new one
    await poll(provisioning)

    second = await activate(provisioning, start="now")

    [replaced] = await published(database, CANCELLED)
    assert (replaced["data"]["renewal_id"], replaced["data"]["reason"]) == (str(first), "replaced")
    assert replaced["data"]["replaced_by"] == str(second)
    replaces = [e["data"].get("replaces") for e in await activated(database)]
    assert replaces == [None, [(await bundle_of(database, first)).plan_code]]


async def activated(database: Database) -> list[dict[str, Any]]:
    return await published(database, "esim.profile.activated.v1")


async def test_two_cancel_requests_of_one_renewal_in_one_batch_make_one_row(
    provisioning: Provisioning, database: Database, platform: FakePlatform
) -> None:
    platform.modes[ICCID] = "queued"
    renewal_id = await activate(provisioning)
    consumer = provisioning.runtime.subscribe()
    assert consumer is not None
    data = BundleCancelRequested(
        renewal_id=renewal_id, iccid=ICCID, reason="cancelled_by_user", requested_at=utcnow()
    )
    topic = "esim.bundle.cancel-requested"
    batch = [
        (event(data, event_id=f"cancel-{n}").to_json(), MessageInfo(topic, 0, n, ICCID.encode()))
        for n in range(2)
    ]

    await consumer.handle_batch([*batch, batch[0]])
    await provisioning.cancellations.run_once()

    async with database.session() as session:
        rows = (await session.exec(select(Cancellation))).all()
    assert [row.request_event_id for row in rows] == ["cancel-0"]
    assert len(platform.cancel_calls) == 1
    assert len(await published(database, CANCELLED)) == 1


async def test_a_user_cancel_of_a_plan_replaced_meanwhile_is_abandoned(
    provisioning: Provisioning, database: Database, platform: FakePlatform
) -> None:
    first = await activate(provisioning)
    await activate(provisioning, start="now")
    await request_cancel(provisioning, first)

    await provisioning.cancellations.run_once()

    row = await cancellation(database, first)
    assert (row.state, row.last_error) == (CancellationState.ABANDONED, "already replaced")
    assert platform.cancel_calls == []
    assert [e["data"]["reason"] for e in await published(database, CANCELLED)] == ["replaced"]
