"""Usage: polls and signed callbacks become UsageUpdated, DataLow once a threshold, transitions."""

import hashlib
import hmac
import json
import uuid
from datetime import timedelta
from typing import Any

import pytest
from esim_core.clock import as_utc, utcnow
from esim_core.duework.leases import LocalLock
from esim_core.persistence.db import Database
from esim_core.testing import published
from esim_core.web.problems import ProblemError
from provisioning.bootstrap import Provisioning
from provisioning.store import Bundle, PlatformCallback, UsageWatch
from provisioning.usage import Observation, UsagePoller, observe
from provisioning_testkit import (
    ICCID,
    FakePlatform,
    handle,
    payment_settled,
    poll,
    run_until_final,
)
from sqlalchemy import update
from sqlmodel import col, select

SECRET = "sandbox-callback-secret"
DATA_LOW = "esim.data.low.v1"
USAGE = "esim.usage.updated.v1"
STARTED = "esim.bundle.started.v1"
ENDED = "esim.bundle.ended.v1"
MB = 10240  # the test plan's allowance


async def activate(provisioning: Provisioning, **changes: Any) -> uuid.UUID:
    data = payment_settled(**changes)
    await handle(provisioning, data)
    await run_until_final(provisioning, data.renewal_id)
    return data.renewal_id


async def thresholds(database: Database) -> list[int]:
    return [e["data"]["threshold"] for e in await published(database, DATA_LOW)]


async def watch(database: Database, iccid: str = ICCID) -> UsageWatch:
    async with database.session() as session:
        row = await session.get(UsageWatch, iccid)
    assert row is not None
    return row


def percent(share: int) -> int:
    return MB * share // 100


def signed(
    body: dict[str, Any], *, secret: str = SECRET, at: int | None = None
) -> tuple[bytes, dict[str, str]]:
    raw = json.dumps(body).encode()
    timestamp = str(at if at is not None else int(utcnow().timestamp()))
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + raw, hashlib.sha256).hexdigest()
    return raw, {"x-esim-timestamp": timestamp, "x-esim-signature": f"v1={mac}"}


async def order_of(platform: FakePlatform, renewal_id: uuid.UUID) -> str:
    [order] = platform.orders_of(renewal_id)
    return order.order_id


def threshold_callback(order_id: str, used_mb: int, status: str = "active") -> dict[str, Any]:
    return {
        "id": f"cb_{uuid.uuid4().hex[:12]}",
        "type": "usage.threshold",
        "iccid": ICCID,
        "order_id": order_id,
        "status": status,
        "data_mb": MB,
        "data_used_mb": used_mb,
        "occurred_at": utcnow().isoformat(),
    }


async def test_an_activation_starts_following_the_bundle(
    provisioning: Provisioning, database: Database
) -> None:
    renewal_id = await activate(provisioning)
    async with database.session() as session:
        bundle = (await session.exec(select(Bundle))).one()
    assert (bundle.renewal_id, bundle.status, bundle.data_mb) == (str(renewal_id), "active", MB)
    row = await watch(database)
    assert row.due_at is not None and as_utc(row.due_at) > utcnow()


async def test_thresholds_75_and_90_once_each_as_usage_goes_80_82_95(
    provisioning: Provisioning, database: Database, platform: FakePlatform
) -> None:
    renewal_id = await activate(provisioning)
    for share in (80, 82, 95):
        platform.set_usage(renewal_id, percent(share))
        await poll(provisioning)
        await poll(provisioning)  # a poll that sees nothing new publishes nothing
    assert await thresholds(database) == [75, 90]
    usage = await published(database, USAGE)
    assert [e["data"]["data_used_mb"] for e in usage] == [percent(80), percent(82), percent(95)]
    assert usage[0]["data"]["renewal_id"] == str(renewal_id)
    assert usage[0]["data"]["data_total_mb"] == MB and usage[0]["_key"] == ICCID


async def test_a_jump_from_10_to_100_publishes_75_90_100_once_and_ends_the_bundle(
    provisioning: Provisioning, database: Database, platform: FakePlatform
) -> None:
    renewal_id = await activate(provisioning)
    platform.set_usage(renewal_id, percent(10))
    await poll(provisioning)
    platform.set_usage(renewal_id, MB, status="depleted")
    await poll(provisioning)
    await poll(provisioning)
    events = await published(database, DATA_LOW)
    assert [e["data"]["threshold"] for e in events] == [75, 90, 100]
    assert events[-1]["data"]["data_remaining_mb"] == 0
    [ended] = await published(database, ENDED)
    assert ended["data"]["reason"] == "depleted"
    assert ended["data"]["renewal_id"] == str(renewal_id)
    # Nothing live is left on the card: it is no longer polled.
    assert (await watch(database)).due_at is None


