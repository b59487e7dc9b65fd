"""Inbox: the ids of consumed events, stored in the same transaction as their effects."""

import functools
from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Index, bindparam, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Field, SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from esim_core.duework.purge import Retention
from esim_core.persistence.driver import Statement, Target, fetch


class InboxEntry(SQLModel, table=True):
    """One consumed event, per consumer; its presence makes a redelivery a no-op.

    Kept for its consumer's window (`inbox_retention`), then purged: the index on
    (consumer, processed_at) is what the purge's cutoff query reads.
    """

    __tablename__ = "inbox"
    __table_args__ = (Index("ix_inbox_consumer_processed_at", "consumer", "processed_at"),)

    consumer: str = Field(primary_key=True, max_length=128)
    event_id: str = Field(primary_key=True, max_length=256)
    event_type: str = Field(max_length=256)
    processed_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


async def processed_ids(
    session: AsyncSession, consumer: str, event_ids: Collection[str]
) -> set[str]:
    """Which of these events this consumer already committed the effects of.

    A Core query on the session's connection: it needs no ORM objects, and it does not flush
    what the handlers added so far.
    """
    if not event_ids:
        return set()
    table = InboxEntry.__table__  # type: ignore[attr-defined]
    connection = await session.connection()
    rows = await connection.execute(
        select(table.c.event_id).where(
            table.c.consumer == consumer, table.c.event_id.in_(list(event_ids))
        )
    )
    return {row[0] for row in rows}


async def record_new(session: Target, consumer: str, events: Sequence[tuple[str, str]]) -> set[str]:
    """Record events (id, type) as consumed where they are not yet; returns the new ids.

    One statement (`INSERT ... ON CONFLICT DO NOTHING RETURNING`) both checks and records, at
    the start of the transaction that works the events: an id it does not return was
    consumed before (or by a concurrent transaction, which PostgreSQL waits for), and its
    event is a duplicate. Rolled back with the effects when a handler fails.
    """
    if not events:
        return set()
    now = datetime.now(UTC)
    pending = list(dict(events).items())
    new: set[str] = set()
    for start in range(0, len(pending), _MOST_ROWS):
        chunk = pending[start : start + _MOST_ROWS]
        params: dict[str, Any] = {"consumer": consumer, "processed_at": now}
        for n, (event_id, event_type) in enumerate(chunk):
            params[f"event_id_{n}"] = event_id
            params[f"event_type_{n}"] = event_type
        new.update(row[0] for row in await fetch(session, _insert_new(len(chunk)), params))
    return new


def inbox_retention(kind: str, consumers: Sequence[str], keep_s: float) -> Retention:
    """The window of these consumers' inbox rows: a redelivery within it is dropped.

    Every name a service records consumed events under needs one (its Kafka consumer's is
    the runtime's), or its rows are never purged.
    """
    if not consumers:
        raise ValueError(f"the {kind} window needs the consumers it is for")
    return Retention(kind, InboxEntry, "processed_at", keep_s, only={"consumer": list(consumers)})


#: Rows one INSERT records at most; a larger batch takes several.
_MOST_ROWS = 100


@functools.cache
def _insert_new(rows: int) -> Statement:
    """The INSERT of `rows` events, built and compiled once per number of rows: one statement
    whatever the batch, with the consumer and the time given once. SQLite and PostgreSQL, the
    two databases the services run on, share this syntax."""
    table = InboxEntry.__table__  # type: ignore[attr-defined]
    values = [
        {
            "consumer": bindparam("consumer"),
            "event_id": bindparam(f"event_id_{n}"),
            "event_type": bindparam(f"event_type_{n}"),
            "processed_at": bindparam("processed_at", type_=table.c.processed_at.type),
        }
        for n in range(rows)
    ]

    def built(dialect_insert: Any) -> Any:
        return (
            dialect_insert(table)
            .values(values)
            .on_conflict_do_nothing()
            .returning(table.c.event_id)
        )

    return Statement({"sqlite": built(sqlite.insert), "postgresql": built(postgresql.insert)})
