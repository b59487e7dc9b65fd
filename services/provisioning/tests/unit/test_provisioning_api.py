"""The ops API: a renewal's activation, a card's activations, and problem details."""

from collections.abc import AsyncIterator

import httpx
import pytest
from esim_core.persistence.db import Database
from esim_core.testing import api_client, problem_app
from provisioning.api import build_router
from provisioning.bootstrap import Provisioning
from provisioning_testkit import (
    OTHER_ICCID,
    UNKNOWN_ICCID,
    FakePlatform,
    handle,
    payment_settled,
    poll,
    run_until_final,
)


@pytest.fixture
async def client(database: Database) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(problem_app(build_router(database)), "http://provisioning") as http:
        yield http


async def test_a_new_activation_is_shown_as_ordering(
    provisioning: Provisioning, client: httpx.AsyncClient
) -> None:
    data = payment_settled()
    await handle(provisioning, data)

    answer = await client.get(f"/v1/activations/{data.renewal_id}")

    assert answer.status_code == 200
    body = answer.json()
    assert body["state"] == "ordering"
    assert body["activation_id"].startswith("act_")
    assert body["plan"] == {"code": "JP-30D-10GB", "data_mb": 10240, "validity_days": 30}
    assert (body["attempts"], body["order_id"], body["last_error"]) == (0, None, None)
    assert body["next_attempt_at"].endswith("Z") and body["deadline_at"].endswith("Z")


async def test_an_activated_one_shows_its_order_and_dates(
    provisioning: Provisioning, client: httpx.AsyncClient, platform: FakePlatform
) -> None:
    data = payment_settled()
    await handle(provisioning, data)
    row = await run_until_final(provisioning, data.renewal_id)

    body = (await client.get(f"/v1/activations/{data.renewal_id}")).json()

    assert body["state"] == "activated"
    assert body["order_id"] == row.order_id and body["bundle_state"] == "active"
    assert body["attempts"] == 3
    assert body["valid_from"] and body["valid_until"] and body["activated_at"]
    assert body["next_attempt_at"] is None


async def test_a_failed_one_shows_why(
    provisioning: Provisioning, client: httpx.AsyncClient
) -> None:
    data = payment_settled(iccid=UNKNOWN_ICCID)
    await handle(provisioning, data)
    await provisioning.activations.run_once()

    body = (await client.get(f"/v1/activations/{data.renewal_id}")).json()

    assert (body["state"], body["failure_reason"]) == ("failed", "unknown_iccid")
    assert UNKNOWN_ICCID in body["last_error"]


async def test_an_unknown_renewal_is_a_404_problem(client: httpx.AsyncClient) -> None:
    answer = await client.get("/v1/activations/5b0f2a4e-8d8b-4a53-9f5c-3d9a7f1e2c11")

    assert answer.status_code == 404
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["type"].endswith("/activation-not-found")


async def test_a_renewal_id_that_is_not_a_uuid_is_a_422_problem(
    client: httpx.AsyncClient,
) -> None:
    answer = await client.get("/v1/activations/not-a-uuid")

    assert answer.status_code == 422
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["errors"][0]["field"] == "path.renewal_id"


async def test_a_cards_activations_are_listed_newest_first(
    provisioning: Provisioning, client: httpx.AsyncClient
) -> None:
    first, second = payment_settled(), payment_settled()
    other = payment_settled(iccid=OTHER_ICCID)
    for data in (first, second, other):
        await handle(provisioning, data)
    await provisioning.activations.run_once()

    answer = await client.get("/v1/activations", params={"iccid": first.iccid})

    assert answer.status_code == 200
    assert [a["renewal_id"] for a in answer.json()] == [
        str(second.renewal_id),
        str(first.renewal_id),
    ]
    following = await client.get("/v1/activations", params={"state": "following"})
    assert len(following.json()) == 3
    assert (await client.get("/v1/activations", params={"state": "failed"})).json() == []


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"iccid": "12345"}, "query.iccid"),
        ({"iccid": "8944500102198304827"}, "query.iccid"),
        ({"state": "sleeping"}, "query.state"),
        ({"limit": "0"}, "query.limit"),
    ],
)
async def test_bad_filters_are_422_problems(
    client: httpx.AsyncClient, params: dict[str, str], field: str
) -> None:
    answer = await client.get("/v1/activations", params=params)

    assert answer.status_code == 422
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["errors"][0]["field"] == field


async def test_the_bundles_of_a_card_show_usage_alerts_and_the_next_poll(
    provisioning: Provisioning, client: httpx.AsyncClient, platform: FakePlatform
) -> None:
    data = payment_settled()
    await handle(provisioning, data)
    await run_until_final(provisioning, data.renewal_id)
    platform.set_usage(data.renewal_id, 9300)
    await poll(provisioning)
    answer = await client.get("/v1/bundles", params={"iccid": data.iccid})
    assert answer.status_code == 200
    [bundle] = answer.json()
    assert (bundle["renewal_id"], bundle["status"]) == (str(data.renewal_id), "active")
    assert (bundle["data_used_mb"], bundle["alerted_pct"]) == (9300, 90)
    assert bundle["usage_as_of"].endswith("Z") and bundle["next_poll_at"] is not None
    refused = await client.get("/v1/bundles", params={"iccid": "123"})
    assert refused.status_code == 422


async def test_a_cancellation_shows_the_platforms_answer(
    provisioning: Provisioning, client: httpx.AsyncClient, platform: FakePlatform
) -> None:
    from provisioning_testkit import ICCID
    from test_provisioning_cancellations import request_cancel

    platform.modes[ICCID] = "queued"
    data = payment_settled()
    await handle(provisioning, data)
    await run_until_final(provisioning, data.renewal_id)
    await request_cancel(provisioning, data.renewal_id)
    pending = (await client.get(f"/v1/cancellations/{data.renewal_id}")).json()
    await provisioning.cancellations.run_once()

    answer = await client.get(f"/v1/cancellations/{data.renewal_id}")

    assert (pending["state"], pending["order_id"]) == ("pending", None)
    assert answer.status_code == 200
    body = answer.json()
    assert (body["state"], body["reason"], body["bundle_status"]) == (
        "cancelled",
        "cancelled_by_user",
        "revoked",
    )
    assert body["order_id"] == platform.cancel_calls[0]
    assert body["done_at"].endswith("Z") and body["next_attempt_at"] is None
    missing = await client.get(f"/v1/cancellations/{payment_settled().renewal_id}")
    assert missing.status_code == 404
    assert missing.json()["type"].endswith("cancellation-not-found")