async def test_polls_back_off_while_nothing_changes_and_speed_up_on_a_change(
    provisioning: Provisioning, database: Database, platform: FakePlatform
) -> None:
    renewal_id = await activate(provisioning)
    gaps = []
    for _ in range(4):
        await poll(provisioning)
        row = await watch(database)
        assert row.due_at is not None and row.last_polled_at is not None
        gaps.append((as_utc(row.due_at) - as_utc(row.last_polled_at)).total_seconds())
    assert gaps[0] < gaps[1] < gaps[2] < gaps[3]
    platform.set_usage(renewal_id, 1)
    await poll(provisioning)
    row = await watch(database)
    assert row.idle_polls == 0


async def test_a_rate_limited_poll_waits_as_long_as_the_platform_asks(
    provisioning: Provisioning, database: Database, platform: FakePlatform
) -> None:
    await activate(provisioning)
    platform.rate_limited_for = 30.0
    await poll(provisioning)
    row = await watch(database)
    assert row.due_at is not None and row.last_polled_at is not None
    assert (as_utc(row.due_at) - as_utc(row.last_polled_at)).total_seconds() == pytest.approx(30)
    assert row.last_error is not None and "429" in row.last_error


async def test_a_callback_and_a_poll_reporting_the_same_change_publish_once(
    provisioning: Provisioning, database: Database, platform: FakePlatform
) -> None:
    renewal_id = await activate(provisioning)
    order_id = await order_of(platform, renewal_id)
    body, headers = signed(threshold_callback(order_id, percent(92)))
    answer = await provisioning.callbacks.receive(body, headers)
    assert answer["status"] == "applied"
    platform.set_usage(renewal_id, percent(92))
    await poll(provisioning)
    assert await thresholds(database) == [75, 90]
    assert len(await published(database, USAGE)) == 1


async def test_a_duplicated_callback_is_handled_once(
    provisioning: Provisioning, database: Database, platform: FakePlatform
) -> None:
    renewal_id = await activate(provisioning)
    callback = threshold_callback(await order_of(platform, renewal_id), percent(76))
    first = await provisioning.callbacks.receive(*signed(callback))
    again = await provisioning.callbacks.receive(*signed(callback))
    assert (first["status"], again["status"]) == ("applied", "duplicate")
    assert await thresholds(database) == [75]


@pytest.mark.parametrize(
    "tamper",
    ["wrong secret", "changed body", "stale timestamp", "no signature"],
)
async def test_a_bad_signature_is_refused_and_changes_nothing(
    provisioning: Provisioning, database: Database, platform: FakePlatform, tamper: str
) -> None:
    renewal_id = await activate(provisioning)
    callback = threshold_callback(await order_of(platform, renewal_id), percent(99))
    before = await published(database)
    if tamper == "wrong secret":
        body, headers = signed(callback, secret="guessed")
    elif tamper == "changed body":
        body, headers = signed(callback)
        body = body.replace(b'"active"', b'"depleted"')
    elif tamper == "stale timestamp":
        body, headers = signed(callback, at=int(utcnow().timestamp()) - 3600)
    else:
        body, headers = signed(callback)
        del headers["x-esim-signature"]
    with pytest.raises(ProblemError) as refused:
        await provisioning.callbacks.receive(body, headers)
    assert refused.value.status == 401
    assert await published(database) == before
    async with database.session() as session:
        assert (await session.exec(select(PlatformCallback))).all() == []
    # Polling still finds the change.
    platform.set_usage(renewal_id, percent(99))
    await poll(provisioning)
    assert await thresholds(database) == [75, 90]


async def test_an_order_completed_callback_makes_the_activation_look_now(
    provisioning: Provisioning, database: Database, platform: FakePlatform
) -> None:
    platform.processing_checks = 0
    data = payment_settled()
    await handle(provisioning, data)
    await provisioning.activations.run_once()  # ordered, now following, next look later
    assert await provisioning.activations.run_once() == 0
    order_id = await order_of(platform, data.renewal_id)
    body, headers = signed(
        {"id": "cb_1", "type": "order.completed", "iccid": ICCID, "order_id": order_id}
    )
    assert (await provisioning.callbacks.receive(body, headers))["status"] == "applied"
    await provisioning.activations.run_once()
    assert len(await published(database, "esim.profile.activated.v1")) == 1


