"""Charging: claim due payments, call the gateway, commit the capture or the decline and its event.

Each round calls the gateway outside any transaction, then writes the outcome, the outbox event
and the next due time in one transaction. The charge carries an idempotency key derived from the
renewal_id, so a crash between the call and the commit only means the next round asks again and
gets the same capture back: never a second one.
"""

import logging
from datetime import datetime, timedelta
from uuid import UUID

from esim_core.clock import utcnow
from esim_core.duework.worker import DueWorker
from esim_schemas import Money, PaymentFailed, PaymentSettled, PlanRef
from esim_schemas.types import PaymentMethod, Start
from sqlmodel.ext.asyncio.session import AsyncSession

from billing.domain import (
    FailureReason,
    PaymentState,
    RetryRules,
    charge_key,
    decline_reason,
    dunning_delay,
    event_id,
    scrub,
    unavailable_delay,
)
from billing.gateways import (
    Capture,
    ChargeRequest,
    ChargingGateway,
    GatewayRejectedError,
    GatewayUnavailableError,
    PaymentDeclinedError,
)
from billing.store import Payment

logger = logging.getLogger(__name__)

ChargeOutcome = Capture | PaymentDeclinedError | GatewayUnavailableError | GatewayRejectedError


class ChargeWorker(DueWorker[ChargingGateway, RetryRules]):
    """Charges due payments: capture, hard or soft decline, or an unavailable gateway."""

    table = Payment
    what = "charging payment"
    claims_rows = True  # a round starts from the row its claim returned: no read of its own
    noun = "payment"
    kept_by = "the gateway's idempotency key keeps one capture"
    transient = GatewayUnavailableError
    system = "payment gateway"

    async def charge(self, payment: Payment) -> None:
        """One charge round of a payment as its claim leased it."""
        if payment.state != PaymentState.PENDING or payment.token is None:
            # Final already: a stale due time must not send it to the gateway again.
            if payment.state == PaymentState.PENDING:
                logger.error("payment %s is pending without a token; it needs ops", payment.id)
            await self.clear(payment)
            return
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
            outcome = await self.within_round(
                f"charge {payment.id}", lambda: self.port.charge(request)
            )
        except (PaymentDeclinedError, GatewayUnavailableError, GatewayRejectedError) as error:
            outcome = error

        async def apply(session: AsyncSession, current: Payment) -> None:
            self._apply(session, current, outcome, payment.token)

        await self.commit_round(
            payment.id, payment.lease_until, apply, lambda row: row.state == PaymentState.PENDING
        )

    work_claimed = charge

    def _apply(
        self, session: AsyncSession, payment: Payment, outcome: ChargeOutcome, token: str | None
    ) -> None:
        now = utcnow()
        self.count_round(session, payment, now)
        if isinstance(outcome, Capture):
            self._settle(session, payment, outcome, now)
        elif isinstance(outcome, PaymentDeclinedError):
            payment.unavailable_rounds = 0
            payment.last_error = scrub(f"declined: {outcome}", token)
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
            error = scrub(f"{type(outcome).__name__}: {outcome}", token)
            # A refused request is not an outage but a fault on one side: worth an ERROR.
            log = logger.error if isinstance(outcome, GatewayRejectedError) else logger.warning
            delay = self.another_round(payment, error, now, unavailable_delay)
            if delay is None:
                log(
                    "payment %s: no charge after %d rounds (%s); failing it",
                    payment.id,
                    payment.unavailable_rounds,
                    payment.last_error,
                )
                self._fail(session, payment, "provider_unavailable", now)
                return
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
        payment.provider_reference = capture.provider_reference
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
                provider_reference=capture.provider_reference,
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
            capture.provider_reference,
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


def _method(value: str) -> PaymentMethod:
    methods: dict[str, PaymentMethod] = {"card": "card", "paypal": "paypal", "alipay": "alipay"}
    return methods[value]


def _start(value: str) -> Start:
    starts: dict[str, Start] = {"now": "now", "after_current": "after_current"}
    return starts[value]
