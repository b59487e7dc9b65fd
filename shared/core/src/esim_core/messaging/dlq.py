"""Dead letters: list what is on `<topic>.dlq`, read one, and replay them to their topic.

`esimctl dlq list|show|replay <topic>` is the operator command; this module is its library.
Its clients connect as the services' do (`KafkaSettings`: TLS and SASL included).

Replay publishes each dead letter, unchanged, back to the topic it came from and commits its
position in the consumer group `dlq-replay`, so a dead letter is replayed once; a fixed consumer
then handles it (or dead-letters it again, with the new error).
"""

from collections.abc import AsyncIterator
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from esim_core.messaging.kafka import client_options
from esim_core.settings import KafkaSettings


async def _start(client: AIOKafkaConsumer | AIOKafkaProducer) -> None:
    # A client whose start failed (broker unreachable) still holds connections until stopped.
    try:
        await client.start()
    except BaseException:
        await client.stop()
        raise


def _headers(record: Any) -> dict[str, str]:
    return {name: value.decode("utf-8", "replace") for name, value in record.headers or ()}


async def _dlq_partitions(kafka: KafkaSettings, dlq: str) -> list[TopicPartition]:
    probe = AIOKafkaConsumer(**client_options(kafka))
    await _start(probe)
    try:
        if dlq not in await probe.topics():
            return []
    finally:
        await probe.stop()
    # Subscribing without a group assigns every partition and fetches their metadata.
    reader = AIOKafkaConsumer(dlq, **client_options(kafka), enable_auto_commit=False)
    await _start(reader)
    try:
        return sorted(reader.assignment(), key=lambda tp: tp.partition)
    finally:
        await reader.stop()


async def _read_until_end(
    consumer: AIOKafkaConsumer, assigned: list[TopicPartition]
) -> AsyncIterator[Any]:
    """Yield the records between each partition's position and its end offset at the start."""
    ends = await consumer.end_offsets(assigned)
    while [tp for tp in assigned if await consumer.position(tp) < ends[tp]]:
        batch = await consumer.getmany(*assigned, timeout_ms=1000)
        for tp, records in batch.items():
            for record in records:
                if record.offset < ends[tp]:
                    yield record


async def list_dead_letters(kafka: KafkaSettings, topic: str) -> list[dict[str, Any]]:
    """Every dead letter of a topic, oldest first, with its error headers."""
    assigned = await _dlq_partitions(kafka, f"{topic}.dlq")
    if not assigned:
        return []
    consumer = AIOKafkaConsumer(
        **client_options(kafka), enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await _start(consumer)
    found: list[dict[str, Any]] = []
    try:
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        async for record in _read_until_end(consumer, assigned):
            found.append(
                {
                    "partition": record.partition,
                    "offset": record.offset,
                    "key": record.key.decode("utf-8", "replace") if record.key else None,
                    "headers": _headers(record),
                    "size": len(record.value or b""),
                }
            )
        return found
    finally:
        await consumer.stop()


async def topic_exists(kafka: KafkaSettings, topic: str) -> bool:
    """Whether the broker knows the topic."""
    probe = AIOKafkaConsumer(**client_options(kafka))
    await _start(probe)
    try:
        return topic in await probe.topics()
    finally:
        await probe.stop()


async def read_dead_letter(
    kafka: KafkaSettings, topic: str, partition: int, offset: int
) -> dict[str, Any] | None:
    """One dead letter of a topic, with its headers and raw value; None if there is none there."""
    assigned = await _dlq_partitions(kafka, f"{topic}.dlq")
    wanted = TopicPartition(f"{topic}.dlq", partition)
    if wanted not in assigned:
        return None
    consumer = AIOKafkaConsumer(**client_options(kafka), enable_auto_commit=False)
    await _start(consumer)
    try:
        consumer.assign([wanted])
        start = (await consumer.beginning_offsets([wanted]))[wanted]
        end = (await consumer.end_offsets([wanted]))[wanted]
        if not start <= offset < end:
            return None
        consumer.seek(wanted, offset)
        for _ in range(10):  # a few fetches; an offset that holds no record (a marker) is None
            batch = await consumer.getmany(wanted, timeout_ms=1000, max_records=1)
            for record in batch.get(wanted, []):
                if record.offset != offset:
                    return None
                return {
                    "partition": record.partition,
                    "offset": record.offset,
                    "key": record.key.decode("utf-8", "replace") if record.key else None,
                    "headers": _headers(record),
                    "value": record.value or b"",
                }
        return None
    finally:
        await consumer.stop()


async def replay(kafka: KafkaSettings, topic: str, limit: int | None = None) -> int:
    """Publish not-yet-replayed dead letters back to their original topic; returns how many.

    Only what was on the dead-letter topic when the replay began is replayed, so a message
    that fails again (and is dead-lettered again) is not replayed in a loop.
    """
    assigned = await _dlq_partitions(kafka, f"{topic}.dlq")
    if not assigned:
        return 0
    consumer = AIOKafkaConsumer(
        **client_options(kafka),
        group_id=kafka.consumer_group("dlq-replay"),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    producer = AIOKafkaProducer(**client_options(kafka), acks="all", enable_idempotence=True)
    await _start(consumer)
    await _start(producer)
    replayed = 0
    try:
        consumer.assign(assigned)
        async for record in _read_until_end(consumer, assigned):
            if limit is not None and replayed >= limit:
                break
            original = _headers(record).get("x-original-topic", topic)
            await producer.send_and_wait(
                original,
                value=record.value,
                key=record.key,
                headers=[("x-replayed-from", f"{record.topic}@{record.offset}".encode())],
            )
            tp = TopicPartition(record.topic, record.partition)
            await consumer.commit({tp: record.offset + 1})
            replayed += 1
        return replayed
    finally:
        await producer.stop()
        await consumer.stop()
