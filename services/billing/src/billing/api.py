"""The billing HTTP API for ops: a renewal's payment and refund, and re-sending a parked refund."""

from datetime import datetime
from typing import Annotated
from uuid import UUID

from esim_core.clock import as_utc, utcnow
from esim_core.observability.telemetry import refresh_on_scrape, scrape_gauges
from esim_core.persistence.db import Database
from esim_core.service import ServiceRuntime
from esim_core.web.operator import OperatorAuth, outbox_router
from esim_core.web.problems import ProblemError, problem_responses
from esim_schemas import Money
from fastapi import APIRouter, FastAPI, Path, status
from pydantic import BaseModel, Field
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from billing.domain import RefundState
from billing.store import Payment, Refund

RenewalId = Annotated[UUID, Path(description="the renewal's id (a UUID)")]


class PaymentPublic(BaseModel):
    """A payment as ops see it; the payment token is never part of it."""

    renewal_id: str
    payment_id: str
    state: str = Field(description="pending, settled or failed")
    iccid: str
    plan_code: str
    price: Money
    method: str
    attempts: int = Field(description="gateway rounds so far")
    soft_declines: int = Field(description="soft declines so far (dunning)")
    provider_reference: str | None = Field(description="the gateway's charge id once captured")
    failure_reason: str | None
    last_error: str | None
    next_attempt_at: datetime | None
    created_at: datetime
    updated_at: datetime
    settled_at: datetime | None
    failed_at: datetime | None

    @classmethod
    def of(cls, payment: Payment) -> "PaymentPublic":
        """The public view of a stored payment."""
        return cls(
            renewal_id=payment.renewal_id,
            payment_id=payment.id,
            state=payment.state,
            iccid=payment.iccid,
            plan_code=payment.plan_code,
            price=Money(amount=payment.amount, currency=payment.currency),
            method=payment.method,
            attempts=payment.attempts,
            soft_declines=payment.soft_declines,
            provider_reference=payment.provider_reference,
            failure_reason=payment.failure_reason,
            last_error=payment.last_error,
            next_attempt_at=as_utc(payment.due_at),
            created_at=as_utc(payment.created_at),
            updated_at=as_utc(payment.updated_at),
            settled_at=as_utc(payment.settled_at),
            failed_at=as_utc(payment.failed_at),
        )


class RefundPublic(BaseModel):
    """A refund as ops see it."""

    renewal_id: str
    refund_id: str = Field(description="billing's id of the refund")
    payment_id: str
    state: str = Field(description="pending, refunded, or failed (owed: see last_error)")
    price: Money
    reason: str
    attempts: int
    provider_reference: str | None = Field(description="the gateway's refund id once refunded")
    last_error: str | None
    next_attempt_at: datetime | None
    created_at: datetime
    updated_at: datetime
    refunded_at: datetime | None
    failed_at: datetime | None

    @classmethod
    def of(cls, refund: Refund) -> "RefundPublic":
        """The public view of a stored refund."""
        return cls(
            renewal_id=refund.renewal_id,
            refund_id=refund.id,
            payment_id=refund.payment_id,
            state=refund.state,
            price=Money(amount=refund.amount, currency=refund.currency),
            reason=refund.reason,
            attempts=refund.attempts,
            provider_reference=refund.provider_reference,
            last_error=refund.last_error,
            next_attempt_at=as_utc(refund.due_at),
            created_at=as_utc(refund.created_at),
            updated_at=as_utc(refund.updated_at),
            refunded_at=as_utc(refund.refunded_at),
            failed_at=as_utc(refund.failed_at),
        )


def build_router(database: Database) -> APIRouter:
    """The ops routes, bound to the billing database."""
    router = APIRouter(prefix="/v1", tags=["billing"])

    @router.get(
        "/payments/{renewal_id}",
        response_model=PaymentPublic,
        responses=problem_responses(401, 404, 422),
    )
    async def get_payment(renewal_id: RenewalId) -> PaymentPublic:
        """The payment of a renewal: state, attempts, provider reference, last error."""
        async with database.session() as session:
            payment = (
                await session.exec(select(Payment).where(Payment.renewal_id == str(renewal_id)))
            ).first()
        if payment is None:
            raise ProblemError(
                404, f"no payment for renewal {renewal_id}", kind="payment-not-found"
            )
        return PaymentPublic.of(payment)

    @router.get(
        "/refunds/{renewal_id}",
        response_model=RefundPublic,
        responses=problem_responses(401, 404, 422),
    )
    async def get_refund(renewal_id: RenewalId) -> RefundPublic:
        """The refund of a renewal: state, attempts, provider reference, last error."""
        async with database.session() as session:
            refund = await _refund(session, renewal_id)
        if refund is None:
            raise ProblemError(404, f"no refund for renewal {renewal_id}", kind="refund-not-found")
        return RefundPublic.of(refund)

    @router.post(
        "/refunds/{renewal_id}/retry",
        response_model=RefundPublic,
        status_code=status.HTTP_202_ACCEPTED,
        responses=problem_responses(401, 404, 409, 422),
    )
    async def retry_refund(renewal_id: RenewalId) -> RefundPublic:
        """Send a refund parked as failed back to the refund loop, due now.

        A pending refund is left as it is (202 again); a refunded one is a 409.
        """
        async with database.session() as session:
            refund = await _refund(session, renewal_id)
            if refund is None:
                raise ProblemError(
                    404, f"no refund for renewal {renewal_id}", kind="refund-not-found"
                )
            if refund.state == RefundState.REFUNDED:
                raise ProblemError(
                    409,
                    f"the refund of renewal {renewal_id} is already done",
                    kind="refund-already-done",
                )
            if refund.state == RefundState.FAILED:
                now = utcnow()
                refund.state = RefundState.PENDING
                refund.unavailable_rounds = 0
                refund.failed_at = None
                refund.due_at = now
                refund.lease_until = None
                refund.updated_at = now
                session.add(refund)
        return RefundPublic.of(refund)

    return router


async def _refund(session: AsyncSession, renewal_id: UUID) -> Refund | None:
    return (await session.exec(select(Refund).where(Refund.renewal_id == str(renewal_id)))).first()


def http_app(runtime: ServiceRuntime, operator: OperatorAuth) -> FastAPI:
    """The HTTP surface: health and metrics open, the ops API behind the operator token."""
    app = runtime.http_app(
        "eSIM billing",
        routers=[
            operator.guard(
                build_router(runtime.database), outbox_router(runtime.database, runtime.name)
            )
        ],
        description="Payments, dunning and refunds; the ops view of each renewal's.",
    )
    return refresh_on_scrape(app, scrape_gauges(runtime))
