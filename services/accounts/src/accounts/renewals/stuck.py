"""What counts as a stuck saga, as a rule on one row and as the same rule in SQL."""

from datetime import datetime, timedelta

from esim_core.clock import as_utc
from sqlalchemy import ColumnElement, and_, or_
from sqlmodel import col

from accounts.domain import TERMINAL, WITH_DEADLINE, SagaStatus
from accounts.store import Renewal

# Waiting on another service without a deadline of its own: stuck once idle for too long.
_WAITING_WITHOUT_DEADLINE = (SagaStatus.REQUESTED, SagaStatus.REFUNDING, SagaStatus.CANCELLING)

#: A saga without a deadline (requested, refunding, cancelling) idle this long is stuck.
DEFAULT_STUCK_AFTER_S = 900.0


def stuck_reason(saga: Renewal, now: datetime, stuck_after_s: float) -> str | None:
    """Why a saga counts as stuck at `now`, or None.

    A saga waiting for a payment or an activation is stuck once its deadline passed (the sweep
    should have moved it on); one without a deadline (requested, refunding, cancelling, timed
    out with a capture: refund owed, or provisioning's answer awaited) once it has not moved
    for `stuck_after_s`.
    """
    status = SagaStatus(saga.status)
    if status in TERMINAL:
        return None
    if status in WITH_DEADLINE:
        if saga.deadline_at is not None and as_utc(saga.deadline_at) <= now:
            return f"{status.value} past its deadline {as_utc(saga.deadline_at).isoformat()}"
        return None
    if status == SagaStatus.TIMED_OUT and not saga.refund_requested and saga.payment_id is None:
        return None  # nothing captured, nothing owed: closed
    idle = (now - as_utc(saga.updated_at)).total_seconds()
    if idle >= stuck_after_s:
        return f"{status.value} without progress for {idle:.0f} s"
    return None


def stuck_clause(now: datetime, stuck_after_s: float) -> ColumnElement[bool]:
    """`stuck_reason` as a SQL condition, so the stuck list is one query."""
    idle = col(Renewal.updated_at) <= now - timedelta(seconds=stuck_after_s)
    state = col(Renewal.status)
    return or_(
        and_(state.in_([s.value for s in WITH_DEADLINE]), col(Renewal.deadline_at) <= now),
        and_(state.in_([s.value for s in _WAITING_WITHOUT_DEADLINE]), idle),
        and_(
            state == SagaStatus.TIMED_OUT.value,
            or_(col(Renewal.refund_requested), col(Renewal.payment_id).is_not(None)),
            idle,
        ),
    )
