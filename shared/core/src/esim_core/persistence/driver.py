"""Hot statements sent straight to the database driver, inside the session's transaction.

A Core statement executed through SQLAlchemy costs 0.2 to 0.3 ms of CPU on this project's
machines, where SQLite itself works 0.03 ms: each call crosses the greenlet bridge, looks its
compiled form up by cache key, builds an execution context and parameters, then a result.
`Statement` compiles a Core statement once per dialect (its SQL, the order of its parameters,
the type conversions SQLAlchemy would apply to them and to the columns it reads) and `fetch`
and `run` send it to the connection of the session's transaction directly:

- SQLite on the inline connection (`InlineSqliteConnection`, the default): the `sqlite3`
  connection's own `execute`, on the event loop's thread, as every statement already runs;
- PostgreSQL on asyncpg: the prepared statement the SQLAlchemy adapter keeps for that SQL (one
  cache for both paths), under the adapter's lock, with the adapter's transaction begun first;
- any other driver: SQLAlchemy executes the statement as usual.

The values stored and read are those SQLAlchemy would store and read (its own bind and result
processors: SQLite's timestamps as text, JSON, booleans), so rows written one way read the
same the other. A driver error is raised as SQLAlchemy raises it (`IntegrityError`, ...
wrapping the driver's, parameters hidden), and a connection that PostgreSQL dropped is
invalidated as SQLAlchemy would. SQLAlchemy's `before_cursor_execute` listeners see each
statement as they see their own (with no cursor and no execution context): the statement
counts (`esim_db_statements_total`), the tests' statement budgets.

For statements a transaction runs many times; not for IN lists of varying length (an
expanding parameter is refused when the statement is first compiled).

A transaction made only of such statements need not be an ORM session at all:
`Database.transaction` takes the pooled connection and yields a `Transaction`, begun, committed
and rolled back on the driver here (`begin`, `commit`, `rollback`). An empty session's
transaction cost 0.26 to 0.30 ms of CPU on this project's machines (its unit of work, seven
greenlet switches, a task to close it); the same on the bare `sqlite3` connection 0.005 ms.
"""

import re
import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from sqlalchemy import exc
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import ClauseElement
from sqlmodel.ext.asyncio.session import AsyncSession

_BOUND = "esim_core.persistence.driver.bound"
_DRIVER = "esim_core.persistence.driver.driver"
_ROWCOUNT = re.compile(r"(?:SELECT|UPDATE|DELETE|INSERT \d+) (\d+)")

Row = tuple[Any, ...]
T = TypeVar("T")


class _Compiled:
    """A statement's form for one dialect: what the driver is sent and how values convert."""

    __slots__ = ("binds", "columns", "results", "returns_rows", "sql")

    def __init__(self, statement: ClauseElement, dialect: Dialect, keys: list[str] | None):
        compiled: Any = statement.compile(dialect=dialect, column_keys=keys)
        if compiled.literal_execute_params or compiled.post_compile_params:
            raise ValueError(f"a driver statement takes no expanding parameter: {compiled}")
        self.sql: str = compiled.string
        processors = compiled._bind_processors
        names = compiled.positiontup or ()
        # A parameter the statement gives a value of its own (a literal in its WHERE clause, a
        # LIMIT) takes that value unless the call passes one.
        self.binds: tuple[tuple[str, Callable[[Any], Any] | None, Any], ...] = tuple(
            (name, processors.get(name), _fixed_value(compiled.binds[name])) for name in names
        )
        result_columns = compiled._result_columns or ()
        self.columns: tuple[str, ...] = tuple(column[0] for column in result_columns)
        self.results: tuple[Callable[[Any], Any] | None, ...] = tuple(
            column[3]._cached_result_processor(dialect, None) for column in result_columns
        )
        self.returns_rows = bool(result_columns)

    def arguments(self, params: Mapping[str, Any]) -> list[Any]:
        arguments = []
        for name, process, fixed in self.binds:
            value = params[name] if fixed is _REQUIRED or name in params else fixed
            arguments.append(value if process is None or value is None else process(value))
        return arguments

    def converted(self, rows: Iterable[Sequence[Any]]) -> list[Row]:
        results = self.results
        if not any(results):
            return [tuple(row) for row in rows]
        return [
            tuple(
                value if process is None or value is None else process(value)
                for process, value in zip(results, row, strict=True)
            )
            for row in rows
        ]


_REQUIRED = object()


def _fixed_value(bind: Any) -> Any:
    return _REQUIRED if bind.required else bind.effective_value


