"""The charge and refund loops: claim due rows, call the gateway, commit outcome and event.

Each round calls the gateway outside any transaction, then writes the outcome, the outbox event
and the next due time in one transaction. The gateway call carries an idempotency key derived
from the renewal_id, so a crash between the call and the commit only means the next round asks
again and gets the same capture (or refund) back: never a second one.
"""

import logging
import random
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar
from uuid import UUID

from esim_core.clock import utcnow
from esim_core.duework.loop import clear_due
from esim_core.duework.worker import DueWorker, same_lease
from esim_core.outside import retry
from esim_core.outside.retry import TryPolicy
from esim_schemas import Money, PaymentFailed, PaymentRefunded, PaymentSettled, PlanRef
from esim_schemas.types import PaymentMethod, Start
from sqlmodel.ext.asyncio.session import AsyncSession

from billing.domain import (
    FailureReason,
    PaymentState,
    RefundState,
    RetryRules,
    charge_key,
    decline_reason,
    dunning_delay,
    event_id,
    refund_key,
    unavailable_delay,
)
from billing.gateways import (
    Capture,
    ChargeRequest,
    GatewayRejectedError,
    GatewayUnavailableError,
    PaymentDeclinedError,
    PaymentGateway,
    RefundReceipt,
    RefundRequest,
)
from billing.store import Payment, Refund

logger = logging.getLogger(__name__)

T = TypeVar("T")
ChargeOutcome = Capture | PaymentDeclinedError | GatewayUnavailableError | GatewayRejectedError
RefundOutcome = RefundReceipt | GatewayUnavailableError | GatewayRejectedError


async def within_round(what: str, call: Callable[[], Awaitable[T]], policy: TryPolicy) -> T:
    """Run a payment gateway call, retrying it on `GatewayUnavailableError` within the round."""
    return await retry.within_round(what, call, policy, GatewayUnavailableError, "payment gateway")


def _jittered(delay_s: float) -> float:
    # Many payments hit by one outage should not all come back in the same instant.
    return delay_s * random.uniform(0.75, 1.0)


def _scrub(text: str, secret: str | None) -> str:
    if secret:
        text = text.replace(secret, "***")
    return text[:500]


