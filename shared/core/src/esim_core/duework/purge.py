"""Purges of the tables that only deduplicate or relay: rows older than their window go.

Inboxes, the outbox, a callback log: each row is needed only while a redelivery of what it
records can still come. A `Retention` names the rows of one kind and their window; a `Purger`
deletes what has outlived its window, a bounded chunk per statement and one short transaction
per chunk, never inside a hot path's transaction, and only on the replica that holds its lease.
"""

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import Delete, Table, delete, select, tuple_
from sqlmodel import SQLModel

from esim_core.clock import utcnow
from esim_core.duework.leases import Lock
from esim_core.duework.loop import run_forever
from esim_core.observability.metrics import ROWS_PURGED
from esim_core.persistence.db import Database

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Retention:
    """The rows of one kind that a purge deletes once `keep_s` has passed since `column`.

    `only` narrows the kind to rows whose columns hold one of the given values (the inbox
    rows of one consumer, say): kinds that share a table keep windows of their own. The
    table needs an index that starts with the `only` columns and then `column`, so that the
    cutoff query reads the expired rows straight off the index.
    """

    kind: str
    model: type[SQLModel]
    column: str
    keep_s: float
    only: Mapping[str, Sequence[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.keep_s < 0:
            raise ValueError(f"the {self.kind} window cannot be negative ({self.keep_s:g} s)")
        table = self.table
        for name in (self.column, *self.only):
            if name not in table.c:
                raise ValueError(f"{table.name} has no column {name!r} ({self.kind})")

    @property
    def table(self) -> Table:
        """The table the rows are in."""
        table: Table = self.model.__table__  # type: ignore[attr-defined]
        return table


class Purger:
    """Deletes expired rows of each `Retention`, one chunk per transaction, on one replica.

    A pass takes each kind's cutoff once, then deletes chunks of at most `chunk` rows until a
    chunk comes back short. Before every chunk it asks for its lease (`lock`), so a replica
    that lost it stops within one chunk; on PostgreSQL each chunk also skips rows another
    transaction holds (`SKIP LOCKED`), so even two purgers overlapping across a lease's expiry
    never wait on, or deadlock with, each other. Between chunks it pauses for `pause_s`: on
    SQLite every transaction holds the one write lock, and the consumer's transactions get in
    between. A stop is seen between chunks too.
    """

    def __init__(
        self,
        database: Database,
        lock: Lock,
        *,
        chunk: int = 500,
        interval_s: float = 60.0,
        pause_s: float = 0.02,
    ) -> None:
        if chunk < 1:
            raise ValueError(f"a purge chunk holds at least one row, not {chunk}")
        self.database = database
        self.lock = lock
        self.chunk = chunk
        self.interval_s = interval_s
        self.pause_s = pause_s
        self.retentions: list[Retention] = []
        self._stopping = asyncio.Event()

    def keep(self, retention: Retention) -> None:
        """Purge the rows of `retention` too; one window per kind."""
        if any(each.kind == retention.kind for each in self.retentions):
            raise ValueError(f"the {retention.kind} rows already have a window")
        self.retentions.append(retention)

    async def run(self) -> None:
        """Purge every `interval_s` until `stop`; a failed pass is logged, counted and retried."""
        await run_forever(
            "purge", self.purge, self.interval_s, self._stopping, doing="purging expired rows"
        )

    def stop(self) -> None:
        """Let `run` return after the chunk in hand."""
        self._stopping.set()

    async def purge(self) -> dict[str, int]:
        """One pass over every kind, while this replica holds the lease; rows deleted by kind."""
        purged: dict[str, int] = {}
        for retention in self.retentions:
            deleted = await self._purge_kind(retention)
            if deleted is None:
                break  # the lease is another replica's: it purges
            purged[retention.kind] = deleted
            if deleted:
                logger.info(
                    "purged %d %s rows older than %g s", deleted, retention.kind, retention.keep_s
                )
        return purged

    async def _purge_kind(self, retention: Retention) -> int | None:
        cutoff = utcnow() - timedelta(seconds=retention.keep_s)
        total = 0
        while not self._stopping.is_set():
            if not await self.lock.acquire():
                return None if total == 0 else total
            deleted = await self.delete_chunk(retention, cutoff)
            total += deleted
            ROWS_PURGED.labels(retention.kind).inc(deleted)
            if deleted < self.chunk:
                break
            await asyncio.sleep(self.pause_s)
        return total

    async def delete_chunk(self, retention: Retention, cutoff: Any) -> int:
        """Delete at most `chunk` rows of `retention` older than `cutoff`, in one transaction."""
        async with self.database.session() as session:
            connection = await session.connection()
            result: Any = await connection.execute(self.chunk_statement(retention, cutoff))
        deleted: int = result.rowcount or 0
        return deleted

    def chunk_statement(self, retention: Retention, cutoff: Any) -> Delete:
        """The DELETE of one chunk: the expired rows picked by the cutoff query, by their key."""
        table = retention.table
        key = list(table.primary_key.columns)
        conditions = [table.c[retention.column] < cutoff]
        conditions += [table.c[name].in_(list(values)) for name, values in retention.only.items()]
        # No ORDER BY: every expired row goes anyway, and without it the index range scan
        # stops at the limit instead of sorting every expired row first.
        expired = select(*key).where(*conditions).limit(self.chunk)
        if self.database.is_postgresql:
            expired = expired.with_for_update(skip_locked=True)
        if len(key) == 1:
            statement = delete(table).where(key[0].in_(expired.scalar_subquery()))
        else:
            statement = delete(table).where(tuple_(*key).in_(expired))
        return statement
