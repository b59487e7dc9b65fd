"""HttpPaymentGateway: charges and refunds over the gateway's HTTP API (card, PayPal, Alipay)."""

from typing import Annotated, Any

import httpx
from esim_core.outside.adapter import IF_VALID, HttpAdapter, NonEmpty, is_transient, problem
from pydantic import BaseModel, StrictInt

from billing.gateways.port import (
    Capture,
    ChargeRequest,
    GatewayRejectedError,
    GatewayUnavailableError,
    PaymentDeclinedError,
    RefundReceipt,
    RefundRequest,
)


class _Answer(BaseModel):
    """A charge's or a refund's answer: its id, and what was captured or paid back."""

    id: NonEmpty
    amount: Annotated[StrictInt | None, IF_VALID] = None
    currency: Annotated[str | None, IF_VALID] = None


class HttpPaymentGateway(HttpAdapter):
    """The gateway's HTTP API: `POST /v1/charges` and `POST /v1/refunds` with Idempotency-Key.

    It maps answers onto the port: 402 is a decline with the provider's code, any 422 an invalid
    token, 5xx / timeouts / connection errors are transient, other refusals are rejections. It
    does not retry by itself; the caller decides how often (billing's charge and refund loops).
    """

    system = "payment_gateway"
    called = "gateway"
    unavailable = GatewayUnavailableError

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(
            base_url,
            timeout_s=timeout_s,
            transport=transport,
            headers={"User-Agent": "esim-billing"},
        )

    async def charge(self, request: ChargeRequest) -> Capture:
        """Capture a charge; see `PaymentGateway.charge`."""
        body: dict[str, Any] = {
            "amount": request.amount,
            "currency": request.currency,
            "method": request.method,
            "token": request.token,
            "reference": request.reference,
        }
        if request.description is not None:
            body["description"] = request.description
        response = await self.call(
            "POST", "/v1/charges", json=body, headers={"Idempotency-Key": request.idempotency_key}
        )
        status = response.status_code
        if response.is_success:
            # Without an id the charge may exist all the same; asking again under the key tells.
            answer = self.reply(response, _Answer, "a charge answer without an id")
            return Capture(
                provider_reference=answer.id,
                amount=request.amount if answer.amount is None else answer.amount,
                currency=answer.currency or request.currency,
            )
        said = problem(response)
        message = said.message.replace(request.token, "***") if request.token else said.message
        if status == 402:
            raise PaymentDeclinedError(said.code or "declined", said.retryable, message)
        if status == 422:
            raise PaymentDeclinedError("invalid_token", False, message)
        if is_transient(status):
            raise GatewayUnavailableError(f"HTTP {status}: {said.code or message}")
        raise GatewayRejectedError(status, f"{said.code}: {message}" if said.code else message)

    async def refund(self, request: RefundRequest) -> RefundReceipt:
        """Refund a capture; see `PaymentGateway.refund`."""
        body: dict[str, Any] = {"charge_id": request.charge_id, "amount": request.amount}
        if request.reason is not None:
            body["reason"] = request.reason
        response = await self.call(
            "POST", "/v1/refunds", json=body, headers={"Idempotency-Key": request.idempotency_key}
        )
        status = response.status_code
        if response.is_success:
            answer = self.reply(response, _Answer, "a refund answer without an id")
            return RefundReceipt(
                refund_id=answer.id,
                amount=request.amount if answer.amount is None else answer.amount,
                currency=answer.currency or "",
            )
        said = problem(response)
        if is_transient(status):
            raise GatewayUnavailableError(f"HTTP {status}: {said.code or said.message}")
        raise GatewayRejectedError(status, said.text)