async def test_an_order_completed_callback_for_a_live_order_writes_nothing(
    provisioning: Provisioning, database: Database, platform: FakePlatform
) -> None:
    renewal_id = await activate(provisioning)
    order_id = await order_of(platform, renewal_id)
    unknown = {"id": "cb_3", "type": "order.completed", "iccid": ICCID, "order_id": "ord_none"}
    for callback in (
        {"id": "cb_2", "type": "order.completed", "iccid": ICCID, "order_id": order_id},
        unknown,
        {"id": "cb_4", "type": "bundle.renamed", "iccid": ICCID, "order_id": order_id},
    ):
        assert (await provisioning.callbacks.receive(*signed(callback)))["status"] == "ignored"
    async with database.session() as session:
        assert (await session.exec(select(PlatformCallback))).all() == []
    assert len(await published(database, "esim.profile.activated.v1")) == 1


async def test_a_queued_bundle_that_starts_and_expires_is_announced_once_each(
    provisioning: Provisioning, database: Database, platform: FakePlatform
) -> None:
    platform.modes[ICCID] = "queued"
    renewal_id = await activate(provisioning, start="after_current")
    await poll(provisioning)
    assert await published(database, STARTED) == []
    platform.set_usage(renewal_id, 0, status="active")
    await poll(provisioning)
    await poll(provisioning)
    [started] = await published(database, STARTED)
    assert started["data"]["renewal_id"] == str(renewal_id)
    platform.set_usage(renewal_id, 5, status="expired")
    await poll(provisioning)
    await poll(provisioning)
    [ended] = await published(database, ENDED)
    assert ended["data"]["reason"] == "expired"
    # A late report of an earlier state does not move the bundle back.
    platform.set_usage(renewal_id, 5, status="active")
    await poll(provisioning)
    assert len(await published(database, STARTED)) == 1


async def test_a_poll_redone_after_a_crash_publishes_nothing_twice(
    provisioning: Provisioning, database: Database, platform: FakePlatform
) -> None:
    renewal_id = await activate(provisioning)
    platform.set_usage(renewal_id, percent(91))
    original = provisioning.usage._apply

    async def crash(*args: Any) -> None:
        await original(*args)
        raise RuntimeError("killed before the commit")

    provisioning.usage._apply = crash  # type: ignore[method-assign]
    await poll(provisioning)  # the round fails: nothing commits
    assert await thresholds(database) == []
    provisioning.usage._apply = original  # type: ignore[method-assign]
    await poll(provisioning)
    await poll(provisioning)
    assert await thresholds(database) == [75, 90]