class ChargeWorker(DueWorker[PaymentGateway, RetryRules]):
    """Charges due payments: capture, hard or soft decline, or an unavailable gateway."""

    table = Payment
    what = "charging payment"
    claims_rows = True  # a round starts from the row its claim returned: no read of its own

    @property
    def gateway(self) -> PaymentGateway:
        """The outside system this worker calls."""
        return self.port

    async def work(self, key: str) -> None:
        """One round for one claimed row."""
        await self.charge(key)

    async def work_claimed(self, row: Any) -> None:
        """One round for a payment as its claim leased it."""
        await self.charge(row.id, claimed=row)

    async def charge(self, payment_id: str, *, claimed: Payment | None = None) -> None:
        """One charge round of a claimed payment (read here unless the claim returned it)."""
        payment = claimed
        if payment is None:
            async with self.database.session() as session:
                payment = await session.get(Payment, payment_id)
            if payment is None:
                return
        if payment.state != PaymentState.PENDING or payment.token is None:
            # Final already: a stale due time must not send it to the gateway again.
            if payment.state == PaymentState.PENDING:
                logger.error("payment %s is pending without a token; it needs ops", payment_id)
            await clear_due(self.database, Payment, payment_id, payment.lease_until)
            return
        lease = payment.lease_until
        request = ChargeRequest(
            idempotency_key=charge_key(payment.renewal_id),
            reference=payment.renewal_id,
            amount=payment.amount,
            currency=payment.currency,
            method=payment.method,
            token=payment.token,
            description=f"eSIM plan {payment.plan_code}",
        )
        outcome: ChargeOutcome
        try:
            outcome = await within_round(
                f"charge {payment_id}", lambda: self.gateway.charge(request), self.tries
            )
        except (PaymentDeclinedError, GatewayUnavailableError, GatewayRejectedError) as error:
            outcome = error
        async with self.database.session() as session:
            # Locked until the outcome commits, so no claim can slip in between check and write.
            current = await session.get(Payment, payment_id, with_for_update=True)
            if current is None or current.state != PaymentState.PENDING:
                return
            if not same_lease(current.lease_until, lease):
                logger.warning(
                    "payment %s was claimed again during its round; this round's outcome is "
                    "dropped (the gateway's idempotency key keeps one capture)",
                    payment_id,
                )
                return
            self._apply(session, current, outcome, request.token)

    def _apply(
        self, session: AsyncSession, payment: Payment, outcome: ChargeOutcome, token: str
    ) -> None:
        now = utcnow()
        payment.attempts += 1
        payment.updated_at = now
        payment.lease_until = None
        session.add(payment)
        if isinstance(outcome, Capture):
            self._settle(session, payment, outcome, now)
        elif isinstance(outcome, PaymentDeclinedError):
            payment.unavailable_rounds = 0
            payment.last_error = _scrub(f"declined: {outcome}", token)
            reason, soft = decline_reason(outcome.code, outcome.retryable)
            delay = None
            if soft:
                payment.soft_declines += 1
                delay = dunning_delay(payment.soft_declines, self.rules)
            if delay is None:
                self._fail(session, payment, reason, now)
                return
            payment.due_at = now + timedelta(seconds=delay)
            logger.info(
                "payment %s soft-declined (%s), charge %d of %d; next charge in %g s",
                payment.id,
                outcome.code,
                payment.soft_declines,
                len(self.rules.dunning_schedule_s) + 1,
                delay,
            )
        else:
            payment.unavailable_rounds += 1
            payment.last_error = _scrub(f"{type(outcome).__name__}: {outcome}", token)
            # A refused request is not an outage but a fault on one side: worth an ERROR.
            log = logger.error if isinstance(outcome, GatewayRejectedError) else logger.warning
            delay = unavailable_delay(payment.unavailable_rounds, self.rules)
            if delay is None:
                log(
                    "payment %s: no charge after %d rounds (%s); failing it",
                    payment.id,
                    payment.unavailable_rounds,
                    payment.last_error,
                )
                self._fail(session, payment, "provider_unavailable", now)
                return
            delay = _jittered(delay)
            payment.due_at = now + timedelta(seconds=delay)
            log(
                "payment %s: no charge in round %d of %d (%s); next round in %.1f s",
                payment.id,
                payment.unavailable_rounds,
                self.rules.max_unavailable_rounds,
                payment.last_error,
                delay,
            )

    def _settle(
        self, session: AsyncSession, payment: Payment, capture: Capture, now: datetime
    ) -> None:
        payment.state = PaymentState.SETTLED
        payment.provider_reference = capture.charge_id
        payment.settled_at = now
        payment.token = None
        payment.due_at = None
        payment.unavailable_rounds = 0
        payment.last_error = None
        self.outbox.add(
            session,
            PaymentSettled(
                renewal_id=UUID(payment.renewal_id),
                payment_id=payment.id,
                iccid=payment.iccid,
                plan=PlanRef(
                    code=payment.plan_code,
                    data_mb=payment.data_mb,
                    validity_days=payment.validity_days,
                ),
                price=Money(amount=payment.amount, currency=payment.currency),
                method=_method(payment.method),
                provider_reference=capture.charge_id,
                attempts=payment.attempts,
                settled_at=now,
                start=_start(payment.start),
                discount=(
                    Money(amount=payment.discount_amount, currency=payment.currency)
                    if payment.discount_amount is not None
                    else None
                ),
                promo_code=payment.promo_code,
            ),
            event_id=event_id("payment-settled", payment.renewal_id),
        )
        logger.info(
            "payment %s of renewal %s settled: %s after %d round(s)",
            payment.id,
            payment.renewal_id,
            capture.charge_id,
            payment.attempts,
        )

    def _fail(
        self, session: AsyncSession, payment: Payment, reason: FailureReason, now: datetime
    ) -> None:
        payment.state = PaymentState.FAILED
        payment.failure_reason = reason
        payment.failed_at = now
        payment.token = None
        payment.due_at = None
        self.outbox.add(
            session,
            PaymentFailed(
                renewal_id=UUID(payment.renewal_id),
                payment_id=payment.id,
                iccid=payment.iccid,
                reason=reason,
                attempts=payment.attempts,
                failed_at=now,
            ),
            event_id=event_id("payment-failed", payment.renewal_id),
        )
        logger.info(
            "payment %s of renewal %s failed: %s after %d round(s)",
            payment.id,
            payment.renewal_id,
            reason,
            payment.attempts,
        )


