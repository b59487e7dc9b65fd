"""What the adapter tests (Stripe, PayPal, Alipay against the payment sandbox) share."""

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from billing import gateways

_T = TypeVar("_T")


def payment_request(
    method: str,
    currency: str,
    token: str | None,
    *,
    return_url: str | None,
    renewal: str | None = None,
    key: str | None = None,
    **overrides: Any,
) -> gateways.PaymentRequest:
    """A renewal's payment of 99.00 for a 10 GB plan; a new renewal id unless one is given.

    The idempotency key is `charge:<renewal>` unless `key` says otherwise.
    """
    renewal = renewal or str(uuid.uuid4())
    values: dict[str, Any] = {
        "idempotency_key": key or f"charge:{renewal}",
        "reference": renewal,
        "amount": 9900,
        "currency": currency,
        "method": method,
        "token": token,
        "return_url": return_url,
        "description": "eSIM plan JP-30D-10GB",
    }
    return gateways.PaymentRequest(**(values | overrides))


def capture_of(
    request: gateways.PaymentRequest, provider_reference: str, key: str | None = None
) -> gateways.CaptureRequest:
    """The capture of all of `request`'s payment, held at the provider as `provider_reference`."""
    return gateways.CaptureRequest(
        idempotency_key=key or f"capture:{request.reference}",
        reference=request.reference,
        provider_reference=provider_reference,
        amount=request.amount,
        currency=request.currency,
        method=request.method,
    )


def lookup_of(
    request: gateways.PaymentRequest, provider_reference: str | None = None
) -> gateways.LookupRequest:
    """Where does `request`'s payment stand? As billing asks after a lost answer."""
    return gateways.LookupRequest(
        method=request.method,
        reference=request.reference,
        idempotency_key=request.idempotency_key,
        provider_reference=provider_reference,
    )


async def authorized(
    gateway: gateways.PaymentGateway, request: gateways.PaymentRequest
) -> gateways.Authorized:
    """Pay, and insist the money is held (not taken, not waiting for the buyer)."""
    outcome = await gateway.pay(request)
    assert isinstance(outcome, gateways.Authorized)
    return outcome


async def wait_for(check: Callable[[], _T | None], timeout: float = 30.0) -> _T:
    """Poll `check` until it answers something truthy, and return that; fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {check}"
        await asyncio.sleep(0.02)
