"""The core's fast paths: due work as a pipeline, batched consuming, the relay woken by commits."""

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog
from esim_core.clock import as_utc
from esim_core.duework import loop as worker
from esim_core.duework.loop import DueLoop, claim, clear_due
from esim_core.messaging.consumer import (
    POLL_MS,
    EventConsumer,
    MessageInfo,
    PermanentEventError,
    Route,
    fetch_batch,
)
from esim_core.messaging.inbox import InboxEntry
from esim_core.messaging.kafka import OutgoingMessage
from esim_core.messaging.outbox import Outbox, OutboxMessage
from esim_core.observability.metrics import DB_TRANSACTIONS
from esim_core.persistence.db import Database
from esim_core.settings import Topics
from esim_core.testing import temporary_database
from esim_schemas import CloudEvent, RenewalRejected, RenewalRequested, new_event
from sqlmodel import Field, SQLModel, col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

ICCID = "8944500102198304826"
TOPIC = "esim.renewal.requested"


class Chore(SQLModel, table=True):
    """A row of due work, shaped like a payment or an activation."""

    __tablename__ = "test_chore"

    id: str = Field(primary_key=True)
    due_at: datetime | None = None
    lease_until: datetime | None = None
    done: bool = False


class Recorder:
    """A publisher that records what would go to Kafka."""

    def __init__(self) -> None:
        self.sent: list[OutgoingMessage] = []

    async def publish_raw(
        self, value: bytes, *, topic: str, key: str | None, headers: dict[str, str]
    ) -> None:
        self.sent.append(OutgoingMessage(value, topic, key, headers))

    async def publish_many(self, messages: list[OutgoingMessage]) -> list[Exception | None]:
        self.sent.extend(messages)
        return [None] * len(messages)


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    async with temporary_database(tmp_path, [OutboxMessage, InboxEntry, Chore]) as db:
        yield db


async def add_chores(database: Database, count: int, *, due: bool = True) -> list[str]:
    keys = [f"chore-{index:03d}" for index in range(count)]
    async with database.session() as session:
        for key in keys:
            session.add(Chore(id=key, due_at=datetime.now(UTC) if due else None))
    return keys


async def wait_for(check: Any, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.01)


async def test_a_woken_loop_takes_new_work_long_before_its_interval(database: Database) -> None:
    worked: list[str] = []

    async def work(key: str) -> None:
        worked.append(key)
        async with database.session() as session:
            row = await session.get(Chore, key)
            assert row is not None
            row.done, row.due_at, row.lease_until = True, None, None
            session.add(row)

    loop = DueLoop(database, Chore, work, what="chore", interval_s=60.0)
    task = asyncio.create_task(loop.run())
    await asyncio.sleep(0.05)  # the first claim found nothing; the loop now waits a minute
    await add_chores(database, 3)
    loop.wake()

    async def all_worked() -> bool:
        return len(worked) == 3

    await wait_for(all_worked, timeout=5)
    await loop.stop(1.0)
    await task
    assert sorted(worked) == ["chore-000", "chore-001", "chore-002"]


async def test_a_loop_woken_only_by_notes_wakes_on_a_committed_note_alone(
    database: Database,
) -> None:
    claims = 0
    real_claim = worker.claim

    async def counted_claim(*args: Any, **kwargs: Any) -> Any:
        nonlocal claims
        claims += 1
        return await real_claim(*args, **kwargs)

    worked: list[str] = []

    async def work(key: str) -> None:
        worked.append(key)
        await clear_due(database, Chore, key, None)

    loop = DueLoop(database, Chore, work, what="chore", interval_s=60.0, woken_by_commits=False)
    worker.claim = counted_claim  # type: ignore[assignment]
    try:
        task = asyncio.create_task(loop.run())
        await asyncio.sleep(0.05)  # the first claim found nothing; the loop now waits a minute
        looked = claims

        class RolledBackError(Exception):
            pass

        async def noted_then_rolled_back() -> None:
            async with database.session() as session:
                session.add(Chore(id="never", due_at=datetime.now(UTC)))
                worker.made_due(session, Chore)
                raise RolledBackError

        with pytest.raises(RolledBackError):
            await noted_then_rolled_back()
        await asyncio.sleep(0.05)
        assert claims == looked, "a rolled-back note wakes nothing"

        async with database.session() as session:
            session.add(Chore(id="noted", due_at=datetime.now(UTC)))
            worker.made_due(session, Chore)

        async def worked_it() -> bool:
            return worked == ["noted"]

        await wait_for(worked_it, timeout=5)
        await loop.stop(1.0)
        await task
    finally:
        worker.claim = real_claim  # type: ignore[assignment]


