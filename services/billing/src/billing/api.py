"""The billing HTTP API for ops: a renewal's payment and refund, re-sending a parked refund, the
payments still unknown or not captured in time, and reconciliation with the providers' lists.
The providers' webhooks (`webhooks.py`) sit beside it, outside the operator guard."""

import re
from datetime import datetime, timedelta
from typing import Annotated, ClassVar, Protocol, Self
from uuid import UUID

from esim_core.clock import as_utc, utcnow
from esim_core.duework.loop import made_due
from esim_core.observability.telemetry import ScrapeGauges, refresh_on_scrape
from esim_core.persistence.db import Database
from esim_core.service import ServiceRuntime
from esim_core.web.operator import OperatorAuth
from esim_core.web.problems import ProblemError, problem_responses
from esim_core.web.rows import RenewalId, renewal_route, row_view
from esim_schemas import Money
from fastapi import APIRouter, FastAPI, Query, status
from pydantic import BaseModel, BeforeValidator, Field
from sqlalchemy import or_
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from billing.domain import PaymentState, RefundState, RetryRules
from billing.gateways.port import GatewayUnavailableError, PaymentView, Standing
from billing.metrics import payment_gauges
from billing.store import Payment, Refund

#: An RFC 3339 date-time as text: a date, `T`, a time (pydantic alone would also take a number
#: of seconds since 1970, which the OpenAPI `date-time` format does not allow).
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")


def _rfc3339_text(value: object) -> object:
    if isinstance(value, str) and not _RFC3339.match(value):
        raise ValueError("expected an RFC 3339 date-time, e.g. 2026-12-01T00:00:00Z")
    return value


#: How far back a reconciliation may look: the providers keep three years of their lists.
RECONCILIATION_SPAN = timedelta(days=3 * 365)

#: A query parameter that is an RFC 3339 date-time, and nothing else.
Rfc3339 = Annotated[datetime, BeforeValidator(_rfc3339_text)]


class _MoneyRowPublic(BaseModel):
    """Base of the views of a payment and a refund, which a stored row makes alike.

    The row's amount and currency show as one `price`, when its next round is due (`due_at`,
    the due-work column) as `next_attempt_at`, and its id under the name `id_field`.
    """

    id_field: ClassVar[str]

    @classmethod
    def of(cls, row: Payment | Refund) -> Self:
        """The public view of a stored payment or refund."""
        return row_view(
            cls,
            row,
            price=Money(amount=row.amount, currency=row.currency),
            next_attempt_at=row.due_at,
            **{cls.id_field: row.id},
        )


class PaymentPublic(_MoneyRowPublic):
    """A payment as ops see it; the payment token is never part of it."""

    id_field = "payment_id"

    renewal_id: str
    payment_id: str
    state: str = Field(
        description="pending, action_required, authorized, settled (captured), failed, voided "
        "or unknown (an answer was lost: see unknown_step)"
    )
    iccid: str
    plan_code: str
    price: Money
    method: str
    attempts: int = Field(description="gateway rounds so far")
    soft_declines: int = Field(description="soft declines so far (dunning)")
    provider_reference: str | None = Field(
        description="the provider's payment (PaymentIntent, order, trade) once it exists"
    )
    capture_reference: str | None = Field(description="the provider's capture once captured")
    action_url: str | None = Field(description="where the buyer approves, while waited for")
    action_expires_at: datetime | None
    authorized_at: datetime | None
    capture_before: datetime | None
    capture_requested_at: datetime | None
    capture_overdue_at: datetime | None = Field(
        description="when billing found it could not capture in time (an operator is alerted)"
    )
    unknown_step: str | None = Field(description="the call whose answer was lost, if any")
    unknown_since: datetime | None
    failure_reason: str | None
    last_error: str | None
    next_attempt_at: datetime | None
    created_at: datetime
    updated_at: datetime
    settled_at: datetime | None
    failed_at: datetime | None
    voided_at: datetime | None


class RefundPublic(_MoneyRowPublic):
    """A refund as ops see it."""

    id_field = "refund_id"

    renewal_id: str
    refund_id: str = Field(description="billing's id of the refund")
    payment_id: str
    state: str = Field(
        description="pending, refunded, unknown (being asked), or failed (owed: see last_error)"
    )
    via: str = Field(description="refund: money given back; void: an authorization released")
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


class Difference(BaseModel):
    """One way billing's records and a provider's disagree."""

    kind: str = Field(
        description="unknown_capture (the provider took money billing does not know of), "
        "missing_capture (billing believes in a capture the provider lacks), amount_differs"
    )
    method: str | None
    reference: str | None = Field(description="the renewal id")
    provider_reference: str | None
    billing: str | None = Field(description="what billing has")
    provider: str | None = Field(description="what the provider reports")


class Reconciliation(BaseModel):
    """`GET /v1/payments/reconciliation`: every difference since `since`."""

    since: datetime
    checked_at: datetime
    provider_payments: int
    billing_payments: int
    differences: list[Difference]


class PaymentLister(Protocol):
    """What reconciliation needs of the gateway: each provider's list of payments."""

    async def list_payments(self, since: datetime) -> list[PaymentView]:
        """Every provider's payments since `since`, each with its method."""
        ...


