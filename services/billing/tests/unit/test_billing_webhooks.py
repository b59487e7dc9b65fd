"""The providers' webhooks on billing's HTTP app, and the operator views: payments still unknown,
captures overdue, reconciliation with the providers' lists, and their gauges."""

from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from billing.api import http_app
from billing.bootstrap import Billing
from billing.domain import PaymentState
from billing.gateways import Standing
from billing.handlers import on_payment_requested
from billing.store import Payment
from billing.webhooks import webhook_consumer
from billing_testkit import (
    FAILED,
    FakeGateway,
    FakePayment,
    fast_forward,
    payment_of,
    payment_requested,
    settle,
)
from esim_core.clock import utcnow
from esim_core.duework.leases import LocalLock
from esim_core.messaging.inbox import InboxEntry
from esim_core.observability.tracing import configure_tracing, current_traceparent, span
from esim_core.persistence.db import Database
from esim_core.testing import api_client, handle, published
from esim_core.web.operator import OperatorAuth
from sqlalchemy import update
from sqlmodel import col, select

TOKEN = "operator-token-for-tests"
OPERATOR = {"Authorization": f"Bearer {TOKEN}"}
SIGNED = {"x-fake-signature": "valid"}


@pytest.fixture
async def client(billing: Billing) -> AsyncIterator[httpx.AsyncClient]:
    app = http_app(billing.runtime, OperatorAuth(TOKEN), billing.gateway, billing.rules)
    async with api_client(app, "http://billing") as http:
        yield http


async def waiting_for_the_buyer(billing: Billing, method: str) -> str:
    data = payment_requested(method=method, token=f"{method}_action")
    await handle(billing.runtime.database, on_payment_requested, data)
    await billing.charges.run_once()
    return str(data.renewal_id)


async def test_a_forged_webhook_is_a_400_problem_and_changes_nothing(
    billing: Billing, database: Database, gateway: FakeGateway, client: httpx.AsyncClient
) -> None:
    renewal_id = await waiting_for_the_buyer(billing, "card")
    gateway.buyer(renewal_id, "cancel")
    body = f'{{"id": "evt_forged", "key": "charge:{renewal_id}"}}'

    answer = await client.post(
        "/webhooks/stripe", content=body, headers={"x-fake-signature": "forged"}
    )

    assert answer.status_code == 400
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert "signature" in answer.json()["detail"]
    payment = await payment_of(database, renewal_id)
    assert payment.state == PaymentState.ACTION_REQUIRED
    assert await published(database, FAILED) == []


async def test_a_replayed_webhook_is_applied_once_and_alipay_hears_success(
    billing: Billing, database: Database, gateway: FakeGateway, client: httpx.AsyncClient
) -> None:
    renewal_id = await waiting_for_the_buyer(billing, "alipay")
    gateway.buyer(renewal_id, "approve")  # Alipay: paid at once
    body = f'{{"id": "notify_1", "key": "charge:{renewal_id}"}}'

    answers = [
        await client.post("/webhooks/alipay", content=body, headers=SIGNED) for _ in range(2)
    ]

    for answer in answers:
        assert answer.status_code == 200
        assert answer.text == "success"
    payment = await payment_of(database, renewal_id)
    assert payment.state == PaymentState.SETTLED
    assert len(await published(database, "esim.payment.settled.v1")) == 1


async def test_a_providers_call_is_remembered_for_the_webhook_window_not_the_consumers(
    billing: Billing, database: Database, gateway: FakeGateway, client: httpx.AsyncClient
) -> None:
    renewal_id = await waiting_for_the_buyer(billing, "alipay")
    gateway.buyer(renewal_id, "approve")
    body = f'{{"id": "notify_kept", "key": "charge:{renewal_id}"}}'
    assert (await client.post("/webhooks/alipay", content=body, headers=SIGNED)).text == "success"
    purger = billing.runtime.purger
    purger.lock = LocalLock()

    async def aged(days: float) -> list[str]:
        async with database.session() as session:
            await session.exec(
                update(InboxEntry)
                .where(col(InboxEntry.consumer) == webhook_consumer("alipay"))
                .values(processed_at=utcnow() - timedelta(days=days))
            )
        await purger.purge()
        async with database.session() as session:
            rows = await session.exec(
                select(InboxEntry.event_id).where(
                    col(InboxEntry.consumer) == webhook_consumer("alipay")
                )
            )
            return list(rows.all())

    # Within the providers' window (Stripe resends 30 days back), then past it: the webhook
    # rows go by their own window, not by the Kafka consumer's (38 days).
    assert await aged(20) == ["notify_kept"]
    again = await client.post("/webhooks/alipay", content=body, headers=SIGNED)
    assert again.text == "success"
    assert len(await published(database, "esim.payment.settled.v1")) == 1
    assert await aged(32) == []


