"""The provisioning HTTP API for ops: activations, cancellations, the bundles followed for usage."""

from typing import Annotated

from esim_core.persistence.db import Database
from esim_core.service import ServiceRuntime
from esim_core.web.operator import OperatorAuth
from esim_core.web.problems import problem_responses
from esim_core.web.rows import IccidFilter, Limit, newest_rows, renewal_route, row_view
from esim_schemas import PlanRef
from esim_schemas.types import Iccid, UtcDatetime
from fastapi import APIRouter, FastAPI, Query
from pydantic import BaseModel, Field
from sqlmodel import col, select

from provisioning.domain import ActivationState
from provisioning.store import Activation, Bundle, Cancellation, UsageWatch


class ActivationPublic(BaseModel):
    """An activation as ops see it."""

    renewal_id: str
    activation_id: str
    state: str = Field(description="ordering, following, cancelling, activated or failed")
    iccid: str
    plan: PlanRef
    start: str = Field(description="now or after_current")
    payment_id: str
    order_id: str | None = Field(description="the eSIM platform's order id once ordered")
    bundle_state: str | None = Field(description="active or queued once activated")
    valid_from: UtcDatetime | None
    valid_until: UtcDatetime | None
    attempts: int = Field(description="rounds with the eSIM platform so far")
    failure_reason: str | None
    last_error: str | None = Field(description="what went wrong in the latest round, if anything")
    next_attempt_at: UtcDatetime | None = Field(description="when the next round is due")
    deadline_at: UtcDatetime = Field(description="when a bundle not live yet times out")
    created_at: UtcDatetime
    updated_at: UtcDatetime
    ordered_at: UtcDatetime | None
    activated_at: UtcDatetime | None
    failed_at: UtcDatetime | None

    @classmethod
    def of(cls, row: Activation) -> "ActivationPublic":
        """The public view of a stored activation."""
        return row_view(
            cls,
            row,
            activation_id=row.id,
            plan=PlanRef(code=row.plan_code, data_mb=row.data_mb, validity_days=row.validity_days),
            next_attempt_at=row.due_at,
        )


class BundlePublic(BaseModel):
    """A bundle followed for usage, as ops see it: what the platform measured, what was sent."""

    order_id: str
    renewal_id: str
    iccid: str
    plan_code: str
    status: str = Field(description="queued, active, depleted or expired, as last reported")
    data_mb: int
    data_used_mb: int
    usage_as_of: UtcDatetime | None
    valid_from: UtcDatetime
    valid_until: UtcDatetime
    alerted_pct: int = Field(description="the highest DataLow threshold published (0: none)")
    started_published: bool
    ended_published: bool
    next_poll_at: UtcDatetime | None = Field(description="when the card's usage is polled next")
    last_poll_error: str | None


class CancellationPublic(BaseModel):
    """A requested cancellation of a renewal's bundle as ops see it."""

    renewal_id: str
    iccid: str
    reason: str = Field(description="cancelled_by_user or replaced")
    state: str = Field(description="pending, cancelled, refused or abandoned")
    order_id: str | None = Field(description="the eSIM platform's order id, once asked")
    bundle_status: str | None = Field(description="what the platform said the bundle was")
    attempts: int = Field(description="rounds with the eSIM platform so far")
    last_error: str | None = Field(description="why it is still pending, or was refused")
    next_attempt_at: UtcDatetime | None
    created_at: UtcDatetime
    done_at: UtcDatetime | None

    @classmethod
    def of(cls, row: Cancellation) -> "CancellationPublic":
        """The public view of a stored cancellation."""
        return row_view(cls, row, renewal_id=row.id, next_attempt_at=row.due_at)


def build_router(database: Database) -> APIRouter:
    """The ops routes, bound to the provisioning database."""
    router = APIRouter(prefix="/v1", tags=["provisioning"])

    renewal_route(
        router,
        database,
        ActivationPublic,
        Activation.renewal_id,
        "The activation of a renewal: state, order id, rounds, last error, times.",
    )
    renewal_route(
        router,
        database,
        CancellationPublic,
        Cancellation.id,
        "The cancellation accounts asked for a renewal's bundle: state, platform's answer.",
    )

    @router.get(
        "/activations",
        response_model=list[ActivationPublic],
        responses=problem_responses(401, 422),
    )
    async def list_activations(
        iccid: IccidFilter = None,
        state: Annotated[
            ActivationState | None,
            Query(description="only activations in this state, e.g. `following` for open ones"),
        ] = None,
        limit: Limit = 100,
    ) -> list[ActivationPublic]:
        """List activations, newest first: of one card, in one state, or both."""
        value = state.value if state is not None else None
        filters = [(Activation.iccid, iccid), (Activation.state, value)]
        rows = await newest_rows(database, Activation, filters, limit)
        return [ActivationPublic.of(row) for row in rows]

    @router.get("/bundles", response_model=list[BundlePublic])
    async def list_bundles(
        iccid: Annotated[
            Iccid, Query(description="the card's ICCID: 19 or 20 digits with a valid check digit")
        ],
    ) -> list[BundlePublic]:
        """The bundles of a card that provisioning follows, oldest first."""
        async with database.session() as session:
            rows = (
                await session.exec(
                    select(Bundle)
                    .where(col(Bundle.iccid) == iccid)
                    .order_by(col(Bundle.valid_from), col(Bundle.order_id))
                )
            ).all()
            watch = await session.get(UsageWatch, iccid)
        return [
            row_view(
                BundlePublic,
                row,
                next_poll_at=watch.due_at if watch is not None else None,
                last_poll_error=watch.last_error if watch is not None else None,
            )
            for row in rows
        ]

    return router


def http_app(runtime: ServiceRuntime, operator: OperatorAuth) -> FastAPI:
    """The HTTP surface: health and metrics open, the ops API behind the operator token."""
    return runtime.operator_app(
        "eSIM provisioning",
        operator,
        build_router(runtime.database),
        description="Bundle orders at the eSIM platform and their follow-up; the ops view of "
        "each renewal's activation.",
    )
