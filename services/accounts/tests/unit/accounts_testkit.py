"""Shared bits of the accounts unit tests."""

from datetime import datetime, timedelta

from esim_core.db import Database
from esim_core.kafka import OutgoingMessage
from esim_core.outbox import OutboxMessage
from sqlmodel import col, select

ICCID = "8944500102198304826"
OTHER_ICCID = "8944500102198304834"
CODE = "LPA:1$smdp.sandbox.esim.local$ABC"


async def published(database: Database, event_type: str | None = None) -> list[OutboxMessage]:
    """The outbox rows, oldest first, optionally of one type."""
    async with database.session() as session:
        query = select(OutboxMessage).order_by(col(OutboxMessage.id))
        if event_type is not None:
            query = query.where(OutboxMessage.event_type == event_type)
        return list((await session.exec(query)).all())


class RecordingPublisher:
    """Stands in for the Kafka publisher: keeps what would have been sent, in order."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, dict[str, str]]] = []

    async def publish_raw(
        self, value: bytes, *, topic: str, key: str | None, headers: dict[str, str]
    ) -> None:
        self.sent.append((topic, value, headers))

    async def publish_many(self, messages: list[OutgoingMessage]) -> list[Exception | None]:
        for message in messages:
            self.sent.append((message.topic, message.value, message.headers))
        return [None] * len(messages)


class Clock:
    """A clock that stands still until a test moves it on."""

    def __init__(self, start: datetime) -> None:
        self.start = start
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    def reset(self) -> None:
        self.now = self.start