async def test_what_a_webhook_publishes_continues_the_renewals_trace(
    billing: Billing, database: Database, gateway: FakeGateway, client: httpx.AsyncClient
) -> None:
    configure_tracing("billing", {})  # trace ids (no exporter), as the service has them
    data = payment_requested(method="alipay", token="alipay_action")
    with span("consuming PaymentRequested"):
        requested = current_traceparent()
        await handle(billing.runtime.database, on_payment_requested, data)
    await billing.charges.run_once()
    renewal_id = str(data.renewal_id)
    gateway.buyer(renewal_id, "approve")
    body = f'{{"id": "notify_trace", "key": "charge:{renewal_id}"}}'

    answer = await client.post("/webhooks/alipay", content=body, headers=SIGNED)

    assert answer.status_code == 200
    assert requested is not None
    [settled] = await published(database, "esim.payment.settled.v1")
    assert settled["traceparent"].split("-")[1] == requested.split("-")[1]


async def test_the_webhook_of_a_soft_decline_the_charge_recorded_is_not_counted_again(
    billing: Billing, database: Database, gateway: FakeGateway, client: httpx.AsyncClient
) -> None:
    data = payment_requested(token="card_insufficient")
    await handle(database, on_payment_requested, data)
    await billing.charges.run_once()
    before = await payment_of(database, data.renewal_id)
    assert (before.state, before.soft_declines) == (PaymentState.PENDING, 1)
    # The provider tells of the same decline (Stripe: `payment_intent.payment_failed`).
    key = f"charge:{data.renewal_id}"
    gateway.payments[key] = FakePayment(
        key=key,
        reference=str(data.renewal_id),
        method="card",
        amount=before.amount,
        currency=before.currency,
        status=Standing.DECLINED,
        provider_reference="pi_declined",
        capture_before=utcnow(),
        decline_code="insufficient_funds",
    )

    answer = await client.post(
        "/webhooks/stripe", content=f'{{"id": "evt_failed", "key": "{key}"}}', headers=SIGNED
    )

    assert answer.status_code == 200
    after = await payment_of(database, data.renewal_id)
    assert (after.state, after.soft_declines) == (PaymentState.PENDING, 1)
    assert after.due_at == before.due_at
    assert await published(database, FAILED) == []


async def test_a_webhook_needs_no_operator_token_but_the_operator_views_do(
    client: httpx.AsyncClient,
) -> None:
    assert (await client.post("/webhooks/paypal", content=b"{}")).status_code == 400
    assert (await client.get("/v1/payments/unknown")).status_code == 401


async def test_payments_unknown_past_the_schedule_are_listed_for_an_operator(
    billing: Billing, database: Database, gateway: FakeGateway, client: httpx.AsyncClient
) -> None:
    gateway.outage = True
    data = payment_requested()
    await handle(database, on_payment_requested, data)
    await billing.charges.run_once()
    listed = await client.get("/v1/payments/unknown", headers=OPERATOR)
    assert listed.status_code == 200 and listed.json() == []
    within = await client.get("/v1/payments/unknown?every=true", headers=OPERATOR)
    assert [p["renewal_id"] for p in within.json()] == [str(data.renewal_id)]

    for _ in billing.rules.unknown_schedule_s:
        await fast_forward(database)
        await billing.charges.run_once()

    [row] = (await client.get("/v1/payments/unknown", headers=OPERATOR)).json()
    assert row["renewal_id"] == str(data.renewal_id)
    assert row["state"] == "unknown" and row["unknown_step"] == "pay"
    assert row["unknown_since"] is not None
    metrics = (await client.get("/metrics")).text
    assert "esim_payments_unknown 1.0" in metrics


