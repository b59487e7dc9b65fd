"""The renewal saga: loads a renewal, decides what an event or action does, and applies it."""

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from uuid import UUID, uuid4

from esim_core import ids
from esim_core.clock import as_utc, utcnow
from esim_core.messaging.consumer import PermanentEventError
from esim_core.messaging.outbox import Outbox
from esim_core.observability.logs import ids_bound
from esim_core.persistence.db import add_row
from esim_core.persistence.driver import Statement, Target, fetch, orm_session
from esim_schemas import (
    ActivationFailed,
    BundleCancelled,
    BundleCancelRequested,
    BundleEnded,
    BundleStarted,
    CloudEvent,
    EventData,
    Money,
    PaymentActionRequired,
    PaymentAuthorized,
    PaymentDetails,
    PaymentFailed,
    PaymentRefunded,
    PaymentRequested,
    PaymentSettled,
    PlanRef,
    ProfileActivated,
    RefundRequested,
    RenewalRejected,
    RenewalRequested,
    format_time,
)
from sqlalchemy import bindparam, select
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from accounts.cards import plans as cardplans
from accounts.cards.plans import record_activation
from accounts.catalogue.promotions import apply_promotion, release_if_uncaptured
from accounts.domain import (
    AUTO_RENEW_CHANNEL,
    BUYER_APPROVES,
    COMPENSATED,
    HARD_FAILURES,
    TERMINAL,
    Deadlines,
    NotCancellableError,
    RenewalInvalidError,
    SagaStatus,
    check_cancellable,
    currency_for,
    payment_refusal,
    price_for,
    request_fingerprint,
)
from accounts.renewals.transitions import Command, Decision, Facts, Input, Write, decide
from accounts.store import SAGAS, Card, CardPlan, Plan, Renewal, RenewalStep, User

logger = logging.getLogger(__name__)

_EVENTS = ids.namespace("accounts/events")


def derived_id(kind: str, cause: str) -> str:
    """A stable event id for what `cause` led to, so a redo publishes the same event."""
    return ids.derived_id(_EVENTS, f"{kind}:{cause}")


def record_step(
    session: Target,
    saga: Renewal,
    step: str,
    *,
    event_id: str = "",
    detail: str | None = None,
) -> None:
    """Add a step to the saga's timeline and touch its update time (and log it).

    The step is inserted at commit; the saga row is written by whoever holds it (`SAGAS.save`,
    or the flush of the ORM session it was read in).
    """
    with ids_bound(renewal_id=saga.renewal_id, iccid=saga.iccid):
        logger.info(
            "renewal %s: %s, now %s%s",
            saga.renewal_id,
            step,
            saga.status,
            f" ({detail})" if detail else "",
        )
    now = utcnow()
    saga.updated_at = now
    add_row(
        session,
        RenewalStep,
        {
            "renewal_id": saga.renewal_id,
            "step": step,
            "status": saga.status,
            "event_id": event_id,
            "detail": detail,
            "at": now,
        },
    )


def saga_from_request(data: RenewalRequested) -> Renewal:
    """A new saga in REQUESTED for a renewal request (not stored yet: `SAGAS.save` does)."""
    return SAGAS.new(
        renewal_id=str(data.renewal_id),
        fingerprint=fingerprint_of(data),
        user_id=data.user_id,
        iccid=data.iccid,
        plan_code=data.plan_code,
        payment_method=data.payment.method,
        payment_token=data.payment.token,
        payment_return_url=data.payment.return_url,
        start=data.start,
        locale=data.locale,
        channel=data.channel,
        promo_code=data.promo_code,
        status=SagaStatus.REQUESTED,
    )


def fingerprint_of(data: RenewalRequested) -> str:
    """The request fingerprint of a RenewalRequested."""
    return request_fingerprint(
        user_id=data.user_id,
        iccid=data.iccid,
        plan_code=data.plan_code,
        method=data.payment.method,
        token=data.payment.token,
        start=data.start,
        promo_code=data.promo_code,
        return_url=data.payment.return_url,
    )


