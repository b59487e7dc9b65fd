"""A card's plans as the platform measured them: usage, start and end of each bundle, history.

Every event about one bundle (ProfileActivated, BundleStarted, BundleEnded, BundleCancelled,
UsageUpdated)
updates that bundle's `CardPlan` row, whatever order the topics deliver them in: each fact only
moves forward (a state never goes back, an older measurement never replaces a newer one). The
card's status is derived from its rows when it is read, as of that moment.
"""

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from esim_core.clock import as_utc, utcnow
from esim_core.persistence.driver import Target
from esim_schemas import (
    BundleCancelled,
    BundleEnded,
    BundleStarted,
    CloudEvent,
    ProfileActivated,
    UsageUpdated,
)
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from accounts.store import CARD_PLANS, CardPlan

logger = logging.getLogger(__name__)

# A cancelled plan never ran; a replaced one ran until a start=now plan took its place.
_RANK = {"queued": 0, "active": 1, "expired": 2, "depleted": 2, "cancelled": 3, "replaced": 3}
ENDED = frozenset({"expired", "depleted", "cancelled", "replaced"})
_CANCEL_STATE = {"cancelled_by_user": "cancelled", "replaced": "replaced"}


def _later(known: str | None, reported: str) -> str:
    if known is None or _RANK.get(reported, -1) > _RANK.get(known, -1):
        return reported
    return known


async def _plan(session: Target, renewal_id: str, iccid: str) -> CardPlan:
    # A row an earlier event of the same transaction wrote is the object it wrote.
    plan = await CARD_PLANS.get(session, renewal_id, lock=True)
    if plan is None:
        plan = CARD_PLANS.new(renewal_id=renewal_id, iccid=iccid)
    return plan


async def record_activation(session: Target, data: ProfileActivated) -> None:
    """A bundle went live or was queued: the plan's row gets its terms."""
    plan = await _plan(session, str(data.renewal_id), data.iccid)
    plan.plan_code = data.plan_code
    plan.data_mb = data.data_mb
    if plan.started_at is None:
        # BundleStarted carries the dates the bundle really ran; keep those when it came first.
        plan.valid_from, plan.valid_until = data.valid_from, data.valid_until
    plan.state = _later(plan.state, data.bundle_state)
    plan.updated_at = utcnow()
    await CARD_PLANS.save(session, plan)


async def on_bundle_started(session: Target, event: CloudEvent[BundleStarted]) -> None:
    """A queued plan became the card's live plan."""
    data = event.data
    plan = await _plan(session, str(data.renewal_id), data.iccid)
    plan.plan_code, plan.data_mb = data.plan_code, data.data_mb
    plan.valid_from, plan.valid_until = data.valid_from, data.valid_until
    plan.started_at = data.started_at
    plan.state = _later(plan.state, "active")
    plan.updated_at = utcnow()
    await CARD_PLANS.save(session, plan)


async def on_bundle_ended(session: Target, event: CloudEvent[BundleEnded]) -> None:
    """A plan ran out of time (`expired`) or data (`depleted`); it stays in the history."""
    data = event.data
    plan = await _plan(session, str(data.renewal_id), data.iccid)
    plan.plan_code = plan.plan_code or data.plan_code
    if plan.valid_from is None:
        plan.valid_from, plan.valid_until = data.valid_from, data.valid_until
    if plan.state not in ENDED:
        plan.state = data.reason
        plan.ended_at = data.ended_at
    plan.updated_at = utcnow()
    await CARD_PLANS.save(session, plan)


async def record_cancellation(session: Target, data: BundleCancelled) -> CardPlan:
    """A plan will not run (further): cancelled before it started, or replaced; it stays in the
    history."""
    plan = await _plan(session, str(data.renewal_id), data.iccid)
    plan.plan_code = plan.plan_code or data.plan_code
    if plan.state not in _CANCEL_STATE.values():
        # Over a plain `expired`: the platform may list a replaced bundle so before this came.
        plan.state = _CANCEL_STATE[data.reason]
        plan.ended_at = data.cancelled_at
    plan.updated_at = utcnow()
    await CARD_PLANS.save(session, plan)
    return plan


