"""The messaging core without a broker: inbox, dead letters, retries, the outbox relay, settings."""

import asyncio
import json
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from esim_core.duework.leases import LocalLock
from esim_core.messaging.consumer import (
    AUTO_OFFSET_RESET,
    FETCH_MAX_BYTES,
    PARTITION_FETCH_MAX_BYTES,
    EventConsumer,
    MessageInfo,
    PermanentEventError,
    Route,
    database_is_away,
)
from esim_core.messaging.inbox import InboxEntry, processed_ids, record_new
from esim_core.messaging.kafka import OutgoingMessage
from esim_core.messaging.outbox import Outbox, OutboxMessage, OutboxRelay
from esim_core.persistence.db import Database
from esim_core.persistence.driver import Statement, Target, Transaction, fetch, orm_session
from esim_core.settings import ServiceSettings, SettingsError, Topics, load_settings
from esim_core.testing import temporary_database
from esim_schemas import CloudEvent, RenewalRejected, RenewalRequested, new_event
from faststream.kafka import KafkaBroker
from pydantic_settings import SettingsConfigDict
from sqlalchemy import exc
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

ICCID = "8944500102198304826"


class FakePublisher:
    """Records what would go to Kafka; can be told to fail."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.fail_after: int | None = None

    async def publish_raw(
        self, value: bytes, *, topic: str, key: str | None, headers: dict[str, str]
    ) -> None:
        if self.fail_after is not None and len(self.sent) >= self.fail_after:
            raise ConnectionError("broker unreachable")
        self.sent.append({"value": value, "topic": topic, "key": key, "headers": headers})

    async def publish_many(self, messages: list[OutgoingMessage]) -> list[Exception | None]:
        outcomes: list[Exception | None] = []
        for message in messages:
            try:
                await self.publish_raw(
                    message.value, topic=message.topic, key=message.key, headers=message.headers
                )
            except ConnectionError as error:
                outcomes.append(error)
            else:
                outcomes.append(None)
        return outcomes


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    async with temporary_database(tmp_path, [OutboxMessage, InboxEntry]) as db:
        yield db


def request_bytes(event_id: str | None = None) -> bytes:
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


INFO = MessageInfo(topic="esim.renewal.requested", partition=2, offset=41, key=ICCID.encode())


def consumer_with(
    database: Database, publisher: FakePublisher, handler: Any, attempts: int = 3
) -> EventConsumer:
    return EventConsumer(
        name="test",
        subscriptions={"esim.renewal.requested": [Route(RenewalRequested, handler)]},
        database=database,
        publisher=publisher,  # type: ignore[arg-type]
        attempts=attempts,
    )


async def test_the_inbox_records_each_id_once_and_says_which_were_new(
    database: Database,
) -> None:
    async with database.session() as session:
        first = await record_new(session, "c", [("e1", "t"), ("e2", "t"), ("e1", "t")])
    async with database.session() as session:
        again = await record_new(session, "c", [("e2", "t"), ("e3", "t")])
        other_consumer = await record_new(session, "d", [("e1", "t")])
    assert (first, again, other_consumer) == ({"e1", "e2"}, {"e3"}, {"e1"})
    async with database.session() as session:
        await record_new(session, "c", [("e4", "t")])
        await session.rollback()  # a failed handler's transaction takes its inbox row along
    async with database.session() as session:
        assert await processed_ids(session, "c", ["e1", "e2", "e3", "e4"]) == {"e1", "e2", "e3"}


async def test_a_redelivered_event_is_handled_once(database: Database) -> None:
    calls: list[str] = []

    async def handler(session: AsyncSession, event: CloudEvent[Any]) -> None:
        calls.append(event.id)

    consumer = consumer_with(database, FakePublisher(), handler)
    body = request_bytes()
    for _ in range(3):
        await consumer.handle(body, INFO)
    assert len(calls) == 1


def rejected_bytes() -> bytes:
    data = RenewalRejected(
        renewal_id=uuid.uuid4(), user_id="u-1", iccid=ICCID, reason="unknown_card", detail="x"
    )
    return new_event(data, source="/test").model_dump_json().encode()


@pytest.mark.parametrize(
    ("drivers", "given"),
    [
        ((True, True), {Transaction}),  # every handler on the driver: a driver transaction
        ((True, False), {AsyncSession}),  # one that is not: a session, for both
        ((False, False), {AsyncSession}),
    ],
)
async def test_a_batch_runs_on_the_driver_only_where_every_handler_does(
    database: Database, drivers: tuple[bool, bool], given: set[type]
) -> None:
    seen: list[type] = []

    async def handler(transaction: Target, event: CloudEvent[Any]) -> None:
        seen.append(type(transaction))
        await fetch(transaction, _INBOX_IDS, {})

    requested, rejected = drivers
    consumer = EventConsumer(
        name="test",
        subscriptions={  # one topic and partition: the two events are one transaction
            "esim.renewal.requested": [
                Route(RenewalRequested, handler, on_driver=requested),
                Route(RenewalRejected, handler, on_driver=rejected),
            ],
        },
        database=database,
        publisher=FakePublisher(),  # type: ignore[arg-type]
    )
    after = MessageInfo(topic=INFO.topic, partition=INFO.partition, offset=42, key=INFO.key)
    await consumer.handle_batch([(request_bytes(), INFO), (rejected_bytes(), after)])
    assert len(seen) == 2
    assert set(seen) == given
    await consumer.handle(request_bytes(), INFO)  # alone, a handler on the driver is on it
    assert seen[-1] is (Transaction if requested else AsyncSession)


async def test_a_driver_handler_that_needs_the_orm_is_done_again_in_a_session(
    database: Database,
) -> None:
    """The first try's writes roll back with its driver transaction: the effects exist once."""
    given: list[type] = []

    async def handler(transaction: Target, event: CloudEvent[Any]) -> None:
        given.append(type(transaction))
        await record_new(transaction, "effects", [(event.id, event.type)])
        session = orm_session(transaction, "the test's ORM read")
        assert (await session.exec(select(InboxEntry))).all()

    consumer = EventConsumer(
        name="test",
        subscriptions={
            "esim.renewal.requested": [Route(RenewalRequested, handler, on_driver=True)]
        },
        database=database,
        publisher=FakePublisher(),  # type: ignore[arg-type]
    )
    body = request_bytes()
    await consumer.handle(body, INFO)
    await consumer.handle(body, INFO)  # a redelivery: a duplicate, on the driver
    after = MessageInfo(topic=INFO.topic, partition=INFO.partition, offset=42, key=INFO.key)
    await consumer.handle_batch([(request_bytes(), INFO), (request_bytes(), after)])
    assert given == [Transaction, AsyncSession, Transaction, AsyncSession, AsyncSession]
    async with database.session() as session:
        rows = (await session.exec(select(InboxEntry))).all()
    assert sorted(row.consumer for row in rows) == ["effects"] * 3 + ["test"] * 3


