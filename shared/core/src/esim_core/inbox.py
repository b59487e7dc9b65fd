"""Inbox: the ids of consumed events, stored in the same transaction as their effects."""

from datetime import UTC, datetime

from sqlmodel import Field, SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession


class InboxEntry(SQLModel, table=True):
    """One consumed event, per consumer; its presence makes a redelivery a no-op."""

    __tablename__ = "inbox"

    consumer: str = Field(primary_key=True, max_length=128)
    event_id: str = Field(primary_key=True, max_length=256)
    event_type: str = Field(max_length=256)
    processed_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


async def already_processed(session: AsyncSession, consumer: str, event_id: str) -> bool:
    """Tell whether this consumer already committed the effects of this event."""
    return await session.get(InboxEntry, (consumer, event_id)) is not None


def mark_processed(session: AsyncSession, consumer: str, event_id: str, event_type: str) -> None:
    """Record the event as consumed; commits with the handler's effects."""
    session.add(InboxEntry(consumer=consumer, event_id=event_id, event_type=event_type))
