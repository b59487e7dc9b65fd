"""The payment token stays secret: never in a log line, an error, an event or the ops view."""

import json
import logging
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from billing import bootstrap
from billing.api import build_router
from billing.bootstrap import Billing
from billing.domain import PaymentState
from billing.gateways.http import HttpPaymentGateway
from billing.handlers import on_payment_requested
from billing.store import Payment
from billing_testkit import (
    fast_forward,
    payment_of,
    payment_requested,
)
from conftest import NO_WAIT, settings_for
from esim_core.messaging.consumer import PermanentEventError
from esim_core.testing import api_client, handle, problem_app, published, with_tables
from sqlalchemy.exc import IntegrityError

SECRET = "tok_4f9d2c7e1a"


class SandboxLike:
    """Answers /v1/charges the way the payment sandbox does, by token suffix."""

    def __init__(self) -> None:
        self.tries: dict[str, int] = defaultdict(int)
        self.captures: dict[str, str] = {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        key = request.headers["Idempotency-Key"]
        body = json.loads(request.content)
        if key in self.captures:
            return httpx.Response(200, json=self._charge(self.captures[key], body))
        self.tries[key] += 1
        token = body["token"]
        if (token.endswith("_flaky") and self.tries[key] <= 2) or token.endswith("_down"):
            return self._problem(503, "unavailable", True)
        if token.endswith("_declined"):
            return self._problem(402, "declined", False)
        if token.endswith("_insufficient"):
            return self._problem(402, "insufficient_funds", True)
        if not token.endswith("_ok") and not token.endswith("_flaky"):
            return self._problem(422, "invalid_token", False)
        self.captures[key] = f"ch_{len(self.captures) + 1}"
        return httpx.Response(201, json=self._charge(self.captures[key], body))

    @staticmethod
    def _charge(charge_id: str, body: dict[str, object]) -> dict[str, object]:
        fields = {k: body[k] for k in ("amount", "currency", "method", "reference")}
        return {
            "id": charge_id,
            "status": "captured",
            "created_at": "2026-11-24T10:00:00Z",
        } | fields

    @staticmethod
    def _problem(status: int, code: str, retryable: bool) -> httpx.Response:
        return httpx.Response(
            status,
            json={
                "type": f"urn:esim-sandbox:problem:{code}",
                "title": "x",
                "status": status,
                "detail": "no",
                "error": {"code": code, "retryable": retryable, "message": "no"},
            },
            headers={"content-type": "application/problem+json"},
        )


@pytest.fixture
async def wired(tmp_path: Path) -> AsyncIterator[tuple[Billing, SandboxLike]]:
    sandbox = SandboxLike()
    gateway = HttpPaymentGateway("http://sandbox.test", transport=httpx.MockTransport(sandbox))
    billing = bootstrap.build(settings_for(tmp_path), gateway=gateway, tries=NO_WAIT)
    async with with_tables(billing.runtime):
        yield billing, sandbox
    await gateway.aclose()


async def test_the_whole_flow_through_the_http_adapter_logs_no_token(
    wired: tuple[Billing, SandboxLike], caplog: pytest.LogCaptureFixture
) -> None:
    billing, sandbox = wired
    database = billing.runtime.database
    suffixes = ["_ok", "_flaky", "_declined", "_insufficient", "_down", "_unknown"]
    requests = {s: payment_requested(token=f"card_{SECRET}{s}") for s in suffixes}
    caplog.set_level(logging.DEBUG)

    for data in requests.values():
        await handle(database, on_payment_requested, data)
    other = requests["_ok"].model_copy(update={"iccid": "8944500102198304834"})
    with pytest.raises(PermanentEventError) as conflict:
        await handle(database, on_payment_requested, other)
    for _ in range(6):
        await billing.charges.run_once()
        await fast_forward(database)

    states = {s: (await payment_of(database, d.renewal_id)) for s, d in requests.items()}
    assert states["_ok"].state == states["_flaky"].state == PaymentState.SETTLED
    assert states["_declined"].failure_reason == "declined"
    assert states["_insufficient"].failure_reason == "insufficient_funds"
    assert states["_down"].failure_reason == "provider_unavailable"
    assert states["_unknown"].failure_reason == "invalid_token"
    assert len(sandbox.captures) == 2
    assert all(payment.token is None for payment in states.values())

    assert caplog.records, "the flow should have logged something"
    for record in caplog.records:
        assert SECRET not in record.getMessage()
        assert SECRET not in (record.exc_text or "")
    assert SECRET not in caplog.text
    assert SECRET not in str(conflict.value)
    for row in await published(database):
        assert SECRET not in json.dumps(row)
    for payment in states.values():
        assert SECRET not in (payment.last_error or "")
        assert SECRET not in repr(payment)


async def test_the_ops_view_never_shows_the_token(wired: tuple[Billing, SandboxLike]) -> None:
    billing, _ = wired
    database = billing.runtime.database
    pending = payment_requested(token=f"card_{SECRET}_insufficient")
    await handle(database, on_payment_requested, pending)
    await billing.charges.run_once()  # soft-declined: the token is still stored for dunning
    assert (await payment_of(database, pending.renewal_id)).token is not None

    async with api_client(problem_app(build_router(database)), "http://billing") as client:
        answer = await client.get(f"/v1/payments/{pending.renewal_id}")
    assert answer.status_code == 200
    assert SECRET not in answer.text


async def test_a_database_error_does_not_carry_the_token(
    wired: tuple[Billing, SandboxLike],
) -> None:
    # SQL errors end up in logs and dead-letter headers; their parameters must stay hidden.
    billing, _ = wired
    database = billing.runtime.database
    data = payment_requested(token=f"card_{SECRET}_ok")
    await handle(database, on_payment_requested, data)
    stored = await payment_of(database, data.renewal_id)

    with pytest.raises(IntegrityError) as raised:
        async with database.session() as session:
            session.add(Payment(**stored.model_dump()))
    assert SECRET not in str(raised.value)
    assert "hidden" in str(raised.value)