class Statement:
    """A Core statement compiled once per dialect, run on the driver (module docstring).

    `statement` is one Core statement, or one per dialect name (`{"sqlite": ...,
    "postgresql": ...}`) where their syntax differs. `keys`, for an INSERT or UPDATE, names the
    columns it writes, each call passing exactly those; without them it writes every column.
    """

    def __init__(
        self,
        statement: ClauseElement | Mapping[str, ClauseElement],
        *,
        keys: Iterable[str] | None = None,
    ) -> None:
        self.statement: Any = statement
        self.keys = list(keys) if keys is not None else None
        self._compiled: dict[str, _Compiled] = {}
        self._variants: dict[tuple[str, ...], Statement] = {}

    def compiled(self, dialect: Dialect) -> _Compiled:
        found = self._compiled.get(dialect.name)
        if found is None:
            found = self._compiled[dialect.name] = _Compiled(
                self.of(dialect.name), dialect, self.keys
            )
        return found

    def of(self, dialect_name: str) -> Any:
        """The Core statement for this dialect."""
        if isinstance(self.statement, Mapping):
            return self.statement[dialect_name]
        return self.statement

    def writing(self, keys: Iterable[str]) -> "Statement":
        """This INSERT or UPDATE writing exactly `keys` (and its WHERE clause's parameters),
        made once per set of keys."""
        named = tuple(keys)
        found = self._variants.get(named)
        if found is None:
            found = self._variants[named] = Statement(self.statement, keys=named)
        return found


class Transaction:
    """A transaction on the driver itself, with no ORM session (`Database.transaction`).

    Driver statements (`fetch`, `run`, `run_many`) run in it as in a session's transaction;
    `info` holds what is done at its commit (`persistence.db`'s `add_row`, `on_commit`,
    `notify_on_commit`), as a session's `info` does.
    """

    __slots__ = ("bound", "info")

    def __init__(self, bound: "_Bound") -> None:
        self.bound = bound
        self.info: dict[str, Any] = {}


Target = AsyncSession | AsyncConnection | Transaction
"""Where a statement runs: a session (in its transaction, begun if need be), a connection in
a transaction, or a driver transaction."""


class NeedsSession(Exception):
    """Work given a driver transaction needs the ORM (`orm_session`): do it in a session."""


def orm_session(target: Target, why: str) -> AsyncSession:
    """The ORM session of the transaction, for work of a driver handler that needs it now and
    then (a promotion to redeem); a driver transaction raises `NeedsSession`, which has the
    consumer roll it back and do the work again in a session (`EventConsumer`)."""
    if isinstance(target, AsyncSession):
        return target
    raise NeedsSession(f"{why} needs the ORM")


async def connection_of(session: AsyncSession) -> AsyncConnection:
    """The connection of the session's transaction, begun, asked of the session once per
    transaction (each ask passes through SQLAlchemy's greenlet bridge)."""
    connection = (await _bound(session)).connection
    assert connection is not None  # (a session's)
    return connection


async def fetch(target: Target, statement: Statement, params: Mapping[str, Any]) -> list[Row]:
    """The rows `statement` returns for `params`, in the transaction of `target`."""
    bound = await _bound(target)
    rows, _count = await bound.execute(statement, params)
    return rows