async def on_usage_updated(session: Target, event: CloudEvent[UsageUpdated]) -> None:
    """The platform measured a plan's data use; a measurement older than the one kept is dropped."""
    data = event.data
    if data.renewal_id is None:
        logger.info("usage of card %s without a renewal (%s); not shown", data.iccid, event.id)
        return
    plan = await _plan(session, str(data.renewal_id), data.iccid)
    if plan.usage_as_of is not None and as_utc(plan.usage_as_of) > data.as_of:
        logger.info("older usage %s of renewal %s ignored", event.id, data.renewal_id)
        return
    plan.data_used_mb = data.data_used_mb
    plan.usage_as_of = data.as_of
    plan.data_mb = plan.data_mb or data.data_total_mb
    plan.plan_code = plan.plan_code or data.plan_code
    if data.bundle_status is not None:
        plan.state = _later(plan.state, data.bundle_status)
    plan.updated_at = utcnow()
    await CARD_PLANS.save(session, plan)


async def plans_of(session: AsyncSession, iccids: Sequence[str]) -> dict[str, list[CardPlan]]:
    """The plan rows of some cards, by ICCID, each list in start order."""
    if not iccids:
        return {}
    rows = (
        await session.exec(
            select(CardPlan)
            .where(col(CardPlan.iccid).in_(list(iccids)))
            .order_by(col(CardPlan.valid_from), col(CardPlan.renewal_id))
        )
    ).all()
    found: dict[str, list[CardPlan]] = {}
    for row in rows:
        found.setdefault(row.iccid, []).append(row)
    return found


def state_at(plan: CardPlan, now: datetime) -> str:
    """A plan's state as of `now`: what the platform said, or what the clock says since."""
    if plan.state in ENDED:
        return plan.state
    assert plan.valid_from is not None and plan.valid_until is not None
    if as_utc(plan.valid_until) <= now:
        return "expired"
    if plan.state == "active" or as_utc(plan.valid_from) <= now:
        return "active"
    return "queued"


def remaining_mb(plan: CardPlan, state: str) -> int:
    """Data left on a plan: its allowance less what the platform measured; none once used up."""
    if state == "depleted":
        return 0
    return max(0, (plan.data_mb or 0) - (plan.data_used_mb or 0))


def plan_entry(plan: CardPlan, now: datetime) -> dict[str, Any]:
    """One plan of the history, as the API shows it."""
    state = state_at(plan, now)
    assert plan.valid_from is not None and plan.valid_until is not None
    return {
        "renewal_id": plan.renewal_id,
        "plan_code": plan.plan_code,
        "state": state,
        "data_mb": plan.data_mb,
        "data_remaining_mb": remaining_mb(plan, state),
        "usage_as_of": as_utc(plan.usage_as_of) if plan.usage_as_of else None,
        "valid_from": as_utc(plan.valid_from),
        "valid_until": as_utc(plan.valid_until),
        "ended_at": as_utc(plan.ended_at) if plan.ended_at else None,
    }


def _starts(plan: CardPlan) -> datetime:
    assert plan.valid_from is not None  # only plans whose start is known are ordered
    return as_utc(plan.valid_from)


def card_status(plans: Sequence[CardPlan], now: datetime) -> dict[str, Any]:
    """The card's status from its plans: the live one (or the last that ended), and the queue.

    A plan not known well enough yet (no dates) does not count; a card without one is inactive.
    """
    # A cancelled plan never ran: the card's status does not show it at all.
    known = [
        plan
        for plan in plans
        if plan.valid_from is not None and plan.plan_code and plan.state != "cancelled"
    ]
    states = {plan.renewal_id: state_at(plan, now) for plan in known}
    started = [plan for plan in known if states[plan.renewal_id] != "queued"]
    queued = sorted(
        (plan for plan in known if states[plan.renewal_id] == "queued"),
        key=_starts,
    )
    live = [plan for plan in started if states[plan.renewal_id] == "active"]
    current = max(live or started, key=_starts, default=None)
    status: dict[str, Any] = {
        "queued": [
            {
                "renewal_id": plan.renewal_id,
                "plan_code": plan.plan_code,
                "data_mb": plan.data_mb,
                "valid_from": as_utc(plan.valid_from),
                "valid_until": as_utc(plan.valid_until),
            }
            for plan in queued
        ]
    }
    if current is None:
        return status | {
            "plan_code": None,
            "state": "inactive",
            "data_total_mb": 0,
            "data_remaining_mb": 0,
            "usage_as_of": None,
            "valid_from": None,
            "valid_until": None,
        }
    entry = plan_entry(current, now)
    return status | {
        "plan_code": current.plan_code,
        "state": entry["state"],
        "data_total_mb": current.data_mb or 0,
        "data_remaining_mb": entry["data_remaining_mb"],
        "usage_as_of": entry["usage_as_of"],
        "valid_from": entry["valid_from"],
        "valid_until": entry["valid_until"],
    }
