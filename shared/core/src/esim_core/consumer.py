"""Consuming events: validate, handle once through the inbox, dead-letter what cannot be handled."""

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from esim_schemas import CloudEvent, EventData, EventDecodeError, decode_event, format_time
from faststream.kafka import KafkaBroker, KafkaMessage
from faststream.middlewares import AckPolicy
from sqlalchemy.exc import IntegrityError
from sqlmodel.ext.asyncio.session import AsyncSession
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from esim_core.db import Database
from esim_core.inbox import already_processed, mark_processed
from esim_core.kafka import EventPublisher
from esim_core.metrics import DEAD_LETTERS, EVENT_HANDLING_SECONDS, EVENTS_CONSUMED

logger = logging.getLogger(__name__)

Handler = Callable[[AsyncSession, CloudEvent[Any]], Awaitable[None]]


class PermanentEventError(Exception):
    """An event that fits the schema but can never be handled; it is dead-lettered at once."""


@dataclass(frozen=True)
class Route:
    """Which handler takes which event model on a topic."""

    model: type[EventData]
    handler: Handler


@dataclass(frozen=True)
class MessageInfo:
    """Where a message came from, for dead-letter headers and logs."""

    topic: str
    partition: int
    offset: int
    key: bytes | None


class EventConsumer:
    """Handles the messages of a service's topics, as one member of its consumer group.

    A message is decoded and validated; its handler runs in one transaction with the inbox
    row, so a redelivered event changes nothing. Handler errors are retried a bounded number
    of times; what still fails, and what does not fit the contract, goes to `<topic>.dlq`
    with the reason in headers, and the offset moves on so the partition is never blocked.
    """

    def __init__(
        self,
        *,
        name: str,
        subscriptions: Mapping[str, Sequence[Route]],
        database: Database,
        publisher: EventPublisher,
        attempts: int = 3,
        after_commit: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self.topics = list(subscriptions)
        self.routes: dict[str, dict[type[EventData], Handler]] = {
            topic: {route.model: route.handler for route in routes}
            for topic, routes in subscriptions.items()
        }
        self.database = database
        self.publisher = publisher
        self.attempts = attempts
        self.after_commit = after_commit

    def subscribe(self, broker: KafkaBroker, group_id: str) -> None:
        """Register this consumer on the broker; offsets commit only after handling.

        One subscriber covers every topic, so the group rebalances once when a replica joins.
        """

        @broker.subscriber(
            *self.topics,
            group_id=group_id,
            auto_offset_reset="earliest",
            ack_policy=AckPolicy.NACK_ON_ERROR,
            decoder=_raw_body,
            title=group_id,
            description=", ".join(
                model.event_type for routes in self.routes.values() for model in routes
            ),
        )
        async def consume(body: bytes, message: KafkaMessage) -> None:
            raw: Any = message.raw_message
            info = MessageInfo(
                topic=raw.topic, partition=raw.partition, offset=raw.offset, key=raw.key
            )
            await self.handle(body, info)

    async def handle(self, body: bytes, info: MessageInfo) -> None:
        """Handle one message; returns once it is handled, a duplicate, or dead-lettered."""
        started = time.perf_counter()
        try:
            routes = self.routes[info.topic]
            event = decode_event(body, tuple(routes))
        except EventDecodeError as error:
            await self._dead_letter(body, info, str(error), error.error_type)
            return
        handler = routes[type(event.data)]
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(self.attempts),
                wait=wait_random_exponential(multiplier=0.2, max=5),
                retry=retry_if_exception(lambda e: not isinstance(e, PermanentEventError)),
                reraise=True,
            ):
                with attempt:
                    outcome = await self._handle_once(handler, event)
        except PermanentEventError as error:
            await self._dead_letter(body, info, str(error), "unprocessable")
            return
        except Exception as error:
            logger.exception(
                "%s: %s %s failed %d times", self.name, event.type, event.id, self.attempts
            )
            await self._dead_letter(
                body, info, f"{type(error).__name__}: {error}", "retries_exhausted"
            )
            return
        EVENTS_CONSUMED.labels(info.topic, outcome).inc()
        EVENT_HANDLING_SECONDS.labels(info.topic).observe(time.perf_counter() - started)

    async def _handle_once(self, handler: Handler, event: CloudEvent[Any]) -> str:
        try:
            async with self.database.session() as session:
                if await already_processed(session, self.name, event.id):
                    return "duplicate"
                await handler(session, event)
                mark_processed(session, self.name, event.id, event.type)
        except IntegrityError:
            # Another replica committed the same event id first: the effects exist once.
            async with self.database.session() as session:
                if await already_processed(session, self.name, event.id):
                    return "duplicate"
            raise
        if self.after_commit is not None:
            self.after_commit()
        return "handled"

    async def _dead_letter(
        self, body: bytes, info: MessageInfo, error: str, error_type: str
    ) -> None:
        logger.warning(
            "%s: dead-lettering %s[%d]@%d (%s): %s",
            self.name,
            info.topic,
            info.partition,
            info.offset,
            error_type,
            error[:500],
        )
        headers = {
            "x-error": error[:4000],
            "x-error-type": error_type,
            "x-original-topic": info.topic,
            "x-original-partition": str(info.partition),
            "x-original-offset": str(info.offset),
            "x-failed-at": format_time(datetime.now(UTC)),
        }
        key = info.key.decode("utf-8", "replace") if info.key is not None else None
        await self.publisher.publish_raw(body, topic=f"{info.topic}.dlq", key=key, headers=headers)
        DEAD_LETTERS.labels(info.topic, error_type).inc()
        EVENTS_CONSUMED.labels(info.topic, "dead_lettered").inc()


async def _raw_body(message: Any) -> bytes:
    # The contract is validated by decode_event, not by FastStream, so handlers get raw bytes.
    body: bytes = message.body
    return body
