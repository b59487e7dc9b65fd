"""Transactional outbox: events are stored with the state change, then relayed to Kafka."""

import asyncio
import contextlib
import logging
from datetime import UTC, datetime

from esim_schemas import CloudEvent, EventData, new_event
from sqlalchemy import Column, LargeBinary, update
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from esim_core.db import Database
from esim_core.kafka import EventPublisher
from esim_core.locks import Lock
from esim_core.metrics import OUTBOX_PUBLISHED, OUTBOX_RELAY_ERRORS
from esim_core.settings import Topics

logger = logging.getLogger(__name__)


def utcnow() -> datetime:
    """The current time, in UTC."""
    return datetime.now(UTC)


class OutboxMessage(SQLModel, table=True):
    """One event waiting to be published, or already published (`published_at` set)."""

    __tablename__ = "outbox"

    id: int | None = Field(default=None, primary_key=True)
    event_id: str = Field(index=True, max_length=256)
    event_type: str = Field(max_length=256)
    topic: str = Field(max_length=256)
    key: str | None = Field(default=None, max_length=64)
    value: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)
    published_at: datetime | None = Field(default=None, index=True)


class Outbox:
    """Adds events to the outbox inside the caller's transaction."""

    def __init__(self, source: str, topics: Topics) -> None:
        self.source = source
        self.topics = topics
        self._pending = asyncio.Event()

    def add(
        self, session: AsyncSession, data: EventData, *, event_id: str | None = None
    ) -> CloudEvent[EventData]:
        """Store an event to publish; it commits or rolls back with the session's transaction.

        Args:
            session: the unit of work that also holds the state change.
            data: the event's fields.
            event_id: a deterministic id, where the caller derives one from what caused it.
        """
        envelope: CloudEvent[EventData] = new_event(data, source=self.source, event_id=event_id)
        session.add(
            OutboxMessage(
                event_id=envelope.id,
                event_type=data.event_type,
                topic=self.topics.for_event(type(data)),
                key=envelope.subject,
                value=envelope.to_json(),
            )
        )
        self._pending.set()
        return envelope

    def notify(self) -> None:
        """Wake the relay: something was committed that it may publish."""
        self._pending.set()

    async def wait_for_pending(self, seconds: float) -> None:
        """Return when an event was added, or after `seconds`."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._pending.wait(), seconds)
        self._pending.clear()


class OutboxRelay:
    """Publishes unpublished outbox rows in order and marks them published.

    Publishing is at least once: a crash between the broker's ack and the mark publishes the
    row again with the same CloudEvents id, which consumers' inboxes drop.
    """

    def __init__(
        self,
        database: Database,
        outbox: Outbox,
        publisher: EventPublisher,
        lock: Lock,
        *,
        interval_s: float = 0.5,
        batch_size: int = 100,
    ) -> None:
        self.database = database
        self.outbox = outbox
        self.publisher = publisher
        self.lock = lock
        self.interval_s = interval_s
        self.batch_size = batch_size

    async def run(self) -> None:
        """Relay until cancelled; only the replica holding the lock publishes."""
        while True:
            try:
                if await self.lock.acquire():
                    while await self.relay_once() == self.batch_size:
                        pass
            except asyncio.CancelledError:
                raise
            except Exception:
                OUTBOX_RELAY_ERRORS.inc()
                logger.exception("outbox relay failed; will retry")
                await asyncio.sleep(min(5.0, self.interval_s * 4))
            await self.outbox.wait_for_pending(self.interval_s)

    async def relay_once(self) -> int:
        """Publish one batch of pending rows; returns how many were published."""
        async with self.database.session() as session:
            rows = (
                await session.exec(
                    select(OutboxMessage)
                    .where(col(OutboxMessage.published_at).is_(None))
                    .order_by(col(OutboxMessage.id))
                    .limit(self.batch_size)
                )
            ).all()
        published: list[int] = []
        try:
            for row in rows:
                await self.publisher.publish_raw(
                    row.value, topic=row.topic, key=row.key, headers=_headers(row)
                )
                assert row.id is not None
                published.append(row.id)
        finally:
            if published:
                async with self.database.session() as session:
                    await session.exec(
                        update(OutboxMessage)
                        .where(col(OutboxMessage.id).in_(published))
                        .values(published_at=utcnow())
                    )
                OUTBOX_PUBLISHED.inc(len(published))
        return len(published)


def _headers(row: OutboxMessage) -> dict[str, str]:
    return {
        "content-type": "application/cloudevents+json; charset=utf-8",
        "ce_type": row.event_type,
    }
