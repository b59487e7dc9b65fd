"""Purges of the dedup and relay tables: past the window in chunks, never two replicas at once."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from esim_core.clock import utcnow
from esim_core.duework.leases import LocalLock, RedisLock
from esim_core.duework.purge import Purger, Retention
from esim_core.messaging.consumer import EventConsumer, MessageInfo, Route
from esim_core.messaging.inbox import InboxEntry, inbox_retention, record_new
from esim_core.messaging.outbox import OutboxMessage, outbox_retention
from esim_core.messaging.topics import DAY_MS, declared_topics
from esim_core.observability.metrics import ROWS_PURGED
from esim_core.persistence.db import Database
from esim_core.service import ServiceRuntime
from esim_core.settings import INBOX_RETENTION_S, ServiceSettings
from esim_core.testing import temporary_database
from esim_schemas import CloudEvent, RenewalRequested, new_event
from pydantic import ValidationError
from sqlalchemy import func, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

DAY = 24 * 3600.0
ICCID = "8944500102198304826"


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    async with temporary_database(tmp_path, [OutboxMessage, InboxEntry]) as db:
        yield db


class CountingPurger(Purger):
    """A purger that records what each chunk deleted, and how many chunks ran at once."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.chunks: list[int] = []
        self.running = 0
        self.most_at_once = 0

    async def delete_chunk(self, retention: Retention, cutoff: Any) -> int:
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        try:
            await asyncio.sleep(0.01)  # a chunk that takes a moment, as on a busy database
            deleted = await super().delete_chunk(retention, cutoff)
        finally:
            self.running -= 1
        self.chunks.append(deleted)
        return deleted


async def consumed(database: Database, consumer: str, ages_s: dict[str, float]) -> None:
    """Record events as consumed `age` seconds ago, one id per entry."""
    now = utcnow()
    async with database.session() as session:
        await record_new(session, consumer, [(event_id, "t") for event_id in ages_s])
    async with database.session() as session:
        for event_id, age in ages_s.items():
            await session.exec(
                update(InboxEntry)
                .where(col(InboxEntry.consumer) == consumer, col(InboxEntry.event_id) == event_id)
                .values(processed_at=now - timedelta(seconds=age))
            )


async def inbox_ids(database: Database, consumer: str) -> set[str]:
    async with database.session() as session:
        rows = await session.exec(
            select(InboxEntry.event_id).where(col(InboxEntry.consumer) == consumer)
        )
        return set(rows.all())


async def test_rows_past_the_window_go_in_chunks_and_younger_ones_stay(
    database: Database,
) -> None:
    old = {f"old-{n}": 2 * DAY + n for n in range(7)}
    young = {f"young-{n}": DAY - 60 - n for n in range(3)}
    await consumed(database, "svc", old | young)
    purger = CountingPurger(database, LocalLock(), chunk=3, pause_s=0)
    purger.keep(inbox_retention("inbox", ["svc"], DAY))
    before = ROWS_PURGED.labels("inbox")._value.get()

    assert await purger.purge() == {"inbox": 7}
    assert purger.chunks == [3, 3, 1], "three rows a statement, each in its own transaction"
    assert await inbox_ids(database, "svc") == set(young)
    assert ROWS_PURGED.labels("inbox")._value.get() - before == 7
    assert await purger.purge() == {"inbox": 0}


async def test_each_consumer_keeps_its_rows_for_its_own_window(database: Database) -> None:
    await consumed(database, "svc", {"event": 20 * DAY})
    await consumed(database, "webhook:stripe", {"evt_recent": 20 * DAY, "evt_old": 40 * DAY})
    await consumed(database, "unlisted", {"kept": 400 * DAY})
    purger = Purger(database, LocalLock(), chunk=10, pause_s=0)
    purger.keep(inbox_retention("inbox", ["svc"], 15 * DAY))
    purger.keep(inbox_retention("webhook inbox", ["webhook:stripe"], 31 * DAY))

    assert await purger.purge() == {"inbox": 1, "webhook inbox": 1}
    assert await inbox_ids(database, "svc") == set()
    assert await inbox_ids(database, "webhook:stripe") == {"evt_recent"}
    assert await inbox_ids(database, "unlisted") == {"kept"}, "only the listed consumers' rows"


