"""Refunding: claim due refunds, call the gateway, commit the refund and its event, or park it.

A round is a charge's (`charging.py`) with the refund's key: a crash between the call and the
commit only makes the next round ask again, and the gateway answers with the same refund.
"""

import logging
from uuid import UUID

from esim_core.clock import utcnow
from esim_core.duework.worker import DueWorker
from esim_schemas import Money, PaymentRefunded
from sqlmodel.ext.asyncio.session import AsyncSession

from billing.domain import (
    RefundState,
    RetryRules,
    event_id,
    refund_key,
    scrub,
    unavailable_delay,
)
from billing.gateways import (
    ChargingGateway,
    GatewayRejectedError,
    GatewayUnavailableError,
    RefundReceipt,
    RefundRequest,
)
from billing.store import Payment, Refund

logger = logging.getLogger(__name__)

RefundOutcome = RefundReceipt | GatewayUnavailableError | GatewayRejectedError


class RefundWorker(DueWorker[ChargingGateway, RetryRules]):
    """Refunds due refunds; one the gateway keeps refusing is parked as `failed`, never dropped.

    A parked refund is money still owed: it is logged at ERROR, shown by
    `GET /v1/refunds/{renewal_id}`, and `POST /v1/refunds/{renewal_id}/retry` sends it back to
    the loop once the cause is fixed.
    """

    table = Refund
    what = "refund"
    noun = "refund"
    kept_by = "the gateway's idempotency key keeps one refund"
    transient = GatewayUnavailableError
    system = "payment gateway"

    async def refund(self, key: str) -> None:
        """One refund round of a claimed refund."""
        async with self.database.session() as session:
            refund = await session.get(Refund, key)
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
        request = RefundRequest(
            idempotency_key=refund_key(refund.renewal_id),
            charge_id=payment.provider_reference,
            amount=refund.amount,
            method=payment.method,
            reason=refund.reason,
        )
        outcome: RefundOutcome
        try:
            outcome = await self.within_round(f"refund {key}", lambda: self.port.refund(request))
        except (GatewayUnavailableError, GatewayRejectedError) as error:
            outcome = error

        async def apply(session: AsyncSession, current: Refund) -> None:
            self._apply(session, current, outcome)

        await self.commit_round(
            key, refund.lease_until, apply, lambda row: row.state == RefundState.PENDING
        )

    work = refund

    def _apply(self, session: AsyncSession, refund: Refund, outcome: RefundOutcome) -> None:
        now = utcnow()
        self.count_round(session, refund, now)
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
        refund.last_error = scrub(f"{type(outcome).__name__}: {outcome}", None)
        delay = None
        if isinstance(outcome, GatewayUnavailableError):
            delay = self.another_round(refund, refund.last_error, now, unavailable_delay)
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
        logger.warning(
            "refund %s: gateway unavailable, round %d of %d (%s); next round in %.1f s",
            refund.id,
            refund.unavailable_rounds,
            self.rules.max_unavailable_rounds,
            refund.last_error,
            delay,
        )