@pytest.mark.parametrize(
    ("body", "error_type"),
    [
        (b"\xff\xfe not utf-8", "undecodable"),
        (b"[1, 2]", "undecodable"),
        (b'{"specversion": "0.3"}', "invalid_envelope"),
        (
            json.dumps(json.loads(request_bytes()) | {"data": {"iccid": "123"}}).encode(),
            "schema_invalid",
        ),
        (
            json.dumps(json.loads(request_bytes()) | {"type": "esim.payment.settled.v1"}).encode(),
            "unexpected_type",
        ),
    ],
)
async def test_poison_goes_to_the_dead_letter_topic_with_its_reason(
    database: Database, body: bytes, error_type: str
) -> None:
    publisher = FakePublisher()

    async def handler(session: AsyncSession, event: CloudEvent[Any]) -> None:
        raise AssertionError("never called")

    await consumer_with(database, publisher, handler).handle(body, INFO)
    [dead] = publisher.sent
    assert dead["topic"] == "esim.renewal.requested.dlq"
    assert dead["value"] == body
    assert dead["key"] == ICCID
    headers = dead["headers"]
    assert headers["x-error-type"] == error_type
    assert headers["x-original-topic"] == "esim.renewal.requested"
    assert (headers["x-original-partition"], headers["x-original-offset"]) == ("2", "41")
    assert headers["x-error"] and headers["x-failed-at"].endswith("Z")


