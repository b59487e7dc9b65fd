"""Durable due work: rows with a due time that a background loop claims, runs and reschedules.

Retries that must outlive a process (payment dunning, activation follow-up, sending mail) are
rows, not sleeps. A claim is a short lease on the row, so several replicas never work on the same
row at once, and a replica that dies mid-work leaves a lease that simply runs out.
"""

import asyncio
import contextlib
import functools
import logging
import weakref
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, or_, update
from sqlmodel import SQLModel, col, select

from esim_core.clock import utcnow
from esim_core.observability.logs import ids_bound
from esim_core.observability.metrics import WORKER_ERRORS
from esim_core.observability.tracing import span
from esim_core.persistence.db import Database, on_commit
from esim_core.persistence.driver import Statement, Target, fetch_dicts
from esim_core.persistence.rows import transient

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Claim:
    """Rows leased by one claim, and the lease they carry until it runs out.

    `rows` (when asked for) holds each leased row as it is after the lease, in the order of
    `keys`: transient model instances, attached to no session.
    """

    keys: list[Any]
    lease_until: datetime
    rows: list[Any] | None = None


async def claim(
    database: Database,
    table: type[SQLModel],
    *,
    limit: int = 20,
    lease_s: float = 60.0,
    rows: bool = False,
) -> Claim:
    """Lease up to `limit` rows of `table` that are due.

    The table needs `id`, `due_at` (null when nothing is due) and `lease_until` columns.
    One statement chooses the due rows and leases them, returning them. On PostgreSQL the
    choice locks its rows with SKIP LOCKED, so replicas claiming at the same time take
    different rows instead of queueing behind one another's locks for the same ones; SQLite
    leaves the clause out (its write transactions run one at a time, so nothing can take a row
    between the choice and the lease). With `rows`, the leased rows come back whole, so a
    round need not read its row again in a transaction of its own.
    """
    now = utcnow()
    lease_until = now + timedelta(seconds=lease_s)
    lease_due = _claim_statement(table, rows)
    params = {"now": now, "limit": limit, "new_lease": lease_until}
    async with database.transaction() as transaction:
        found = await fetch_dicts(transaction, lease_due, params)
    if not rows:
        return Claim(keys=[row["id"] for row in found], lease_until=lease_until)
    leased = [transient(table, row) for row in found]
    return Claim(
        keys=[item.id for item in leased],  # type: ignore[attr-defined]
        lease_until=lease_until,
        rows=leased,
    )


@functools.cache
def _claim_statement(table: type[SQLModel], rows: bool) -> Statement:
    """A table's claim, built once: compiled once per dialect and sent to the driver, where a
    statement built per claim (its time and limit as literals) took a new cache key, coercions
    and all, every time.

    PostgreSQL: the due rows chosen and locked (SKIP LOCKED) in a MATERIALIZED common table
    expression, so that the choice runs once, then leased by id; a choice in a subquery of the
    UPDATE's WHERE may be run again by the planner, each time skipping other rows. SQLite: the
    same choice as a subquery, its write lock held from the transaction's start.
    """
    id_column: Any = table.id  # type: ignore[attr-defined]
    due_column: Any = table.due_at  # type: ignore[attr-defined]
    lease_column: Any = table.lease_until  # type: ignore[attr-defined]
    now: Any = bindparam("now")
    free = or_(col(lease_column).is_(None), col(lease_column) < now)
    due = (
        select(id_column)
        .where(col(due_column).is_not(None), col(due_column) <= now, free)
        .order_by(col(due_column), col(id_column))
        .limit(bindparam("limit"))
    )
    columns: list[Any] = list(table.__table__.columns) if rows else [id_column]  # type: ignore[attr-defined]
    leased = update(table).values(lease_until=bindparam("new_lease"))
    chosen = due.with_for_update(skip_locked=True).cte("chosen").prefix_with("MATERIALIZED")
    return Statement(
        {
            "sqlite": leased.where(col(id_column).in_(due.scalar_subquery()), free).returning(
                *columns
            ),
            "postgresql": leased.where(col(id_column) == chosen.c.id).returning(*columns),
        }
    )


async def release(
    database: Database, table: type[SQLModel], keys: Iterable[Any], lease_until: datetime
) -> int:
    """Give up leases this process still holds, so that a successor need not wait them out.

    Only rows that still carry exactly this lease are released: a row whose round committed
    (and so cleared or replaced its lease) is left as it is. Returns how many were released.
    """
    wanted = list(keys)
    if not wanted:
        return 0
    id_column: Any = table.id  # type: ignore[attr-defined]
    lease_column: Any = table.lease_until  # type: ignore[attr-defined]
    async with database.session() as session:
        result: Any = await session.exec(
            update(table)
            .where(col(id_column).in_(wanted), col(lease_column) == lease_until)
            .values(lease_until=None)
        )
    released: int = result.rowcount or 0
    return released


