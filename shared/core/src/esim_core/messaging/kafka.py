"""The Kafka side: the broker every service consumes with, and the producer it publishes with."""

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from aiokafka import AIOKafkaProducer
from faststream.kafka import KafkaBroker

from esim_core.settings import ServiceSettings


def make_broker(settings: ServiceSettings, client_id: str) -> KafkaBroker:
    """The FastStream broker whose subscribers consume the service's topics.

    Publishing goes through `EventPublisher`'s producer instead, so the relay can keep a whole
    batch in flight; the broker's own producer only answers readiness pings.
    """
    return KafkaBroker(
        settings.kafka_bootstrap_servers.split(","),
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        request_timeout_ms=30_000,
        # Stopping waits this long for the batch in hand, then cancels it (its transaction
        # rolls back and its offsets stay uncommitted, so it is redelivered) and leaves the
        # group; well inside the stop's own budget (ServiceRuntime.stop).
        graceful_timeout=settings.stop_timeout_s * 0.4,
    )


@dataclass(frozen=True)
class OutgoingMessage:
    """One already-serialized message to publish, keyed by ICCID."""

    value: bytes
    topic: str
    key: str | None
    headers: dict[str, str] = field(default_factory=dict)


class EventPublisher:
    """Publishes serialized messages with an idempotent producer that waits for all replicas.

    The idempotent producer keeps one partition's messages in the order they were sent, also
    across its own retries, so a batch can be sent at once and its acks awaited together.
    """

    def __init__(self, bootstrap_servers: str, *, client_id: str) -> None:
        self._bootstrap_servers = bootstrap_servers.split(",")
        self._client_id = client_id
        self._producer: AIOKafkaProducer | None = None
        self._starting = asyncio.Lock()

    async def start(self) -> None:
        """Connect the producer (again after `stop`); publishing also connects on first use."""
        async with self._starting:
            if self._producer is not None:
                return
            producer = AIOKafkaProducer(
                bootstrap_servers=self._bootstrap_servers,
                client_id=f"{self._client_id}-publisher",
                acks="all",
                enable_idempotence=True,
                request_timeout_ms=30_000,
                # A few milliseconds let a busy relay fill batches without slowing a quiet one.
                linger_ms=2,
                max_batch_size=256 * 1024,
            )
            await producer.start()
            self._producer = producer

    async def stop(self) -> None:
        """Flush what is in flight and disconnect."""
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def publish_raw(
        self, value: bytes, *, topic: str, key: str | None, headers: dict[str, str]
    ) -> None:
        """Send one message and wait until the broker has acknowledged it."""
        (outcome,) = await self.publish_many([OutgoingMessage(value, topic, key, headers)])
        if outcome is not None:
            raise outcome

    async def publish_many(self, messages: Sequence[OutgoingMessage]) -> list[Exception | None]:
        """Send every message, then wait for all their acks; one outcome per message, in order.

        `None` means acknowledged by all in-sync replicas; an exception means that message may
        not have been written and must be sent again.
        """
        if self._producer is None:
            await self.start()
        producer = self._producer
        assert producer is not None
        sent: list[asyncio.Future[object] | Exception] = []
        for message in messages:
            try:
                sent.append(
                    await producer.send(
                        message.topic,
                        message.value,
                        key=message.key.encode() if message.key is not None else None,
                        headers=[(name, value.encode()) for name, value in message.headers.items()],
                    )
                )
            except Exception as error:
                sent.append(error)
        outcomes: list[Exception | None] = []
        for item in sent:
            if isinstance(item, Exception):
                outcomes.append(item)
                continue
            try:
                await item
            except Exception as error:
                outcomes.append(error)
            else:
                outcomes.append(None)
        return outcomes