async def test_a_failing_handler_is_retried_then_dead_lettered_without_effects(
    database: Database,
) -> None:
    publisher = FakePublisher()
    attempts: list[int] = []

    async def handler(session: AsyncSession, event: CloudEvent[Any]) -> None:
        attempts.append(1)
        raise RuntimeError("downstream table is missing")

    body = request_bytes()
    await consumer_with(database, publisher, handler, attempts=3).handle(body, INFO)
    assert len(attempts) == 3
    [dead] = publisher.sent
    assert dead["headers"]["x-error-type"] == "retries_exhausted"
    assert "downstream table is missing" in dead["headers"]["x-error"]
    async with database.session() as session:
        assert (await session.exec(select(InboxEntry))).all() == []


async def test_a_transient_failure_succeeds_on_retry(database: Database) -> None:
    publisher = FakePublisher()
    attempts: list[int] = []

    async def handler(session: AsyncSession, event: CloudEvent[Any]) -> None:
        attempts.append(1)
        if len(attempts) < 2:
            raise TimeoutError("slow disk")

    await consumer_with(database, publisher, handler).handle(request_bytes(), INFO)
    assert len(attempts) == 2
    assert publisher.sent == []


async def test_a_permanent_error_is_dead_lettered_at_once(database: Database) -> None:
    publisher = FakePublisher()
    attempts: list[int] = []

    async def handler(session: AsyncSession, event: CloudEvent[Any]) -> None:
        attempts.append(1)
        raise PermanentEventError("renewal is not known")

    await consumer_with(database, publisher, handler).handle(request_bytes(), INFO)
    assert len(attempts) == 1
    assert publisher.sent[0]["headers"]["x-error-type"] == "unprocessable"


async def test_relay_publishes_in_order_and_resumes_after_a_broker_failure(
    database: Database,
) -> None:
    outbox = Outbox("/services/test", Topics())
    async with database.session() as session:
        for index in range(5):
            outbox.add(
                session,
                RenewalRejected(
                    renewal_id=uuid.uuid4(),
                    iccid=ICCID,
                    reason="unknown_plan",
                    detail=f"#{index}",
                ),
                event_id=f"event-{index}",
            )
    publisher = FakePublisher()
    publisher.fail_after = 2
    relay = OutboxRelay(database, outbox, publisher, LocalLock())  # type: ignore[arg-type]
    with pytest.raises(ConnectionError):
        await relay.relay_once()
    async with database.session() as session:
        pending = (
            await session.exec(
                select(OutboxMessage).where(col(OutboxMessage.published_at).is_(None))
            )
        ).all()
    assert [row.event_id for row in pending] == ["event-2", "event-3", "event-4"]

    publisher.fail_after = None
    assert await relay.relay_once() == 3
    assert await relay.relay_once() == 0
    ids = [json.loads(item["value"])["id"] for item in publisher.sent]
    assert ids == [f"event-{index}" for index in range(5)]
    assert {item["topic"] for item in publisher.sent} == {"esim.renewal.rejected"}
    assert {item["key"] for item in publisher.sent} == {ICCID}


async def test_an_idle_relay_waits_longer_and_longer_until_something_wakes_it(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    outbox = Outbox("/services/test", Topics())
    publisher = FakePublisher()
    relay = OutboxRelay(database, outbox, publisher, LocalLock(), interval_s=0.01, idle_max_s=0.08)  # type: ignore[arg-type]
    waits: list[tuple[float, bool]] = []  # each wait asked for, and whether a wake ended it
    real_wait = outbox.wait_for_pending

    async def recorded_wait(seconds: float) -> bool:
        woken = await real_wait(seconds)
        waits.append((seconds, woken))
        return woken

    monkeypatch.setattr(outbox, "wait_for_pending", recorded_wait)

    async def until(check: Any) -> None:
        async with asyncio.timeout(10):
            while not check():
                await asyncio.sleep(0.01)

    task = asyncio.create_task(relay.run())
    try:
        await until(lambda: len(waits) >= 6)
        assert [seconds for seconds, _ in waits[:6]] == [0.01, 0.02, 0.04, 0.08, 0.08, 0.08]

        outbox.notify()  # a wake that finds nothing still starts again from the interval
        await until(lambda: any(woken for _, woken in waits))
        woken_at = next(index for index, (_, woken) in enumerate(waits) if woken)
        await until(lambda: len(waits) > woken_at + 1)
        assert waits[woken_at + 1][0] == 0.01

        async with database.session() as session:  # a commit wakes it, however long it waits
            outbox.add(
                session,
                RenewalRejected(
                    renewal_id=uuid.uuid4(), iccid=ICCID, reason="unknown_plan", detail="-"
                ),
            )
        await until(lambda: publisher.sent)
    finally:
        relay.stop()
        await task


def test_bad_settings_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    class DemoSettings(ServiceSettings):
        model_config = SettingsConfigDict(env_prefix="DEMO_")

        database_url: str = "sqlite+aiosqlite:///x.sqlite"
        http_port: int = 1

    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "not a host list")
    monkeypatch.setenv("REDIS_URL", "http://wrong")
    monkeypatch.setenv("DEMO_CONSUMER_RETRIES", "0")
    with pytest.raises(SettingsError) as stopped:
        load_settings(DemoSettings)
    named = sorted(line.split(":")[0].strip() for line in str(stopped.value).splitlines()[1:])
    # Unprefixed variables (an alias) are named as they are set, not under the prefix.
    assert named == ["DEMO_CONSUMER_RETRIES", "KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL"]


