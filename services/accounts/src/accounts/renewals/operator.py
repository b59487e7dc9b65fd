"""The accounts operator API: a saga in full, the stuck ones, and retrying or compensating one.

Everything here is under `/v1/operator/` behind the operator token (`esim_core.web.operator`); the
traveller-facing routes never show payment ids, events or other users' sagas.
"""

from datetime import datetime
from typing import Annotated
from uuid import UUID

from esim_core.messaging.outbox import OutboxMessage
from esim_core.persistence.db import Database
from esim_core.web.problems import ProblemError
from esim_core.web.rows import row_view
from fastapi import APIRouter, Path, Query, status
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from accounts.bodies import stored_money
from accounts.deps import DatabaseDep, SagaDep
from accounts.domain import TERMINAL, SagaStatus
from accounts.renewals.models import EventOut, SagaActionOut, SagaDetail, SagaSummary, StepOut
from accounts.renewals.routes import requested_event_id
from accounts.renewals.saga import RenewalSaga, SagaActionRefusedError, derived_id
from accounts.renewals.stuck import DEFAULT_STUCK_AFTER_S, stuck_clause, stuck_reason
from accounts.store import Renewal, RenewalStep

RenewalId = Annotated[UUID, Path(description="the renewal's id (a UUID)")]

#: Kinds of the event ids the saga derives from its renewal_id (see `saga.derived_id`).
_PUBLISHED_KINDS = ("payment-requested", "refund-requested", "rejected", "operator-retry-requested")


async def _steps(session: AsyncSession, renewal_id: str) -> list[RenewalStep]:
    query = (
        select(RenewalStep)
        .where(RenewalStep.renewal_id == renewal_id)
        .order_by(col(RenewalStep.id))
    )
    return list((await session.exec(query)).all())


async def _published(session: AsyncSession, renewal_id: str) -> list[OutboxMessage]:
    ids = [derived_id(kind, renewal_id) for kind in _PUBLISHED_KINDS]
    ids.append(requested_event_id(UUID(renewal_id)))
    query = (
        select(OutboxMessage)
        .where(col(OutboxMessage.event_id).in_(ids))
        .order_by(col(OutboxMessage.id))
    )
    return list((await session.exec(query)).all())


def _detail(
    saga: Renewal, steps: list[RenewalStep], events: list[OutboxMessage], now: datetime
) -> SagaDetail:
    return row_view(
        SagaDetail,
        saga,
        terminal=SagaStatus(saga.status) in TERMINAL,
        price=stored_money(saga.price_amount, saga.currency),
        stuck=stuck_reason(saga, now, DEFAULT_STUCK_AFTER_S),
        timeline=[row_view(StepOut, step, event_id=step.event_id or None) for step in steps],
        events=[row_view(EventOut, event, type=event.event_type) for event in events],
    )


def _not_found(renewal_id: UUID) -> ProblemError:
    return ProblemError(404, f"no renewal {renewal_id} in accounts", kind="renewal-not-found")


operator_router = APIRouter(prefix="/v1/operator", tags=["operator"])


@operator_router.get("/sagas/{renewal_id}")
async def get_saga(renewal_id: RenewalId, database: DatabaseDep, saga: SagaDep) -> SagaDetail:
    """A saga: state, timeline with the events that moved it, what it published."""
    async with database.session() as session:
        row = await session.get(Renewal, str(renewal_id))
        if row is None:
            raise _not_found(renewal_id)
        steps = await _steps(session, row.renewal_id)
        events = await _published(session, row.renewal_id)
    return _detail(row, steps, events, saga.clock())


@operator_router.get("/sagas")
async def list_sagas(
    database: DatabaseDep,
    saga: SagaDep,
    stuck: Annotated[bool, Query(description="only sagas that count as stuck")] = False,
    saga_status: Annotated[
        SagaStatus | None, Query(alias="status", description="only sagas in this state")
    ] = None,
    stuck_after_s: Annotated[
        float,
        Query(gt=0, description="idle seconds after which a saga without deadline is stuck"),
    ] = DEFAULT_STUCK_AFTER_S,
    limit: Annotated[int, Query(ge=1, le=1000, description="at most this many")] = 100,
) -> list[SagaSummary]:
    """Sagas, oldest progress first: the stuck ones, or those in one state."""
    now = saga.clock()
    query = select(Renewal)
    if saga_status is not None:
        query = query.where(col(Renewal.status) == saga_status.value)
    if stuck:
        query = query.where(stuck_clause(now, stuck_after_s))
    query = query.order_by(col(Renewal.updated_at), col(Renewal.renewal_id)).limit(limit)
    async with database.session() as session:
        rows = (await session.exec(query)).all()
    return [
        row_view(SagaSummary, row, stuck=stuck_reason(row, now, stuck_after_s) or "")
        for row in rows
    ]


async def act(
    database: Database, saga: RenewalSaga, renewal_id: UUID, action: str, why: str
) -> SagaActionOut:
    """Retry or compensate a saga under its row lock; 409 where the table refuses."""
    async with database.session() as session:
        row = await session.get(Renewal, str(renewal_id), with_for_update=True)
        if row is None:
            raise _not_found(renewal_id)
        try:
            if action == "retry":
                reasons = [
                    s.detail
                    for s in await _steps(session, row.renewal_id)
                    if s.step == "refund_requested" and s.detail
                ]
                outcome = await saga.retry(
                    session, row, refund_reason=reasons[-1] if reasons else why
                )
            else:
                outcome = await saga.compensate(session, row, why)
        except SagaActionRefusedError as refused:
            raise ProblemError(409, str(refused), kind="saga-action-refused") from refused
        result = SagaActionOut(
            renewal_id=row.renewal_id, action=action, status=row.status, outcome=outcome
        )
    return result


@operator_router.post("/sagas/{renewal_id}/retry", status_code=status.HTTP_202_ACCEPTED)
async def retry_saga(renewal_id: RenewalId, database: DatabaseDep, saga: SagaDep) -> SagaActionOut:
    """Send again the command a stuck saga waits on (the same event id: safe to repeat).

    REQUESTED: its RenewalRequested; PAYMENT_PENDING: its PaymentRequested (and a new
    payment deadline); REFUNDING or TIMED_OUT with a refund owed: its RefundRequested.
    PAID, AUTHORIZED (waiting on provisioning), PAYMENT_ACTION_REQUIRED (waiting on the buyer)
    and ended sagas answer 409.
    """
    return await act(database, saga, renewal_id, "retry", "operator retry")


@operator_router.post("/sagas/{renewal_id}/compensate", status_code=status.HTTP_202_ACCEPTED)
async def compensate_saga(
    renewal_id: RenewalId,
    database: DatabaseDep,
    saga: SagaDep,
    reason: Annotated[
        str, Query(min_length=1, max_length=200, description="why, for the timeline")
    ] = "stuck",
) -> SagaActionOut:
    """Give a stuck saga up: TIMED_OUT, and its payment refunded once captured.

    A saga already compensating is left as it is (202, nothing changed); an ended one is 409.
    """
    return await act(database, saga, renewal_id, "compensate", reason)
