"""The Kafka side: the broker every service builds, and publishing raw CloudEvents."""

from faststream.kafka import KafkaBroker

from esim_core.settings import ServiceSettings


def make_broker(settings: ServiceSettings, client_id: str) -> KafkaBroker:
    """A FastStream Kafka broker whose producer waits for all replicas and never duplicates."""
    return KafkaBroker(
        settings.kafka_bootstrap_servers.split(","),
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        request_timeout_ms=30_000,
    )


class EventPublisher:
    """Publishes already-serialized messages, keyed by ICCID."""

    def __init__(self, broker: KafkaBroker) -> None:
        self.broker = broker

    async def publish_raw(
        self, value: bytes, *, topic: str, key: str | None, headers: dict[str, str]
    ) -> None:
        """Send one message and wait until the broker has acknowledged it."""
        await self.broker.publish(
            value, topic=topic, key=key.encode() if key is not None else None, headers=headers
        )