def test_a_relay_idle_wait_past_the_lease_renewal_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class DemoSettings(ServiceSettings):
        model_config = SettingsConfigDict(env_prefix="DEMO_")

        database_url: str = "sqlite+aiosqlite:///x.sqlite"
        http_port: int = 1

    monkeypatch.setenv("DEMO_RELAY_IDLE_MAX_S", "30")  # the relaying replica's lease would lapse
    with pytest.raises(SettingsError) as stopped:
        load_settings(DemoSettings)
    assert "DEMO_RELAY_IDLE_MAX_S" in str(stopped.value)
    assert "less than or equal to 5" in str(stopped.value)
    monkeypatch.setenv("DEMO_RELAY_IDLE_MAX_S", "3")
    assert load_settings(DemoSettings).relay_idle_max_s == 3.0


def test_asyncpg_keeps_more_statements_prepared_unless_the_url_says_otherwise() -> None:
    from esim_core.persistence.db import ASYNCPG_STATEMENT_CACHE, _asyncpg_args
    from sqlalchemy.engine.url import make_url

    base = "postgresql+asyncpg://u@db:5432/accounts"
    assert _asyncpg_args(make_url(base)) == {
        "prepared_statement_cache_size": ASYNCPG_STATEMENT_CACHE
    }
    assert _asyncpg_args(make_url(f"{base}?prepared_statement_cache_size=0")) == {}
    assert _asyncpg_args(make_url("postgresql+psycopg://u@db:5432/accounts")) == {}
    assert _asyncpg_args(make_url("sqlite+aiosqlite:///x.sqlite")) == {}


#: A driver SELECT of the inbox, for transactions of either kind.
_INBOX_IDS = Statement(select(InboxEntry.event_id).where(col(InboxEntry.consumer) == "demo"))


@pytest.fixture(params=["session", "transaction"])
def begun(
    request: pytest.FixtureRequest, database: Database
) -> Callable[[], AbstractAsyncContextManager[Target]]:
    """A transaction of each kind: an ORM session, or on the driver (`Database.transaction`)."""
    chosen: Callable[[], AbstractAsyncContextManager[Target]] = (
        database.session if request.param == "session" else database.transaction
    )
    return chosen


async def test_the_database_counts_its_transactions_and_statements_by_verb(
    begun: Callable[[], AbstractAsyncContextManager[Target]],
) -> None:
    from prometheus_client import REGISTRY

    def counted() -> dict[str, float]:
        found = {"transactions": REGISTRY.get_sample_value("esim_db_transactions_total") or 0.0}
        for verb in ("select", "insert", "update", "delete", "other"):
            value = REGISTRY.get_sample_value("esim_db_statements_total", {"verb": verb})
            found[verb] = value or 0.0
        return found

    before = counted()
    async with begun() as transaction:
        assert await record_new(transaction, "demo", [("e-1", "demo.type")]) == {"e-1"}
        assert await fetch(transaction, _INBOX_IDS, {}) == [("e-1",)]
    after = counted()
    change = {key: after[key] - before[key] for key in after}
    # SQLite's BEGIN IMMEDIATE is the transaction, not a statement of it.
    assert change == {
        "transactions": 1,
        "select": 1,
        "insert": 1,
        "update": 0,
        "delete": 0,
        "other": 0,
    }


