"""The renewal saga: reacts to each event of a renewal and decides what happens next."""

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from uuid import NAMESPACE_URL, UUID, uuid4, uuid5

from esim_core.consumer import PermanentEventError
from esim_core.db import add_row
from esim_core.logs import ids_bound
from esim_core.outbox import Outbox
from esim_core.worker import as_utc, utcnow
from esim_schemas import (
    ActivationFailed,
    BundleCancelled,
    BundleCancelRequested,
    BundleEnded,
    BundleStarted,
    CloudEvent,
    Money,
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
)
from sqlalchemy import bindparam, select
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from accounts import cardplans
from accounts.cardplans import record_activation
from accounts.domain import (
    AWAITING_PAYMENT,
    CLOSED_TO_ACTIVATION,
    TERMINAL,
    WITH_DEADLINE,
    Deadlines,
    RenewalInvalidError,
    SagaStatus,
    check_cancellable,
    currency_for,
    price_for,
    request_fingerprint,
)
from accounts.promotions import apply_promotion, release_if_uncaptured
from accounts.store import Card, CardPlan, Plan, Renewal, RenewalStep, User

logger = logging.getLogger(__name__)

_IDS = uuid5(NAMESPACE_URL, "https://esim.example/accounts/events")

COMPENSATED = "compensated_by_operator"
"""The reason of a saga an operator gave up (`RenewalSaga.compensate`)."""


def derived_id(kind: str, cause: str) -> str:
    """A stable event id for what `cause` led to, so a redo publishes the same event."""
    return str(uuid5(_IDS, f"{kind}:{cause}"))


def record_step(
    session: AsyncSession,
    saga: Renewal,
    step: str,
    *,
    event_id: str = "",
    detail: str | None = None,
) -> None:
    """Add a step to the saga's timeline and touch its update time (and log it)."""
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
    session.add(saga)
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
    """A new saga in REQUESTED for a renewal request."""
    return Renewal(
        renewal_id=str(data.renewal_id),
        fingerprint=fingerprint_of(data),
        user_id=data.user_id,
        iccid=data.iccid,
        plan_code=data.plan_code,
        payment_method=data.payment.method,
        payment_token=data.payment.token,
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
    )