# The card, the plan and the owner's locale of a request, in one statement built once (building
# a joined select costs more than running it on SQLite).
_CARD_PLAN_OWNER = Statement(
    select(
        col(Card.user_id),
        col(Plan.code),
        col(Plan.available),
        col(Plan.prices),
        col(Plan.data_mb),
        col(Plan.validity_days),
        col(User.locale),
    )
    .select_from(Card)
    .outerjoin(Plan, col(Plan.code) == bindparam("plan"))
    .outerjoin(User, col(User.id) == col(Card.user_id))
    .where(col(Card.iccid) == bindparam("iccid"))
)


_CARD_KNOWN = Statement(select(col(Card.iccid)).where(col(Card.iccid) == bindparam("iccid")))


@dataclass(frozen=True)
class Cause:
    """What a saga decides on: the event or action's id, its time, and what it says."""

    now: datetime
    event_id: str = ""
    detail: str | None = None
    reason: str | None = None
    refund_reason: str | None = None
    request: RenewalRequested | None = None
    activation: ProfileActivated | None = None
    action: PaymentActionRequired | None = None


def facts_of(saga: Renewal | None, now: datetime) -> Facts:
    """What a decision needs to know of a saga row (None: no saga yet)."""
    if saga is None:
        return Facts(status=None)
    deadline = as_utc(saga.deadline_at) if saga.deadline_at is not None else None
    status = SagaStatus(saga.status)
    return Facts(
        status=status,
        captured=saga.payment_id is not None and not saga.payment_held,
        held=saga.payment_id is not None and saga.payment_held,
        refund_requested=saga.refund_requested,
        activation_failed=saga.activation_failure is not None,
        bundle=saga.bundle_state,
        compensated=saga.reason == COMPENSATED,
        # A payment without a token (the buyer approves at the provider) can be sent again
        # while the saga is open, as one with a token can until the saga forgets it.
        token=saga.payment_token is not None
        or (saga.payment_method in BUYER_APPROVES and status not in TERMINAL),
        auto_renewal=saga.channel == AUTO_RENEW_CHANNEL,
        overdue=deadline is not None and deadline <= now,
    )


AutoRenewSwitch = Callable[[AsyncSession, Renewal, str], Awaitable[None]]

# Carried out after the saga row is written: it looks at how the saga ended.
_AFTER_WRITES = frozenset({Command.RELEASE_PROMOTION, Command.PRICE})