async def fetch_dicts(
    target: Target, statement: Statement, params: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """The rows `statement` returns for `params`, each as {column name: value}."""
    bound = await _bound(target)
    rows, _count = await bound.execute(statement, params)
    columns = statement.compiled(bound.dialect).columns
    return [dict(zip(columns, row, strict=True)) for row in rows]


async def run(target: Target, statement: Statement, params: Mapping[str, Any]) -> int:
    """Run `statement` for `params` in the transaction of `target`; the rows it changed."""
    bound = await _bound(target)
    _rows, count = await bound.execute(statement, params)
    return count


async def run_many(target: Target, statement: Statement, rows: Sequence[Mapping[str, Any]]) -> None:
    """Run `statement` once for each of `rows` (an INSERT's rows, say), as one batch."""
    if rows:
        bound = await _bound(target)
        await bound.execute_many(statement, rows)


class _Bound:
    """A connection in a transaction, and the way to its driver.

    `connection` is SQLAlchemy's (a session's or the caller's), or None for a `Transaction`,
    whose statements `seen` announces to the engine's listeners and whose connection, should
    PostgreSQL drop it, is marked `broken` for `Database.transaction` to throw away.
    """

    __slots__ = (
        "broken",
        "connection",
        "dialect",
        "driver",
        "kind",
        "seen",
        "sync",
        "transaction",
    )

    def __init__(
        self,
        transaction: Any,
        connection: AsyncConnection | None,
        kind: str,
        driver: Any,
        *,
        dialect: Dialect | None = None,
        seen: Any = None,
    ):
        self.transaction = transaction
        self.connection = connection
        self.kind = kind
        self.driver = driver
        self.broken: BaseException | None = None
        if connection is None:
            assert dialect is not None and seen is not None
            self.dialect = dialect
            self.sync = None
            self.seen = seen
            return
        self.dialect = connection.dialect
        sync = connection.sync_connection
        assert sync is not None  # (a connection the session began)
        self.sync = sync
        self.seen = sync.dispatch.before_cursor_execute

    async def execute(
        self, statement: Statement, params: Mapping[str, Any]
    ) -> tuple[list[Row], int]:
        compiled = statement.compiled(self.dialect)
        if self.kind == "sqlite":
            return self._sqlite(compiled, compiled.arguments(params))
        if self.kind == "asyncpg":
            return await self._asyncpg(compiled, compiled.arguments(params))
        assert self.connection is not None  # (a Transaction is on sqlite3 or asyncpg)
        result = await self.connection.execute(statement.of(self.dialect.name), dict(params))
        rows = [tuple(row) for row in result] if compiled.returns_rows else []
        return rows, result.rowcount

    async def execute_many(self, statement: Statement, rows: Sequence[Mapping[str, Any]]) -> None:
        compiled = statement.compiled(self.dialect)
        if self.kind == "sqlalchemy":
            assert self.connection is not None
            await self.connection.execute(
                statement.of(self.dialect.name), [dict(row) for row in rows]
            )
            return
        arguments = [compiled.arguments(row) for row in rows]
        self.seen(self.sync, None, compiled.sql, arguments, None, True)
        if self.kind == "sqlite":
            try:
                self.driver.executemany(compiled.sql, arguments)
            except sqlite3.Error as error:
                raise self._wrapped(compiled, error, invalidated=False) from error
            return
        await self._on_asyncpg(compiled, lambda prepared: prepared.executemany(arguments))

    def _sqlite(self, compiled: _Compiled, arguments: list[Any]) -> tuple[list[Row], int]:
        self.seen(self.sync, None, compiled.sql, arguments, None, False)
        try:
            cursor = self.driver.execute(compiled.sql, arguments)
            rows = cursor.fetchall() if compiled.returns_rows else []
        except sqlite3.Error as error:
            raise self._wrapped(compiled, error, invalidated=False) from error
        return compiled.converted(rows), cursor.rowcount

    async def _asyncpg(self, compiled: _Compiled, arguments: list[Any]) -> tuple[list[Row], int]:
        self.seen(self.sync, None, compiled.sql, arguments, None, False)

        async def fetched(prepared: Any) -> tuple[list[Any], str | None]:
            return await prepared.fetch(*arguments), prepared.get_statusmsg()

        rows, status = await self._on_asyncpg(compiled, fetched)
        matched = _ROWCOUNT.match(status or "")
        return compiled.converted(rows), int(matched.group(1)) if matched else -1

    async def _on_asyncpg(self, compiled: _Compiled, use: Callable[[Any], Awaitable[T]]) -> T:
        """`use` the statement prepared on the asyncpg connection, in its transaction."""
        adapter = self.driver
        try:
            async with adapter._execute_mutex:
                if adapter._transaction is None:
                    await adapter._start_transaction()
                try:
                    prepared, _attributes = await adapter._prepare(compiled.sql, 0)
                    return await use(prepared)
                except Exception as error:
                    adapter._handle_exception(error)  # raises the driver's error as a DBAPI one
                    raise  # (not reached)
        except self.dialect.loaded_dbapi.Error as error:
            raise await self._failed(compiled.sql, error) from error

    async def _failed(self, sql: str, error: Any) -> Exception:
        """asyncpg's error as SQLAlchemy raises it, the connection marked lost if it is."""
        invalidated = self.dialect.is_disconnect(error, self.driver, None)
        if invalidated:
            if self.connection is not None:
                await self.connection.invalidate(error)
            else:
                self.broken = error
        return self._wrapped(sql, error, invalidated=invalidated)

    def _wrapped(self, sql: str | _Compiled, error: Exception, *, invalidated: bool) -> Exception:
        wrapped: Exception = exc.DBAPIError.instance(
            sql if isinstance(sql, str) else sql.sql,
            None,
            error,
            self.dialect.loaded_dbapi.Error,
            hide_parameters=True,
            connection_invalidated=invalidated,
            dialect=self.dialect,
        )
        return wrapped


async def begin(bound: _Bound) -> None:
    """Begin a `Transaction`: SQLite's takes the write lock now (BEGIN IMMEDIATE, as every
    session's does); asyncpg's begins with its first statement, as SQLAlchemy's adapter does."""
    if bound.kind == "sqlite":
        _on_sqlite(bound, "BEGIN IMMEDIATE")


async def commit(bound: _Bound) -> None:
    """Commit a `Transaction`; a refused commit raises as SQLAlchemy's would."""
    if bound.kind == "sqlite":
        _on_sqlite(bound, "COMMIT")
        return
    await _end_asyncpg(bound, "COMMIT")


async def rollback(bound: _Bound) -> None:
    """Roll a `Transaction` back, if it began."""
    if bound.kind == "sqlite":
        if bound.driver.in_transaction:
            _on_sqlite(bound, "ROLLBACK")
        return
    await _end_asyncpg(bound, "ROLLBACK")


def _on_sqlite(bound: _Bound, verb: str) -> None:
    try:
        bound.driver.execute(verb)
    except sqlite3.Error as error:
        raise bound._wrapped(verb, error, invalidated=False) from error


async def _end_asyncpg(bound: _Bound, verb: str) -> None:
    adapter = bound.driver
    try:
        async with adapter._execute_mutex:
            transaction = adapter._transaction
            if transaction is None:
                return
            end = transaction.commit if verb == "COMMIT" else transaction.rollback
            try:
                await adapter._call_and_discard(end)
            except Exception as error:
                adapter._handle_exception(error)  # raises the driver's error as a DBAPI one
                raise  # (not reached)
    except bound.dialect.loaded_dbapi.Error as error:
        raise await bound._failed(verb, error) from error


def lean_kind(dialect: Dialect, driver_connection: Any) -> str | None:
    """Whether a pooled connection can run a `Transaction`: "sqlite" (the inline connection),
    "asyncpg", or None (a session then)."""
    if dialect.name == "sqlite" and _is_inline(driver_connection):
        return "sqlite"
    if dialect.driver == "asyncpg":
        return "asyncpg"
    return None


def transaction_on(pooled: Any, dialect: Dialect, seen: Any) -> Transaction:
    """A `Transaction` on a connection taken from the pool (`Database.transaction`)."""
    info = pooled.info
    found: tuple[str, Any] | None = info.get(_DRIVER)
    if found is None:
        kind = lean_kind(dialect, pooled.driver_connection)
        if kind is None:
            raise ValueError(f"no driver transaction on {dialect.name}+{dialect.driver}")
        driver = (
            pooled.driver_connection._connection if kind == "sqlite" else pooled.dbapi_connection
        )
        found = info[_DRIVER] = (kind, driver)
    kind, driver = found
    return Transaction(_Bound(None, None, kind, driver, dialect=dialect, seen=seen))


async def _bound(target: Target) -> _Bound:
    if type(target) is Transaction:
        return target.bound
    if isinstance(target, AsyncConnection):
        if not target.in_transaction():
            raise RuntimeError("a driver statement runs in a transaction: begin one first")
        kind, driver = await _driver_of(target)
        return _Bound(None, target, kind, driver)
    assert isinstance(target, AsyncSession)
    info = target.sync_session.info
    transaction = target.sync_session.get_transaction()
    held: _Bound | None = info.get(_BOUND)
    if held is not None and held.transaction is transaction and transaction is not None:
        return held
    connection = await target.connection()
    kind, driver = await _driver_of(connection)
    held = info[_BOUND] = _Bound(target.sync_session.get_transaction(), connection, kind, driver)
    return held


async def _driver_of(connection: AsyncConnection) -> tuple[str, Any]:
    """How to reach this connection's driver: kept with the database connection itself, which
    stays the same driver connection until it is closed or invalidated."""
    info = connection.info
    found: tuple[str, Any] | None = info.get(_DRIVER)
    if found is None:
        raw = await connection.get_raw_connection()
        driver: Any = raw.driver_connection
        found = ("sqlalchemy", None)
        if connection.dialect.name == "sqlite" and _is_inline(driver):
            found = ("sqlite", driver._connection)
        elif connection.dialect.driver == "asyncpg":
            found = ("asyncpg", raw.dbapi_connection)
        info[_DRIVER] = found
    return found


def _is_inline(driver: Any) -> bool:
    # db.InlineSqliteConnection, whose calls run on the event loop's thread.
    return getattr(driver, "runs_inline", False) and driver._connection is not None
