"""Refunding: claim due refunds, call the provider, commit the refund and its event, or park it.

A round is a charge's (`charging.py`) with the refund's key. A refund whose answer was lost is
`unknown`: the next round asks the provider first (`look_up`); a refund it reports is recorded
without another call, and otherwise the refund is sent again under the same key, which the
provider answers with the same refund. A payment that was never captured is not refunded here:
the payment loop releases its authorization (`via: void`).
"""

import logging

from esim_core.clock import utcnow
from esim_core.duework.worker import DueWorker
from sqlmodel.ext.asyncio.session import AsyncSession

from billing.charging import lookup_request
from billing.domain import (
    PaymentState,
    RefundState,
    RetryRules,
    refund_key,
    scrub,
    unavailable_delay,
)
from billing.flow import publish_refunded
from billing.gateways import (
    GatewayRejectedError,
    GatewayUnavailableError,
    PaymentGateway,
    PaymentView,
    RefundReceipt,
    RefundRequest,
)
from billing.store import Payment, Refund

logger = logging.getLogger(__name__)

RefundOutcome = RefundReceipt | GatewayUnavailableError | GatewayRejectedError


class RefundWorker(DueWorker[PaymentGateway, RetryRules]):
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
            if (
                refund.state not in (RefundState.PENDING, RefundState.UNKNOWN)
                or refund.via != "refund"
                or payment is None
                or payment.state != PaymentState.SETTLED
            ):
                # Final, or a release the payment loop makes: nothing to send from here.
                refund.due_at = None
                refund.lease_until = None
                session.add(refund)
                return
        charge_id = payment.capture_reference or payment.provider_reference
        if charge_id is None:
            raise RuntimeError(f"payment {payment.id} has no capture to refund")
        claimed_state = refund.state
        outcome: RefundOutcome | None = None
        if refund.state == RefundState.UNKNOWN:
            # The last answer was lost: ask before sending anything again.
            try:
                view = await self.within_round(
                    f"look up {payment.id}", lambda: self.port.look_up(lookup_request(payment))
                )
            except GatewayUnavailableError as error:
                outcome = error
            else:
                outcome = _refunded(view, refund)
        if outcome is None:
            request = RefundRequest(
                idempotency_key=refund_key(refund.renewal_id),
                charge_id=charge_id,
                amount=refund.amount,
                method=payment.method,
                reason=refund.reason,
                reference=refund.renewal_id,
                currency=refund.currency,
            )
            try:
                outcome = await self.within_round(
                    f"refund {key}", lambda: self.port.refund(request)
                )
            except (GatewayUnavailableError, GatewayRejectedError) as error:
                outcome = error
        final = outcome

        async def apply(session: AsyncSession, current: Refund) -> None:
            self._apply(session, current, final)

        await self.commit_round(
            key, refund.lease_until, apply, lambda row: row.state == claimed_state
        )

    work = refund

    def _apply(self, session: AsyncSession, refund: Refund, outcome: RefundOutcome) -> None:
        now = utcnow()
        self.count_round(session, refund, now)
        if isinstance(outcome, RefundReceipt):
            refund.state = RefundState.REFUNDED
            refund.unknown_since = None
            refund.provider_reference = outcome.refund_id
            refund.refunded_at = now
            refund.due_at = None
            refund.last_error = None
            refund.unavailable_rounds = 0
            publish_refunded(self.outbox, session, refund, outcome.refund_id, "refund", now)
            logger.info(
                "refund %s of renewal %s done: %s", refund.id, refund.renewal_id, outcome.refund_id
            )
            return
        refund.last_error = scrub(f"{type(outcome).__name__}: {outcome}", None)
        delay = None
        if isinstance(outcome, GatewayUnavailableError):
            if refund.state != RefundState.UNKNOWN:
                refund.unknown_since = now
            refund.state = RefundState.UNKNOWN
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


def _refunded(view: PaymentView, refund: Refund) -> RefundReceipt | None:
    """The refund the provider reports, or None when it has none: then send it (same key)."""
    if view.refunded_amount >= refund.amount:
        return RefundReceipt(
            # The provider's list does not name the refund: billing's own id stands for it.
            refund_id=refund.id,
            amount=refund.amount,
            currency=refund.currency,
        )
    return None
