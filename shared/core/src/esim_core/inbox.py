"""Inbox: the ids of consumed events, stored in the same transaction as their effects."""

from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Field, SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession


class InboxEntry(SQLModel, table=True):
    """One consumed event, per consumer; its presence makes a redelivery a no-op."""

    __tablename__ = "inbox"

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


async def record_processed(
    session: AsyncSession, consumer: str, events: Sequence[tuple[str, str]]
) -> None:
    """Record events (id, type) as consumed, in one statement; commits with their effects.

    Raises:
        IntegrityError: another process recorded one of them first.
    """
    if not events:
        return
    table = InboxEntry.__table__  # type: ignore[attr-defined]
    now = datetime.now(UTC)
    connection = await session.connection()
    await connection.execute(
        insert(table),
        [
            {
                "consumer": consumer,
                "event_id": event_id,
                "event_type": event_type,
                "processed_at": now,
            }
            for event_id, event_type in events
        ],
    )


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
    table = InboxEntry.__table__  # type: ignore[attr-defined]
    now = datetime.now(UTC)
    connection = await session.connection()
    dialect = connection.dialect.name
    rows = [
        {"consumer": consumer, "event_id": event_id, "event_type": event_type, "processed_at": now}
        for event_id, event_type in dict(events).items()
    ]
    # SQLite and PostgreSQL, the two databases the services run on, share this syntax.
    dialect_insert: Any = sqlite.insert if dialect == "sqlite" else postgresql.insert
    statement = dialect_insert(table).values(rows).on_conflict_do_nothing()
    result = await connection.execute(statement.returning(table.c.event_id))
    return {row[0] for row in result}
