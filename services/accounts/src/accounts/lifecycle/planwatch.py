"""Reminders before a card's last plan ends, and auto-renewal: durable due work per plan.

Each plan a card gets (ProfileActivated, BundleStarted) has a `PlanWatch` row whose `due_at` is
the next time something may be owed for it: a reminder lead or the auto-renew lead. The due
loop (`esim_core.duework.loop.DueLoop`) leases due rows, so replicas never work one row at once; the
work locks the row, decides (`lifecycle.decide`) and writes what it did on the row in the same
transaction as the events it publishes, so each reminder and each auto-renewal happens once
per plan across restarts and replicas, under event ids and a renewal_id derived from the plan.
"""

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from esim_core import ids
from esim_core.clock import as_utc, utcnow
from esim_core.duework.loop import made_due
from esim_core.messaging.outbox import Outbox
from esim_core.persistence.db import Database
from esim_core.persistence.driver import Statement, Target, run
from esim_schemas import (
    AutoRenewDisabled,
    BundleCancelled,
    BundleEnded,
    BundleStarted,
    CloudEvent,
    DataLow,
    PaymentDetails,
    PlanExpiring,
    ProfileActivated,
    RenewalRequested,
    UsageUpdated,
)
from sqlalchemy import bindparam, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from accounts.domain import AUTO_RENEW_CHANNEL, SagaStatus
from accounts.lifecycle.rules import LifecycleRules, WatchedPlan, days_left, decide
from accounts.renewals.saga import derived_id, record_step, saga_from_request
from accounts.store import PLAN_WATCHES, SAGAS, Card, Plan, PlanWatch, Renewal, User

logger = logging.getLogger(__name__)

# Auto-renewals that did not (or will not) keep a payment do not count against a monthly cap.
_NOT_SPENT = frozenset(
    {
        SagaStatus.REJECTED,
        SagaStatus.PAYMENT_FAILED,
        SagaStatus.REFUNDED,
        SagaStatus.REFUNDING,
        SagaStatus.TIMED_OUT,
        "CANCELLED",
    }
)
# The dates of a plan whose end or use was heard of before its activation.
_UNKNOWN = datetime(1970, 1, 1, tzinfo=UTC)
_AUTO_RENEWALS = ids.namespace("accounts/auto-renewals")
# A card's live and queued plans due now (`rearm`), built once: all, or those starting before.
# (An UPDATE's parameters cannot be named as its columns.)
_REARM_ALL = (
    update(PlanWatch)
    .where(col(PlanWatch.iccid) == bindparam("card"), col(PlanWatch.ended).is_(False))
    .where(col(PlanWatch.valid_until) > bindparam("now"))
    .values(due_at=bindparam("now"))
)
_REARM = Statement(_REARM_ALL)
_REARM_BEFORE = Statement(_REARM_ALL.where(col(PlanWatch.valid_from) < bindparam("before")))


def _note_if_due(session: Target, row: PlanWatch, now: datetime) -> None:
    # The plan-watch loop is woken by these notes, not by every commit of the consumer (a
    # claim, a transaction, that finds nothing after nearly every event): see `bootstrap`.
    if row.due_at is not None and as_utc(row.due_at) <= now:
        made_due(session, PlanWatch)


def auto_renewal_id(plan_renewal_id: str) -> UUID:
    """The renewal_id of the auto-renewal that follows a plan: one per plan, on any replica."""
    return UUID(ids.derived_id(_AUTO_RENEWALS, plan_renewal_id))


def month_start(now: datetime) -> datetime:
    """The start of `now`'s calendar month, in UTC: the period a monthly cap counts over."""
    return now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def disable_auto_renew(card: Card) -> None:
    """Auto-renew off: the saved plan, payment and cap are forgotten with it."""
    card.auto_renew = False
    card.auto_renew_plan_code = None
    card.auto_renew_method = card.auto_renew_token = card.auto_renew_return_url = None
    card.auto_renew_cap_amount = card.auto_renew_cap_currency = None


async def _watch_row(session: Target, renewal_id: str) -> PlanWatch | None:
    # A row an earlier event of the same transaction wrote is the object it wrote.
    return await PLAN_WATCHES.get(session, renewal_id, lock=True)


