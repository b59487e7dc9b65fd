"""Billing's event handlers: record a payment, a capture or a refund to do, once per renewal.

Handlers only write rows that are due now; the payment and refund loops (`charging.py`,
`refunding.py`) call the providers, so a handler never calls anything outside its own
transaction. The two that every renewal meets (PaymentRequested, ProfileActivated) take one
statement each in the usual case, through `store.py`'s compiled statements.
"""

import logging
from typing import Any

from esim_core.clock import utcnow
from esim_core.duework.loop import made_due
from esim_core.messaging.consumer import PermanentEventError
from esim_core.observability.tracing import current_traceparent
from esim_core.persistence.driver import Target
from esim_schemas import CloudEvent, PaymentRequested, ProfileActivated, RefundRequested
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from billing.domain import (
    PaymentState,
    PaymentTerms,
    Step,
    payment_id_for,
    refund_row_id_for,
)
from billing.store import (
    PAYMENT_COLUMNS,
    Payment,
    Refund,
    insert_payment,
    payment_by_renewal,
    request_capture,
)

logger = logging.getLogger(__name__)

_REASON_LENGTH = 256


def _terms(data: PaymentRequested) -> PaymentTerms:
    return PaymentTerms(
        user_id=data.user_id,
        iccid=data.iccid,
        plan_code=data.plan.code,
        data_mb=data.plan.data_mb,
        validity_days=data.plan.validity_days,
        amount=data.price.amount,
        currency=data.price.currency,
        method=data.payment.method,
        start=data.start,
    )


async def on_payment_requested(transaction: Target, event: CloudEvent[PaymentRequested]) -> None:
    """Record the payment of a renewal, due now; a repeat of the same request changes nothing.

    Raises:
        PermanentEventError: the renewal already has a payment with other terms, or the price
            is zero (nothing to charge).
    """
    data = event.data
    renewal_id = str(data.renewal_id)
    terms = _terms(data)
    if data.price.amount <= 0:
        raise PermanentEventError(
            f"payment request for renewal {renewal_id} has nothing to charge (amount 0)"
        )
    now = utcnow()
    payment_id = payment_id_for(renewal_id)
    row: dict[str, Any] = dict.fromkeys(PAYMENT_COLUMNS)
    # Each of the terms is the payment's column of the same name (`Payment.terms` reads them).
    row.update(vars(terms))
    row.update(
        id=payment_id,
        renewal_id=renewal_id,
        token=data.payment.token,
        return_url=getattr(data.payment, "return_url", None),
        discount_amount=data.discount.amount if data.discount is not None else None,
        promo_code=data.promo_code,
        state=PaymentState.PENDING.value,
        attempts=0,
        soft_declines=0,
        unavailable_rounds=0,
        created_at=now,
        updated_at=now,
        due_at=now,
        # Its rounds continue the trace of the event that asked for it.
        traceparent=current_traceparent(),
    )
    if await insert_payment(transaction, row):
        made_due(transaction, Payment)
    else:
        # The renewal has its payment already (another delivery of its request, under another
        # event id): the same terms change nothing, other terms are a conflict.
        existing = await payment_by_renewal(transaction, renewal_id)
        if existing is None:  # pragma: no cover - the insert found it; nothing deletes payments
            raise RuntimeError(f"payment of renewal {renewal_id} vanished")
        differing = existing.terms().differences(terms)
        if differing:
            raise PermanentEventError(
                f"conflicting payment request for renewal {renewal_id}: payment {existing.id} "
                f"was requested with another {', '.join(differing)}"
            )
        logger.info(
            "PaymentRequested %s repeats renewal %s: payment %s (%s) stays as it is",
            event.id,
            renewal_id,
            existing.id,
            existing.state,
        )
        return
    # The round's answer (authorized, settled, failed) is the payment's INFO line.
    logger.debug(
        "payment %s of renewal %s: %d %s by %s, due now",
        payment_id,
        renewal_id,
        terms.amount,
        terms.currency,
        terms.method,
    )


