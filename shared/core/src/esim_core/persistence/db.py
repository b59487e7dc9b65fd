"""The service's own database: an async engine, sessions, and table creation."""

import asyncio
import hashlib
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite
from sqlalchemy import DateTime, Table, event, exc, insert, text
from sqlalchemy.engine.url import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.orm import Session
from sqlalchemy.util import greenlet_spawn
from sqlmodel import Field, SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from esim_core.observability.metrics import DB_STATEMENTS, DB_TRANSACTIONS
from esim_core.observability.tracing import span
from esim_core.persistence.driver import (
    Statement,
    Target,
    Transaction,
    begin,
    commit,
    rollback,
    run,
    run_many,
    transaction_on,
)

#: PostgreSQL connections a process opens beyond its pool: none (see `Database`), so a
#: process holds at most `DATABASE_POOL_SIZE`, which is what sizing against the server's
#: `max_connections` counts (deploy/README.md, scripts/check_deploy.py).
POOL_OVERFLOW = 0


class Database:
    """One service's database: SQLite by default, PostgreSQL in production."""

    def __init__(
        self,
        url: str,
        *,
        sqlite_inline: bool = True,
        pool_size: int = 20,
        pre_ping: bool = False,
    ) -> None:
        parsed = make_url(url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        self.is_postgresql = parsed.get_backend_name() == "postgresql"
        self.pool_size = 1 if self.is_sqlite else pool_size
        self._span_attributes = {
            "db.system.name": "sqlite" if self.is_sqlite else parsed.get_backend_name(),
            "db.namespace": str(parsed.database or ""),
        }
        connect_args: dict[str, Any] = {}
        pool: dict[str, Any] = {}
        if self.is_sqlite:
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            connect_args["timeout"] = 30
            # Every SQLite transaction takes the write lock up front (_sqlite_begin_immediate),
            # so a second connection could only wait in SQLite's sleeping busy handler; one
            # connection makes sessions queue in the pool instead, woken the moment it frees.
            in_memory = parsed.database in (None, "", ":memory:")
            # (An in-memory database gets SQLAlchemy's StaticPool: one connection already.)
            pool = {} if in_memory else {"pool_size": 1, "max_overflow": 0, "pool_timeout": 60}
            if sqlite_inline:
                pool["async_creator"] = _inline_sqlite(parsed.database or ":memory:")
        else:
            connect_args.update(_asyncpg_args(parsed))
            # Due-work rounds (up to their concurrency) and the consumer's groups each hold a
            # connection only for a short transaction; past `pool_size` a transaction waits for
            # one to free. An overflow connection would be closed on its return to a full pool:
            # under load that was ~10 new connections a second per machine (a backend forked,
            # every statement prepared again), and PostgreSQL did half of SQLite's throughput.
            pool = {
                "pool_size": pool_size,
                "max_overflow": POOL_OVERFLOW,
                "pool_timeout": 60,
                "pool_recycle": 1800,
            }
        # hide_parameters: SQL errors end up in logs and dead-letter headers, and statement
        # parameters can hold payment tokens or password hashes.
        self.engine: AsyncEngine = create_async_engine(
            url,
            connect_args=connect_args,
            # A pre-ping is a round trip before every transaction. Without it a connection that
            # a database restart broke fails its transaction once, and SQLAlchemy then renews
            # the pool; every consumer and due-work round retries such a failure.
            pool_pre_ping=pre_ping and not self.is_sqlite,
            hide_parameters=True,
            **pool,
        )
        # Counted for the bench's account of a renewal (transactions and statements each costs).
        event.listen(self.engine.sync_engine, "begin", _count_transaction)
        event.listen(self.engine.sync_engine, "before_cursor_execute", _count_statement)
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
            event.listen(self.engine.sync_engine, "begin", _sqlite_begin_immediate)
        # Where `transaction` runs on the driver itself: the inline SQLite connection, asyncpg.
        self._lean = (self.is_sqlite and sqlite_inline) or parsed.get_driver_name() == "asyncpg"

    @asynccontextmanager
    async def transaction(
        self, *, links: Sequence[str | bytes | None] = ()
    ) -> AsyncIterator[Target]:
        """A transaction for work made only of driver statements (`persistence.driver`), run on
        the driver with no ORM session: commits on success, rolls back on error.

        For the hot paths that need no ORM object (the relay, due-work claims): an empty
        session's transaction costs some 0.28 ms of CPU, this one a tenth of that. It takes
        the pooled connection as a session does (on SQLite the one connection, its write lock
        taken at the start), is a span and a counted transaction as a session's is, and keeps
        `add_row`, `on_commit` and `notify_on_commit`. Where the driver is neither the inline
        SQLite connection nor asyncpg, it is a session.
        """
        if not self._lean:
            async with self.session(links=links) as session:
                yield session
            return
        with span("db transaction", attributes=self._span_attributes, links=links):
            engine = self.engine.sync_engine
            pooled = await greenlet_spawn(engine.raw_connection)
            try:
                lean = transaction_on(pooled, engine.dialect, engine.dispatch.before_cursor_execute)
            except BaseException:
                await greenlet_spawn(pooled.close)
                raise
            DB_TRANSACTIONS.inc()
            try:
                await begin(lean.bound)
                yield lean
                await insert_added_rows(lean)
                await send_notes(lean)
                await commit(lean.bound)
            except BaseException:
                # Shielded: a cancelled task still rolls back and gives the connection back.
                await asyncio.shield(_abandon(pooled, lean))
                raise
            await greenlet_spawn(pooled.close)
            _run_callbacks(lean.info)

    @asynccontextmanager
    async def session(
        self, *, links: Sequence[str | bytes | None] = (), snapshot: bool = False
    ) -> AsyncIterator[AsyncSession]:
        """A session whose transaction commits on success and rolls back on error.

        The transaction is a span (its statements are not spans of their own), under the span
        current here; `links` (traceparents) link it to the traces of a batch's events.

        `snapshot`: every statement of the transaction reads the same committed state. A view
        made of several reads (a saga and its timeline) needs it on PostgreSQL, where each
        statement otherwise sees what was committed when it began (READ COMMITTED): a saga read
        before a commit and its steps read after it show a step its status does not have. There
        the transaction is REPEATABLE READ, for reads only (a write in it could fail on a row
        another transaction changed); SQLite's transaction reads one state already.
        """
        with span("db transaction", attributes=self._span_attributes, links=links):
            async with AsyncSession(self.engine, expire_on_commit=False) as session:
                try:
                    if snapshot and self.is_postgresql:
                        await session.connection(
                            execution_options={"isolation_level": "REPEATABLE READ"}
                        )
                    yield session
                    await insert_added_rows(session)
                    await send_notes(session)
                    await session.commit()
                except BaseException:
                    await session.rollback()
                    raise

    @asynccontextmanager
    async def exclusive(self, name: str) -> AsyncIterator[None]:
        """Run the block in one process at a time among all that use this database.

        On PostgreSQL this holds a transaction-level advisory lock named `name` on a connection
        of its own until the block ends; on SQLite it does nothing, as SQLite runs one write
        transaction at a time anyway (see `_sqlite_begin_immediate`).
        """
        if not self.is_postgresql:
            yield
            return
        async with self.engine.begin() as connection:
            await _advisory_lock(connection, name)
            yield

    async def create_tables(self, tables: Sequence[type[SQLModel]]) -> None:
        """Create the given tables where they are missing.

        Replicas starting together each find a table missing; on PostgreSQL the second
        CREATE TABLE would then fail on the catalogue's unique keys, so they take turns.
        """
        selected: list[Table] = [model.__table__ for model in tables]  # type: ignore[attr-defined]
        async with self.engine.begin() as connection:
            if self.is_postgresql:
                await _advisory_lock(connection, "esim_core.create_tables")
            await connection.run_sync(SQLModel.metadata.create_all, tables=selected)

    async def ping(self) -> None:
        """Raise unless the database answers a trivial query."""
        async with self.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def close(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()


#: Statements asyncpg keeps prepared per connection. SQLAlchemy's default, 100, is fewer than a
#: service runs: every table's multi-row INSERT is a statement per row count, so the cache
#: thrashed and most statements were prepared again, a round trip and a parse each. With 1000,
#: a quick PostgreSQL bench went from 9.7 to 25.1 renewals/s at 50/s offered.
ASYNCPG_STATEMENT_CACHE = 1000


def _asyncpg_args(url: URL) -> dict[str, Any]:
    """Connect arguments for an asyncpg URL; the URL's own `prepared_statement_cache_size` wins."""
    if url.get_driver_name() != "asyncpg" or "prepared_statement_cache_size" in url.query:
        return {}
    return {"prepared_statement_cache_size": ASYNCPG_STATEMENT_CACHE}


class InlineSqliteConnection(aiosqlite.Connection):
    """aiosqlite's connection, with each call run at once on the event loop's thread.

    A SQLite statement of this service takes microseconds, while aiosqlite hands every call
    (cursor, execute, fetch, close, commit) to its thread and back, which cost most of the CPU
    of a transaction in profiles. One pooled connection per process means no call ever waits
    for another connection's lock, so running them inline blocks the loop only as long as
    SQLite works. aiosqlite's thread still opens and closes the connection.
    `esim_core.persistence.driver` sends hot statements to its `sqlite3` connection directly.
    """

    runs_inline = True

    async def _execute(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not self._running or not self._connection:
            raise ValueError("Connection closed")
        return fn(*args, **kwargs)


def _inline_sqlite(database: str) -> Callable[[], Any]:
    async def connect() -> InlineSqliteConnection:
        def connector() -> sqlite3.Connection:
            # Opened on aiosqlite's thread, then used on the loop's: never at the same time.
            return sqlite3.connect(database, timeout=30, check_same_thread=False)

        connection = InlineSqliteConnection(connector, 64)
        connection._thread.daemon = True
        await connection
        return connection

    return connect


def timestamp(**kwargs: Any) -> Any:
    """A model field stored as a timestamp with its time zone; `kwargs` go to `Field`."""
    return Field(sa_type=DateTime(timezone=True), **kwargs)


_ADDED_ROWS = "esim_core.persistence.db.added_rows"


def _info(target: Target) -> dict[str, Any]:
    """What a transaction keeps for its commit: a session's `info`, or a driver transaction's."""
    if type(target) is Transaction:
        return target.info
    assert isinstance(target, AsyncSession)
    return target.sync_session.info


async def _abandon(pooled: Any, lean: Transaction) -> None:
    """Roll back a driver transaction that failed and give its connection back; one that the
    database dropped (or whose rollback failed) is thrown away instead."""
    broken = lean.bound.broken
    if broken is None:
        try:
            await rollback(lean.bound)
        except Exception as failed:
            broken = failed
    if broken is not None:
        await greenlet_spawn(pooled.invalidate, broken)
    await greenlet_spawn(pooled.close)


def add_row(session: Target, model: type[SQLModel], row: dict[str, Any]) -> None:
    """Insert `row` into `model`'s table when the session commits (`Database.session`).

    For rows a transaction only writes (timeline steps, outbox events): no ORM object, and one
    statement per table for every row the unit added, in the order added. The row is not seen
    by queries of the same transaction, and a constraint it breaks fails the commit (an
    `IntegrityError`, rolling everything back) as a flushed ORM object would. Give every column
    without a database default.
    """
    added: dict[Table, list[dict[str, Any]]] = _info(session).setdefault(_ADDED_ROWS, {})
    table: Table = model.__table__  # type: ignore[attr-defined]
    added.setdefault(table, []).append(row)


async def insert_added_rows(session: Target) -> None:
    """Insert the rows `add_row` queued on this session, one statement per table."""
    added: dict[Table, list[dict[str, Any]]] | None = _info(session).pop(_ADDED_ROWS, None)
    if not added:
        return
    for table, rows in added.items():
        statement = _INSERTS.get(table)
        if statement is None:
            statement = _INSERTS[table] = Statement(insert(table))
        start = 0
        while start < len(rows):  # one batch per run of rows that give the same columns
            keys = rows[start].keys()
            end = start + 1
            while end < len(rows) and rows[end].keys() == keys:
                end += 1
            await run_many(session, statement.writing(keys), rows[start:end])
            start = end


#: Each table's INSERT for `insert_added_rows`, compiled once per set of columns given.
_INSERTS: dict[Table, Statement] = {}


_ON_COMMIT = "esim_core.persistence.db.on_commit"


def on_commit(session: Target, key: str, callback: Callable[[], None]) -> None:
    """Call `callback` once this session's transaction commits; never if it rolls back.

    One callback per `key` (a later one replaces it), called in the order first noted. For
    wakes that must not come before the rows they announce are visible (the relay, due-work
    loops). One listener on every session does it (`_run_on_commit`): registering a listener per
    transaction cost a tenth of a busy service's CPU in SQLAlchemy's event registry.
    """
    callbacks: dict[str, Callable[[], None]] = _info(session).setdefault(_ON_COMMIT, {})
    callbacks[key] = callback


@event.listens_for(Session, "after_commit")
def _run_on_commit(session: Session) -> None:
    _run_callbacks(session.info)


def _run_callbacks(info: dict[str, Any]) -> None:
    callbacks: dict[str, Callable[[], None]] | None = info.pop(_ON_COMMIT, None)
    for callback in (callbacks or {}).values():
        callback()


@event.listens_for(Session, "after_soft_rollback")
def _forget_on_rollback(session: Session, _transaction: Any) -> None:
    session.info.pop(_ON_COMMIT, None)


_NOTES = "esim_core.persistence.db.notify"
_NOTIFY = Statement(text("SELECT pg_notify(:channel, '')"))


def notify_on_commit(session: Target, channel: str) -> None:
    """Send a NOTIFY on `channel` with this transaction, once however often it is noted.

    Sent just before `Database.session` commits; the server delivers it only if
    the transaction commits. For PostgreSQL sessions only.
    """
    _info(session).setdefault(_NOTES, set()).add(channel)


async def send_notes(session: Target) -> None:
    """Send the NOTIFYs this transaction noted (`notify_on_commit`); none noted, no statement."""
    channels: set[str] | None = _info(session).pop(_NOTES, None)
    if not channels:
        return
    for channel in sorted(channels):
        await run(session, _NOTIFY, {"channel": channel})


async def _advisory_lock(connection: AsyncConnection, name: str) -> None:
    # PostgreSQL names advisory locks by a 64-bit number; released when the transaction ends.
    key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
    await connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


_COUNTED_VERBS = {
    verb: DB_STATEMENTS.labels(verb) for verb in ("select", "insert", "update", "delete")
}
_OTHER_STATEMENT = DB_STATEMENTS.labels("other")


def _count_transaction(_connection: Any) -> None:
    DB_TRANSACTIONS.inc()


def _count_statement(_connection: Any, _cursor: Any, statement: str, *_args: Any) -> None:
    verb = statement[:6].lower()
    if verb == "begin ":
        return  # SQLite's BEGIN IMMEDIATE (_sqlite_begin_immediate): counted as a transaction
    _COUNTED_VERBS.get(verb, _OTHER_STATEMENT).inc()


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    # WAL lets readers go on while a consumer writes; the busy timeout makes writers wait
    # instead of failing. The driver's own transaction handling is switched off so that
    # _sqlite_begin_immediate decides how transactions begin.
    connection.isolation_level = None
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_begin_immediate(connection: Any) -> None:
    # A deferred transaction that reads and then writes fails at once with "database is locked"
    # when another writer got in between; taking the write lock up front makes it wait instead.
    # On the inline connection, straight to `sqlite3` (as `driver` sends hot statements): through
    # `exec_driver_sql` the BEGIN alone cost a third of an empty transaction's CPU.
    driver = connection.connection.driver_connection
    if not (getattr(driver, "runs_inline", False) and driver._connection is not None):
        connection.exec_driver_sql("BEGIN IMMEDIATE")
        return
    try:
        driver._connection.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as error:
        raise exc.DBAPIError.instance(
            "BEGIN IMMEDIATE",
            None,
            error,
            connection.dialect.loaded_dbapi.Error,
            hide_parameters=True,
            dialect=connection.dialect,
        ) from error
