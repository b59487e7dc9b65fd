"""One hop of the bare relay baseline: consume a topic, produce the next event of the same renewal.

The bench runs three of these as separate processes (requested -> payment requested -> settled
-> activated) on their own topics, to measure what the broker and three process hops cost with
no database, no saga and no outside calls. Each incoming CloudEvent's renewal id and ICCID go
into a copy of a real event of the next type (the template, taken from the platform), so the
messages are the platform's size. Offsets are committed after the produced batch is acked,
as the platform does (acks=all, idempotent producer).

    python -m tests.bench.relay --bootstrap HOST:PORT --source T1 --target T2 \\
        --template event.json --group G --ready-file PATH
"""

import argparse
import asyncio
import copy
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

HEADERS_OF_THE_PLATFORM = "application/cloudevents+json; charset=utf-8"


def next_event(template: dict[str, Any], incoming: dict[str, Any]) -> dict[str, Any]:
    """The template event re-addressed to the incoming event's renewal and card."""
    event = copy.deepcopy(template)
    renewal = incoming.get("renewalid") or incoming["data"]["renewal_id"]
    iccid = incoming.get("subject") or incoming["data"]["iccid"]
    event["id"] = str(uuid.uuid4())
    event["time"] = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    event["renewalid"] = renewal
    event["subject"] = iccid
    event["data"]["renewal_id"] = renewal
    event["data"]["iccid"] = iccid
    return event


async def relay(args: argparse.Namespace) -> None:
    template = json.loads(Path(args.template).read_text())
    headers = [
        ("content-type", HEADERS_OF_THE_PLATFORM.encode()),
        ("ce_type", str(template["type"]).encode()),
    ]
    consumer = AIOKafkaConsumer(
        args.source,
        bootstrap_servers=args.bootstrap,
        group_id=args.group,
        enable_auto_commit=False,
        auto_offset_reset="latest",
        fetch_max_wait_ms=100,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=args.bootstrap, acks="all", enable_idempotence=True
    )
    await producer.start()
    await consumer.start()
    try:
        while not consumer.assignment():
            await consumer.getmany(timeout_ms=200)
        for partition in consumer.assignment():
            await consumer.position(partition)
        Path(args.ready_file).write_text("ready\n")
        while True:
            batches = await consumer.getmany(timeout_ms=500, max_records=500)
            acks = []
            for records in batches.values():
                for record in records:
                    incoming = json.loads(record.value or b"{}")
                    value = json.dumps(next_event(template, incoming), separators=(",", ":"))
                    acks.append(
                        await producer.send(
                            args.target, value=value.encode(), key=record.key, headers=headers
                        )
                    )
            if acks:
                await asyncio.gather(*acks)
                await consumer.commit()
    finally:
        await consumer.stop()
        await producer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--source", required=True, help="topic to consume")
    parser.add_argument("--target", required=True, help="topic to produce to")
    parser.add_argument("--template", required=True, help="JSON file: a real event to send")
    parser.add_argument("--group", required=True, help="consumer group")
    parser.add_argument("--ready-file", required=True, help="written once partitions are held")
    asyncio.run(relay(parser.parse_args()))


if __name__ == "__main__":
    main()