class RefundWorker(DueWorker[PaymentGateway, RetryRules]):
    """Refunds due refunds; one the gateway keeps refusing is parked as `failed`, never dropped.

    A parked refund is money still owed: it is logged at ERROR, shown by
    `GET /v1/refunds/{renewal_id}`, and `POST /v1/refunds/{renewal_id}/retry` sends it back to
    the loop once the cause is fixed.
    """

    table = Refund
    what = "refund"

    @property
    def gateway(self) -> PaymentGateway:
        """The outside system this worker calls."""
        return self.port

    async def work(self, key: str) -> None:
        """One round for one claimed row."""
        await self.refund(key)

    async def refund(self, refund_id: str) -> None:
        """One refund round of a claimed refund."""
        async with self.database.session() as session:
            refund = await session.get(Refund, refund_id)
            if refund is None:
                return
            payment = await session.get(Payment, refund.payment_id)
            if refund.state != RefundState.PENDING or payment is None:
                refund.due_at = None
                refund.lease_until = None
                session.add(refund)
                return
        if payment.provider_reference is None:
            raise RuntimeError(f"payment {payment.id} has no capture to refund")
        lease = refund.lease_until
        request = RefundRequest(
            idempotency_key=refund_key(refund.renewal_id),
            charge_id=payment.provider_reference,
            amount=refund.amount,
            method=payment.method,
            reason=refund.reason,
        )
        outcome: RefundOutcome
        try:
            outcome = await within_round(
                f"refund {refund_id}", lambda: self.gateway.refund(request), self.tries
            )
        except (GatewayUnavailableError, GatewayRejectedError) as error:
            outcome = error
        async with self.database.session() as session:
            # Locked until the outcome commits, so no claim can slip in between check and write.
            current = await session.get(Refund, refund_id, with_for_update=True)
            if current is None or current.state != RefundState.PENDING:
                return
            if not same_lease(current.lease_until, lease):
                logger.warning(
                    "refund %s was claimed again during its round; this round's outcome is "
                    "dropped (the gateway's idempotency key keeps one refund)",
                    refund_id,
                )
                return
            self._apply(session, current, outcome)

    def _apply(self, session: AsyncSession, refund: Refund, outcome: RefundOutcome) -> None:
        now = utcnow()
        refund.attempts += 1
        refund.updated_at = now
        refund.lease_until = None
        session.add(refund)
        if isinstance(outcome, RefundReceipt):
            refund.state = RefundState.REFUNDED
            refund.provider_reference = outcome.refund_id
            refund.refunded_at = now
            refund.due_at = None
            refund.last_error = None
            refund.unavailable_rounds = 0
            self.outbox.add(
                session,
                PaymentRefunded(
                    renewal_id=UUID(refund.renewal_id),
                    payment_id=refund.payment_id,
                    refund_id=outcome.refund_id,
                    iccid=refund.iccid,
                    price=Money(amount=refund.amount, currency=refund.currency),
                    refunded_at=now,
                ),
                event_id=event_id("payment-refunded", refund.renewal_id),
            )
            logger.info(
                "refund %s of renewal %s done: %s", refund.id, refund.renewal_id, outcome.refund_id
            )
            return
        refund.last_error = _scrub(f"{type(outcome).__name__}: {outcome}", None)
        delay = None
        if isinstance(outcome, GatewayUnavailableError):
            refund.unavailable_rounds += 1
            delay = unavailable_delay(refund.unavailable_rounds, self.rules)
        if delay is None:
            refund.state = RefundState.FAILED
            refund.failed_at = now
            refund.due_at = None
            logger.error(
                "refund %s of renewal %s (%d %s) is OWED but parked as failed after %d "
                "round(s): %s; fix the cause, then POST /v1/refunds/%s/retry",
                refund.id,
                refund.renewal_id,
                refund.amount,
                refund.currency,
                refund.attempts,
                refund.last_error,
                refund.renewal_id,
            )
            return
        delay = _jittered(delay)
        refund.due_at = now + timedelta(seconds=delay)
        logger.warning(
            "refund %s: gateway unavailable, round %d of %d (%s); next round in %.1f s",
            refund.id,
            refund.unavailable_rounds,
            self.rules.max_unavailable_rounds,
            refund.last_error,
            delay,
        )


def _method(value: str) -> PaymentMethod:
    methods: dict[str, PaymentMethod] = {"card": "card", "paypal": "paypal", "alipay": "alipay"}
    return methods[value]


def _start(value: str) -> Start:
    starts: dict[str, Start] = {"now": "now", "after_current": "after_current"}
    return starts[value]
