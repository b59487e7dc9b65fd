"""A payment's transitions: what each answer of a provider does to the row, and what it publishes.

The payment loop (`charging.py`) and the webhooks (`webhooks.py`) both move payments, and both
through these functions, on a row locked in the transaction that also holds the event in the
outbox: whichever of them learns an outcome first applies it, the other then finds the payment
moved on and changes nothing. Each event id is derived from the renewal, so even a transition
made twice would publish one event.

A transition changes the `Payment` it is given and queues its event on the transaction; the
caller writes the row (`store.write_payment`, or `write_payment_if_unchanged` for a round that
read it at its claim), so the row may be a transient one read by a compiled statement. The
transitions run driver statements only (a refund they touch is read and written by
`store.refund_by_renewal` and `write_refund`): their callers' transactions run on the driver.
"""

import logging
from collections import OrderedDict
from datetime import datetime, timedelta
from typing import Literal, TypedDict
from uuid import UUID

from esim_core.clock import as_utc
from esim_core.duework.loop import made_due
from esim_core.messaging.outbox import Outbox
from esim_core.persistence.driver import Target
from esim_schemas import (
    EventData,
    Money,
    PaymentAction,
    PaymentActionRequired,
    PaymentAuthorized,
    PaymentFailed,
    PaymentRefunded,
    PaymentSettled,
    PlanRef,
)
from esim_schemas.types import PaymentMethod, Start

from billing.domain import (
    REPLAYING_METHODS,
    FailureReason,
    PaymentState,
    RefundState,
    RetryRules,
    Step,
    charge_key,
    decline_reason,
    dunning_delay,
    event_id,
    unknown_delay,
)
from billing.gateways.port import (
    ActionRequired,
    Authorized,
    Captured,
    PaymentView,
    Standing,
)
from billing.store import Payment, Refund, refund_by_renewal, refund_snapshot, write_refund

logger = logging.getLogger(__name__)


def paying(payment: Payment) -> bool:
    """The payment has no money held or taken yet as far as billing knows."""
    return payment.state in (PaymentState.PENDING, PaymentState.ACTION_REQUIRED) or (
        payment.state == PaymentState.UNKNOWN and payment.unknown_step in (Step.PAY, Step.CLOSE)
    )


def attempt_key(payment: Payment) -> str:
    """The idempotency key of the payment's current charge attempt.

    At a provider that replays a key's first answer (`REPLAYING_METHODS`), each charge after a
    recorded decline is a new attempt under its own key; the count only moves when a decline
    is recorded, so a charge whose answer was lost is asked about, and repeated, under the key
    it was sent with. Other providers take every charge under the renewal's one key.
    """
    if payment.method in REPLAYING_METHODS:
        return charge_key(payment.renewal_id, payment.soft_declines + 1)
    return charge_key(payment.renewal_id)


def about_another_attempt(payment: Payment, view: PaymentView) -> bool:
    """The view is about an earlier charge attempt than the payment's current one.

    Only where every attempt is its own payment at the provider (a Stripe PaymentIntent per
    dunning charge): a late `payment_intent.payment_failed` of a declined attempt names that
    attempt's key and PaymentIntent, not the one that is pending, held or taken now. Elsewhere
    the reference can change as a payment goes on (Alipay's trade number arrives later), so
    it proves nothing.
    """
    if payment.method not in REPLAYING_METHODS:
        return False
    if view.idempotency_key is not None and view.idempotency_key != attempt_key(payment):
        return True
    known = payment.provider_reference
    return (
        known is not None
        and view.provider_reference is not None
        and view.provider_reference != known
        and view.provider_reference != payment.capture_reference
    )


def held(payment: Payment) -> bool:
    """The payment stands as an authorization (or billing was capturing or releasing it)."""
    return payment.state == PaymentState.AUTHORIZED or (
        payment.state == PaymentState.UNKNOWN and payment.unknown_step in (Step.CAPTURE, Step.VOID)
    )