async def clear_due(
    database: Database, table: type[SQLModel], key: Any, lease_until: datetime | None
) -> bool:
    """Take a row that needs no more rounds off the due list, if it still carries this lease.

    For a round that finds its row final already (a stale due time): clears `due_at` and the
    lease in one statement; a row claimed again meanwhile is left to its new round. Returns
    whether the row was cleared.
    """
    id_column: Any = table.id  # type: ignore[attr-defined]
    lease_column: Any = table.lease_until  # type: ignore[attr-defined]
    held = col(lease_column).is_(None) if lease_until is None else col(lease_column) == lease_until
    async with database.session() as session:
        connection = await session.connection()
        result: Any = await connection.execute(
            update(table).where(col(id_column) == key, held).values(due_at=None, lease_until=None)
        )
    return bool(result.rowcount)


Work = Callable[[Any], Awaitable[Any]]

#: The running loops woken only by notes (`made_due`), by the name of the table they work.
_NOTED_LOOPS: dict[str, "weakref.WeakSet[DueLoop]"] = {}
_NOTES = "esim_core.duework.loop.made_due"


def made_due(session: Target, table: type[SQLModel]) -> None:
    """Note that this transaction makes rows of `table` due now.

    Once it commits, the running loops of that table that wait for such notes
    (`DueLoop(woken_by_commits=False)`) are woken; a rolled-back transaction wakes nothing.
    """
    name = _table_name(table)
    on_commit(session, f"{_NOTES}.{name}", lambda: _wake_noted(name))


def _table_name(table: type[SQLModel]) -> str:
    name: str = table.__table__.name  # type: ignore[attr-defined]
    return name


def _wake_noted(name: str) -> None:
    for loop in list(_NOTED_LOOPS.get(name, ())):
        loop.wake()


async def work_due(
    database: Database,
    table: type[SQLModel],
    work: Work,
    *,
    what: str,
    limit: int = 20,
    lease_s: float = 60.0,
    rows: bool = False,
) -> int:
    """Claim due rows of `table` once and run `work` on each concurrently; returns how many.

    `work` gets each key, or with `rows` each row as the claim leased it. A failing `work`
    commits nothing: its lease runs out and a later round repeats the outside call under the
    same idempotency key. `DueLoop` is the long-running form of this.
    """
    claimed = await claim(database, table, limit=limit, lease_s=lease_s, rows=rows)
    subjects = claimed.rows if claimed.rows is not None else claimed.keys
    await asyncio.gather(
        *(
            _safely(work, subject, what, key)
            for subject, key in zip(subjects, claimed.keys, strict=True)
        )
    )
    return len(claimed.keys)


async def _safely(work: Work, subject: Any, what: str, key: Any = None) -> None:
    key = subject if key is None else key
    # A claimed row (DueLoop rows=True) names its renewal and card for the round's log lines.
    loaded = getattr(subject, "__dict__", None) or {}  # a row's loaded columns; a key has none
    ids = {name: loaded.get(name) for name in ("renewal_id", "iccid")}
    try:
        # The round continues the trace of the transaction that made the row due, where the
        # row keeps its `traceparent`.
        with (
            ids_bound(**{name: str(value) for name, value in ids.items() if value}),
            span(what, parent=loaded.get("traceparent"), attributes={"esim.work.key": str(key)}),
        ):
            await work(subject)
    except Exception:
        WORKER_ERRORS.labels(what).inc()
        logger.exception("%s %s failed; it is retried once its lease runs out", what, key)