async def test_an_overdue_capture_is_listed_and_counted(
    billing: Billing, database: Database, client: httpx.AsyncClient
) -> None:
    payment = await settle(billing)
    async with database.session() as session:
        await session.exec(
            update(Payment)
            .where(col(Payment.id) == payment.id)
            .values(state=PaymentState.AUTHORIZED, capture_overdue_at=utcnow())
        )

    [row] = (await client.get("/v1/payments/overdue", headers=OPERATOR)).json()
    assert row["renewal_id"] == payment.renewal_id
    assert "esim_payment_capture_overdue 1.0" in (await client.get("/metrics")).text


async def test_reconciliation_prints_every_difference_with_the_providers(
    billing: Billing, database: Database, gateway: FakeGateway, client: httpx.AsyncClient
) -> None:
    agreed = await settle(billing)
    missing = await settle(billing)
    unknown = await settle(billing)
    # The provider lost one capture, and took one billing knows as failed.
    del gateway.payments[f"charge:{missing.renewal_id}"]
    async with database.session() as session:
        await session.exec(
            update(Payment).where(col(Payment.id) == unknown.id).values(state=PaymentState.FAILED)
        )
        await session.exec(update(Payment).where(col(Payment.id) == agreed.id).values(amount=9800))

    since = (utcnow() - timedelta(hours=1)).isoformat()
    answer = await client.get(
        "/v1/payments/reconciliation", params={"since": since}, headers=OPERATOR
    )

    assert answer.status_code == 200
    found = {(d["kind"], d["reference"]) for d in answer.json()["differences"]}
    assert found == {
        ("amount_differs", agreed.renewal_id),
        ("missing_capture", missing.renewal_id),
        ("unknown_capture", unknown.renewal_id),
    }


async def test_reconciliation_needs_an_offset_and_a_provider_that_answers(
    gateway: FakeGateway, client: httpx.AsyncClient
) -> None:
    bare = await client.get(
        "/v1/payments/reconciliation", params={"since": "2026-12-01T00:00:00"}, headers=OPERATOR
    )
    assert bare.status_code == 422
    gateway.outage = True
    down = await client.get("/v1/payments/reconciliation", headers=OPERATOR)
    assert down.status_code == 503


async def test_reconciliation_looks_back_at_most_three_years(client: httpx.AsyncClient) -> None:
    too_old = await client.get(
        "/v1/payments/reconciliation",
        params={"since": "1970-01-01T00:00:00.5Z"},
        headers=OPERATOR,
    )
    recent = (utcnow() - timedelta(days=3 * 365 - 1)).isoformat()
    within = await client.get(
        "/v1/payments/reconciliation", params={"since": recent}, headers=OPERATOR
    )

    assert too_old.status_code == 422
    assert "at most 1095 days ago" in too_old.json()["detail"]
    assert within.status_code == 200


@pytest.mark.parametrize("since", ["0.5", "1733011200", "yesterday", "2026-12"])
async def test_reconciliation_takes_since_only_as_an_rfc_3339_date_time(
    client: httpx.AsyncClient, since: str
) -> None:
    answer = await client.get(
        "/v1/payments/reconciliation", params={"since": since}, headers=OPERATOR
    )

    assert answer.status_code == 422
    assert "RFC 3339" in answer.text


@pytest.mark.parametrize(
    ("provider", "media_type", "headers"),
    [
        ("stripe", "application/json", {"Stripe-Signature"}),
        (
            "paypal",
            "application/json",
            {
                "PAYPAL-TRANSMISSION-ID",
                "PAYPAL-TRANSMISSION-TIME",
                "PAYPAL-TRANSMISSION-SIG",
                "PAYPAL-CERT-URL",
                "PAYPAL-AUTH-ALGO",
            },
        ),
        ("alipay", "application/x-www-form-urlencoded", set()),
    ],
)
async def test_the_openapi_document_shows_each_providers_call_with_its_signature(
    client: httpx.AsyncClient, provider: str, media_type: str, headers: set[str]
) -> None:
    operation = (await client.get("/openapi.json")).json()["paths"][f"/webhooks/{provider}"]["post"]

    body = operation["requestBody"]["content"][media_type]["schema"]
    assert body["type"] == "object" and body["required"]
    required = {p["name"] for p in operation.get("parameters", []) if p["required"]}
    assert required == headers
    if provider == "alipay":
        assert {"sign", "sign_type"} <= set(body["required"])
    assert {"400", "503"} <= set(operation["responses"])
