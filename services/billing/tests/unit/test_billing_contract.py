"""Billing and the committed contract: it takes the sample events, and what it publishes
validates against the committed JSON Schemas."""

import json
from typing import Any

import jsonschema
from billing.bootstrap import Billing
from billing.handlers import on_refund_requested
from billing_testkit import (
    FAILED,
    REFUNDED,
    SETTLED,
    payment_of,
    refund_requested,
)
from esim_core.messaging.consumer import MessageInfo
from esim_core.persistence.db import Database
from esim_core.testing import handle, published
from esim_schemas import RefundRequested, decode_event
from esim_schemas.generate import SAMPLE_DIR, SCHEMA_DIR


def sample(event_type: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((SAMPLE_DIR / f"{event_type}.json").read_text())
    return document


def validate(event: dict[str, Any]) -> None:
    wire = {k: v for k, v in event.items() if not k.startswith("_")}
    schema = json.loads((SCHEMA_DIR / f"{wire['type']}.json").read_text())
    jsonschema.validate(wire, schema)


async def consume(billing: Billing, topic: str, event: dict[str, Any]) -> None:
    consumer = billing.runtime.subscribe()
    assert consumer is not None
    info = MessageInfo(topic=topic, partition=0, offset=0, key=event["subject"].encode())
    await consumer.handle(json.dumps(event).encode(), info)


async def test_the_samples_are_taken_and_every_published_event_fits_its_schema(
    billing: Billing, database: Database
) -> None:
    topics = billing.runtime.topics
    settled_request = sample("esim.payment.requested.v1")
    declined_request = json.loads(
        json.dumps(settled_request).replace(
            "5b0f6f2e-8a55-4c1e-9d1a-6f7e2b9c4d10", "7d4c2b1a-0f9e-4d8c-8b7a-6e5d4c3b2a19"
        )
    )
    declined_request["id"] = "another-event"
    declined_request["data"]["payment"]["token"] = "alipay_declined"
    await consume(billing, topics.payment_requested, settled_request)
    await consume(billing, topics.payment_requested, declined_request)
    await billing.charges.run_once()

    payment = await payment_of(database, settled_request["data"]["renewal_id"])
    # The refund sample names another payment; the same event shape, for this one.
    await handle(database, on_refund_requested, refund_requested(payment))
    await billing.refunds.run_once()

    events = await published(database)
    assert sorted(e["type"] for e in events) == sorted([SETTLED, FAILED, REFUNDED])
    for event in events:
        validate(event)
        assert event["source"] == "/services/billing"


async def test_the_refund_sample_fits_the_refund_route(billing: Billing) -> None:
    consumer = billing.runtime.subscribe()
    assert consumer is not None
    event = sample("esim.refund.requested.v1")
    routes = consumer.routes[billing.runtime.topics.refund_requested]
    decoded = decode_event(json.dumps(event).encode(), tuple(routes))
    assert isinstance(decoded.data, RefundRequested)
