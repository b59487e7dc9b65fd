"""Statements sent straight to the driver (`esim_core.persistence.driver`), on each database.

They must read and write what SQLAlchemy reads and writes, inside the session's transaction,
and fail as SQLAlchemy fails. On SQLite (the inline connection, and aiosqlite's own thread as
the fallback) and on a PostgreSQL server of this module's own (asyncpg).
"""

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from esim_core.clock import utcnow
from esim_core.duework.loop import claim
from esim_core.duework.rows import DueColumns
from esim_core.messaging.inbox import InboxEntry, record_new
from esim_core.persistence.db import Database, add_row, on_commit
from esim_core.persistence.driver import Statement, fetch, run
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    event,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlmodel import Field

from tests.support.infra import postgres

METADATA = MetaData()
PROBE = Table(
    "driver_probe",
    METADATA,
    Column("id", String(36), primary_key=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("late", DateTime(timezone=True)),
    Column("count", Integer, nullable=False),
    Column("live", Boolean, nullable=False),
    Column("detail", JSON),
)
COLUMNS = [column.name for column in PROBE.columns]
INSERT = Statement(insert(PROBE), keys=COLUMNS)
BY_ID = Statement(select(*PROBE.columns).where(PROBE.c.id == bindparam("key")))
LOCKED = Statement(select(*PROBE.columns).where(PROBE.c.id == bindparam("key")).with_for_update())
RECOUNT = Statement(update(PROBE).where(PROBE.c.live.is_(True)), keys=["count"])
AT = datetime(2026, 12, 7, 9, 30, 15, 123456, tzinfo=UTC)
ROW: dict[str, Any] = {
    "id": "a",
    "at": AT,
    "late": None,
    "count": 3,
    "live": True,
    "detail": {"plan": "JP-30D-10GB", "prices": [990, 1290]},
}

MODES = ("sqlite", "sqlite-thread", "postgres")


@pytest.fixture(scope="module")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with postgres(tmp_path_factory.mktemp("pg")) as urls:
        yield urls["accounts"]


@pytest_asyncio.fixture(params=MODES)
async def database(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_url: str
) -> AsyncIterator[Database]:
    if request.param == "postgres":
        database = Database(postgres_url, pool_size=2)
    else:
        url = f"sqlite+aiosqlite:///{tmp_path}/probe.sqlite"
        database = Database(url, sqlite_inline=request.param == "sqlite")
    async with database.engine.begin() as connection:
        await connection.run_sync(METADATA.drop_all)
        await connection.run_sync(METADATA.create_all)
    yield database
    await database.close()


def as_utc(value: datetime) -> datetime:
    # SQLite keeps no time zone: SQLAlchemy reads its timestamps back naive, in UTC.
    return value if value.tzinfo else value.replace(tzinfo=UTC)


async def stored(database: Database) -> list[dict[str, Any]]:
    """Every probe row, read through SQLAlchemy."""
    async with database.engine.connect() as connection:
        rows = (await connection.execute(select(PROBE).order_by(PROBE.c.id))).all()
    return [row._asdict() for row in rows]


async def test_a_row_written_on_the_driver_reads_the_same_through_sqlalchemy(
    database: Database,
) -> None:
    async with database.session() as session:
        assert await run(session, INSERT, ROW) == 1
    (found,) = await stored(database)
    assert as_utc(found.pop("at")) == AT
    assert found == {key: value for key, value in ROW.items() if key != "at"}


async def test_a_row_sqlalchemy_wrote_reads_the_same_on_the_driver(database: Database) -> None:
    late = AT + timedelta(days=30)
    async with database.engine.begin() as connection:
        await connection.execute(insert(PROBE), [{**ROW, "late": late, "live": False}])
    async with database.session() as session:
        (row,) = await fetch(session, BY_ID, {"key": "a"})
        assert await fetch(session, BY_ID, {"key": "missing"}) == []
    found = dict(zip(COLUMNS, row, strict=True))
    assert as_utc(found.pop("at")) == AT
    assert as_utc(found.pop("late")) == late
    assert found == {"id": "a", "count": 3, "live": False, "detail": ROW["detail"]}


async def test_the_driver_works_in_the_sessions_transaction(database: Database) -> None:
    async with database.session() as session:
        # Through SQLAlchemy, not committed yet:
        await session.exec(insert(PROBE).values(**ROW))
        assert len(await fetch(session, LOCKED, {"key": "a"})) == 1  # seen: one transaction
        await run(session, INSERT, {**ROW, "id": "b"})
        changed = await run(session, RECOUNT, {"count": 7})
        assert changed == 2
        counted = await session.exec(text("SELECT count(*) FROM driver_probe"))  # type: ignore[call-overload]
        assert counted.scalar() == 2

    async def fail_after_a_write() -> None:
        async with database.session() as session:
            await run(session, INSERT, {**ROW, "id": "c"})
            raise RuntimeError("a handler failed")

    with pytest.raises(RuntimeError, match="a handler failed"):
        await fail_after_a_write()
    assert [(row["id"], row["count"]) for row in await stored(database)] == [("a", 7), ("b", 7)]


async def test_a_broken_constraint_fails_as_sqlalchemy_fails_and_hides_the_values(
    database: Database,
) -> None:
    async with database.session() as session:
        await run(session, INSERT, ROW)
    secret = {**ROW, "detail": {"token": "tok_secret_4242"}}
    with pytest.raises(IntegrityError) as failed:
        async with database.session() as session:
            await run(session, INSERT, secret)
    assert "tok_secret_4242" not in str(failed.value)
    assert "driver_probe" in str(failed.value)
    async with database.session() as session:  # the connection went back whole
        assert len(await fetch(session, BY_ID, {"key": "a"})) == 1


async def test_sqlalchemys_statement_listeners_see_driver_statements(database: Database) -> None:
    seen: list[str] = []

    def listen(_connection: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement.split()[0])

    event.listen(database.engine.sync_engine, "before_cursor_execute", listen)
    async with database.session() as session:
        await run(session, INSERT, ROW)
        await fetch(session, BY_ID, {"key": "a"})
    assert [verb for verb in seen if verb != "BEGIN"] == ["INSERT", "SELECT"]


async def test_a_driver_transaction_commits_its_statements_and_rolls_them_back_on_error(
    database: Database,
) -> None:
    seen: list[str] = []
    event.listen(
        database.engine.sync_engine,
        "before_cursor_execute",
        lambda _c, _cur, statement, *_a: seen.append(statement.split()[0]),
    )
    async with database.transaction() as transaction:
        await run(transaction, INSERT, ROW)
        assert len(await fetch(transaction, LOCKED, {"key": "a"})) == 1
    assert [verb for verb in seen if verb not in ("BEGIN", "COMMIT")] == ["INSERT", "SELECT"]

    async def fail_after_a_write() -> None:
        async with database.transaction() as transaction:
            await run(transaction, INSERT, {**ROW, "id": "b"})
            assert await run(transaction, RECOUNT, {"count": 9}) == 2
            raise RuntimeError("a handler failed")

    with pytest.raises(RuntimeError, match="a handler failed"):
        await fail_after_a_write()
    assert [(row["id"], row["count"]) for row in await stored(database)] == [("a", 3)]


async def test_a_broken_constraint_in_a_driver_transaction_fails_as_sqlalchemy_fails(
    database: Database,
) -> None:
    async with database.transaction() as transaction:
        await run(transaction, INSERT, ROW)

    async def write_b_then_a_again() -> None:
        async with database.transaction() as transaction:
            await run(transaction, INSERT, {**ROW, "id": "b"})
            await run(transaction, INSERT, {**ROW, "detail": {"token": "tok_secret_4242"}})

    with pytest.raises(IntegrityError) as failed:
        await write_b_then_a_again()
    assert "tok_secret_4242" not in str(failed.value)
    assert [row["id"] for row in await stored(database)] == ["a"]  # "b" rolled back with it
    async with database.transaction() as transaction:  # the connection went back whole
        assert len(await fetch(transaction, BY_ID, {"key": "a"})) == 1


async def test_a_driver_transactions_commit_work_comes_after_its_statements_and_only_then(
    database: Database,
) -> None:
    """Rows queued with `add_row` go in at the commit; `on_commit` callbacks run once the
    transaction committed, never when it rolled back."""
    called: list[str] = []
    table: Any = Errand.__table__  # type: ignore[attr-defined]
    await database.create_tables([Errand])
    try:
        await _queue_and_fail(database, called)
        assert called == ["committed"]
        async with database.engine.connect() as connection:
            assert (await connection.execute(select(table.c.id))).scalars().all() == ["e1"]
    finally:  # the PostgreSQL database is the module's
        async with database.engine.begin() as connection:
            await connection.execute(table.delete())


async def _queue_and_fail(database: Database, called: list[str]) -> None:
    async with database.transaction() as transaction:
        add_row(transaction, Errand, {"id": "e1", "note": "queued"})
        on_commit(transaction, "wake", lambda: called.append("committed"))
        assert called == []

    async def queue_then_fail() -> None:
        async with database.transaction() as transaction:
            add_row(transaction, Errand, {"id": "e2", "note": "queued"})
            on_commit(transaction, "wake", lambda: called.append("rolled back"))
            raise RuntimeError("a handler failed")

    with pytest.raises(RuntimeError, match="a handler failed"):
        await queue_then_fail()


async def test_a_cancelled_driver_transaction_rolls_back_and_gives_its_connection_back(
    database: Database,
) -> None:
    started = asyncio.Event()

    async def hold() -> None:
        async with database.transaction() as transaction:
            await run(transaction, INSERT, ROW)
            started.set()
            await asyncio.sleep(3600)

    task = asyncio.create_task(hold())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The pool's one connection (SQLite) is free again, and the write is gone.
    async with asyncio.timeout(5), database.transaction() as transaction:
        assert await fetch(transaction, BY_ID, {"key": "a"}) == []


def test_a_statement_with_an_expanding_parameter_is_refused() -> None:
    listed = Statement(select(PROBE.c.id).where(PROBE.c.id.in_(bindparam("ids", expanding=True))))
    from sqlalchemy.dialects.sqlite import aiosqlite

    with pytest.raises(ValueError, match="expanding"):
        listed.compiled(aiosqlite.dialect())


@pytest.mark.parametrize("begun", ["session", "transaction"])
async def test_a_connection_postgresql_dropped_is_replaced(postgres_url: str, begun: str) -> None:
    """In an ORM session's transaction and in a driver one (`Database.transaction`) alike."""
    database = Database(postgres_url, pool_size=1)
    start = database.session if begun == "session" else database.transaction
    async with database.engine.begin() as connection:
        await connection.run_sync(METADATA.drop_all)
        await connection.run_sync(METADATA.create_all)
    async with start() as transaction:
        pid = (await fetch(transaction, Statement(text("SELECT pg_backend_pid()")), {}))[0][0]
    admin = Database(postgres_url, pool_size=1)
    async with admin.engine.connect() as other:
        await other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    await admin.close()

    async def read_on_the_dropped_connection() -> None:
        async with start() as transaction:  # the pool hands out the last one returned
            await fetch(transaction, BY_ID, {"key": "a"})

    with pytest.raises(DBAPIError) as failed:
        await read_on_the_dropped_connection()
    assert failed.value.connection_invalidated
    async with start() as transaction:
        assert await fetch(transaction, BY_ID, {"key": "a"}) == []
    await database.close()


@pytest.mark.parametrize("snapshot", [False, True])
async def test_a_snapshot_session_reads_one_committed_state_on_postgresql(
    postgres_url: str, snapshot: bool
) -> None:
    """A view made of two reads (a saga, then its timeline) must not see a commit that lands
    between them; on PostgreSQL a plain session does (READ COMMITTED), a `snapshot` one not."""
    database = Database(postgres_url, pool_size=2)
    async with database.engine.begin() as connection:
        await connection.run_sync(METADATA.drop_all)
        await connection.run_sync(METADATA.create_all)
        await connection.execute(insert(PROBE), [ROW])
    try:
        async with database.session(snapshot=snapshot) as reader:
            (before,) = await fetch(reader, BY_ID, {"key": "a"})
            async with database.engine.begin() as writer:  # another transaction commits
                await writer.execute(update(PROBE).values(count=PROBE.c.count + 1))
            (after,) = await fetch(reader, BY_ID, {"key": "a"})
        changes = dict(zip(COLUMNS, after, strict=True))["count"] - ROW["count"]
        assert (after == before, changes) == ((True, 0) if snapshot else (False, 1))
    finally:
        await database.close()


async def test_the_inbox_records_any_batch_and_answers_which_events_are_new(
    database: Database,
) -> None:
    await database.create_tables([InboxEntry])
    first = [(f"e{n}", "esim.payment.settled") for n in range(150)]  # more than one INSERT
    async with database.session() as session:
        assert await record_new(session, "accounts", first) == {f"e{n}" for n in range(150)}
    again = [("e7", "esim.payment.settled"), ("x1", "esim.payment.failed"), ("x1", "esim.x")]
    async with database.session() as session:
        assert await record_new(session, "accounts", again) == {"x1"}
        assert await record_new(session, "notifier", again) == {"e7", "x1"}  # its own ids
    async with database.engine.connect() as connection:
        table = InboxEntry.__table__  # type: ignore[attr-defined]
        kept = (await connection.execute(select(table.c.consumer, table.c.event_type))).all()
    assert len(kept) == 153
    assert kept.count(("accounts", "esim.x")) == 1  # an id given twice is recorded once


class Errand(DueColumns, table=True):
    """A row of due work, claimed by `duework.loop.claim` (partly on the driver)."""

    __tablename__ = "driver_errand"

    id: str = Field(primary_key=True, max_length=16)
    note: str = Field(default="", max_length=16)


async def test_replicas_claiming_at_once_lease_each_due_row_once(database: Database) -> None:
    await database.create_tables([Errand])
    now = utcnow()
    async with database.session() as session:
        for n in range(6):
            session.add(Errand(id=f"e{n}", due_at=now - timedelta(seconds=n), note=f"n{n}"))
        session.add(Errand(id="later", due_at=now + timedelta(hours=1)))
    first, second = await asyncio.gather(
        claim(database, Errand, limit=4, lease_s=30, rows=True),
        claim(database, Errand, limit=4, lease_s=30, rows=True),
    )
    assert sorted(first.keys + second.keys) == [f"e{n}" for n in range(6)]
    for claimed in (first, second):
        assert claimed.rows is not None
        for row in claimed.rows:
            assert row.note == f"n{row.id[1:]}"
            assert as_utc(row.lease_until) == claimed.lease_until  # the row as leased
    assert (await claim(database, Errand, limit=10)).keys == []
