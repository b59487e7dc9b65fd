"""`GET /v1/notifications`: what the notifier sent for a card or a renewal."""

from collections.abc import AsyncIterator
from uuid import uuid4

import httpx
import pytest
from esim_core.testing import api_client
from notifier.api import notifications_router
from notifier_testkit import (
    ICCID,
    Harness,
    card_bound,
    make_iccid,
    payment_failed,
    payment_settled,
    profile_activated,
)


@pytest.fixture
async def client(harness: Harness) -> AsyncIterator[httpx.AsyncClient]:
    app = harness.runtime.http_app(
        "notifier", routers=[notifications_router(harness.runtime.database)]
    )
    async with api_client(app, "http://notifier") as client:
        yield client


async def test_lists_what_was_sent_for_a_card(harness: Harness, client: httpx.AsyncClient) -> None:
    renewal_id = uuid4()
    await harness.publish(card_bound("en", phone=None))
    await harness.publish(payment_settled(renewal_id))
    activated = await harness.publish(profile_activated(renewal_id))
    await harness.send()
    failed = await harness.publish(payment_failed())  # no send round yet: still pending

    response = await client.get("/v1/notifications", params={"iccid": ICCID})

    assert response.status_code == 200
    pending, sent = response.json()
    assert sent["kind"] == "profile_activated"
    assert sent["channel"] == "email"
    assert sent["recipient"] == "user-1@example.com"
    assert sent["subject"] == "Your eSIM plan JP-30D-10GB is active"
    assert sent["status"] == "sent"
    assert sent["renewal_id"] == str(renewal_id)
    assert sent["event_id"] == activated
    assert sent["created_at"].endswith("Z")
    assert sent["sent_at"].endswith("Z")
    assert set(sent) >= {
        "id", "kind", "channel", "recipient", "subject", "status",
        "renewal_id", "event_id", "created_at", "sent_at",
    }  # fmt: skip
    assert "body" not in sent
    assert (pending["status"], pending["event_id"], pending["sent_at"]) == ("pending", failed, None)


async def test_filters_by_renewal(harness: Harness, client: httpx.AsyncClient) -> None:
    renewal_id = uuid4()
    await harness.publish(card_bound())
    await harness.publish(profile_activated(renewal_id))
    await harness.publish(payment_failed())

    response = await client.get("/v1/notifications", params={"renewal_id": str(renewal_id)})

    assert response.status_code == 200
    listed = response.json()
    assert sorted(item["channel"] for item in listed) == ["email", "sms"]
    assert {item["renewal_id"] for item in listed} == {str(renewal_id)}


async def test_a_card_without_notifications_has_an_empty_list(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/notifications", params={"iccid": make_iccid(222222)})

    assert response.status_code == 200
    assert response.json() == []


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({"iccid": "12345"}, "iccid"),
        ({"iccid": "89445001021983048261234"}, "iccid"),
        ({"iccid": "89445001021983048a6"}, "iccid"),
        ({"iccid": ICCID[:-1] + str((int(ICCID[-1]) + 1) % 10)}, "Luhn"),
        ({}, "ICCID"),
        ({"renewal_id": "not-a-uuid"}, "renewal_id"),
    ],
)
async def test_a_bad_query_is_a_422_problem(
    client: httpx.AsyncClient, params: dict[str, str], detail: str
) -> None:
    response = await client.get("/v1/notifications", params=params)

    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["status"] == 422
    assert detail in problem["detail"]
    assert problem["errors"]
