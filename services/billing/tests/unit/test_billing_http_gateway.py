"""HttpPaymentGateway against an httpx.MockTransport: what each sandbox answer becomes."""

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from billing.gateways import (
    Capture,
    ChargeRequest,
    GatewayRejectedError,
    GatewayUnavailableError,
    PaymentDeclinedError,
    RefundReceipt,
    RefundRequest,
)
from billing.gateways.http import HttpPaymentGateway

from sandboxes import payment as payment_sandbox

TOKEN = "card_tok_6b1f0c_ok"
CHARGE = ChargeRequest(
    idempotency_key="charge:5b0f2a4e-8d8b-4a53-9f5c-3d9a7f1e2c11",
    reference="5b0f2a4e-8d8b-4a53-9f5c-3d9a7f1e2c11",
    amount=9900,
    currency="CNY",
    method="alipay",
    token=TOKEN,
    description="eSIM plan JP-30D-10GB",
)
REFUND = RefundRequest(
    idempotency_key="refund:5b0f2a4e-8d8b-4a53-9f5c-3d9a7f1e2c11",
    charge_id="ch_123",
    amount=9900,
    method="alipay",
    reason="activation_failed",
)
CAPTURED = {
    "id": "ch_abc",
    "status": "captured",
    "amount": 9900,
    "currency": "CNY",
    "method": "alipay",
    "reference": CHARGE.reference,
    "created_at": "2026-11-24T10:00:00.000Z",
}


def problem(status: int, code: str | None, retryable: bool = False) -> httpx.Response:
    """An answer shaped like the sandbox's: problem+json with an `error` object."""
    body: dict[str, Any] = {"type": "about:blank", "title": "x", "status": status, "detail": "d"}
    if code is not None:
        body["error"] = {"code": code, "retryable": retryable, "message": f"{code} happened"}
    return httpx.Response(status, json=body, headers={"content-type": "application/problem+json"})


def gateway(answer: Callable[[httpx.Request], Any], timeout_s: float = 5.0) -> HttpPaymentGateway:
    return HttpPaymentGateway(
        "http://payments.test", timeout_s=timeout_s, transport=httpx.MockTransport(answer)
    )


async def test_a_capture_sends_the_request_with_its_idempotency_key() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json=CAPTURED)

    capture = await gateway(answer).charge(CHARGE)

    assert capture == Capture(provider_reference="ch_abc", amount=9900, currency="CNY")
    [request] = seen
    assert request.method == "POST" and request.url.path == "/v1/charges"
    assert request.headers["Idempotency-Key"] == CHARGE.idempotency_key
    assert json.loads(request.content) == {
        "amount": 9900,
        "currency": "CNY",
        "method": "alipay",
        "token": TOKEN,
        "reference": CHARGE.reference,
        "description": "eSIM plan JP-30D-10GB",
    }


async def test_an_idempotent_replay_is_the_same_capture() -> None:
    sandbox = payment_sandbox.create_app()
    through_sandbox = HttpPaymentGateway(
        "http://payments.test", transport=httpx.ASGITransport(sandbox)
    )
    first = await through_sandbox.charge(CHARGE)
    # A round after a crash between the call and the commit asks again under the same key.
    replayed = await through_sandbox.charge(CHARGE)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(sandbox), base_url="http://payments.test"
    ) as provider:
        ledger = await provider.get("/sandbox/ledger", params={"reference": CHARGE.reference})
    assert replayed == first
    assert [capture["id"] for capture in ledger.json()["captures"]] == [first.provider_reference]


@pytest.mark.parametrize(
    ("answer", "code", "retryable"),
    [
        (problem(402, "declined"), "declined", False),
        (problem(402, "insufficient_funds", retryable=True), "insufficient_funds", True),
        (problem(402, "expired_method"), "expired_method", False),
        # The shape in the API notes: only the error object.
        (
            httpx.Response(402, json={"error": {"code": "insufficient_funds", "retryable": True}}),
            "insufficient_funds",
            True,
        ),
        (problem(402, None), "declined", False),
        (problem(422, "invalid_token"), "invalid_token", False),
        (problem(422, "invalid_request"), "invalid_token", False),
        (httpx.Response(422, text="no"), "invalid_token", False),
    ],
)
async def test_declines_carry_the_providers_code(
    answer: httpx.Response, code: str, retryable: bool
) -> None:
    with pytest.raises(PaymentDeclinedError) as raised:
        await gateway(lambda _: answer).charge(CHARGE)
    assert (raised.value.code, raised.value.retryable) == (code, retryable)


@pytest.mark.parametrize(
    "answer",
    [
        problem(503, "unavailable", retryable=True),
        httpx.Response(500, text="<html>oops</html>"),
        httpx.Response(502),
        problem(429, "rate_limited", retryable=True),
        httpx.Response(201, text="not json"),
        httpx.Response(201, json={"status": "captured"}),
    ],
)
async def test_transient_answers_are_unavailable(answer: httpx.Response) -> None:
    with pytest.raises(GatewayUnavailableError):
        await gateway(lambda _: answer).charge(CHARGE)


@pytest.mark.parametrize(
    "error",
    [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("x")],
)
async def test_network_errors_are_unavailable(error: Exception) -> None:
    def answer(_: httpx.Request) -> httpx.Response:
        raise error

    with pytest.raises(GatewayUnavailableError):
        await gateway(answer).charge(CHARGE)


async def test_an_answer_later_than_the_deadline_is_unavailable() -> None:
    async def answer(_: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(201, json=CAPTURED)

    with pytest.raises(GatewayUnavailableError, match=r"within 0\.05 s"):
        await gateway(answer, timeout_s=0.05).charge(CHARGE)


async def test_a_key_conflict_is_a_rejection() -> None:
    with pytest.raises(GatewayRejectedError) as raised:
        await gateway(lambda _: problem(409, "idempotency_conflict")).charge(CHARGE)
    assert raised.value.status == 409


async def test_a_provider_message_never_echoes_the_token() -> None:
    answer = httpx.Response(
        402, json={"error": {"code": "declined", "message": f"token {TOKEN} is blocked"}}
    )
    with pytest.raises(PaymentDeclinedError) as raised:
        await gateway(lambda _: answer).charge(CHARGE)
    assert TOKEN not in str(raised.value)


async def test_a_refund_sends_charge_amount_and_key() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            201,
            json={
                "id": "re_1",
                "charge_id": "ch_123",
                "amount": 9900,
                "currency": "CNY",
                "status": "refunded",
                "created_at": "2026-11-24T10:00:00.000Z",
            },
        )

    receipt = await gateway(answer).refund(REFUND)

    assert receipt == RefundReceipt(refund_id="re_1", amount=9900, currency="CNY")
    [request] = seen
    assert request.url.path == "/v1/refunds"
    assert request.headers["Idempotency-Key"] == REFUND.idempotency_key
    assert json.loads(request.content) == {
        "charge_id": "ch_123",
        "amount": 9900,
        "reason": "activation_failed",
    }


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (problem(404, "charge_not_found"), GatewayRejectedError),
        (problem(409, "refund_exceeds_capture"), GatewayRejectedError),
        (problem(503, "unavailable", retryable=True), GatewayUnavailableError),
        (httpx.Response(200, text="??"), GatewayUnavailableError),
    ],
)
async def test_refund_answers(answer: httpx.Response, error: type[Exception]) -> None:
    with pytest.raises(error):
        await gateway(lambda _: answer).refund(REFUND)
