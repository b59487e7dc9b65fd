"""Inbox: the ids of consumed events, stored in the same transaction as their effects."""

from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Index, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Field, SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from esim_core.duework.purge import Retention


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


async def record_new(
    session: AsyncSession, consumer: str, events: Sequence[tuple[str, str]]
) -> set[str]:
    """Record events (id, type) as consumed where they are not yet; returns the new ids.

    One statement (`INSERT ... ON CONFLICT DO NOTHING RETURNING`) both checks and records, at
    the start of the transaction that works the events: an id it does not return was
    consumed before (or by a concurrent transaction, which PostgreSQL waits for), and its
    event is a duplicate. Rolled back with the effects when a handler fails.
    """
    if not events:
        return set()
    now = datetime.now(UTC)
    connection = await session.connection()
    rows = [
        {"consumer": consumer, "event_id": event_id, "event_type": event_type, "processed_at": now}
        for event_id, event_type in dict(events).items()
    ]
    result = await connection.execute(_INSERT_NEW[connection.dialect.name], rows)
    return {row[0] for row in result}


def inbox_retention(kind: str, consumers: Sequence[str], keep_s: float) -> Retention:
    """The window of these consumers' inbox rows: a redelivery within it is dropped.

    Every name a service records consumed events under needs one (its Kafka consumer's is
    the runtime's), or its rows are never purged.
    """
    if not consumers:
        raise ValueError(f"the {kind} window needs the consumers it is for")
    return Retention(kind, InboxEntry, "processed_at", keep_s, only={"consumer": list(consumers)})


def _insert_new(dialect_insert: Any) -> Any:
    table = InboxEntry.__table__  # type: ignore[attr-defined]
    return dialect_insert(table).on_conflict_do_nothing().returning(table.c.event_id)


#: One statement per dialect, built once: executed with a list of rows (SQLAlchemy sends them
#: as one multi-row INSERT with RETURNING), so it is compiled once, where `.values(rows)` made
#: a new statement, and a new compilation, for every transaction. SQLite and PostgreSQL, the
#: two databases the services run on, share this syntax.
_INSERT_NEW = {"sqlite": _insert_new(sqlite.insert), "postgresql": _insert_new(postgresql.insert)}