class DueLoop:
    """Works the due rows of one table as a pipeline, as fast as the work allows.

    Up to `concurrency` rows are in flight at once. A free slot is filled as soon as it frees
    while the last claim came back full (a backlog), and the loop is woken (`wake`) when a
    commit creates due work, so nothing waits for a timer while work is due; `interval_s` is
    only the fallback for rows that fall due later or whose lease ran out. While look after
    look finds nothing, the fallback doubles up to `idle_max_s`, so an idle service does not
    spend its CPU on empty claims; anything found, or a wake, brings it back to `interval_s`.

    `work` gets each claimed row's key, or with `rows` the row itself as the claim leased it
    (a transient instance of `table`), which spares the round a transaction to read it.

    `stop` ends claiming, gives the rounds in flight until a deadline to finish, cancels the
    rest and releases their leases: their outside calls carry idempotency keys, so whoever
    takes the rows next repeats them safely, without waiting out the lease.

    With `woken_by_commits` false, the service's commits do not wake the loop (each wake is
    a claim, a transaction, which finds nothing when the commit made nothing due): only a
    transaction that notes it made rows of the table due now (`made_due`) does, or `wake`.
    """

    def __init__(
        self,
        database: Database,
        table: type[SQLModel],
        work: Work,
        *,
        what: str,
        concurrency: int = 20,
        lease_s: float = 60.0,
        interval_s: float = 0.25,
        idle_max_s: float = 2.0,
        rows: bool = False,
        woken_by_commits: bool = True,
    ) -> None:
        self.database = database
        self.table = table
        self.work = work
        self.rows = rows
        self.woken_by_commits = woken_by_commits
        self.what = what
        self.concurrency = concurrency
        self.lease_s = lease_s
        self.interval_s = interval_s
        self.idle_max_s = max(idle_max_s, interval_s)
        self._idle_wait_s = interval_s
        self._wake = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._stopping = False
        self._inflight: dict[asyncio.Task[None], tuple[Any, datetime]] = {}

    def wake(self) -> None:
        """Look for due rows now: a commit may have created some."""
        self._idle_wait_s = self.interval_s
        self._wake.set()

    @property
    def in_flight(self) -> int:
        """How many rounds are running now."""
        return len(self._inflight)

    async def run(self) -> None:
        """Claim and work due rows until `stop`."""
        if not self.woken_by_commits:
            _NOTED_LOOPS.setdefault(_table_name(self.table), weakref.WeakSet()).add(self)
        try:
            await self._run()
        finally:
            for loops in _NOTED_LOOPS.values():
                loops.discard(self)

    async def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            free = self.concurrency - len(self._inflight)
            if free <= 0:
                await self._slot_freed.wait()
                self._slot_freed.clear()
                continue
            try:
                claimed = await claim(
                    self.database, self.table, limit=free, lease_s=self.lease_s, rows=self.rows
                )
            except asyncio.CancelledError:
                raise
            except Exception:
                WORKER_ERRORS.labels(self.what).inc()
                logger.exception("%s: claiming due rows failed; will retry", self.what)
                await sleep_unless(self._wake, min(5.0, self.interval_s * 8))
                continue
            for index, key in enumerate(claimed.keys):
                subject = claimed.rows[index] if claimed.rows is not None else key
                self._start(key, subject, claimed.lease_until)
            if claimed.keys:
                self._idle_wait_s = self.interval_s
            if len(claimed.keys) < free:
                wait_s = self._idle_wait_s
                if not claimed.keys:  # the next empty look waits longer, unless woken
                    self._idle_wait_s = min(wait_s * 2, self.idle_max_s)
                await sleep_unless(self._wake, wait_s)

    async def stop(self, deadline_s: float) -> None:
        """Stop claiming; wait up to `deadline_s` for rounds in flight, then abandon them."""
        self._stopping = True
        self._wake.set()
        self._slot_freed.set()
        running = list(self._inflight)
        if running:
            await asyncio.wait(running, timeout=max(0.0, deadline_s))
        abandoned = [(task, *self._inflight[task]) for task in running if not task.done()]
        for task, _, _ in abandoned:
            task.cancel()
        if abandoned:
            await asyncio.gather(*(task for task, _, _ in abandoned), return_exceptions=True)
            by_lease: dict[datetime, list[Any]] = {}
            for _, key, lease in abandoned:
                by_lease.setdefault(lease, []).append(key)
            released = 0
            for lease, keys in by_lease.items():
                released += await release(self.database, self.table, keys, lease)
            logger.warning(
                "%s: %d round(s) abandoned at stop; %d lease(s) released for a successor",
                self.what,
                len(abandoned),
                released,
            )

    def _start(self, key: Any, subject: Any, lease_until: datetime) -> None:
        task = asyncio.create_task(
            _safely(self.work, subject, self.what, key), name=f"{self.what} {key}"
        )
        self._inflight[task] = (key, lease_until)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._inflight.pop(task, None)
        self._slot_freed.set()


async def sleep_unless(event: asyncio.Event, seconds: float) -> None:
    """Wait `seconds`, or less if `event` is set meanwhile: a loop's pause that a stop (or a
    wake) ends at once."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)


async def run_forever(
    name: str,
    step: Callable[[], Awaitable[Any]],
    interval_s: float,
    stopping: asyncio.Event | None = None,
    *,
    doing: str | None = None,
) -> None:
    """Run `step` every `interval_s` seconds until `stopping` is set (or cancelled).

    Errors of a step are counted (`esim_worker_errors_total` by `name`) and logged as
    "`doing` failed; will retry" (`doing` is `name` unless given), and the loop goes on.
    """
    stopping = stopping or asyncio.Event()
    while not stopping.is_set():
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception:
            WORKER_ERRORS.labels(name).inc()
            logger.exception("%s failed; will retry", doing or name)
        await sleep_unless(stopping, interval_s)
