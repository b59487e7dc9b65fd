"""Billing tables: payments (which are also the ledger of captures) and refunds."""

from datetime import datetime

from esim_core.clock import utcnow
from esim_core.duework.rows import OutsideCallColumns
from esim_core.observability.tracing import traceparent_field
from esim_core.persistence.db import timestamp
from sqlmodel import Field, SQLModel

from billing.domain import PaymentState, PaymentTerms, RefundState


class Payment(OutsideCallColumns, table=True):
    """One renewal's payment, from the request to its capture or failure.

    It is durable due work (`due_at`, `lease_until`): the payment loop claims it when due (to
    pay, ask, capture, release or close it). The token is kept only while another charge may
    follow, and cleared once the payment is final.
    """

    __tablename__ = "billing_payment"

    id: str = Field(primary_key=True, max_length=64)
    renewal_id: str = Field(unique=True, index=True, max_length=36)
    user_id: str = Field(max_length=64)
    iccid: str = Field(index=True, max_length=20)
    plan_code: str = Field(max_length=64)
    data_mb: int
    validity_days: int
    amount: int
    currency: str = Field(max_length=3)
    discount_amount: int | None = Field(
        default=None, description="what a promotion took off (accounts priced it); for receipts"
    )
    promo_code: str | None = Field(default=None, max_length=32)
    method: str = Field(max_length=16)
    token: str | None = Field(default=None, max_length=256, repr=False)
    start: str = Field(max_length=16)
    state: str = Field(default=PaymentState.PENDING, max_length=16, index=True)
    attempts: int = 0
    soft_declines: int = 0
    provider_reference: str | None = Field(
        default=None,
        max_length=128,
        description="the provider's payment (PaymentIntent, order, trade) once it exists",
    )
    capture_reference: str | None = Field(
        default=None, max_length=128, description="the provider's capture once the money is taken"
    )
    return_url: str | None = Field(default=None, max_length=2048)
    action_url: str | None = Field(default=None, max_length=2048)
    action_expires_at: datetime | None = timestamp(default=None)
    authorized_at: datetime | None = timestamp(default=None)
    capture_before: datetime | None = timestamp(default=None)
    capture_requested_at: datetime | None = timestamp(
        default=None, description="when billing saw ProfileActivated: the capture is due"
    )
    release_requested_at: datetime | None = timestamp(
        default=None, description="when a refund was asked of a payment not yet captured"
    )
    capture_overdue_at: datetime | None = timestamp(
        default=None, description="when billing found it could not capture in time (alerted)"
    )
    unknown_step: str | None = Field(
        default=None, max_length=16, description="the call whose answer was lost (Step)"
    )
    unknown_since: datetime | None = timestamp(default=None)
    failure_reason: str | None = Field(default=None, max_length=32)
    created_at: datetime = timestamp(default_factory=utcnow)
    updated_at: datetime = timestamp(default_factory=utcnow)
    settled_at: datetime | None = timestamp(default=None)
    failed_at: datetime | None = timestamp(default=None)
    voided_at: datetime | None = timestamp(default=None)
    traceparent: str | None = traceparent_field()

    def terms(self) -> PaymentTerms:
        """What was asked, to compare with a later request for the same renewal."""
        return PaymentTerms(
            user_id=self.user_id,
            iccid=self.iccid,
            plan_code=self.plan_code,
            data_mb=self.data_mb,
            validity_days=self.validity_days,
            amount=self.amount,
            currency=self.currency,
            method=self.method,
            start=self.start,
        )


class Refund(OutsideCallColumns, table=True):
    """One renewal's refund of its captured payment; due work for the refund loop."""

    __tablename__ = "billing_refund"

    id: str = Field(primary_key=True, max_length=64)
    renewal_id: str = Field(unique=True, index=True, max_length=36)
    payment_id: str = Field(index=True, max_length=64)
    iccid: str = Field(max_length=20)
    amount: int
    currency: str = Field(max_length=3)
    reason: str = Field(max_length=256)
    state: str = Field(default=RefundState.PENDING, max_length=16, index=True)
    via: str = Field(
        default="refund",
        max_length=8,
        description="`refund`: money given back; `void`: an authorization released (the "
        "payment loop does it, this row records it)",
    )
    attempts: int = 0
    provider_reference: str | None = Field(default=None, max_length=128)
    unknown_since: datetime | None = timestamp(default=None)
    created_at: datetime = timestamp(default_factory=utcnow)
    updated_at: datetime = timestamp(default_factory=utcnow)
    refunded_at: datetime | None = timestamp(default=None)
    failed_at: datetime | None = timestamp(default=None)
    traceparent: str | None = traceparent_field()


TABLES: list[type[SQLModel]] = [Payment, Refund]