class PlanWatcher:
    """Keeps each plan's watch row from the card's events, and works the rows when due.

    `clock` tells the time the rules run by (tests move it on).
    """

    def __init__(
        self,
        database: Database,
        outbox: Outbox,
        rules: LifecycleRules | None = None,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.database = database
        self.outbox = outbox
        self.rules = rules or LifecycleRules()
        self.clock = clock

    async def watch(
        self,
        session: Target,
        renewal_id: str,
        iccid: str,
        plan_code: str,
        valid_from: datetime,
        valid_until: datetime,
    ) -> None:
        """Watch a plan (or take its new dates), in the caller's commit.

        It is due at once if something may be owed for it already (a lead has come, or its
        data is used up), else when its first lead comes: a plan of 30 days costs no round of
        the due work on the day it starts.
        """
        row = await _watch_row(session, renewal_id)
        now = self.clock()
        if row is None:
            row = PLAN_WATCHES.new(
                id=renewal_id,
                iccid=iccid,
                plan_code=plan_code,
                valid_from=valid_from,
                valid_until=valid_until,
            )
        elif row.ended:
            return
        row.plan_code = plan_code
        row.valid_from, row.valid_until = valid_from, valid_until
        row.due_at = now if row.depleted else self.first_due(valid_until, now)
        row.updated_at = now
        await PLAN_WATCHES.save(session, row)
        _note_if_due(session, row, now)

    def first_due(self, valid_until: datetime, now: datetime) -> datetime:
        """When something may first be owed for a plan ending at `valid_until`: its longest lead.

        `decide` owes nothing (no reminder, no auto-renewal, nothing recorded) for a plan that
        is not used up while more than every lead is left, and its next look is at one of the
        leads: the longest of the reminder and auto-renew leads is never later than that.
        """
        horizon = max(*self.rules.reminder_leads_s, self.rules.auto_renew_lead_s)
        first = as_utc(valid_until) - timedelta(seconds=horizon)
        return now if first <= now else first

    async def _mark(
        self, session: Target, renewal_id: str, iccid: str, *, depleted: bool
    ) -> PlanWatch:
        row = await _watch_row(session, renewal_id)
        now = self.clock()
        if row is None:
            # Ahead of the plan's activation (topics are not ordered among each other): the
            # row keeps the fact, and the activation fills in the plan's terms.
            row = PLAN_WATCHES.new(
                id=renewal_id, iccid=iccid, plan_code="", valid_from=_UNKNOWN, valid_until=_UNKNOWN
            )
        if row.ended:
            return row
        if depleted:
            row.depleted = True
            row.due_at = now if as_utc(row.valid_until) > _UNKNOWN else None  # renewed at once
        else:
            row.ended, row.due_at = True, None
        row.updated_at = now
        await PLAN_WATCHES.save(session, row)
        _note_if_due(session, row, now)
        return row

    async def rearm(
        self, session: Target, iccid: str, *, starting_before: datetime | None = None
    ) -> None:
        """Look at a card's live and queued plans again now (auto-renew was turned on, a
        later plan went away).

        `starting_before`: only the plans that start before it, those a plan starting then
        was a later plan of (`work` passes a plan over only for a later one).
        """
        now = self.clock()
        if starting_before is None:
            await run(session, _REARM, {"card": iccid, "now": now})
        else:
            keys = {"card": iccid, "now": now, "before": starting_before}
            await run(session, _REARM_BEFORE, keys)
        # Rows this transaction read before are read again if needed: their due time moved.
        await PLAN_WATCHES.forget(session)
        made_due(session, PlanWatch)

    async def on_plan_dated(
        self, session: Target, event: CloudEvent[ProfileActivated] | CloudEvent[BundleStarted]
    ) -> None:
        """A plan went live or was queued (ProfileActivated), or a queued one started with the
        dates it really runs (BundleStarted): watch it with those dates. The plan before it is
        no longer the card's last."""
        data = event.data
        await self.watch(
            session,
            str(data.renewal_id),
            data.iccid,
            data.plan_code,
            data.valid_from,
            data.valid_until,
        )

    async def on_bundle_ended(self, session: Target, event: CloudEvent[BundleEnded]) -> None:
        """A plan ran out: of data, it is auto-renewed at once; of time, nothing more is owed."""
        data = event.data
        await self._mark(
            session, str(data.renewal_id), data.iccid, depleted=data.reason == "depleted"
        )

    async def on_usage_updated(self, session: Target, event: CloudEvent[UsageUpdated]) -> None:
        """A measurement that says the plan's data is used up."""
        data = event.data
        used_up = data.bundle_status == "depleted" or (
            data.data_total_mb > 0 and data.data_used_mb >= data.data_total_mb
        )
        if data.renewal_id is not None and used_up:
            await self._mark(session, str(data.renewal_id), data.iccid, depleted=True)

    async def on_data_low(self, session: Target, event: CloudEvent[DataLow]) -> None:
        """DataLow at 100 %: the plan's data is used up."""
        data = event.data
        if data.renewal_id is not None and data.threshold == 100:
            await self._mark(session, str(data.renewal_id), data.iccid, depleted=True)

    async def on_bundle_cancelled(
        self, session: Target, event: CloudEvent[BundleCancelled]
    ) -> None:
        """A plan will not run: nothing is owed for it, and the plan before it may be last again."""
        data = event.data
        row = await self._mark(session, str(data.renewal_id), data.iccid, depleted=False)
        # Only the plans that start before this one may have been passed over for it.
        await self.rearm(session, data.iccid, starting_before=as_utc(row.valid_from))

    async def turn_off_after_decline(
        self, session: AsyncSession, saga: Renewal, reason: str
    ) -> None:
        """An auto-renewal's saved payment failed for good: auto-renew is turned off.

        The saga's decision asks for it (`Command.DISABLE_AUTO_RENEW`) before it forgets the
        payment token: only while the card still has the payment that failed saved (the user
        may have changed it since).
        """
        card = await session.get(Card, saga.iccid, with_for_update=True)
        if card is None or not card.auto_renew or card.auto_renew_token != saga.payment_token:
            return
        self._turn_off(session, card, reason, renewal_id=saga.renewal_id, plan_code=saga.plan_code)

    def _turn_off(
        self,
        session: AsyncSession,
        card: Card,
        reason: Any,
        *,
        renewal_id: str,
        plan_code: str | None,
    ) -> None:
        assert card.user_id is not None
        disable_auto_renew(card)
        session.add(card)
        self.outbox.add(
            session,
            AutoRenewDisabled(
                iccid=card.iccid,
                user_id=card.user_id,
                reason=reason,
                renewal_id=UUID(renewal_id),
                plan_code=plan_code,
                disabled_at=self.clock(),
            ),
            event_id=derived_id(f"auto-renew-disabled:{reason}", renewal_id),
        )
        logger.info("auto-renew of card %s turned off: %s", card.iccid, reason)

    async def work(self, key: str) -> None:
        """Look at one due plan: send the reminder and request the auto-renewal it is owed."""
        async with self.database.session() as session:
            iccid = (
                await session.exec(select(PlanWatch.iccid).where(col(PlanWatch.id) == key))
            ).first()
            if iccid is None:
                return
            # The card before its plan's row, in the order the consumer's handlers lock them
            # (card, then plan), so a round and a handler never wait on each other in a circle.
            card = await session.get(Card, iccid, with_for_update=True)
            row = await session.get(PlanWatch, key, with_for_update=True)
            now = self.clock()
            if row is None or row.due_at is None or as_utc(row.due_at) > now:
                return  # done or moved meanwhile; its lease runs out by itself
            later = (
                await session.exec(
                    select(PlanWatch.id).where(
                        col(PlanWatch.iccid) == row.iccid,
                        col(PlanWatch.id) != row.id,
                        col(PlanWatch.ended).is_(False),
                        col(PlanWatch.valid_from) > row.valid_from,
                    )
                )
            ).first()
            auto_renew = card is not None and card.auto_renew and card.user_id is not None
            plan = WatchedPlan(
                valid_until=as_utc(row.valid_until),
                reminded_lead_s=row.reminded_lead_s,
                auto_renewed=row.auto_renewal_id is not None,
                depleted=row.depleted,
                ended=row.ended,
            )
            decision = decide(
                plan, now, self.rules, auto_renew=auto_renew, later_plan=later is not None
            )
            if card is not None and card.user_id is not None:
                if decision.renew:
                    await self._renew(session, row, card, now)
                if decision.remind_lead_s is not None:
                    self._remind(session, row, card, decision.remind_lead_s, now)
            row.reminded_lead_s = decision.reminded_lead_s
            row.due_at = decision.next_due
            row.lease_until = None
            row.updated_at = now
            session.add(row)
            _note_if_due(session, row, now)

    def _remind(
        self, session: AsyncSession, row: PlanWatch, card: Card, lead_s: int, now: datetime
    ) -> None:
        assert card.user_id is not None
        valid_until = as_utc(row.valid_until)
        self.outbox.add(
            session,
            PlanExpiring(
                iccid=row.iccid,
                user_id=card.user_id,
                plan_code=row.plan_code,
                valid_until=valid_until,
                days_left=days_left(valid_until, now),
                renewal_id=UUID(row.id),
                auto_renew=card.auto_renew,
            ),
            event_id=derived_id(f"plan-expiring:{lead_s}", row.id),
        )
        logger.info(
            "card %s: plan %s ends %s; reminded", row.iccid, row.id, valid_until.isoformat()
        )

    async def _renew(
        self, session: AsyncSession, row: PlanWatch, card: Card, now: datetime
    ) -> None:
        assert card.user_id is not None
        if (
            card.auto_renew_plan_code is None
            or card.auto_renew_method is None
            or card.auto_renew_token is None
        ):
            return
        renewal_id = auto_renewal_id(row.id)
        if card.auto_renew_cap_amount is not None and card.auto_renew_cap_currency is not None:
            price = await self._price(
                session, card.auto_renew_plan_code, card.auto_renew_cap_currency
            )
            spent = await self.spent_this_month(
                session, card.iccid, card.auto_renew_cap_currency, now
            )
            if price is None or spent + price > card.auto_renew_cap_amount:
                self._turn_off(
                    session,
                    card,
                    "monthly_cap",
                    renewal_id=str(renewal_id),
                    plan_code=card.auto_renew_plan_code,
                )
                return
        user = await session.get(User, card.user_id)
        request = RenewalRequested(
            renewal_id=renewal_id,
            user_id=card.user_id,
            iccid=card.iccid,
            plan_code=card.auto_renew_plan_code,
            payment=PaymentDetails(
                method=card.auto_renew_method,
                token=card.auto_renew_token,
                return_url=card.auto_renew_return_url,
            ),
            start="after_current",
            requested_at=now,
            locale=user.locale if user is not None else None,
            channel=AUTO_RENEW_CHANNEL,
        )
        if await SAGAS.get(session, str(renewal_id)) is None:
            # The saga exists from now on, as for a request over HTTP: it shows in the card's
            # renewals and counts against the monthly cap before accounts consumes the request.
            saga = saga_from_request(request)
            record_step(session, saga, "requested", detail=f"auto-renewal after plan {row.id}")
            await SAGAS.save(session, saga)
            self.outbox.add(session, request, event_id=derived_id("auto-renewal-requested", row.id))
        row.auto_renewal_id = str(renewal_id)
        logger.info(
            "card %s: auto-renewal %s requested after plan %s", card.iccid, renewal_id, row.id
        )

    @staticmethod
    async def _price(session: AsyncSession, plan_code: str, currency: str) -> int | None:
        plan = await session.get(Plan, plan_code)
        if plan is None:
            return None
        amount = plan.prices.get(currency)
        return amount if isinstance(amount, int) else None

    async def spent_this_month(
        self, session: AsyncSession, iccid: str, currency: str, now: datetime
    ) -> int:
        """What the card's auto-renewals of this calendar month (UTC) cost, in `currency`."""
        rows = (
            await session.exec(
                select(Renewal.plan_code, Renewal.price_amount, Renewal.currency).where(
                    col(Renewal.iccid) == iccid,
                    col(Renewal.channel) == AUTO_RENEW_CHANNEL,
                    col(Renewal.created_at) >= month_start(now),
                    col(Renewal.status).not_in(list(_NOT_SPENT)),
                )
            )
        ).all()
        spent = 0
        for plan_code, amount, paid_in in rows:
            if amount is not None and paid_in == currency:
                spent += amount
            else:
                spent += await self._price(session, plan_code, currency) or 0
        return spent


def chain(
    *handlers: Callable[[Target, Any], Awaitable[None]],
) -> Callable[[Target, Any], Awaitable[None]]:
    """One consumer handler that runs several, in order, in the same transaction."""

    async def handle(session: Target, event: Any) -> None:
        for handler in handlers:
            await handler(session, event)

    return handle