def amount_differs(payment: Payment, amount: int | None, currency: str | None) -> str | None:
    """What the provider reports that differs from what billing asked; None when it agrees."""
    if amount is not None and amount != payment.amount:
        return f"the provider reports {amount}, billing asked {payment.amount}"
    if currency is not None and currency.upper() != payment.currency:
        return f"the provider reports {currency}, billing asked {payment.currency}"
    return None


class KnownOutcomes:
    """The payments this process last committed as authorized or settled, and at what amount.

    Most webhooks report what billing's own call learnt already: `payment_intent.
    amount_capturable_updated` after the round that authorized, `payment_intent.succeeded`
    after the one that captured. For a payment that is settled (final: nothing moves it on)
    such a view is news to nobody; for one that is authorized it would be news only to a
    payment whose capture or release lost its answer meanwhile, and the payment loop asks the
    provider about those itself. `covers` tells such a view from any other, so the webhook
    needs no transaction to find that out; any view it does not cover (another standing,
    reference, amount or currency, a payment another replica moved) goes to the locked row.
    """

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self._known: OrderedDict[str, tuple[str, str | None, int, str]] = OrderedDict()

    def remember(self, payment: Payment) -> None:
        """Note where a payment stands after a commit of this process."""
        if payment.state in (PaymentState.AUTHORIZED, PaymentState.SETTLED):
            self._known[payment.renewal_id] = (
                payment.state,
                payment.provider_reference,
                payment.amount,
                payment.currency,
            )
            self._known.move_to_end(payment.renewal_id)
            if len(self._known) > self.size:
                self._known.popitem(last=False)
        else:
            self._known.pop(payment.renewal_id, None)

    def covers(self, view: PaymentView) -> bool:
        """The view tells nothing billing did not commit: the same hold or capture, as known."""
        known = self._known.get(view.reference) if view.reference else None
        if known is None or view.provider_reference is None:
            return False
        state, reference, amount, currency = known
        if view.standing == Standing.CAPTURED:
            news = state != PaymentState.SETTLED
        elif view.standing == Standing.AUTHORIZED:
            news = state not in (PaymentState.AUTHORIZED, PaymentState.SETTLED)
        else:
            news = True
        return (
            not news
            and view.provider_reference == reference
            and view.amount in (None, amount)
            and (view.currency is None or view.currency.upper() == currency)
        )


