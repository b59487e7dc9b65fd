"""The ops API: a renewal's payment and refund, problem details, and no token anywhere."""

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from billing.api import build_router
from billing.bootstrap import Billing
from billing.domain import RefundState
from billing.handlers import on_payment_requested, on_refund_requested
from billing_testkit import (
    FakeGateway,
    fast_forward,
    payment_requested,
    refund_requested,
    settle,
)
from esim_core.persistence.db import Database
from esim_core.testing import api_client, handle, problem_app


@pytest.fixture
async def client(database: Database) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(problem_app(build_router(database)), "http://billing") as http:
        yield http


async def test_a_pending_payment_is_shown_without_its_token(
    database: Database, client: httpx.AsyncClient
) -> None:
    data = payment_requested(token="card_secret_6f1e_ok")
    await handle(database, on_payment_requested, data)

    answer = await client.get(f"/v1/payments/{data.renewal_id}")

    assert answer.status_code == 200
    body = answer.json()
    assert body["state"] == "pending"
    assert body["payment_id"].startswith("pay_")
    assert body["price"] == {"amount": 9900, "currency": "CNY"}
    assert body["attempts"] == 0 and body["provider_reference"] is None
    assert body["next_attempt_at"] is not None
    assert "card_secret_6f1e_ok" not in answer.text
    assert "token" not in body


async def test_a_settled_payment_shows_its_provider_reference(
    billing: Billing, client: httpx.AsyncClient, gateway: FakeGateway
) -> None:
    payment = await settle(billing)
    body = (await client.get(f"/v1/payments/{payment.renewal_id}")).json()
    assert body["state"] == "settled"
    assert body["attempts"] == 1
    assert body["provider_reference"] == payment.provider_reference
    assert body["settled_at"] is not None and body["next_attempt_at"] is None


async def test_an_unknown_renewal_is_a_404_problem(client: httpx.AsyncClient) -> None:
    for path in ("payments", "refunds"):
        answer = await client.get(f"/v1/{path}/{uuid.uuid4()}")
        assert answer.status_code == 404
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["detail"].startswith(f"no {path[:-1]} for renewal")


async def test_a_malformed_renewal_id_is_a_422_problem(client: httpx.AsyncClient) -> None:
    for path in ("payments", "refunds"):
        answer = await client.get(f"/v1/{path}/not-a-uuid")
        assert answer.status_code == 422
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["errors"][0]["field"] == "path.renewal_id"


async def test_a_refund_is_shown_and_a_parked_one_can_be_retried(
    billing: Billing, database: Database, client: httpx.AsyncClient, gateway: FakeGateway
) -> None:
    payment = await settle(billing)
    await handle(database, on_refund_requested, refund_requested(payment))
    gateway.outage = True
    # Park it: the gateway stays away for every allowed round.
    for _ in range(5):
        await billing.refunds.run_once()
        await fast_forward(database)
    shown = (await client.get(f"/v1/refunds/{payment.renewal_id}")).json()
    assert shown["state"] == "failed" and "503" in shown["last_error"]

    gateway.outage = False
    answer = await client.post(f"/v1/refunds/{payment.renewal_id}/retry")
    assert answer.status_code == 202
    assert answer.json()["state"] == "pending"
    await billing.refunds.run_once()

    shown = (await client.get(f"/v1/refunds/{payment.renewal_id}")).json()
    assert shown["state"] == RefundState.REFUNDED
    assert shown["provider_reference"].startswith("re_")
    assert shown["payment_id"] == payment.id
    again = await client.post(f"/v1/refunds/{payment.renewal_id}/retry")
    assert again.status_code == 409
