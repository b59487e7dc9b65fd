"""Shared bits of the billing unit tests: a FakeGateway, events, and looks into the database."""

import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from billing.bootstrap import Billing
from billing.domain import PaymentState
from billing.gateways import (
    Capture,
    ChargeRequest,
    GatewayRejectedError,
    GatewayUnavailableError,
    PaymentDeclinedError,
    RefundReceipt,
    RefundRequest,
)
from billing.store import Payment, Refund
from esim_core.persistence.db import Database
from esim_core.testing import handle, make_due_now
from esim_schemas import PaymentRequested, RefundRequested
from sqlmodel import select

ICCID = "8944500102198304826"
OTHER_ICCID = "8944500102198304834"
SETTLED = "esim.payment.settled.v1"
FAILED = "esim.payment.failed.v1"
REFUNDED = "esim.payment.refunded.v1"

FLAKY_FAILURES = 2
DUE_TABLES = (Payment, Refund)
"""The tables whose rows billing's loops claim when they are due."""


@dataclass
class FakeGateway:
    """An in-memory gateway that behaves like the payment sandbox.

    The token's suffix decides the outcome; an Idempotency-Key that captured returns the same
    capture again; `_flaky` fails twice per key before it captures. `outage` makes every call
    transient, `refund_error` makes refunds fail with the given error.
    """

    charges: list[ChargeRequest] = field(default_factory=list)
    refunds: list[RefundRequest] = field(default_factory=list)
    captures: dict[str, Capture] = field(default_factory=dict)
    refunded: dict[str, RefundReceipt] = field(default_factory=dict)
    outage: bool = False
    refund_error: Exception | None = None
    tries_per_key: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    on_charge: Any = None

    async def charge(self, request: ChargeRequest) -> Capture:
        self.charges.append(request)
        if self.on_charge is not None:
            await self.on_charge(request)
        if self.outage:
            raise GatewayUnavailableError("HTTP 503: unavailable")
        if request.idempotency_key in self.captures:
            return self.captures[request.idempotency_key]
        self.tries_per_key[request.idempotency_key] += 1
        token = request.token
        if (
            token.endswith("_flaky")
            and self.tries_per_key[request.idempotency_key] <= FLAKY_FAILURES
        ):
            raise GatewayUnavailableError("HTTP 503: unavailable")
        if token.endswith("_declined"):
            raise PaymentDeclinedError("declined", False, "The issuer declined the payment.")
        if token.endswith("_expired"):
            raise PaymentDeclinedError("expired_method", False, "The method has expired.")
        if token.endswith("_insufficient"):
            raise PaymentDeclinedError("insufficient_funds", True, "The method lacks funds.")
        if not token.endswith(("_ok", "_slow", "_flaky")):
            raise PaymentDeclinedError("invalid_token", False, "The token is not valid.")
        capture = Capture(
            provider_reference=f"ch_{uuid.uuid4().hex[:24]}",
            amount=request.amount,
            currency=request.currency,
        )
        self.captures[request.idempotency_key] = capture
        return capture

    async def refund(self, request: RefundRequest) -> RefundReceipt:
        self.refunds.append(request)
        if self.outage:
            raise GatewayUnavailableError("HTTP 503: unavailable")
        if self.refund_error is not None:
            raise self.refund_error
        if request.idempotency_key in self.refunded:
            return self.refunded[request.idempotency_key]
        if request.charge_id not in {c.provider_reference for c in self.captures.values()}:
            raise GatewayRejectedError(404, f"charge_not_found: No charge {request.charge_id!r}.")
        receipt = RefundReceipt(
            refund_id=f"re_{uuid.uuid4().hex[:24]}", amount=request.amount, currency="CNY"
        )
        self.refunded[request.idempotency_key] = receipt
        return receipt

    def captures_of(self, renewal_id: str) -> int:
        """How many captures exist for a renewal (the contract allows at most one)."""
        return sum(1 for key in self.captures if key == f"charge:{renewal_id}")


def payment_requested(
    renewal_id: uuid.UUID | None = None, token: str = "card_ok", **changes: Any
) -> PaymentRequested:
    fields: dict[str, Any] = {
        "renewal_id": renewal_id or uuid.uuid4(),
        "user_id": "u-1",
        "iccid": ICCID,
        "plan": {"code": "JP-30D-10GB", "data_mb": 10240, "validity_days": 30},
        "price": {"amount": 9900, "currency": "CNY"},
        "payment": {"method": "card", "token": token},
        "start": "now",
    }
    return PaymentRequested(**(fields | changes))


def refund_requested(payment: Payment, **changes: Any) -> RefundRequested:
    fields: dict[str, Any] = {
        "renewal_id": payment.renewal_id,
        "payment_id": payment.id,
        "iccid": payment.iccid,
        "price": {"amount": payment.amount, "currency": payment.currency},
        "reason": "activation_failed",
    }
    return RefundRequested(**(fields | changes))


async def payment_of(database: Database, renewal_id: uuid.UUID | str) -> Payment:
    async with database.session() as session:
        row = (
            await session.exec(select(Payment).where(Payment.renewal_id == str(renewal_id)))
        ).first()
    assert row is not None
    return row


async def refund_of(database: Database, renewal_id: uuid.UUID | str) -> Refund:
    async with database.session() as session:
        row = (
            await session.exec(select(Refund).where(Refund.renewal_id == str(renewal_id)))
        ).first()
    assert row is not None
    return row


async def fast_forward(database: Database) -> None:
    """Make every scheduled payment and refund due now, and let every lease run out."""
    await make_due_now(database, DUE_TABLES)


async def settle(billing: Billing, data: PaymentRequested | None = None) -> Payment:
    """A settled payment, through the handler and one charge round."""
    from billing.handlers import on_payment_requested

    data = data or payment_requested()
    await handle(billing.runtime.database, on_payment_requested, data)
    await billing.charges.run_once()
    payment = await payment_of(billing.runtime.database, data.renewal_id)
    assert payment.state == PaymentState.SETTLED
    return payment
