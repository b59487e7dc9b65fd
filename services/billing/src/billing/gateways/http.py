"""HttpPaymentGateway: charges and refunds over the gateway's HTTP API (card, PayPal, Alipay)."""

import asyncio
from typing import Any

import httpx
from esim_core.outside.transport import AiohttpTransport

from billing.gateways.port import (
    Capture,
    ChargeRequest,
    GatewayRejectedError,
    GatewayUnavailableError,
    PaymentDeclinedError,
    RefundReceipt,
    RefundRequest,
)

_TRANSIENT_STATUSES = frozenset({408, 425, 429})


class HttpPaymentGateway:
    """The gateway's HTTP API: `POST /v1/charges` and `POST /v1/refunds` with Idempotency-Key.

    It maps answers onto the port: 402 is a decline with the provider's code, any 422 an invalid
    token, 5xx / timeouts / connection errors are transient, other refusals are rejections. It
    does not retry by itself; the caller decides how often (billing's charge and refund loops).
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._timeout_s = timeout_s
        self._client = httpx.AsyncClient(
            base_url=base_url,
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0)),
            # Tests give a MockTransport; otherwise aiohttp's pool (esim_core.outside.transport).
            transport=transport if transport is not None else AiohttpTransport(),
            headers={"User-Agent": "esim-billing"},
            follow_redirects=False,
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
        response = await self._post("/v1/charges", body, request.idempotency_key)
        status = response.status_code
        if response.is_success:
            document = _json(response)
            charge_id = document.get("id")
            if not isinstance(charge_id, str) or not charge_id:
                # The charge may exist; asking again under the same key returns it.
                raise GatewayUnavailableError(f"HTTP {status}: a charge answer without an id")
            return Capture(
                charge_id=charge_id,
                amount=_int(document.get("amount"), request.amount),
                currency=str(document.get("currency") or request.currency),
            )
        code, retryable, message = _problem(response)
        message = message.replace(request.token, "***")
        if status == 402:
            raise PaymentDeclinedError(code or "declined", retryable, message)
        if status == 422:
            raise PaymentDeclinedError("invalid_token", False, message)
        if status >= 500 or status in _TRANSIENT_STATUSES:
            raise GatewayUnavailableError(f"HTTP {status}: {code or message}")
        raise GatewayRejectedError(status, f"{code}: {message}" if code else message)

    async def refund(self, request: RefundRequest) -> RefundReceipt:
        """Refund a capture; see `PaymentGateway.refund`."""
        body: dict[str, Any] = {"charge_id": request.charge_id, "amount": request.amount}
        if request.reason is not None:
            body["reason"] = request.reason
        response = await self._post("/v1/refunds", body, request.idempotency_key)
        status = response.status_code
        if response.is_success:
            document = _json(response)
            refund_id = document.get("id")
            if not isinstance(refund_id, str) or not refund_id:
                raise GatewayUnavailableError(f"HTTP {status}: a refund answer without an id")
            return RefundReceipt(
                refund_id=refund_id,
                amount=_int(document.get("amount"), request.amount),
                currency=str(document.get("currency") or ""),
            )
        code, _, message = _problem(response)
        if status >= 500 or status in _TRANSIENT_STATUSES:
            raise GatewayUnavailableError(f"HTTP {status}: {code or message}")
        raise GatewayRejectedError(status, f"{code}: {message}" if code else message)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    async def _post(self, path: str, body: dict[str, Any], key: str) -> httpx.Response:
        try:
            # httpx times each phase (connect, write, read) on its own; this bounds the whole.
            async with asyncio.timeout(self._timeout_s):
                return await self._client.post(path, json=body, headers={"Idempotency-Key": key})
        except TimeoutError as error:
            raise GatewayUnavailableError(
                f"no answer from the gateway within {self._timeout_s:g} s"
            ) from error
        except httpx.TransportError as error:
            raise GatewayUnavailableError(
                f"gateway unreachable ({type(error).__name__}: {error})"[:300]
            ) from error


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        document = response.json()
    except ValueError as error:
        raise GatewayUnavailableError(
            f"HTTP {response.status_code}: an answer that is not JSON"
        ) from error
    if not isinstance(document, dict):
        raise GatewayUnavailableError(
            f"HTTP {response.status_code}: an answer that is not an object"
        )
    return document


def _problem(response: httpx.Response) -> tuple[str | None, bool, str]:
    """The error code, its retryable flag and message, from `{"error": {...}}` or problem+json."""
    try:
        document = response.json()
    except ValueError:
        return None, False, response.reason_phrase or f"HTTP {response.status_code}"
    if not isinstance(document, dict):
        return None, False, response.reason_phrase or f"HTTP {response.status_code}"
    error = document.get("error")
    source: dict[str, Any] = error if isinstance(error, dict) else document
    code = source.get("code")
    message = source.get("message") or document.get("detail") or document.get("title") or ""
    return (
        code if isinstance(code, str) and code else None,
        source.get("retryable") is True,
        str(message)[:200],
    )


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default
