"""Shared bits of the accounts unit tests."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from accounts.bootstrap import Accounts, build
from accounts.settings import AccountsSettings
from esim_core.messaging.consumer import EventConsumer
from esim_core.messaging.kafka import OutgoingMessage
from esim_core.messaging.outbox import OutboxMessage
from esim_core.persistence.db import Database
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


@dataclass(frozen=True)
class Wired:
    """Accounts as its bootstrap wires it, its consumer, and what it would have sent."""

    accounts: Accounts
    consumer: EventConsumer
    clock: Clock
    relayed: RecordingPublisher
    dead_letters: RecordingPublisher


@asynccontextmanager
async def wired_accounts(
    clock: Clock, *, payment_deadline_s: float, activation_deadline_s: float
) -> AsyncIterator[Wired]:
    """The service over in-memory SQLite, its relay and dead letters recorded, not sent."""
    settings = AccountsSettings(
        # One connection (SQLAlchemy's StaticPool for SQLite in memory), reset per example.
        database_url="sqlite+aiosqlite:///:memory:",
        cards_csv="",
        payment_deadline_s=payment_deadline_s,
        activation_deadline_s=activation_deadline_s,
        # A handler error is a failed example here, not a transient fault worth waiting for.
        consumer_retries=1,
    )
    accounts = build(settings, clock=clock)
    runtime = accounts.runtime
    await runtime.database.create_tables(runtime.tables)
    consumer = runtime.subscribe()
    assert consumer is not None
    dead_letters, relayed = RecordingPublisher(), RecordingPublisher()
    consumer.publisher = dead_letters
    runtime.relay.publisher = relayed
    try:
        yield Wired(accounts, consumer, clock, relayed, dead_letters)
    finally:
        await runtime.database.close()
        await runtime.redis.aclose()