async def test_a_redelivery_inside_the_window_is_still_dropped_after_a_purge(
    database: Database,
) -> None:
    handled: list[str] = []

    async def handler(session: AsyncSession, event: CloudEvent[Any]) -> None:
        handled.append(event.id)

    consumer = EventConsumer(
        name="svc",
        subscriptions={"esim.renewal.requested": [Route(RenewalRequested, handler)]},
        database=database,
        publisher=None,  # type: ignore[arg-type]
        attempts=1,
    )
    info = MessageInfo(topic="esim.renewal.requested", partition=0, offset=1, key=ICCID.encode())
    inside, outside = request_bytes("inside-the-window"), request_bytes("outside-the-window")
    await consumer.handle(inside, info)
    await consumer.handle(outside, info)
    async with database.session() as session:
        for event_id, age in (
            ("inside-the-window", INBOX_RETENTION_S - DAY),
            ("outside-the-window", INBOX_RETENTION_S + DAY),
        ):
            await session.exec(
                update(InboxEntry)
                .where(col(InboxEntry.event_id) == event_id)
                .values(processed_at=utcnow() - timedelta(seconds=age))
            )
    purger = Purger(database, LocalLock(), pause_s=0)
    purger.keep(inbox_retention("inbox", ["svc"], INBOX_RETENTION_S))
    assert await purger.purge() == {"inbox": 1}

    await consumer.handle(inside, info)
    assert handled == ["inside-the-window", "outside-the-window"]
    # The window is the guarantee: an id purged past it is new again (why it outlasts topics).
    await consumer.handle(outside, info)
    assert handled[-1] == "outside-the-window" and len(handled) == 3


def request_bytes(event_id: str) -> bytes:
    data = RenewalRequested(
        renewal_id=uuid.uuid4(),
        user_id="u-1",
        iccid=ICCID,
        plan_code="JP-1D-1GB",
        payment={"method": "card", "token": "card_ok"},
        start="now",
        requested_at=datetime.now(UTC),
    )
    return new_event(data, source="/tests", event_id=event_id).to_json()


async def test_published_outbox_rows_go_after_their_window_and_unpublished_ones_never(
    database: Database,
) -> None:
    now = utcnow()
    rows = [
        ("published long ago", now - timedelta(days=3), now - timedelta(days=2)),
        ("published just now", now - timedelta(days=3), now - timedelta(minutes=1)),
        ("never published", now - timedelta(days=30), None),
    ]
    async with database.session() as session:
        for event_id, created_at, published_at in rows:
            session.add(
                OutboxMessage(
                    event_id=event_id,
                    event_type="t",
                    topic="esim.t",
                    value=b"{}",
                    created_at=created_at,
                    published_at=published_at,
                )
            )
    purger = Purger(database, LocalLock(), pause_s=0)
    purger.keep(outbox_retention(DAY))

    assert await purger.purge() == {"outbox": 1}
    async with database.session() as session:
        left = set((await session.exec(select(OutboxMessage.event_id))).all())
    assert left == {"published just now", "never published"}


async def test_two_replicas_never_purge_at_once(database: Database) -> None:
    await consumed(database, "svc", {f"old-{n}": 2 * DAY for n in range(12)})
    redis = fakeredis.FakeAsyncRedis()
    replicas = [
        CountingPurger(database, RedisLock(redis, "svc:purge", ttl_s=30), chunk=2, pause_s=0)
        for _ in range(2)
    ]
    for replica in replicas:
        replica.keep(inbox_retention("inbox", ["svc"], DAY))

    outcomes = await asyncio.gather(*(replica.purge() for replica in replicas))

    assert sorted(outcome.get("inbox", 0) for outcome in outcomes) == [0, 12]
    assert sorted(len(replica.chunks) for replica in replicas) == [0, 7]
    assert max(replica.most_at_once for replica in replicas) == 1
    assert await inbox_ids(database, "svc") == set()