class PaymentFlow:
    """The transitions of billing's payments; each writes the row and at most one event."""

    def __init__(self, outbox: Outbox, rules: RetryRules) -> None:
        self.outbox = outbox
        self.rules = rules
        #: What this process committed last of recent payments (`KnownOutcomes`).
        self.known = KnownOutcomes()

    # The ends and the stations of a payment.

    def authorize(self, session: Target, payment: Payment, hold: Authorized, now: datetime) -> None:
        """The money is held: publish PaymentAuthorized; the capture waits for activation."""
        payment.state = PaymentState.AUTHORIZED
        payment.provider_reference = hold.provider_reference
        payment.authorized_at = now
        payment.capture_before = hold.capture_before
        payment.token = None
        self._known(payment)
        # Activation may have come first (a webhook late, a look-up after a lost answer).
        due = payment.capture_requested_at is not None or payment.release_requested_at is not None
        payment.due_at = now if due else None
        if due:
            made_due(session, Payment)
        self._publish(
            session,
            payment,
            "payment-authorized",
            PaymentAuthorized(
                **_sale(payment),
                provider_reference=hold.provider_reference,
                authorized_at=now,
                capture_before=hold.capture_before,
            ),
        )
        logger.info(
            "payment %s of renewal %s authorized: %s, to capture before %s",
            payment.id,
            payment.renewal_id,
            hold.provider_reference,
            hold.capture_before.isoformat(),
        )

    async def settle(
        self, session: Target, payment: Payment, capture: Captured, now: datetime
    ) -> None:
        """The money is taken: publish PaymentSettled; a refund asked meanwhile becomes due."""
        payment.capture_reference = capture.provider_reference
        payment.provider_reference = capture.payment_reference or (
            payment.provider_reference or capture.provider_reference
        )
        payment.settled_at = now
        payment.capture_overdue_at = None
        self._end(payment, PaymentState.SETTLED, capture.provider_reference)
        self._publish(
            session,
            payment,
            "payment-settled",
            PaymentSettled(
                **_sale(payment),
                provider_reference=capture.provider_reference,
                attempts=max(1, payment.attempts),
                settled_at=now,
            ),
        )
        if payment.release_requested_at is not None:
            # A refund was asked while the capture was under way: it gives the money back now.
            refund = await refund_by_renewal(session, payment.renewal_id)
            if refund is not None and refund.state == RefundState.PENDING:
                before = refund_snapshot(refund)
                refund.via = "refund"
                refund.due_at = now
                refund.updated_at = now
                await write_refund(session, refund, before)
                made_due(session, Refund)
                logger.info(
                    "refund %s of renewal %s: captured first, refunding",
                    refund.id,
                    payment.renewal_id,
                )

    def wait_for_buyer(
        self, session: Target, payment: Payment, action: ActionRequired, now: datetime
    ) -> None:
        """The provider needs the buyer: publish PaymentActionRequired; ask again at the expiry."""
        expires_at = min(action.expires_at, now + timedelta(seconds=self.rules.approval_expiry_s))
        first = payment.action_url is None
        payment.state = PaymentState.ACTION_REQUIRED
        payment.provider_reference = action.provider_reference
        payment.action_url = action.url
        payment.action_expires_at = expires_at
        self._known(payment)
        payment.due_at = expires_at
        if not first:
            return
        self._publish(
            session,
            payment,
            "payment-action-required",
            PaymentActionRequired(
                **_payment_ref(payment),
                method=_method(payment.method),
                action=PaymentAction(url=action.url),
                expires_at=expires_at,
            ),
        )
        logger.info(
            "payment %s of renewal %s waits for the buyer until %s",
            payment.id,
            payment.renewal_id,
            expires_at.isoformat(),
        )

    def fail(self, session: Target, payment: Payment, reason: FailureReason, now: datetime) -> None:
        """The payment ends without money: publish PaymentFailed."""
        payment.failure_reason = reason
        payment.failed_at = now
        self._end(payment, PaymentState.FAILED, reason)
        self._publish(
            session,
            payment,
            "payment-failed",
            PaymentFailed(
                **_payment_ref(payment),
                reason=reason,
                attempts=max(1, payment.attempts),
                failed_at=now,
            ),
        )

    def decline(
        self,
        session: Target,
        payment: Payment,
        code: str,
        retryable: bool,
        now: datetime,
    ) -> None:
        """A decline: fail at once (hard), or charge again on the dunning schedule (soft)."""
        payment.unavailable_rounds = 0
        reason, soft = decline_reason(code, retryable)
        delay = None
        if soft:
            payment.soft_declines += 1
            delay = dunning_delay(payment.soft_declines, self.rules)
        if delay is None:
            self.fail(session, payment, reason, now)
            return
        payment.state = PaymentState.PENDING
        self._known(payment)
        if payment.method in REPLAYING_METHODS:
            # The next charge is a payment of its own at the provider, under its own key: the
            # declined one must not be what a look-up about the next charge retrieves.
            payment.provider_reference = None
            payment.action_url = None
            payment.action_expires_at = None
        payment.due_at = now + timedelta(seconds=delay)
        logger.info(
            "payment %s soft-declined (%s), charge %d of %d; next charge in %g s",
            payment.id,
            code,
            payment.soft_declines,
            len(self.rules.dunning_schedule_s) + 1,
            delay,
        )

    async def release(
        self, session: Target, payment: Payment, reference: str | None, now: datetime
    ) -> None:
        """The authorization is released after a failed activation: PaymentRefunded via void."""
        payment.state = PaymentState.VOIDED
        payment.voided_at = now
        self._known(payment)
        payment.due_at = None
        refund = await refund_by_renewal(session, payment.renewal_id)
        if refund is None:
            # Only a refund request releases a payment; without its row there is nothing owed.
            logger.error("payment %s was released without a refund request", payment.id)
            return
        before = refund_snapshot(refund)
        refund.state = RefundState.REFUNDED
        refund.via = "void"
        refund.provider_reference = reference or payment.provider_reference
        refund.refunded_at = now
        refund.updated_at = now
        refund.due_at = None
        await write_refund(session, refund, before)
        publish_refunded(
            self.outbox, session, refund, refund.provider_reference or refund.id, "void", now
        )
        logger.info(
            "payment %s of renewal %s voided: nothing taken", payment.id, payment.renewal_id
        )

    def unknown(self, payment: Payment, step: Step, error: str, now: datetime) -> float:
        """The answer to `step` was lost: ask the provider on the schedule, never guess.

        Returns:
            The pause before the next look-up.
        """
        if payment.state != PaymentState.UNKNOWN or payment.unknown_step != step:
            payment.unknown_since = now
        payment.state = PaymentState.UNKNOWN
        payment.unknown_step = step
        payment.unavailable_rounds += 1
        payment.last_error = error[:500]
        pause = unknown_delay(payment.unavailable_rounds, self.rules.unknown_schedule_s)
        payment.due_at = now + timedelta(seconds=pause)
        if step == Step.CAPTURE:
            self.check_capture_window(payment, now)
        return pause

    def check_capture_window(self, payment: Payment, now: datetime) -> None:
        """Alert an operator once when the capture can no longer be made in time."""
        before = payment.capture_before
        if before is not None and as_utc(before) <= now:
            self.capture_overdue(payment, "the authorization's capture window has passed", now)

    def capture_overdue(self, payment: Payment, why: str, now: datetime) -> None:
        """Flag a capture billing could not make in time; the saga stays ended as it is."""
        if payment.capture_overdue_at is None:
            payment.capture_overdue_at = now
            logger.error(
                "payment %s of renewal %s: CAPTURE OVERDUE (%s); the plan is active but the "
                "money is not taken: see `esimctl payments overdue`",
                payment.id,
                payment.renewal_id,
                why,
            )

    def back_to(
        self, session: Target, payment: Payment, state: PaymentState, now: datetime
    ) -> None:
        """Knowing again where the payment stands: `state`, with its next step due now."""
        payment.state = state
        self._known(payment)
        payment.due_at = now
        made_due(session, Payment)

    # What a look-up or a webhook reports.

    async def apply_view(
        self, session: Target, payment: Payment, view: PaymentView, now: datetime
    ) -> bool:
        """Move the payment to where the provider says it stands; False: nothing to do.

        The same view applied twice, or a view older than what billing knows (a webhook out of
        order), changes nothing: each transition starts only from the states it leaves.
        """
        standing = view.standing
        if about_another_attempt(payment, view):
            # A decline (or any news) of an earlier dunning charge arriving late: the payment
            # has moved on to a charge of its own, which this view says nothing about.
            logger.info(
                "payment %s: %s of an earlier charge attempt (%s) ignored",
                payment.id,
                standing,
                view.provider_reference,
            )
            return False
        if standing in (Standing.AUTHORIZED, Standing.CAPTURED):
            differs = amount_differs(payment, view.amount, view.currency)
            if differs is not None:
                self.mismatch(payment, differs, now)
                return True
        if standing == Standing.NOT_FOUND:
            return self._not_found(session, payment, now)
        if standing == Standing.ACTION_REQUIRED:
            if payment.state == PaymentState.PENDING or (
                payment.state == PaymentState.UNKNOWN and payment.unknown_step == Step.PAY
            ):
                url = view.action_url or payment.action_url
                if url is None:
                    return False
                expires = view.action_expires_at or now + timedelta(
                    seconds=self.rules.approval_expiry_s
                )
                reference = view.provider_reference or payment.provider_reference or ""
                self.wait_for_buyer(session, payment, ActionRequired(reference, url, expires), now)
                return True
            if payment.state == PaymentState.UNKNOWN and payment.unknown_step == Step.CLOSE:
                self.back_to(session, payment, PaymentState.ACTION_REQUIRED, now)
                return True
            return False
        if standing == Standing.APPROVED:
            if paying(payment):
                # PayPal: the approved order is authorized by paying again under the same key.
                payment.provider_reference = view.provider_reference or payment.provider_reference
                self.back_to(session, payment, PaymentState.PENDING, now)
                return True
            return False
        if standing == Standing.AUTHORIZED:
            if paying(payment):
                before = view.capture_before or now + timedelta(seconds=self.rules.capture_window_s)
                reference = view.provider_reference or payment.provider_reference or ""
                self.authorize(
                    session,
                    payment,
                    Authorized(reference, payment.amount, payment.currency, before),
                    now,
                )
                return True
            if payment.state == PaymentState.UNKNOWN:
                # The capture or the release did not happen: make it again, under the same key.
                self.back_to(session, payment, PaymentState.AUTHORIZED, now)
                if view.capture_before is not None:
                    payment.capture_before = view.capture_before
                return True
            return False
        if standing in (Standing.CAPTURED, Standing.REFUNDED):
            if paying(payment) or held(payment):
                captured = view.captured_amount or view.amount or payment.amount
                reference = view.capture_reference or view.provider_reference or ""
                await self.settle(
                    session,
                    payment,
                    Captured(reference, captured, payment.currency, view.provider_reference),
                    now,
                )
                return True
            return False
        if standing == Standing.DECLINED:
            if payment.state == PaymentState.PENDING:
                # A charge's decline reaches billing in the charge's own answer, which the round
                # that made it records (a lost answer leaves the payment unknown, and this
                # applies then). Counted here too, one soft decline would count twice and cut
                # the dunning schedule short (Stripe's `payment_intent.payment_failed`).
                return False
            if paying(payment):
                self.decline(session, payment, view.decline_code or "declined", False, now)
                return True
            if held(payment) and payment.release_requested_at is None:
                self.capture_overdue(
                    payment, f"the provider declined the capture ({view.decline_code})", now
                )
                payment.state = PaymentState.AUTHORIZED
                payment.due_at = None
                return True
            return False
        # CANCELLED, VOIDED: nothing is held any more.
        if paying(payment):
            self.fail(session, payment, "not_approved", now)
            return True
        if held(payment):
            if payment.release_requested_at is not None:
                await self.release(session, payment, view.provider_reference, now)
            else:
                self.capture_overdue(payment, "the authorization was released at the provider", now)
                payment.state = PaymentState.AUTHORIZED
                self._known(payment)
                payment.due_at = None
            return True
        return False

    def mismatch(self, payment: Payment, differs: str, now: datetime) -> None:
        """An amount or currency the provider reports differs: stop and show it to an operator."""
        step = payment.unknown_step or (Step.PAY if paying(payment) else Step.CAPTURE)
        logger.error("payment %s of renewal %s: %s", payment.id, payment.renewal_id, differs)
        self.unknown(payment, Step(step), f"amount differs: {differs}", now)
        # Listed at once: no look-up will make the amounts agree.
        payment.unavailable_rounds = max(
            payment.unavailable_rounds, len(self.rules.unknown_schedule_s)
        )

    def _not_found(self, session: Target, payment: Payment, now: datetime) -> bool:
        if payment.state != PaymentState.UNKNOWN:
            return False
        if payment.unknown_step == Step.PAY:
            # The call never arrived: paying again under the same key is the same payment.
            if payment.unavailable_rounds >= self.rules.max_unavailable_rounds:
                self.fail(session, payment, "provider_unavailable", now)
            else:
                payment.state = PaymentState.PENDING
                payment.unknown_step = None
                payment.unknown_since = None
                payment.due_at = now
                made_due(session, Payment)
            return True
        if payment.unknown_step == Step.CLOSE:
            # Nothing was ever paid (Alipay makes no trade before the buyer acts).
            self.fail(session, payment, "not_approved", now)
            return True
        return False

    def _end(self, payment: Payment, state: PaymentState, outcome: str) -> None:
        """The payment ends `state` (settled or failed): nothing more is due, and the saved
        source is dropped; `outcome` (the capture, the reason) goes in the log line."""
        payment.state = state
        payment.token = None
        self._known(payment)
        payment.due_at = None
        logger.info(
            "payment %s of renewal %s %s: %s after %d round(s)",
            payment.id,
            payment.renewal_id,
            state,
            outcome,
            payment.attempts,
        )

    def _publish(self, session: Target, payment: Payment, kind: str, event: EventData) -> None:
        """Queue the payment's event under an id derived from its renewal and `kind`: a
        transition made twice (a webhook and a round) publishes one event."""
        self.outbox.add(session, event, event_id=event_id(kind, payment.renewal_id))

    @staticmethod
    def _known(payment: Payment) -> None:
        payment.unknown_step = None
        payment.unknown_since = None
        payment.unavailable_rounds = 0
        payment.last_error = None