def reconcile(
    views: list[PaymentView], payments: list[Payment], since: datetime
) -> list[Difference]:
    """Compare the providers' payments with billing's, since `since`."""
    differences: list[Difference] = []
    ours = {payment.renewal_id: payment for payment in payments}
    taken: set[str] = set()
    for view in views:
        captured = view.captured_amount or (
            view.amount or 0 if view.standing in (Standing.CAPTURED, Standing.REFUNDED) else 0
        )
        if captured <= 0:
            continue
        reference = view.reference or ""
        taken.add(reference)
        payment = ours.get(reference)
        said = f"{captured} {view.currency or '?'} captured ({view.standing})"
        if payment is None or payment.state != PaymentState.SETTLED:
            kind = "unknown_capture"
            billing = f"{payment.state} {payment.id}" if payment else "no payment"
        elif captured != payment.amount or (
            view.currency is not None and view.currency.upper() != payment.currency
        ):
            kind = "amount_differs"
            billing = f"{payment.amount} {payment.currency} settled"
        else:
            continue
        differences.append(
            Difference(
                kind=kind,
                method=view.method,
                reference=view.reference,
                provider_reference=view.provider_reference,
                billing=billing,
                provider=said,
            )
        )
    for payment in payments:
        settled_at = payment.settled_at
        if (
            payment.state == PaymentState.SETTLED
            and settled_at is not None
            and as_utc(settled_at) >= since
            and payment.renewal_id not in taken
        ):
            differences.append(
                Difference(
                    kind="missing_capture",
                    method=payment.method,
                    reference=payment.renewal_id,
                    provider_reference=payment.capture_reference or payment.provider_reference,
                    billing=f"{payment.amount} {payment.currency} settled",
                    provider="no capture",
                )
            )
    return differences


def build_router(
    database: Database,
    gateway: PaymentLister | None = None,
    rules: RetryRules | None = None,
) -> APIRouter:
    """The ops routes, bound to the billing database (and the gateway, for reconciliation)."""
    router = APIRouter(prefix="/v1", tags=["billing"])
    schedule = len(rules.unknown_schedule_s) if rules is not None else 5

    @router.get(
        "/payments/unknown",
        response_model=list[PaymentPublic],
        responses=problem_responses(401),
    )
    async def unknown_payments(
        every: Annotated[bool, Query(description="also those still within the schedule")] = False,
    ) -> list[PaymentPublic]:
        """Payments whose last call's answer is still unknown past the look-up schedule."""
        async with database.session() as session:
            query = select(Payment).where(Payment.state == PaymentState.UNKNOWN)
            if not every:
                query = query.where(Payment.unavailable_rounds >= schedule)
            rows = (await session.exec(query.order_by(col(Payment.unknown_since)))).all()
        return [PaymentPublic.of(row) for row in rows]

    @router.get(
        "/payments/overdue",
        response_model=list[PaymentPublic],
        responses=problem_responses(401),
    )
    async def overdue_captures() -> list[PaymentPublic]:
        """Payments whose plan is active but whose capture could not be made in time."""
        async with database.session() as session:
            rows = (
                await session.exec(
                    select(Payment)
                    .where(col(Payment.capture_overdue_at).is_not(None))
                    .where(Payment.state != PaymentState.SETTLED)
                    .order_by(col(Payment.capture_overdue_at))
                )
            ).all()
        return [PaymentPublic.of(row) for row in rows]

    @router.get(
        "/payments/reconciliation",
        response_model=Reconciliation,
        responses=problem_responses(401, 422, 503),
    )
    async def reconciliation(
        since: Annotated[
            Rfc3339 | None,
            Query(description="RFC 3339 with an offset; default: 24 hours ago"),
        ] = None,
    ) -> Reconciliation:
        """Billing's payments against each provider's own list: every difference."""
        now = utcnow()
        start = as_utc(since) if since is not None else now - timedelta(days=1)
        if since is not None and since.tzinfo is None:
            raise ProblemError(422, "since needs an explicit offset (Z or +00:00)")
        if start < now - RECONCILIATION_SPAN:
            # PayPal searches 31 days a request and keeps three years: an older start would
            # only make hundreds of calls for nothing.
            raise ProblemError(
                422, f"since may be at most {RECONCILIATION_SPAN.days} days ago (three years)"
            )
        if gateway is None:
            raise ProblemError(503, "no payment gateway is wired", kind="provider-unavailable")
        try:
            views = await gateway.list_payments(start)
        except GatewayUnavailableError as error:
            raise ProblemError(
                503, f"a provider could not list its payments: {error}", kind="provider-unavailable"
            ) from None
        references = {view.reference for view in views if view.reference}
        async with database.session() as session:
            ours = list(
                (
                    await session.exec(
                        select(Payment).where(
                            or_(
                                col(Payment.created_at) >= start,
                                col(Payment.settled_at) >= start,
                                col(Payment.renewal_id).in_(references),
                            )
                        )
                    )
                ).all()
            )
        return Reconciliation(
            since=start,
            checked_at=now,
            provider_payments=len(views),
            billing_payments=len(ours),
            differences=reconcile(views, ours, start),
        )

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
                made_due(session, Refund)
        return RefundPublic.of(refund)

    return router


async def _refund(session: AsyncSession, renewal_id: UUID) -> Refund | None:
    return (await session.exec(select(Refund).where(Refund.renewal_id == str(renewal_id)))).first()


def http_app(
    runtime: ServiceRuntime,
    operator: OperatorAuth,
    gateway: PaymentLister | None = None,
    rules: RetryRules | None = None,
) -> FastAPI:
    """The HTTP surface: health, metrics and the providers' webhooks open (the webhooks are
    verified by each provider's signature: the bootstrap adds them to `runtime.routers`), the
    ops API behind the operator token."""
    app = runtime.operator_app(
        "eSIM billing",
        operator,
        build_router(runtime.database, gateway, rules),
        description="Payments, dunning and refunds; the ops view of each renewal's.",
    )
    gauges = ScrapeGauges(runtime.name)
    rounds = len(rules.unknown_schedule_s) if rules is not None else 5
    gauges.add("payments", payment_gauges(runtime.database, rounds))
    return refresh_on_scrape(app, gauges)