async def test_a_backlog_is_worked_through_without_waiting_for_the_interval(
    database: Database,
) -> None:
    keys = await add_chores(database, 45)
    running = 0
    most = 0
    worked: list[str] = []

    async def work(key: str) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.01)
        async with database.session() as session:
            row = await session.get(Chore, key)
            assert row is not None
            row.done, row.due_at, row.lease_until = True, None, None
            session.add(row)
        worked.append(key)
        running -= 1

    loop = DueLoop(database, Chore, work, what="chore", concurrency=4, interval_s=60.0)
    task = asyncio.create_task(loop.run())

    async def all_worked() -> bool:
        return len(worked) == len(keys)

    await wait_for(all_worked, timeout=10)
    await loop.stop(1.0)
    await task
    assert sorted(worked) == keys, "each row once"
    assert most <= 4, "never more rounds in flight than the concurrency"


async def test_an_idle_loop_looks_less_often_until_work_or_a_wake_comes(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    looks = 0
    real_claim = worker.claim

    async def counted_claim(*args: Any, **kwargs: Any) -> Any:
        nonlocal looks
        looks += 1
        return await real_claim(*args, **kwargs)

    monkeypatch.setattr(worker, "claim", counted_claim)
    worked: list[str] = []

    async def work(key: str) -> None:
        worked.append(key)
        async with database.session() as session:
            row = await session.get(Chore, key)
            assert row is not None
            row.done, row.due_at, row.lease_until = True, None, None
            session.add(row)

    loop = DueLoop(database, Chore, work, what="chore", interval_s=0.01, idle_max_s=0.08)
    task = asyncio.create_task(loop.run())

    async def settled() -> bool:
        return looks >= 6

    await wait_for(settled)
    assert loop._idle_wait_s == 0.08, "empty looks double the wait up to idle_max_s"
    loop.wake()
    assert loop._idle_wait_s == 0.01, "a wake starts again from the interval"
    await add_chores(database, 2)  # due now, but nobody woke the loop: the fallback finds them

    async def found() -> bool:
        return len(worked) == 2

    await wait_for(found)
    await loop.stop(1.0)
    await task


async def test_a_fetch_waits_for_messages_without_sleeping_after_an_empty_one() -> None:
    calls: list[dict[str, Any]] = []
    answers: list[dict[str, list[str]]] = [{}, {"t-0": ["a", "b"], "t-1": ["c"]}]

    class Consumer:
        async def getmany(self, **kwargs: Any) -> dict[str, list[str]]:
            calls.append(kwargs)
            return answers.pop(0)

    fake: Any = Consumer()
    assert await fetch_batch(fake, max_records=7) == ()
    assert await fetch_batch(fake, max_records=7) == ("a", "b", "c")
    assert calls == [{"timeout_ms": POLL_MS, "max_records": 7}] * 2


async def test_stop_abandons_slow_rounds_and_releases_their_leases(database: Database) -> None:
    await add_chores(database, 2)
    started = asyncio.Event()

    async def work(key: str) -> None:
        started.set()
        await asyncio.sleep(3600)  # an outside call that hangs

    loop = DueLoop(database, Chore, work, what="chore", lease_s=600.0, interval_s=60.0)
    task = asyncio.create_task(loop.run())
    await asyncio.wait_for(started.wait(), 5)
    await loop.stop(0.2)
    await task
    async with database.session() as session:
        rows = (await session.exec(select(Chore))).all()
    assert [row.lease_until for row in rows] == [None, None], "a successor need not wait"
    assert all(row.due_at is not None for row in rows), "the work is still due"
    again = await claim(database, Chore, limit=10)
    assert sorted(again.keys) == ["chore-000", "chore-001"]


async def test_claim_leases_each_due_row_once(database: Database) -> None:
    await add_chores(database, 5)
    await add_chores_later(database)
    first = await claim(database, Chore, limit=3, lease_s=30)
    second = await claim(database, Chore, limit=10, lease_s=30)
    assert len(first.keys) == 3
    assert sorted(first.keys + second.keys) == [f"chore-{index:03d}" for index in range(5)]
    assert (await claim(database, Chore, limit=10)).keys == []
    async with database.session() as session:
        row = await session.get(Chore, first.keys[0])
    assert row is not None and row.lease_until is not None
    assert as_utc(row.lease_until) == first.lease_until


async def test_a_claim_can_return_its_rows_as_leased(database: Database) -> None:
    await add_chores(database, 3)
    claimed = await claim(database, Chore, limit=2, lease_s=30, rows=True)

    assert claimed.rows is not None and len(claimed.rows) == 2
    assert [row.id for row in claimed.rows] == claimed.keys
    for row in claimed.rows:
        assert isinstance(row, Chore) and row.done is False
        assert row.lease_until is not None and as_utc(row.lease_until) == claimed.lease_until
    assert (await claim(database, Chore, limit=10)).keys == ["chore-002"]


async def test_clear_due_takes_a_row_off_only_while_it_holds_the_lease(
    database: Database,
) -> None:
    await add_chores(database, 1)
    first = await claim(database, Chore, limit=1, lease_s=30, rows=True)
    assert first.rows is not None
    [row] = first.rows
    stale = first.lease_until - timedelta(seconds=1)

    assert not await clear_due(database, Chore, row.id, stale), "another lease: left alone"
    assert await clear_due(database, Chore, row.id, row.lease_until)
    async with database.session() as session:
        stored = await session.get(Chore, row.id)
    assert stored is not None and stored.due_at is None and stored.lease_until is None


async def add_chores_later(database: Database) -> None:
    async with database.session() as session:
        session.add(Chore(id="later", due_at=datetime.now(UTC) + timedelta(hours=1)))


def request(renewal_id: uuid.UUID | None = None, *, event_id: str | None = None) -> bytes:
    data = RenewalRequested(
        renewal_id=renewal_id or uuid.uuid4(),
        user_id="u-1",
        iccid=ICCID,
        plan_code="JP-1D-1GB",
        payment={"method": "card", "token": "card_ok"},
        start="now",
        requested_at=datetime.now(UTC),
    )
    return new_event(data, source="/tests", event_id=event_id).to_json()


def at(partition: int, offset: int) -> MessageInfo:
    return MessageInfo(topic=TOPIC, partition=partition, offset=offset, key=ICCID.encode())


def consumer(database: Database, publisher: Recorder, handler: Any) -> EventConsumer:
    return EventConsumer(
        name="test",
        subscriptions={TOPIC: [Route(RenewalRequested, handler)]},
        database=database,
        publisher=publisher,  # type: ignore[arg-type]
        attempts=2,
    )


async def inbox_ids(database: Database) -> list[str]:
    async with database.session() as session:
        return sorted((await session.exec(select(InboxEntry.event_id))).all())


async def test_a_batch_is_handled_once_each_with_duplicates_and_poison_in_it(
    database: Database,
) -> None:
    handled: list[str] = []

    async def handler(session: AsyncSession, event: CloudEvent[Any]) -> None:
        handled.append(event.id)

    publisher = Recorder()
    one, two = request(event_id="e-1"), request(event_id="e-2")
    batch = [
        (one, at(0, 1)),
        (b"not json", at(0, 2)),
        (one, at(0, 3)),  # redelivered within the batch
        (two, at(1, 7)),
        (request(event_id="e-3"), at(0, 4)),
    ]
    await consumer(database, publisher, handler).handle_batch(batch)
    assert sorted(handled) == ["e-1", "e-2", "e-3"]
    assert await inbox_ids(database) == ["e-1", "e-2", "e-3"]
    assert [message.topic for message in publisher.sent] == [f"{TOPIC}.dlq"]
    assert publisher.sent[0].headers["x-original-offset"] == "2"


async def test_an_event_its_route_ignores_takes_no_transaction_and_a_faulty_check_none(
    database: Database,
) -> None:
    handled: list[str] = []

    async def handler(session: AsyncSession, event: CloudEvent[Any]) -> None:
        handled.append(event.id)

    def ignores(event: CloudEvent[Any]) -> str | None:
        if event.id == "e-broken":
            raise RuntimeError("the check itself failed")
        return "changes nothing" if event.id.startswith("e-ignored") else None

    ignoring = EventConsumer(
        name="test",
        subscriptions={TOPIC: [Route(RenewalRequested, handler, ignores=ignores)]},
        database=database,
        publisher=Recorder(),  # type: ignore[arg-type]
        attempts=2,
    )
    transactions = DB_TRANSACTIONS._value.get()
    await ignoring.handle_batch(
        [(request(event_id="e-ignored-1"), at(0, 1)), (request(event_id="e-ignored-2"), at(1, 1))]
    )
    await ignoring.handle(request(event_id="e-ignored-3"), at(0, 2))
    assert DB_TRANSACTIONS._value.get() == transactions
    assert handled == [] and await inbox_ids(database) == []

    await ignoring.handle_batch([(request(event_id="e-broken"), at(0, 3))])
    assert handled == ["e-broken"] and await inbox_ids(database) == ["e-broken"]


async def test_log_lines_of_a_handler_carry_its_events_ids(database: Database) -> None:
    seen: list[dict[str, Any]] = []

    async def handler(session: AsyncSession, event: CloudEvent[Any]) -> None:
        seen.append(dict(structlog.contextvars.get_contextvars()))

    renewal = uuid.uuid4()
    together = [(request(renewal, event_id="e-1"), at(0, 1)), (request(event_id="e-2"), at(0, 2))]
    await consumer(database, Recorder(), handler).handle_batch(together)
    await consumer(database, Recorder(), handler).handle_batch(
        [(request(event_id="e-3"), at(1, 1))]
    )

    assert [ids["event_id"] for ids in seen] == ["e-1", "e-2", "e-3"]
    assert seen[0]["renewal_id"] == str(renewal)
    assert seen[0]["event_type"] == "esim.renewal.requested.v1" and seen[0]["iccid"] == ICCID
    assert structlog.contextvars.get_contextvars() == {}, "nothing stays bound afterwards"


async def test_a_claimed_rows_round_logs_with_its_renewal_and_card() -> None:
    seen: list[dict[str, Any]] = []

    class Row:
        def __init__(self) -> None:
            self.renewal_id = "5b0f2a4e-8d8b-4a53-9f5c-3d9a7f1e2c11"
            self.iccid = ICCID

    async def work(_: Any) -> None:
        seen.append(dict(structlog.contextvars.get_contextvars()))

    row = Row()
    await worker._safely(work, row, "chore", "k-1")
    assert seen == [{"renewal_id": row.renewal_id, "iccid": ICCID}]


async def test_one_failing_message_rolls_back_its_batch_and_the_rest_is_handled_alone(
    database: Database,
) -> None:
    async def handler(session: AsyncSession, event: CloudEvent[Any]) -> None:
        if event.id == "e-bad":
            raise PermanentEventError("this renewal can never be handled")
        session.add(Chore(id=event.id, due_at=datetime.now(UTC)))

    publisher = Recorder()
    batch = [
        (request(event_id="e-1"), at(2, 1)),
        (request(event_id="e-bad"), at(2, 2)),
        (request(event_id="e-3"), at(2, 3)),
    ]
    await consumer(database, publisher, handler).handle_batch(batch)
    async with database.session() as session:
        chores = sorted((await session.exec(select(Chore.id))).all())
    assert chores == ["e-1", "e-3"], "the good messages' effects exist once each"
    assert await inbox_ids(database) == ["e-1", "e-3"]
    (dead,) = publisher.sent
    assert dead.topic == f"{TOPIC}.dlq"
    assert dead.headers["x-error-type"] == "unprocessable"
    assert json.loads(dead.value)["id"] == "e-bad"


async def test_the_relay_is_woken_by_the_commit_not_by_the_add(database: Database) -> None:
    outbox = Outbox("/services/test", Topics())
    rejected = RenewalRejected(
        renewal_id=uuid.uuid4(), iccid=ICCID, reason="unknown_plan", detail="no such plan"
    )
    async with database.session() as session:
        outbox.add(session, rejected)
        assert not outbox._pending.is_set(), "nothing is visible to the relay yet"
    assert outbox._pending.is_set()

    outbox._pending.clear()

    async def failing_handler() -> None:
        async with database.session() as session:
            outbox.add(session, rejected)
            raise RuntimeError("the handler failed")

    with pytest.raises(RuntimeError):
        await failing_handler()
    assert not outbox._pending.is_set(), "a rolled-back event wakes nobody"
    async with database.session() as session:
        count = (await session.exec(select(func.count()).select_from(OutboxMessage))).one()
        unpublished = (
            await session.exec(
                select(OutboxMessage).where(col(OutboxMessage.published_at).is_(None))
            )
        ).all()
    assert count == 1 and len(unpublished) == 1
