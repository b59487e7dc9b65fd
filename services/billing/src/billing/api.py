"""The billing HTTP API for ops: a renewal's payment and refund, and re-sending a parked refund."""

from datetime import datetime
from uuid import UUID

from esim_core.clock import utcnow
from esim_core.persistence.db import Database
from esim_core.service import ServiceRuntime
from esim_core.web.operator import OperatorAuth
from esim_core.web.problems import ProblemError, problem_responses
from esim_core.web.rows import RenewalId, renewal_route, row_view
from esim_schemas import Money
from fastapi import APIRouter, FastAPI, status
from pydantic import BaseModel, Field
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from billing.domain import RefundState
from billing.store import Payment, Refund


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
        return row_view(
            cls,
            payment,
            payment_id=payment.id,
            price=Money(amount=payment.amount, currency=payment.currency),
            next_attempt_at=payment.due_at,
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
        return row_view(
            cls,
            refund,
            refund_id=refund.id,
            price=Money(amount=refund.amount, currency=refund.currency),
            next_attempt_at=refund.due_at,
        )


def build_router(database: Database) -> APIRouter:
    """The ops routes, bound to the billing database."""
    router = APIRouter(prefix="/v1", tags=["billing"])

    renewal_route(
        router,
        database,
        PaymentPublic,
        Payment.renewal_id,
        "The payment of a renewal: state, attempts, provider reference, last error.",
    )
    renewal_route(
        router,
        database,
        RefundPublic,
        Refund.renewal_id,
        "The refund of a renewal: state, attempts, provider reference, last error.",
    )

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
    return runtime.operator_app(
        "eSIM billing",
        operator,
        build_router(runtime.database),
        description="Payments, dunning and refunds; the ops view of each renewal's.",
    )
