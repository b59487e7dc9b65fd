"""The PaymentGateway port: charge and refund with an idempotency key, and how they fail."""

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class ChargeRequest:
    """One charge; repeating it with the same `idempotency_key` never captures twice."""

    idempotency_key: str
    reference: str
    amount: int
    currency: str
    method: str
    token: str = field(repr=False)
    description: str | None = None


@dataclass(frozen=True)
class Capture:
    """A captured charge; `charge_id` is the provider's reference."""

    charge_id: str
    amount: int
    currency: str


@dataclass(frozen=True)
class RefundRequest:
    """Give back `amount` of a captured charge, once per `idempotency_key`."""

    idempotency_key: str
    charge_id: str
    amount: int
    method: str
    reason: str | None = None


@dataclass(frozen=True)
class RefundReceipt:
    """A completed refund; `refund_id` is the provider's reference."""

    refund_id: str
    amount: int
    currency: str


class PaymentDeclinedError(Exception):
    """The provider refused the charge; `retryable` tells whether a later attempt may succeed."""

    def __init__(self, code: str, retryable: bool, message: str = "") -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.retryable = retryable


class GatewayUnavailableError(Exception):
    """The gateway could not answer now (connection, timeout, 5xx): the same call may succeed."""


class GatewayRejectedError(Exception):
    """The gateway refused the request itself (unknown charge, over-refund, key conflict)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class PaymentGateway(Protocol):
    """Charges and refunds at a payment provider."""

    async def charge(self, request: ChargeRequest) -> Capture:
        """Capture a charge, or return the capture already made under its idempotency key.

        Raises:
            PaymentDeclinedError: the provider declined the payment.
            GatewayUnavailableError: no answer now; repeating the call is safe.
            GatewayRejectedError: the request itself was refused.
        """
        ...

    async def refund(self, request: RefundRequest) -> RefundReceipt:
        """Refund a capture, or return the refund already made under its idempotency key.

        Raises:
            GatewayUnavailableError: no answer now; repeating the call is safe.
            GatewayRejectedError: the refund was refused (unknown charge, over-refund, ...).
        """
        ...