async def test_a_replica_that_loses_its_lease_stops_within_one_chunk(database: Database) -> None:
    await consumed(database, "svc", {f"old-{n}": 2 * DAY for n in range(10)})

    class LeaseLostAfter:
        def __init__(self, rounds: int) -> None:
            self.rounds = rounds

        async def acquire(self) -> bool:
            self.rounds -= 1
            return self.rounds >= 0

    purger = CountingPurger(database, LeaseLostAfter(2), chunk=3, pause_s=0)
    purger.keep(inbox_retention("inbox", ["svc"], DAY))
    purger.keep(outbox_retention(DAY))

    assert await purger.purge() == {"inbox": 6}
    assert purger.chunks == [3, 3]
    assert len(await inbox_ids(database, "svc")) == 4


async def test_a_stop_ends_the_purge_after_the_chunk_in_hand(database: Database) -> None:
    await consumed(database, "svc", {f"old-{n}": 2 * DAY for n in range(50)})
    purger = CountingPurger(database, LocalLock(), chunk=1, pause_s=0.05)
    purger.keep(inbox_retention("inbox", ["svc"], DAY))
    task = asyncio.create_task(purger.run())
    while not purger.chunks:
        await asyncio.sleep(0.01)

    purger.stop()
    await asyncio.wait_for(task, 1.0)
    assert 0 < len(purger.chunks) < 50
    async with database.session() as session:
        left = (await session.exec(select(func.count()).select_from(InboxEntry))).one()
    assert left == 50 - len(purger.chunks)


def test_every_kind_keeps_one_window_and_names_real_columns() -> None:
    purger = Purger(None, LocalLock())  # type: ignore[arg-type]
    purger.keep(inbox_retention("inbox", ["svc"], DAY))
    with pytest.raises(ValueError, match="inbox rows already have a window"):
        purger.keep(inbox_retention("inbox", ["other"], DAY))
    with pytest.raises(ValueError, match="has no column 'sent_at'"):
        Retention("outbox", OutboxMessage, "sent_at", DAY)
    with pytest.raises(ValueError, match="needs the consumers"):
        inbox_retention("inbox", [], DAY)


def test_a_service_purges_its_outbox_and_its_consumers_inbox_rows(tmp_path: Path) -> None:
    settings = ServiceSettings(
        database_url=f"sqlite+aiosqlite:///{tmp_path}/svc.sqlite",
        http_port=8000,
        inbox_retention_s=9 * DAY,
        outbox_retention_s=DAY,
    )
    runtime = ServiceRuntime("svc", settings, [])
    kinds = {each.kind: each for each in runtime.purger.retentions}
    assert set(kinds) == {"outbox", "inbox"}
    assert (kinds["inbox"].keep_s, kinds["inbox"].only) == (9 * DAY, {"consumer": ["svc"]})
    assert kinds["outbox"].keep_s == DAY


def test_an_inbox_window_shorter_than_a_minute_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="inbox_retention_s"):
        ServiceSettings(
            database_url=f"sqlite+aiosqlite:///{tmp_path}/svc.sqlite",
            http_port=8000,
            inbox_retention_s=5,
        )


def test_the_inbox_window_outlasts_every_declared_topic_and_a_segment() -> None:
    # A record stays readable until its whole segment goes: retention.ms after the segment's
    # newest record, up to a segment.ms (Kafka's default 7 days) after the record itself. A
    # dead letter replayed puts its event back before every group that handled it.
    longest = max(spec.retention_ms for spec in declared_topics().values())
    assert longest + 7 * DAY_MS < INBOX_RETENTION_S * 1000