class RenewalSaga:
    """The saga's event handlers; each runs inside the consumer's transaction.

    Each loads the saga, decides what the input does (`accounts.renewals.transitions`), and
    applies the decision (`_apply`, the only place a saga's status is written). `clock` tells
    the time that deadlines are set and swept by (tests move it on); `turn_off_auto_renew`
    carries out an auto-renewal's hard decline (without it, auto-renew is left as it is).
    """

    def __init__(
        self,
        outbox: Outbox,
        deadlines: Deadlines | None = None,
        *,
        clock: Callable[[], datetime] = utcnow,
        turn_off_auto_renew: AutoRenewSwitch | None = None,
    ) -> None:
        self.outbox = outbox
        self.deadlines = deadlines or Deadlines()
        self.clock = clock
        self.turn_off_auto_renew = turn_off_auto_renew

    async def on_renewal_requested(
        self, session: Target, event: CloudEvent[RenewalRequested]
    ) -> None:
        """Validate and price a request, then ask billing to charge it (or reject it)."""
        data = event.data
        if data.promo_code is not None:
            # Its redemption needs the ORM: on the driver, say so before any step is logged.
            orm_session(session, "a promotion to redeem")
        # Row locks (PostgreSQL; SQLite serializes writers anyway) keep a concurrent handler or
        # the deadline sweep from overwriting this transaction's change to the same saga.
        found = await SAGAS.get(session, str(data.renewal_id), lock=True)
        cause = Cause(now=self.clock(), event_id=event.id, request=data)
        if found is None:
            await self._move(
                session, saga_from_request(data), Input.RENEWAL_REQUESTED, cause, new=True
            )
        elif found.fingerprint != fingerprint_of(data):
            await self._move(session, found, Input.RENEWAL_CONFLICTS, cause)
        else:
            await self._move(session, found, Input.RENEWAL_REQUESTED, cause)

    async def _price(self, session: Target, saga: Renewal, cause: Cause) -> None:
        assert cause.request is not None
        try:
            await self._validate_and_price(session, saga, cause.request)
        except RenewalInvalidError as invalid:
            rejected = replace(cause, reason=invalid.reason, detail=invalid.detail)
            await self._follow(session, saga, Input.RENEWAL_INVALID, rejected)
            return
        priced = replace(cause, detail=f"{saga.price_amount} {saga.currency}")
        await self._follow(session, saga, Input.RENEWAL_PRICED, priced)

    async def _validate_and_price(
        self, session: Target, saga: Renewal, data: RenewalRequested
    ) -> None:
        # One Core query for the card, the plan and the owner's locale: no ORM objects, since
        # none of them is changed here.
        refusal = payment_refusal(
            data.payment.method,
            data.payment.token,
            buyer_present=data.channel != AUTO_RENEW_CHANNEL,
        )
        if refusal is not None:
            raise RenewalInvalidError("invalid_request", refusal)
        keys = {"iccid": data.iccid, "plan": data.plan_code}
        found = await fetch(session, _CARD_PLAN_OWNER, keys)
        if not found:
            raise RenewalInvalidError("unknown_card", f"card {data.iccid} is not known")
        owner, plan_code, available, prices, data_mb, validity_days, user_locale = found[0]
        if owner != data.user_id:
            raise RenewalInvalidError(
                "card_not_owned", f"card {data.iccid} is not bound to user {data.user_id}"
            )
        if plan_code is None:
            raise RenewalInvalidError("unknown_plan", f"plan {data.plan_code!r} does not exist")
        if not available:
            raise RenewalInvalidError(
                "plan_not_available", f"plan {data.plan_code!r} is no longer sold"
            )
        locale: str | None = data.locale if data.locale is not None else user_locale
        saga.currency = currency_for(locale)
        saga.price_amount = price_for(prices, saga.currency)
        saga.data_mb = data_mb
        saga.validity_days = validity_days
        if data.promo_code is not None:
            redeeming = orm_session(session, "a promotion to redeem")
            await apply_promotion(redeeming, saga, data.promo_code, self.clock())

    async def on_payment_action_required(
        self, session: Target, event: CloudEvent[PaymentActionRequired]
    ) -> None:
        """The provider needs the buyer: the saga waits, keeping the action until its expiry.

        `GET /v1/renewals/{renewal_id}` shows the action (`payment_action`) while the saga
        waits; the deadline is the action's expiry plus a grace, for billing's answer.
        """
        data = event.data
        saga = await self._saga(session, data.renewal_id)
        detail = f"{data.method}: the buyer approves by {format_time(data.expires_at)}"
        cause = Cause(now=self.clock(), event_id=event.id, detail=detail, action=data)
        await self._move(session, saga, Input.PAYMENT_ACTION_REQUIRED, cause)

    async def on_payment_authorized(
        self, session: Target, event: CloudEvent[PaymentAuthorized]
    ) -> None:
        """Record the hold; release it at once if activation already failed.

        Billing captures it once it sees ProfileActivated (then PaymentSettled, which may come
        after the saga ended ACTIVATED); a capture seen first is not made a hold again.
        """
        data = event.data
        saga = await self._saga(session, data.renewal_id)
        if saga.payment_id is None or saga.payment_held:
            # Recorded whatever the saga does with it: releasing the hold needs it.
            saga.payment_id = data.payment_id
            saga.payment_held = True
            saga.price_amount = data.price.amount
            saga.currency = data.price.currency
        detail = (
            f"{data.price.amount} {data.price.currency} held at "
            f"{format_time(data.authorized_at)}, to capture by {format_time(data.capture_before)}"
        )
        cause = Cause(now=self.clock(), event_id=event.id, detail=detail)
        await self._move(session, saga, Input.PAYMENT_AUTHORIZED, cause)

    async def on_payment_settled(self, session: Target, event: CloudEvent[PaymentSettled]) -> None:
        """Record the capture; refund at once if activation already failed.

        A capture after the payment deadline is not refunded here: provisioning applies the
        bundle of every capture, and its answer decides (ProfileActivated: the plan stays;
        ActivationFailed, only once the bundle is sure not to run: the refund). The capture of
        a hold (billing captures after ProfileActivated) is a timeline step and moves an
        AUTHORIZED saga to PAID; it never ends a saga again.
        """
        data = event.data
        saga = await self._saga(session, data.renewal_id)
        given, taken = Input.PAYMENT_SETTLED, "paid"
        if saga.payment_held:
            given, taken = Input.PAYMENT_CAPTURED, "captured"
        # What was taken and when, in the timeline, whether captured after a hold or paid at once.
        detail = (
            f"{data.price.amount} {data.price.currency} {taken} at {format_time(data.settled_at)}"
        )
        # The capture is recorded whatever the saga does with it: a refund needs it.
        saga.payment_id = data.payment_id
        saga.payment_held = False
        saga.price_amount = data.price.amount
        saga.currency = data.price.currency
        await self._move(
            session, saga, given, Cause(now=self.clock(), event_id=event.id, detail=detail)
        )

    async def on_payment_failed(self, session: Target, event: CloudEvent[PaymentFailed]) -> None:
        """The charge failed for good: the saga ends in PAYMENT_FAILED."""
        data = event.data
        saga = await self._saga(session, data.renewal_id)
        given = Input.PAYMENT_DECLINED if data.reason in HARD_FAILURES else Input.PAYMENT_FAILED
        cause = Cause(now=self.clock(), event_id=event.id, reason=data.reason, detail=data.reason)
        await self._move(session, saga, given, cause)

    async def on_profile_activated(
        self, session: Target, event: CloudEvent[ProfileActivated]
    ) -> None:
        """The plan is live or queued: the saga ends in ACTIVATED and the card moves on.

        Also after a deadline passed, as long as no refund was asked for: provisioning only
        answers ProfileActivated for a bundle that runs (it cancels one that is not live by its
        own deadline), so the traveller keeps the plan they paid for.
        """
        data = event.data
        saga = await self._saga(session, data.renewal_id)
        saga.valid_from = data.valid_from
        saga.valid_until = data.valid_until
        saga.bundle_state = data.bundle_state
        cause = Cause(
            now=self.clock(), event_id=event.id, detail=data.bundle_state, activation=data
        )
        await self._move(session, saga, Input.PROFILE_ACTIVATED, cause)

    async def _move_card(self, session: Target, saga: Renewal, data: ProfileActivated) -> None:
        # A saga priced on this card found it then, and cards are never deleted: no read. (A
        # saga rejected as `unknown_card` was never priced.)
        unpriced = saga.data_mb is None or saga.iccid != data.iccid
        if unpriced and not await fetch(session, _CARD_KNOWN, {"iccid": data.iccid}):
            raise PermanentEventError(f"card {data.iccid} of renewal {saga.renewal_id} is unknown")
        await record_activation(session, data)

    async def on_activation_failed(
        self, session: Target, event: CloudEvent[ActivationFailed]
    ) -> None:
        """The bundle could not be applied: give the money back (once it is known to be taken)."""
        data = event.data
        saga = await self._saga(session, data.renewal_id)
        cause = Cause(
            now=self.clock(), event_id=event.id, reason=data.reason, detail=data.reason[:512]
        )
        await self._move(session, saga, Input.ACTIVATION_FAILED, cause)

    async def on_payment_refunded(
        self, session: Target, event: CloudEvent[PaymentRefunded]
    ) -> None:
        """The refund (or a hold's release, `via` `void`) went through: the saga ends in
        CANCELLED (cancelled by its owner), else REFUNDED.

        Billing refunds only what a RefundRequested asked for: a refund this saga never asked
        for is refused (dead-lettered), so it cannot end a saga without a capture, nor cancel
        a plan whose cancellation provisioning has not confirmed.
        """
        saga = await self._saga(session, event.data.renewal_id)
        cause = Cause(now=self.clock(), event_id=event.id)
        # A void released a hold: nothing was taken (the timeline says so).
        given = Input.PAYMENT_VOIDED if event.data.via == "void" else Input.PAYMENT_REFUNDED
        await self._move(session, saga, given, cause)

    async def request_cancel(self, session: AsyncSession, saga: Renewal, now: datetime) -> None:
        """The owner cancels a queued plan that has not started: ask provisioning to cancel it.

        The saga is CANCELLING until provisioning answers: BundleCancelled (then the payment is
        refunded in full and the saga ends CANCELLED), or the plan's start (BundleStarted or
        BundleEnded: the plan stays and the saga is ACTIVATED again). The caller holds the
        saga's row lock, so two cancels of one renewal take turns and the second is refused.

        Raises:
            NotCancellableError: the renewal is not a queued plan that has not started.
        """
        plan = await session.get(CardPlan, saga.renewal_id)
        plan_state = (
            cardplans.state_at(plan, now)
            if plan is not None and plan.valid_from is not None and plan.valid_until is not None
            else None
        )
        valid_from = as_utc(saga.valid_from) if saga.valid_from is not None else None
        check_cancellable(
            saga.status,
            saga.bundle_state,
            plan_state,
            valid_from,
            now,
            captured=saga.payment_id is not None and not saga.payment_held,
        )
        cause = Cause(now=now, event_id=f"api:{uuid4()}")
        await self._move(session, saga, Input.CANCEL, cause, NotCancellableError)

    async def on_bundle_cancelled(
        self, session: Target, event: CloudEvent[BundleCancelled]
    ) -> None:
        """A plan will not run (further): off the card; a cancelled one is refunded in full."""
        data = event.data
        await cardplans.record_cancellation(session, data)
        saga = await SAGAS.get(session, str(data.renewal_id), lock=True)
        if saga is None:
            logger.warning(
                "BundleCancelled %s for renewal %s unknown here", event.id, data.renewal_id
            )
            return
        given = Input.BUNDLE_REPLACED if data.reason == "replaced" else Input.BUNDLE_CANCELLED
        cause = Cause(now=self.clock(), event_id=event.id, detail=data.reason)
        await self._move(session, saga, given, cause)

    async def on_bundle_started(self, session: Target, event: CloudEvent[BundleStarted]) -> None:
        """A queued plan went live: the card moves on, and a cancel in flight came too late."""
        await cardplans.on_bundle_started(session, event)
        await self._plan_ran(session, event.data.renewal_id, Input.BUNDLE_STARTED, event.id)

    async def on_bundle_ended(self, session: Target, event: CloudEvent[BundleEnded]) -> None:
        """A plan ended: it stays in the history, and a cancel in flight came too late."""
        await cardplans.on_bundle_ended(session, event)
        await self._plan_ran(session, event.data.renewal_id, Input.BUNDLE_ENDED, event.id)

    async def _plan_ran(
        self, session: Target, renewal_id: UUID, given: Input, event_id: str
    ) -> None:
        saga = await SAGAS.get(session, str(renewal_id), lock=True)
        if saga is not None:
            await self._move(session, saga, given, Cause(now=self.clock(), event_id=event_id))

    async def expire(self, session: Target, saga: Renewal, now: datetime) -> bool:
        """Move on a saga whose deadline passed; returns whether it did.

        Waiting for a payment or an activation outcome ends in TIMED_OUT. Nothing is refunded
        here: a capture is always followed by provisioning's answer, ActivationFailed (then
        the refund) or ProfileActivated (the plan stays, the saga is ACTIVATED after all), and
        provisioning cancels a bundle that is not live by its own (earlier) deadline. A saga
        that waits on that answer too long shows as stuck.
        """
        before = saga.status
        await self._move(session, saga, Input.DEADLINE, Cause(now=now))
        return saga.status != before

    async def retry(self, session: Target, saga: Renewal, *, refund_reason: str) -> str:
        """Send again the command a saga waits on; returns what was sent (an operator action).

        The command goes out with the id it had (or, for the request itself, one derived from
        it), so a consumer that already handled it drops it, and a second retry changes nothing
        more than the first. A saga waiting for a payment outcome gets its deadline back.

        Raises:
            SagaActionRefusedError: the saga waits on nothing that accounts sends.
        """
        cause = Cause(now=self.clock(), event_id=_operator_mark(), refund_reason=refund_reason)
        return await self._move(session, saga, Input.RETRY, cause, SagaActionRefusedError)

    async def compensate(self, session: Target, saga: Renewal, why: str) -> str:
        """Give up a stuck saga: TIMED_OUT, and the payment refunded once it is known.

        Compensating twice does nothing the second time: a saga already compensating is left
        as it is (use `retry` to send its refund request again).

        Raises:
            SagaActionRefusedError: the saga has ended already.
        """
        cause = Cause(
            now=self.clock(),
            event_id=_operator_mark(),
            detail=why[:512],
            refund_reason=f"compensated by an operator: {why}"[:256],
        )
        return await self._move(session, saga, Input.COMPENSATE, cause, SagaActionRefusedError)

    async def _move(
        self,
        session: Target,
        saga: Renewal,
        given: Input,
        cause: Cause,
        refusal: Callable[[str], Exception] = PermanentEventError,
        *,
        new: bool = False,
    ) -> str:
        """Decide what `given` does to the saga (`new`: a row just made for it), apply it, and
        save the saga.

        Returns what an action answers.

        Raises:
            Exception: `refusal`, with why, when the table refuses the input.
        """
        decision = decide(facts_of(None if new else saga, cause.now), given)
        said = {"renewal_id": saga.renewal_id, "status": saga.status, "event_id": cause.event_id}
        if decision.refused is not None:
            raise refusal(decision.refused.format(**said))
        sent = await self._apply(session, saga, decision, cause)
        await SAGAS.save(session, saga)
        answer = decision.answer or ""
        return answer.format(**(said | {"status": saga.status, "event_id": sent}))

    async def _follow(self, session: Target, saga: Renewal, given: Input, cause: Cause) -> None:
        """Decide and apply what follows a move at once (a price known, a refund owed); the
        move's caller saves the saga.

        Raises:
            PermanentEventError: the table refuses the input.
        """
        decision = decide(facts_of(saga, cause.now), given)
        if decision.refused is not None:
            raise PermanentEventError(
                decision.refused.format(
                    renewal_id=saga.renewal_id, status=saga.status, event_id=cause.event_id
                )
            )
        await self._apply(session, saga, decision, cause)

    async def _apply(self, session: Target, saga: Renewal, decision: Decision, cause: Cause) -> str:
        """Carry a decision out; returns the id of the message it sent, if one.

        In this order: the commands to others (auto-renew goes off while the saga still holds
        its token), the saga row's writes, the promotion's release (it looks at how the saga
        ended), the timeline step, then what follows at once.
        """
        sent = ""
        for command in decision.sends:
            if command not in _AFTER_WRITES:
                sent = await self._carry_out(session, saga, command, cause) or sent
        if decision.to is not None:
            saga.status = decision.to
        if decision.reason is not None:
            saga.reason = decision.reason
        for write in decision.writes:
            self._write(saga, write, cause)
        if Command.RELEASE_PROMOTION in decision.sends:
            await release_if_uncaptured(session, saga, cause.now)
        if decision.step is not None:
            detail = decision.detail if decision.detail is not None else cause.detail
            record_step(session, saga, decision.step, event_id=cause.event_id, detail=detail)
        if Command.PRICE in decision.sends:
            await self._price(session, saga, cause)
        elif decision.then is Input.REFUND_OWED:
            reason = cause.refund_reason
            if decision.refund_reason is not None:
                reason = decision.refund_reason.format(activation_failure=saga.activation_failure)
            # The refund is the saga's own step, one per renewal: its timeline entry names no event.
            owed = replace(cause, event_id="", detail=reason, refund_reason=reason)
            await self._follow(session, saga, Input.REFUND_OWED, owed)
        elif decision.then is not None:
            await self._follow(session, saga, decision.then, cause)
        return sent

    def _write(self, saga: Renewal, write: Write, cause: Cause) -> None:
        match write:
            case Write.PAYMENT_DEADLINE:
                saga.deadline_at = cause.now + timedelta(seconds=self.deadlines.payment_s)
            case Write.ACTION:
                assert cause.action is not None
                saga.action_url = cause.action.action.url
                saga.action_expires_at = cause.action.expires_at
                grace = timedelta(seconds=self.deadlines.action_grace_s)
                saga.deadline_at = cause.action.expires_at + grace
            case Write.ACTIVATION_DEADLINE:
                saga.deadline_at = cause.now + timedelta(seconds=self.deadlines.activation_s)
            case Write.NO_DEADLINE:
                saga.deadline_at = None
            case Write.FORGET_TOKEN:
                saga.payment_token = None
            case Write.REASON:
                saga.reason = cause.reason
            case Write.REASON_AND_DETAIL:
                saga.reason = cause.reason
                saga.detail = cause.detail
            case Write.NO_REASON:
                saga.reason = None
            case Write.REMEMBER_FAILURE:
                if saga.activation_failure is None:
                    saga.activation_failure = (cause.reason or "")[:256]
            case Write.REFUND_ASKED:
                saga.refund_requested = True

    async def _carry_out(
        self, session: Target, saga: Renewal, command: Command, cause: Cause
    ) -> str | None:
        """Carry out a command; returns the id of the message it sent, if one."""
        renewal_id = saga.renewal_id
        message: EventData
        match command:
            case Command.REQUEST_PAYMENT:
                payment = PaymentDetails(
                    method=saga.payment_method,
                    token=saga.payment_token,
                    return_url=saga.payment_return_url,
                )
                message, kind = payment_request_of(saga, payment), "payment-requested"
            case Command.REQUEST_REFUND:
                assert cause.refund_reason is not None
                message, kind = refund_request_of(saga, cause.refund_reason), "refund-requested"
            case Command.REQUEST_BUNDLE_CANCEL:
                message, kind = cancel_request_of(saga, cause.now), "bundle-cancel-requested"
            case Command.RESEND_RENEWAL_REQUEST:
                message = renewal_request_of(saga, saga.payment_token)
                kind = "operator-retry-requested"
            case Command.REJECT_RENEWAL:
                assert cause.request is not None and cause.reason is not None
                assert cause.detail is not None
                message, kind = rejection_of(cause.request, cause.reason, cause.detail), "rejected"
            case Command.REJECT_DUPLICATE:
                assert cause.request is not None
                detail = f"renewal {renewal_id} was already requested with other content"
                message = rejection_of(cause.request, "conflicting_duplicate", detail)
                # A kind of its own: a requester may use the renewal_id as the event id, and
                # then "rejected" would give the id of the saga's own rejection.
                event_id = derived_id("conflict-rejected", cause.event_id)
                self.outbox.add(session, message, event_id=event_id)
                return event_id
            case Command.DISABLE_AUTO_RENEW:
                if self.turn_off_auto_renew is not None:
                    assert cause.reason is not None
                    turning_off = orm_session(session, "auto-renew turned off")
                    await self.turn_off_auto_renew(turning_off, saga, cause.reason)
                return None
            case Command.MOVE_CARD:
                assert cause.activation is not None
                await self._move_card(session, saga, cause.activation)
                return None
            case _:
                raise AssertionError(f"{command} is carried out after the writes")
        event_id = derived_id(kind, renewal_id)
        self.outbox.add(session, message, event_id=event_id)
        return event_id

    async def _saga(self, session: Target, renewal_id: UUID) -> Renewal:
        saga = await SAGAS.get(session, str(renewal_id), lock=True)
        if saga is None:
            raise PermanentEventError(f"renewal {renewal_id} is not known to accounts")
        return saga


