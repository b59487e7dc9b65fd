"""Durable due work: rows with a due time that a background loop claims, runs and reschedules.

Retries that must outlive a process (payment dunning, activation follow-up, sending mail) are
rows, not sleeps. A claim is a short lease on the row, so several replicas never work on the same
row at once, and a replica that dies mid-work leaves a lease that simply runs out.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import or_, update
from sqlmodel import SQLModel, col, select

from esim_core.db import Database
from esim_core.metrics import WORKER_ERRORS

logger = logging.getLogger(__name__)


def utcnow() -> datetime:
    """The current time, in UTC."""
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """Read a stored timestamp as UTC (SQLite hands back naive datetimes)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


async def claim_due(
    database: Database, table: type[SQLModel], *, limit: int = 20, lease_s: float = 60.0
) -> list[Any]:
    """Lease up to `limit` rows of `table` that are due, and return their primary keys.

    The table needs `id`, `due_at` (null when nothing is due) and `lease_until` columns.
    On PostgreSQL the due rows are locked with SKIP LOCKED, so replicas claiming at the same
    time take different rows instead of queueing behind one another's locks for the same
    ones; SQLite leaves the clause out (its write transactions run one at a time).
    """
    now = utcnow()
    id_column: Any = table.id  # type: ignore[attr-defined]
    due_column: Any = table.due_at  # type: ignore[attr-defined]
    lease_column: Any = table.lease_until  # type: ignore[attr-defined]
    free = or_(col(lease_column).is_(None), col(lease_column) < now)
    claimed: list[Any] = []
    async with database.session() as session:
        candidates = (
            await session.exec(
                select(id_column)
                .where(col(due_column).is_not(None), col(due_column) <= now, free)
                .order_by(col(due_column), col(id_column))
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        ).all()
        for key in candidates:
            result: Any = await session.exec(
                update(table)
                .where(col(id_column) == key, free)
                .values(lease_until=now + timedelta(seconds=lease_s))
            )
            if result.rowcount:
                claimed.append(key)
    return claimed


async def work_due(
    database: Database,
    table: type[SQLModel],
    work: Callable[[Any], Awaitable[Any]],
    *,
    what: str,
    limit: int = 20,
    lease_s: float = 60.0,
) -> int:
    """Claim due rows of `table` and run `work` on each concurrently; returns how many.

    A failing `work` commits nothing: its lease runs out and a later round repeats the outside
    call under the same idempotency key.
    """
    keys = await claim_due(database, table, limit=limit, lease_s=lease_s)

    async def safely(key: Any) -> None:
        try:
            await work(key)
        except Exception:
            logger.exception("%s %s failed; it is retried once its lease runs out", what, key)

    await asyncio.gather(*(safely(key) for key in keys))
    return len(keys)


async def run_forever(name: str, step: Callable[[], Awaitable[Any]], interval_s: float) -> None:
    """Run `step` every `interval_s` seconds until cancelled, logging and surviving its errors."""
    while True:
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception:
            WORKER_ERRORS.labels(name).inc()
            logger.exception("%s failed; will retry", name)
        await asyncio.sleep(interval_s)
