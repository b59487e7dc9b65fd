"""Payment gateways: the port billing charges and refunds through, and its adapters.

`port.py` says what a gateway does; `http.py` is `HttpPaymentGateway`, the one adapter that
serves card, PayPal and Alipay (the method is a field of each request). A provider that needs
its own adapter gets a module here implementing `PaymentGateway`, and `bootstrap.build_gateway`
chooses it by configuration.
"""

from collections.abc import Awaitable, Callable
from typing import TypeVar

from esim_core.outside import retry
from esim_core.outside.retry import TryPolicy

from billing.gateways.port import (
    Capture,
    ChargeRequest,
    GatewayRejectedError,
    GatewayUnavailableError,
    PaymentDeclinedError,
    PaymentGateway,
    RefundReceipt,
    RefundRequest,
)

T = TypeVar("T")


async def within_round(what: str, call: Callable[[], Awaitable[T]], policy: TryPolicy) -> T:
    """Run a payment gateway call, retrying it on `GatewayUnavailableError` within the round."""
    return await retry.within_round(what, call, policy, GatewayUnavailableError, "payment gateway")


__all__ = [
    "Capture",
    "ChargeRequest",
    "GatewayRejectedError",
    "GatewayUnavailableError",
    "PaymentDeclinedError",
    "PaymentGateway",
    "RefundReceipt",
    "RefundRequest",
    "within_round",
]