async def test_a_poll_whose_watch_was_claimed_again_meanwhile_writes_nothing(
    provisioning: Provisioning,
    database: Database,
    platform: FakePlatform,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    renewal_id = await activate(provisioning)
    platform.set_usage(renewal_id, percent(80))
    newer_lease = utcnow() + timedelta(minutes=5)
    card_usage = platform.card_usage

    async def claimed_again_during_the_call(iccid: str, **kwargs: Any) -> Any:
        # The round's lease ran out mid-call and another round claimed the watch.
        async with database.session() as session:
            await session.exec(update(UsageWatch).values(lease_until=newer_lease))
        return await card_usage(iccid, **kwargs)

    monkeypatch.setattr(platform, "card_usage", claimed_again_during_the_call)
    await poll(provisioning)
    assert "claimed again during its round" in caplog.text
    assert await published(database, USAGE) == []
    row = await watch(database)
    assert row.lease_until is not None and as_utc(row.lease_until) == newer_lease
    assert row.polls == 0 and row.last_polled_at is None


async def test_a_callback_sent_again_freshly_signed_hours_later_is_a_duplicate(
    provisioning: Provisioning, database: Database, platform: FakePlatform
) -> None:
    renewal_id = await activate(provisioning)
    callback = threshold_callback(await order_of(platform, renewal_id), percent(80))
    first = await provisioning.callbacks.receive(*signed(callback))
    async with database.session() as session:
        await session.exec(
            update(PlatformCallback).values(received_at=utcnow() - timedelta(hours=6))
        )
    provisioning.runtime.purger.lock = LocalLock()
    assert await provisioning.runtime.purger.purge() == {"outbox": 0, "inbox": 0, "callback": 0}

    # The platform sends it again under its id with a new timestamp and signature.
    again = await provisioning.callbacks.receive(*signed(callback))
    assert (first["status"], again["status"]) == ("applied", "duplicate")


async def test_callback_ids_past_their_window_are_purged(
    provisioning: Provisioning, database: Database, platform: FakePlatform
) -> None:
    renewal_id = await activate(provisioning)
    order_id = await order_of(platform, renewal_id)
    for used in (percent(10), percent(20)):
        await provisioning.callbacks.receive(*signed(threshold_callback(order_id, used)))
    window = provisioning.runtime.settings.callback_retention_s  # type: ignore[attr-defined]
    async with database.session() as session:
        oldest = (await session.exec(select(PlatformCallback.id))).first()
        await session.exec(
            update(PlatformCallback)
            .where(col(PlatformCallback.id) == oldest)
            .values(received_at=utcnow() - timedelta(seconds=window + 60))
        )
    provisioning.runtime.purger.lock = LocalLock()

    assert (await provisioning.runtime.purger.purge())["callback"] == 1
    async with database.session() as session:
        left = (await session.exec(select(PlatformCallback.id))).all()
    assert len(left) == 1 and oldest not in left


async def test_a_new_bundle_that_nothing_used_yet_publishes_no_usage(
    provisioning: Provisioning, database: Database, platform: FakePlatform
) -> None:
    renewal_id = await activate(provisioning)
    await poll(provisioning)
    assert await published(database, USAGE) == []
    async with database.session() as session:
        bundle = (await session.exec(select(Bundle))).one()
    assert (bundle.data_used_mb, bundle.usage_as_of is not None) == (0, True)
    platform.set_usage(renewal_id, 1)
    await poll(provisioning)
    assert [e["data"]["data_used_mb"] for e in await published(database, USAGE)] == [1]


async def test_a_poll_asks_only_for_bundles_that_ended_since_the_last_look(
    provisioning: Provisioning, database: Database, platform: FakePlatform
) -> None:
    await activate(provisioning)
    await poll(provisioning)
    await poll(provisioning)
    first, second = platform.usage_windows
    assert first is None  # never looked at: everything
    assert second is not None
    assert UsagePoller.ended_margin_s <= second < UsagePoller.ended_margin_s + 30


async def test_a_followed_bundle_left_out_of_the_answer_is_looked_up_and_ends_once(
    provisioning: Provisioning, database: Database, platform: FakePlatform
) -> None:
    first = await activate(provisioning)
    queued = await activate(provisioning, start="after_current")
    [order] = platform.orders_of(first)
    platform.left_out.add(order.order_id)
    platform.status_override = "expired"
    calls = len(platform.status_calls)
    await poll(provisioning)
    assert platform.status_calls[calls:] == [order.order_id]
    [ended] = await published(database, ENDED)
    assert (ended["data"]["renewal_id"], ended["data"]["reason"]) == (str(first), "expired")
    # Ended, it is no longer followed: the next polls neither look it up nor publish again.
    await poll(provisioning)
    await poll(provisioning)
    assert platform.status_calls[calls:] == [order.order_id]
    assert len(await published(database, ENDED)) == 1
    assert (await watch(database)).due_at is not None  # the queued bundle is still followed
    assert queued != first


async def test_a_bundle_a_poll_sees_cut_short_was_replaced_and_is_announced_once(
    provisioning: Provisioning, database: Database, platform: FakePlatform
) -> None:
    first = await activate(provisioning)
    [order] = platform.orders_of(first)
    async with database.session() as session:
        bundle = await session.get(Bundle, order.order_id)
    assert bundle is not None
    # What the platform reports of a bundle a start=now plan replaced, before provisioning has
    # committed that plan's activation: ended, though its own end is a month away.
    runtime = provisioning.runtime
    seen = Observation(
        order_id=order.order_id,
        status="expired",
        data_used_mb=0,
        as_of=utcnow(),
        valid_from=as_utc(bundle.valid_from),
        valid_until=as_utc(bundle.valid_until),
    )
    async with database.session() as session:
        locked = await session.get(Bundle, order.order_id)
        assert locked is not None
        assert observe(runtime.outbox, session, locked, seen)
    async with database.session() as session:
        again = await session.get(Bundle, order.order_id)
        assert again is not None
        assert not observe(runtime.outbox, session, again, seen)
    # The replacing plan's activation then finds it cancelled already: nothing more is said.
    await activate(provisioning)
    [cancelled] = await published(database, "esim.bundle.cancelled.v1")
    assert (cancelled["data"]["renewal_id"], cancelled["data"]["reason"]) == (
        str(first),
        "replaced",
    )
    assert await published(database, ENDED) == []