def _operator_mark() -> str:
    # Steps are unique by (renewal, step, event id); each operator action is a step of its own.
    return f"operator:{uuid4()}"


class SagaActionRefusedError(Exception):
    """An operator action that does not apply to the saga as it stands."""


def rejection_of(data: RenewalRequested, reason: str, detail: str) -> RenewalRejected:
    """The RenewalRejected answering a renewal request."""
    return RenewalRejected(
        renewal_id=data.renewal_id,
        iccid=data.iccid,
        user_id=data.user_id,
        reason=reason,
        detail=detail,
    )


def renewal_request_of(saga: Renewal, token: str | None) -> RenewalRequested:
    """The RenewalRequested a saga was started by, rebuilt from its row."""
    return RenewalRequested(
        renewal_id=UUID(saga.renewal_id),
        user_id=saga.user_id,
        iccid=saga.iccid,
        plan_code=saga.plan_code,
        payment=PaymentDetails(
            method=saga.payment_method, token=token, return_url=saga.payment_return_url
        ),
        start=saga.start,
        requested_at=as_utc(saga.created_at),
        locale=saga.locale,
        channel=saga.channel,
        promo_code=saga.promo_code,
    )


def payment_request_of(saga: Renewal, payment: PaymentDetails) -> PaymentRequested:
    """The PaymentRequested of a priced saga."""
    assert saga.price_amount is not None and saga.currency is not None
    assert saga.data_mb is not None and saga.validity_days is not None
    return PaymentRequested(
        renewal_id=UUID(saga.renewal_id),
        user_id=saga.user_id,
        iccid=saga.iccid,
        plan=PlanRef(code=saga.plan_code, data_mb=saga.data_mb, validity_days=saga.validity_days),
        price=Money(amount=saga.price_amount, currency=saga.currency),
        payment=payment,
        start=saga.start,
        discount=(
            Money(amount=saga.discount_amount, currency=saga.currency)
            if saga.discount_amount is not None
            else None
        ),
        promo_code=saga.promo_code if saga.discount_amount is not None else None,
    )


def cancel_request_of(saga: Renewal, now: datetime) -> BundleCancelRequested:
    """The BundleCancelRequested of a queued plan its owner cancels."""
    return BundleCancelRequested(
        renewal_id=UUID(saga.renewal_id),
        iccid=saga.iccid,
        reason="cancelled_by_user",
        requested_at=now,
    )


def refund_request_of(saga: Renewal, reason: str) -> RefundRequested:
    """The RefundRequested of a saga whose payment is captured or held (billing voids a hold)."""
    assert saga.payment_id is not None
    assert saga.price_amount is not None and saga.currency is not None
    return RefundRequested(
        renewal_id=UUID(saga.renewal_id),
        payment_id=saga.payment_id,
        iccid=saga.iccid,
        price=Money(amount=saga.price_amount, currency=saga.currency),
        reason=reason,
    )