async def test_a_sqlite_transaction_holds_the_write_lock_from_its_start(
    begun: Callable[[], AbstractAsyncContextManager[Target]], tmp_path: Path
) -> None:
    # BEGIN IMMEDIATE: a transaction that reads first still cannot lose its write to another
    # writer that got in between; the other writer waits (here: gives up at once) instead.
    other = sqlite3.connect(tmp_path / "test.sqlite", timeout=0, isolation_level=None)
    try:
        async with begun() as transaction:
            assert await fetch(transaction, _INBOX_IDS, {}) == []
            with pytest.raises(sqlite3.OperationalError, match="database is locked"):
                other.execute("BEGIN IMMEDIATE")
        other.execute("BEGIN IMMEDIATE")  # free again once the transaction ended
        other.execute("ROLLBACK")
    finally:
        other.close()


async def test_a_sqlite_begin_that_cannot_get_the_lock_fails_as_sqlalchemy_says(
    database: Database,
    begun: Callable[[], AbstractAsyncContextManager[Target]],
    tmp_path: Path,
) -> None:
    async with database.engine.connect() as connection:
        raw = await connection.get_raw_connection()
        raw.driver_connection._connection.execute("PRAGMA busy_timeout=50")
    other = sqlite3.connect(tmp_path / "test.sqlite", timeout=0, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(exc.OperationalError, match="database is locked") as failed:
            async with begun() as transaction:
                await fetch(transaction, _INBOX_IDS, {})
        assert "BEGIN IMMEDIATE" in str(failed.value)
    finally:
        other.execute("ROLLBACK")
        other.close()
    async with begun() as transaction:  # the connection is usable again
        assert await fetch(transaction, _INBOX_IDS, {}) == []


def test_a_postgresql_pool_keeps_its_connections_and_makes_a_burst_wait() -> None:
    # An overflow connection is closed when it comes back to a full pool, so a burst over the
    # pool's size meant new connections (a backend forked, statements prepared again) each time.
    database = Database("postgresql+asyncpg://u@db:5432/accounts", pool_size=7)
    pool: Any = database.engine.pool
    assert pool.size() == 7
    assert pool._max_overflow == 0  # no public accessor; the burst waits up to the timeout
    assert pool.timeout() == 60


@pytest.mark.parametrize(
    ("url", "pool_size", "listens"),
    [
        ("postgresql+asyncpg://u@db:5432/accounts", 2, True),
        # Its only connection is the relay's own work: it polls rather than starve itself.
        ("postgresql+asyncpg://u@db:5432/accounts", 1, False),
        # SQLite runs one process: its commits wake its own relay directly.
        ("sqlite+aiosqlite:///:memory:", 20, False),
    ],
)
def test_a_relay_listens_for_other_replicas_only_on_postgresql_with_a_connection_to_spare(
    url: str, pool_size: int, listens: bool
) -> None:
    database = Database(url, pool_size=pool_size)
    relay = OutboxRelay(database, Outbox("/test", Topics()), FakePublisher(), LocalLock())  # type: ignore[arg-type]
    assert (relay._listener is not None) is listens


def test_a_consumer_fetches_ahead_a_bounded_number_of_bytes_however_far_behind_it_is(
    database: Database,
) -> None:
    # The client's defaults (50 MB a response, 1 MB a partition) kept a backlog in memory.
    broker = KafkaBroker()
    consumer_with(database, FakePublisher(), None).subscribe(broker, "test")
    (subscriber,) = broker.subscribers
    options: dict[str, Any] = subscriber._connection_args  # type: ignore[attr-defined]
    assert options["fetch_max_bytes"] == FETCH_MAX_BYTES <= 4 * 1024 * 1024
    assert options["max_partition_fetch_bytes"] == PARTITION_FETCH_MAX_BYTES <= 256 * 1024
    assert options["auto_offset_reset"] == AUTO_OFFSET_RESET


class DownDatabase:
    """The test's database, made not to answer its first `down_for` pings."""

    def __init__(self, database: Database, down_for: int) -> None:
        self.database = database
        self.down_for = down_for
        self.pings = 0

    @property
    def down(self) -> bool:
        return self.pings < self.down_for

    def __getattr__(self, name: str) -> Any:
        return getattr(self.database, name)

    async def ping(self) -> None:
        self.pings += 1
        if self.pings <= self.down_for:
            raise ConnectionRefusedError("the database system is not yet accepting connections")


async def test_failures_while_the_database_is_down_spend_no_attempt_and_nothing_is_dead_lettered(
    database: Database,
) -> None:
    publisher = FakePublisher()
    flaky = DownDatabase(database, down_for=3)
    tries: list[bool] = []

    async def handler(session: AsyncSession, event: CloudEvent[Any]) -> None:
        tries.append(flaky.down)
        if flaky.down:
            raise ConnectionResetError("connection was closed in the middle of operation")

    # One attempt: a failure that counted would dead-letter the event at once.
    consumer = consumer_with(flaky, publisher, handler, attempts=1)  # type: ignore[arg-type]
    await consumer.handle(request_bytes(), INFO)

    assert publisher.sent == []
    assert tries == [True, False]  # failed while down; handled once the database answered
    assert flaky.pings == 4  # the failure's, two while it was down, and the one it answered
    async with database.session() as session:
        assert len((await session.exec(select(InboxEntry))).all()) == 1


async def test_a_failure_while_the_database_answers_spends_an_attempt(database: Database) -> None:
    publisher = FakePublisher()
    answering = DownDatabase(database, down_for=0)

    async def handler(session: AsyncSession, event: CloudEvent[Any]) -> None:
        raise ConnectionResetError("an outside system, not the database")

    consumer = consumer_with(answering, publisher, handler, attempts=1)  # type: ignore[arg-type]
    await consumer.handle(request_bytes(), INFO)

    [dead] = publisher.sent
    assert dead["headers"]["x-error-type"] == "retries_exhausted"
    assert answering.pings == 1


class ServerError(Exception):
    """A driver's error with a SQLSTATE, as asyncpg's (and psycopg's `pgcode`) carry."""

    def __init__(self, sqlstate: str) -> None:
        super().__init__(f"SQLSTATE {sqlstate}")
        self.sqlstate = sqlstate


def wrapped(sqlstate: str) -> Exception:
    """The error as SQLAlchemy raises it: the driver's error as `orig` and as the cause."""
    try:
        try:
            raise ServerError(sqlstate)
        except ServerError as driver_error:
            outer = RuntimeError("(sqlalchemy.dialects.postgresql.asyncpg.Error) ...")
            outer.orig = driver_error  # type: ignore[attr-defined]
            raise outer from driver_error
    except RuntimeError as error:
        return error


@pytest.mark.parametrize(
    ("sqlstate", "away"),
    [
        ("25006", True),  # cannot execute INSERT in a read-only transaction: a standby
        ("57P01", True),  # terminating connection due to administrator command
        ("57P03", True),  # the database system is not yet accepting connections
        ("08006", True),  # connection failure
        ("08P01", False),  # a protocol violation: a malformed message can cause it
        ("53300", True),  # too many connections
        ("23505", False),  # a unique violation: the statement's fault
        ("40001", False),  # a serialization failure: retried as an attempt
    ],
)
def test_an_error_blames_the_database_by_its_sqlstate_however_wrapped(
    sqlstate: str, away: bool
) -> None:
    assert database_is_away(wrapped(sqlstate)) is away
    assert database_is_away(ServerError(sqlstate)) is away
    assert database_is_away(RuntimeError("no SQLSTATE")) is False


async def test_a_read_only_database_that_answers_pings_spends_no_attempt(
    database: Database,
) -> None:
    # After a failover the service can reach a standby that answers `SELECT 1` but refuses
    # writes until it is promoted: its events wait, they are not dead-lettered.
    publisher = FakePublisher()
    answering = DownDatabase(database, down_for=0)
    tries: list[int] = []

    async def handler(session: AsyncSession, event: CloudEvent[Any]) -> None:
        tries.append(1)
        if len(tries) < 3:
            raise wrapped("25006")

    consumer = consumer_with(answering, publisher, handler, attempts=1)  # type: ignore[arg-type]
    await consumer.handle(request_bytes(), INFO)

    assert publisher.sent == []
    assert len(tries) == 3
    assert answering.pings == 2


def test_an_error_raised_while_another_is_handled_is_judged_by_itself() -> None:
    # The consumer handles a failed batch's messages one by one inside its `except`: each of
    # their errors then has the batch's as `__context__`, which must not blame the database.
    def handle_after_a_failed_batch() -> None:
        try:
            raise wrapped("25006")
        except RuntimeError:
            raise KeyError("the message's own fault")  # noqa: B904  (as a handler raises it)

    with pytest.raises(KeyError) as raised:
        handle_after_a_failed_batch()
    assert raised.value.__context__ is not None
    assert database_is_away(raised.value) is False