# The card, the plan and the owner's locale of a request, in one statement built once (building
# a joined select costs more than running it on SQLite).
_CARD_PLAN_OWNER = (
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


class RenewalSaga:
    """The saga's event handlers; each runs inside the consumer's transaction.

    `clock` tells the time that deadlines are set and swept by (tests move it on).
    """

    def __init__(
        self,
        outbox: Outbox,
        deadlines: Deadlines | None = None,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.outbox = outbox
        self.deadlines = deadlines or Deadlines()
        self.clock = clock

    async def on_renewal_requested(
        self, session: AsyncSession, event: CloudEvent[RenewalRequested]
    ) -> None:
        """Validate and price a request, then ask billing to charge it (or reject it)."""
        data = event.data
        renewal_id = str(data.renewal_id)
        # Row locks (PostgreSQL; SQLite serializes writers anyway) keep a concurrent handler or
        # the deadline sweep from overwriting this transaction's change to the same saga.
        saga = await session.get(Renewal, renewal_id, with_for_update=True)
        if saga is None:
            saga = saga_from_request(data)
            record_step(session, saga, "requested", event_id=event.id)
        elif saga.fingerprint != fingerprint_of(data):
            # Same renewal_id, other content: refuse the newcomer, leave the saga alone.
            self.outbox.add(
                session,
                RenewalRejected(
                    renewal_id=data.renewal_id,
                    iccid=data.iccid,
                    user_id=data.user_id,
                    reason="conflicting_duplicate",
                    detail=f"renewal {renewal_id} was already requested with other content",
                ),
                # A kind of its own: a requester may use the renewal_id as the event id, and
                # then "rejected" would give the id of the saga's own rejection.
                event_id=derived_id("conflict-rejected", event.id),
            )
            record_step(session, saga, "conflicting_duplicate_rejected", event_id=event.id)
            return
        elif saga.status != SagaStatus.REQUESTED:
            return
        try:
            await self._validate_and_price(session, saga, data)
        except RenewalInvalidError as invalid:
            saga.status = SagaStatus.REJECTED
            saga.reason = invalid.reason
            saga.detail = invalid.detail
            saga.payment_token = None
            # A code the API redeemed when it took the request goes back with the rejection.
            await release_if_uncaptured(session, saga, self.clock())
            self.outbox.add(
                session,
                RenewalRejected(
                    renewal_id=data.renewal_id,
                    iccid=data.iccid,
                    user_id=data.user_id,
                    reason=invalid.reason,
                    detail=invalid.detail,
                ),
                event_id=derived_id("rejected", renewal_id),
            )
            record_step(session, saga, "rejected", event_id=event.id, detail=invalid.detail)
            return
        assert saga.price_amount is not None and saga.currency is not None
        assert saga.data_mb is not None and saga.validity_days is not None
        saga.status = SagaStatus.PAYMENT_PENDING
        saga.deadline_at = self.clock() + timedelta(seconds=self.deadlines.payment_s)
        self.outbox.add(
            session,
            payment_request_of(saga, data.payment),
            event_id=derived_id("payment-requested", renewal_id),
        )
        record_step(
            session,
            saga,
            "payment_requested",
            event_id=event.id,
            detail=f"{saga.price_amount} {saga.currency}",
        )

    async def _validate_and_price(
        self, session: AsyncSession, saga: Renewal, data: RenewalRequested
    ) -> None:
        # One Core query for the card, the plan and the owner's locale: no ORM objects, since
        # none of them is changed here.
        connection = await session.connection()
        keys = {"iccid": data.iccid, "plan": data.plan_code}
        found = (await connection.execute(_CARD_PLAN_OWNER, keys)).first()
        if found is None:
            raise RenewalInvalidError("unknown_card", f"card {data.iccid} is not known")
        owner, plan_code, available, prices, data_mb, validity_days, user_locale = found
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
            await apply_promotion(session, saga, data.promo_code, self.clock())

    async def on_payment_settled(
        self, session: AsyncSession, event: CloudEvent[PaymentSettled]
    ) -> None:
        """Record the capture; refund at once if activation already failed.

        A capture after the payment deadline is not refunded here: provisioning applies the
        bundle of every capture, and its answer decides (ProfileActivated: the plan stays;
        ActivationFailed, only once the bundle is sure not to run: the refund).
        """
        data = event.data
        saga = await self._saga(session, data.renewal_id)
        saga.payment_id = data.payment_id
        saga.price_amount = data.price.amount
        saga.currency = data.price.currency
        if saga.status in AWAITING_PAYMENT:
            saga.status = SagaStatus.PAID
            saga.deadline_at = self.clock() + timedelta(seconds=self.deadlines.activation_s)
        record_step(session, saga, "payment_settled", event_id=event.id)
        if saga.activation_failure is not None:
            self._request_refund(session, saga, f"activation failed: {saga.activation_failure}")
        elif saga.status == SagaStatus.TIMED_OUT and saga.reason == COMPENSATED:
            # An operator gave this renewal up on purpose: a capture that still comes goes back.
            self._request_refund(session, saga, "payment settled after an operator compensated")

    async def on_payment_failed(
        self, session: AsyncSession, event: CloudEvent[PaymentFailed]
    ) -> None:
        """The charge failed for good: the saga ends in PAYMENT_FAILED."""
        data = event.data
        saga = await self._saga(session, data.renewal_id)
        if saga.status in AWAITING_PAYMENT:
            saga.status = SagaStatus.PAYMENT_FAILED
            saga.reason = data.reason
            saga.payment_token = None
            saga.deadline_at = None
        record_step(session, saga, "payment_failed", event_id=event.id, detail=data.reason)

    async def on_profile_activated(
        self, session: AsyncSession, event: CloudEvent[ProfileActivated]
    ) -> None:
        """The plan is live or queued: the saga ends in ACTIVATED and the card moves on.

        Also after a deadline passed, as long as no refund was asked for: provisioning only
        answers ProfileActivated for a bundle that runs (it cancels one that is not live by its
        own deadline), so the traveller keeps the plan they paid for.
        """
        data = event.data
        saga = await self._saga(session, data.renewal_id)
        late = saga.status == SagaStatus.TIMED_OUT and not saga.refund_requested
        if saga.status not in CLOSED_TO_ACTIVATION or late:
            saga.status = SagaStatus.ACTIVATED
            saga.payment_token = None
            saga.deadline_at = None
            if late:
                saga.reason = None
        saga.valid_from = data.valid_from
        saga.valid_until = data.valid_until
        saga.bundle_state = data.bundle_state
        record_step(session, saga, "profile_activated", event_id=event.id, detail=data.bundle_state)
        if saga.status == SagaStatus.CANCELLED:
            return  # a late repeat must not put a cancelled plan back on the card
        if await session.get(Card, data.iccid) is None:
            raise PermanentEventError(f"card {data.iccid} of renewal {saga.renewal_id} is unknown")
        await record_activation(session, data)

    async def on_activation_failed(
        self, session: AsyncSession, event: CloudEvent[ActivationFailed]
    ) -> None:
        """The bundle could not be applied: give the money back (once it is known to be taken)."""
        data = event.data
        saga = await self._saga(session, data.renewal_id)
        if saga.bundle_state is not None:
            # Provisioning answers once per renewal, and this one's plan was announced by a
            # ProfileActivated: it stands (a cancel in flight decides any refund), so nothing
            # is remembered that a later capture would refund.
            record_step(
                session,
                saga,
                "activation_failed_ignored",
                event_id=event.id,
                detail=data.reason[:512],
            )
            return
        if saga.activation_failure is None:
            saga.activation_failure = data.reason[:256]
        record_step(session, saga, "activation_failed", event_id=event.id, detail=data.reason[:512])
        if saga.payment_id is not None:
            self._request_refund(session, saga, f"activation failed: {saga.activation_failure}")

    async def on_payment_refunded(
        self, session: AsyncSession, event: CloudEvent[PaymentRefunded]
    ) -> None:
        """The refund went through: the saga ends in CANCELLED (cancelled by its owner), else
        REFUNDED.

        Billing refunds only what a RefundRequested asked for: a refund this saga never asked
        for is refused (dead-lettered), so it cannot end a saga without a capture, nor cancel
        a plan whose cancellation provisioning has not confirmed.
        """
        saga = await self._saga(session, event.data.renewal_id)
        if not saga.refund_requested:
            raise PermanentEventError(
                f"PaymentRefunded {event.id} for renewal {saga.renewal_id} ({saga.status}), "
                "which asked for no refund"
            )
        if saga.status == SagaStatus.CANCELLING:
            saga.status = SagaStatus.CANCELLED
            saga.payment_token = None
        elif saga.status not in TERMINAL:
            saga.status = SagaStatus.REFUNDED
            saga.payment_token = None
            saga.deadline_at = None
        record_step(session, saga, "payment_refunded", event_id=event.id)

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
            captured=saga.payment_id is not None,
        )
        saga.status = SagaStatus.CANCELLING
        self.outbox.add(
            session,
            cancel_request_of(saga, now),
            event_id=derived_id("bundle-cancel-requested", saga.renewal_id),
        )
        record_step(session, saga, "cancel_requested", event_id=f"api:{uuid4()}")

    async def on_bundle_cancelled(
        self, session: AsyncSession, event: CloudEvent[BundleCancelled]
    ) -> None:
        """A plan will not run (further): off the card; a cancelled one is refunded in full."""
        data = event.data
        await cardplans.record_cancellation(session, data)
        saga = await session.get(Renewal, str(data.renewal_id), with_for_update=True)
        if saga is None:
            logger.warning(
                "BundleCancelled %s for renewal %s unknown here", event.id, data.renewal_id
            )
            return
        record_step(session, saga, "bundle_cancelled", event_id=event.id, detail=data.reason)
        if saga.status != SagaStatus.CANCELLING:
            return
        if data.reason == "replaced":
            # It ran, and a start=now plan took its place: nothing to give back.
            self._cancel_refused(session, saga, event.id, "the plan was replaced after it started")
            return
        self._request_refund(session, saga, "cancelled by the user before the plan started")

    async def on_bundle_started(
        self, session: AsyncSession, event: CloudEvent[BundleStarted]
    ) -> None:
        """A queued plan went live: the card moves on, and a cancel in flight came too late."""
        await cardplans.on_bundle_started(session, event)
        await self._started_while_cancelling(session, event.data.renewal_id, event.id)

    async def on_bundle_ended(self, session: AsyncSession, event: CloudEvent[BundleEnded]) -> None:
        """A plan ended: it stays in the history, and a cancel in flight came too late."""
        await cardplans.on_bundle_ended(session, event)
        await self._started_while_cancelling(session, event.data.renewal_id, event.id)

    async def _started_while_cancelling(
        self, session: AsyncSession, renewal_id: UUID, event_id: str
    ) -> None:
        saga = await session.get(Renewal, str(renewal_id), with_for_update=True)
        if saga is not None and saga.status == SagaStatus.CANCELLING:
            self._cancel_refused(
                session, saga, event_id, "the plan started before it was cancelled"
            )

    def _cancel_refused(
        self, session: AsyncSession, saga: Renewal, event_id: str, why: str
    ) -> None:
        if saga.refund_requested:
            return  # the cancellation was confirmed first; the refund stands
        saga.status = SagaStatus.ACTIVATED
        record_step(session, saga, "cancel_refused", event_id=event_id, detail=why)

    def _request_refund(self, session: AsyncSession, saga: Renewal, reason: str) -> None:
        if saga.refund_requested or saga.status in TERMINAL:
            return
        assert saga.payment_id is not None
        assert saga.price_amount is not None and saga.currency is not None
        saga.refund_requested = True
        saga.deadline_at = None
        if saga.status not in (SagaStatus.TIMED_OUT, SagaStatus.CANCELLING):
            saga.status = SagaStatus.REFUNDING
        self.outbox.add(
            session,
            refund_request_of(saga, reason),
            event_id=derived_id("refund-requested", saga.renewal_id),
        )
        record_step(session, saga, "refund_requested", detail=reason)

    def expire(self, session: AsyncSession, saga: Renewal, now: datetime) -> bool:
        """Move on a saga whose deadline passed; returns whether it did.

        Waiting for a payment or an activation outcome ends in TIMED_OUT. Nothing is refunded
        here: a capture is always followed by provisioning's answer, ActivationFailed (then
        the refund) or ProfileActivated (the plan stays, the saga is ACTIVATED after all), and
        provisioning cancels a bundle that is not live by its own (earlier) deadline. A saga
        that waits on that answer too long shows as stuck.
        """
        deadline = as_utc(saga.deadline_at) if saga.deadline_at is not None else None
        if saga.status not in WITH_DEADLINE or deadline is None or deadline > now:
            return False
        waited_for = "payment" if saga.status == SagaStatus.PAYMENT_PENDING else "activation"
        saga.status = SagaStatus.TIMED_OUT
        saga.reason = f"{waited_for}_timed_out"
        saga.deadline_at = None
        record_step(session, saga, "timed_out", detail=f"no {waited_for} outcome in time")
        return True

    def retry(self, session: AsyncSession, saga: Renewal, *, refund_reason: str) -> str:
        """Send again the command a saga waits on; returns what was sent (an operator action).

        The command goes out with the id it had (or, for the request itself, one derived from
        it), so a consumer that already handled it drops it, and a second retry changes nothing
        more than the first. A saga waiting for a payment outcome gets its deadline back.

        Raises:
            SagaActionRefusedError: the saga waits on nothing that accounts sends.
        """
        renewal_id = saga.renewal_id
        status = SagaStatus(saga.status)
        if status == SagaStatus.REQUESTED and saga.payment_token is not None:
            request = renewal_request_of(saga, saga.payment_token)
            event_id = derived_id("operator-retry-requested", renewal_id)
            self.outbox.add(session, request, event_id=event_id)
            record_step(
                session,
                saga,
                "operator_retried",
                event_id=_operator_mark(),
                detail="RenewalRequested sent again",
            )
            return f"RenewalRequested {event_id} sent again"
        if status == SagaStatus.PAYMENT_PENDING and saga.payment_token is not None:
            method = PaymentDetails(method=saga.payment_method, token=saga.payment_token)
            event_id = derived_id("payment-requested", renewal_id)
            self.outbox.add(session, payment_request_of(saga, method), event_id=event_id)
            saga.deadline_at = self.clock() + timedelta(seconds=self.deadlines.payment_s)
            record_step(
                session,
                saga,
                "operator_retried",
                event_id=_operator_mark(),
                detail="PaymentRequested sent again",
            )
            return f"PaymentRequested {event_id} sent again; payment deadline restarted"
        if status == SagaStatus.CANCELLING and not saga.refund_requested:
            event_id = derived_id("bundle-cancel-requested", renewal_id)
            self.outbox.add(session, cancel_request_of(saga, self.clock()), event_id=event_id)
            record_step(
                session,
                saga,
                "operator_retried",
                event_id=_operator_mark(),
                detail="BundleCancelRequested sent again",
            )
            return f"BundleCancelRequested {event_id} sent again"
        refunding = {SagaStatus.REFUNDING, SagaStatus.TIMED_OUT, SagaStatus.CANCELLING}
        if saga.refund_requested and status in refunding:
            event_id = derived_id("refund-requested", renewal_id)
            self.outbox.add(session, refund_request_of(saga, refund_reason), event_id=event_id)
            record_step(
                session,
                saga,
                "operator_retried",
                event_id=_operator_mark(),
                detail="RefundRequested sent again",
            )
            return f"RefundRequested {event_id} sent again"
        if status == SagaStatus.PAID:
            raise SagaActionRefusedError(
                f"renewal {renewal_id} is PAID and waits for provisioning to activate the "
                "bundle: look at its activation (esimctl sagas show), or compensate to refund"
            )
        raise SagaActionRefusedError(
            f"renewal {renewal_id} is {status.value}: it waits on nothing accounts could send again"
        )

    def compensate(self, session: AsyncSession, saga: Renewal, why: str) -> str:
        """Give up a stuck saga: TIMED_OUT, and the payment refunded once it is known.

        Compensating twice does nothing the second time: a saga already compensating is left
        as it is (use `retry` to send its refund request again).

        Raises:
            SagaActionRefusedError: the saga has ended already.
        """
        status = SagaStatus(saga.status)
        if status in TERMINAL:
            raise SagaActionRefusedError(
                f"renewal {saga.renewal_id} has ended ({status.value}): nothing to compensate"
            )
        if status == SagaStatus.REFUNDING or status == SagaStatus.TIMED_OUT:
            if saga.refund_requested:
                owed = "its refund is requested"
            elif saga.payment_id is not None:
                # Refunding now could leave a live plan paid back: provisioning's answer decides.
                owed = "captured; provisioning's answer decides: a failure is refunded"
            else:
                owed = "nothing was captured"
            return f"already compensating ({status.value}, {owed}); nothing changed"
        if status == SagaStatus.CANCELLING:
            # Provisioning decides whether the plan runs; retry sends the pending command again.
            return "its owner is cancelling it (CANCELLING); nothing changed"
        saga.status = SagaStatus.TIMED_OUT
        saga.reason = COMPENSATED
        saga.deadline_at = None
        record_step(
            session, saga, "operator_compensated", event_id=_operator_mark(), detail=why[:512]
        )
        if saga.payment_id is None:
            # A capture that still comes is refunded by on_payment_settled (TIMED_OUT).
            return "TIMED_OUT; no payment is captured yet (a late capture is refunded)"
        self._request_refund(session, saga, f"compensated by an operator: {why}"[:256])
        return "TIMED_OUT; refund of the captured payment requested"

    async def _saga(self, session: AsyncSession, renewal_id: UUID) -> Renewal:
        saga = await session.get(Renewal, str(renewal_id), with_for_update=True)
        if saga is None:
            raise PermanentEventError(f"renewal {renewal_id} is not known to accounts")
        return saga


def _operator_mark() -> str:
    # Steps are unique by (renewal, step, event id); each operator action is a step of its own.
    return f"operator:{uuid4()}"


class SagaActionRefusedError(Exception):
    """An operator action that does not apply to the saga as it stands."""


def renewal_request_of(saga: Renewal, token: str) -> RenewalRequested:
    """The RenewalRequested a saga was started by, rebuilt from its row."""
    return RenewalRequested(
        renewal_id=UUID(saga.renewal_id),
        user_id=saga.user_id,
        iccid=saga.iccid,
        plan_code=saga.plan_code,
        payment=PaymentDetails(method=saga.payment_method, token=token),
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
    """The RefundRequested of a saga whose payment is captured."""
    assert saga.payment_id is not None
    assert saga.price_amount is not None and saga.currency is not None
    return RefundRequested(
        renewal_id=UUID(saga.renewal_id),
        payment_id=saga.payment_id,
        iccid=saga.iccid,
        price=Money(amount=saga.price_amount, currency=saga.currency),
        reason=reason,
    )