def publish_refunded(
    outbox: Outbox,
    session: Target,
    refund: Refund,
    refund_id: str,
    via: Literal["refund", "void"],
    now: datetime,
) -> None:
    """Publish PaymentRefunded for a refund that is done, however the money went back."""
    outbox.add(
        session,
        PaymentRefunded(
            renewal_id=UUID(refund.renewal_id),
            payment_id=refund.payment_id,
            refund_id=refund_id,
            iccid=refund.iccid,
            price=Money(amount=refund.amount, currency=refund.currency),
            refunded_at=now,
            via=via,
        ),
        event_id=event_id("payment-refunded", refund.renewal_id),
    )


class _PaymentRef(TypedDict):
    """What every event of a payment says of it: its renewal, its id and the card."""

    renewal_id: UUID
    payment_id: str
    iccid: str


def _payment_ref(payment: Payment) -> _PaymentRef:
    return _PaymentRef(
        renewal_id=UUID(payment.renewal_id), payment_id=payment.id, iccid=payment.iccid
    )


class _Sale(_PaymentRef):
    """What PaymentAuthorized and PaymentSettled both say of the plan sold and its price."""

    plan: PlanRef
    price: Money
    method: PaymentMethod
    start: Start
    discount: Money | None
    promo_code: str | None


def _sale(payment: Payment) -> _Sale:
    return _Sale(
        **_payment_ref(payment),
        plan=_plan(payment),
        price=Money(amount=payment.amount, currency=payment.currency),
        method=_method(payment.method),
        start=_start(payment.start),
        discount=_discount(payment),
        promo_code=payment.promo_code,
    )


def _plan(payment: Payment) -> PlanRef:
    return PlanRef(
        code=payment.plan_code, data_mb=payment.data_mb, validity_days=payment.validity_days
    )


def _discount(payment: Payment) -> Money | None:
    if payment.discount_amount is None:
        return None
    return Money(amount=payment.discount_amount, currency=payment.currency)


def _method(value: str) -> PaymentMethod:
    methods: dict[str, PaymentMethod] = {"card": "card", "paypal": "paypal", "alipay": "alipay"}
    return methods[value]


def _start(value: str) -> Start:
    starts: dict[str, Start] = {"now": "now", "after_current": "after_current"}
    return starts[value]