async def on_refund_requested(session: AsyncSession, event: CloudEvent[RefundRequested]) -> None:
    """Record the refund of a renewal's settled payment, due now; a repeat changes nothing.

    Raises:
        PermanentEventError: the payment is unknown, belongs to another renewal, is not
            settled, or the refund asks for more than was captured or another currency; or the
            renewal already has a refund of another payment or amount.
    """
    data = event.data
    renewal_id = str(data.renewal_id)
    existing = (await session.exec(select(Refund).where(Refund.renewal_id == renewal_id))).first()
    if existing is not None:
        if (existing.payment_id, existing.amount, existing.currency) != (
            data.payment_id,
            data.price.amount,
            data.price.currency,
        ):
            raise PermanentEventError(
                f"conflicting refund request for renewal {renewal_id}: refund {existing.id} "
                "is of another payment or amount"
            )
        logger.info(
            "RefundRequested %s repeats renewal %s: refund %s (%s) stays as it is",
            event.id,
            renewal_id,
            existing.id,
            existing.state,
        )
        return
    payment = await session.get(Payment, data.payment_id)
    if payment is None:
        raise PermanentEventError(
            f"refund for renewal {renewal_id} names unknown payment {data.payment_id}"
        )
    if payment.renewal_id != renewal_id:
        raise PermanentEventError(
            f"refund for renewal {renewal_id} names payment {payment.id} of another renewal"
        )
    holding = payment.state == PaymentState.AUTHORIZED or (
        payment.state == PaymentState.UNKNOWN and payment.unknown_step in (Step.CAPTURE, Step.VOID)
    )
    if payment.state != PaymentState.SETTLED and not holding:
        raise PermanentEventError(
            f"refund for renewal {renewal_id}: payment {payment.id} is {payment.state}, "
            "neither settled nor authorized, so there is nothing to refund"
        )
    if data.price.currency != payment.currency or not 0 < data.price.amount <= payment.amount:
        raise PermanentEventError(
            f"refund for renewal {renewal_id} asks {data.price.amount} {data.price.currency} "
            f"of a payment of {payment.amount} {payment.currency}"
        )
    now = utcnow()
    refund = Refund(
        id=refund_row_id_for(renewal_id),
        renewal_id=renewal_id,
        payment_id=payment.id,
        iccid=payment.iccid,
        amount=data.price.amount,
        currency=data.price.currency,
        reason=data.reason[:_REASON_LENGTH],
        via="void" if holding else "refund",
        created_at=now,
        updated_at=now,
        # A release is the payment loop's to make; this row records it once made.
        due_at=None if holding else now,
    )
    session.add(refund)
    if holding:
        payment.release_requested_at = now
        payment.updated_at = now
        if payment.state == PaymentState.AUTHORIZED:
            payment.due_at = now
            made_due(session, Payment)
        session.add(payment)
    else:
        made_due(session, Refund)
    logger.info(
        "refund %s of renewal %s: %d %s of payment %s by %s, due now",
        refund.id,
        renewal_id,
        refund.amount,
        refund.currency,
        payment.id,
        refund.via,
    )


async def on_profile_activated(transaction: Target, event: CloudEvent[ProfileActivated]) -> None:
    """The plan is live: capture the renewal's authorization (once; a repeat changes nothing).

    A payment already captured (Alipay, or one taken at once) has nothing left to do; one that
    billing does not know is not billing's to capture.
    """
    renewal_id = str(event.data.renewal_id)
    marked = await request_capture(transaction, renewal_id, utcnow())
    if marked is None:
        # Captured already (Alipay, or a payment taken at once), final, marked before, or
        # none at all: only the last is worth a word.
        if await payment_by_renewal(transaction, renewal_id) is None:
            logger.warning(
                "ProfileActivated %s: renewal %s has no payment here", event.id, renewal_id
            )
        return
    payment_id, state = marked
    if state == PaymentState.AUTHORIZED.value:  # due now (`request_capture`)
        made_due(transaction, Payment)
    # The capture's outcome (settled) is the payment's INFO line.
    logger.debug("payment %s of renewal %s: activated, capture due", payment_id, renewal_id)
