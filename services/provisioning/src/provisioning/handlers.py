"""Provisioning's event handlers: the activation of a paid renewal, the cancellation of a bundle.

A renewal is paid for once billing says so by `PaymentAuthorized` (card and PayPal: the money is
held, billing captures it after `ProfileActivated`) or by `PaymentSettled` (Alipay, and anything
captured at once); whichever comes first starts the activation, the other changes nothing.

Each handler only writes a row that is due now, once per renewal; the activation loop
(`activating.py`) and the cancellation loop (`cancelling.py`) call the eSIM platform, so a handler
never calls anything outside its own transaction.
"""

import logging
from datetime import timedelta

from esim_core.clock import utcnow
from esim_core.messaging.consumer import PermanentEventError
from esim_schemas import BundleCancelRequested, CloudEvent, PaymentAuthorized, PaymentSettled
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from provisioning.domain import ActivationTerms, CancellationState, activation_id_for
from provisioning.store import Activation, Cancellation

logger = logging.getLogger(__name__)


def _terms(data: PaymentSettled | PaymentAuthorized) -> ActivationTerms:
    return ActivationTerms(
        iccid=data.iccid,
        plan_code=data.plan.code,
        data_mb=data.plan.data_mb,
        validity_days=data.plan.validity_days,
        start=data.start,
    )


class Handlers:
    """The handlers of provisioning's consumer, with the rules they need."""

    def __init__(self, *, activation_deadline_s: float) -> None:
        self.activation_deadline_s = activation_deadline_s

    async def on_payment_settled(
        self, session: AsyncSession, event: CloudEvent[PaymentSettled]
    ) -> None:
        """Record the activation of a paid renewal, due now; a repeat changes nothing.

        Raises:
            PermanentEventError: the renewal already has an activation of another card, plan
                or start (a renewal_id reused with other content is rejected, not merged).
        """
        await self._activate(session, event.id, event.data, "PaymentSettled")

    async def on_payment_authorized(
        self, session: AsyncSession, event: CloudEvent[PaymentAuthorized]
    ) -> None:
        """Record the activation of a renewal whose payment is held, due now, exactly as for
        PaymentSettled: whichever of the two comes first starts it, the other changes nothing.

        Raises:
            PermanentEventError: the renewal already has an activation of another card, plan
                or start.
        """
        await self._activate(session, event.id, event.data, "PaymentAuthorized")

    async def _activate(
        self,
        session: AsyncSession,
        event_id: str,
        data: PaymentSettled | PaymentAuthorized,
        kind: str,
    ) -> None:
        renewal_id = str(data.renewal_id)
        terms = _terms(data)
        existing = (
            await session.exec(select(Activation).where(Activation.renewal_id == renewal_id))
        ).first()
        if existing is not None:
            differing = existing.terms().differences(terms)
            if differing:
                raise PermanentEventError(
                    f"conflicting {kind} for renewal {renewal_id}: "
                    f"{', '.join(differing)} differ from activation {existing.id}"
                )
            logger.info(
                "%s %s repeats renewal %s: activation %s (%s) stays as it is",
                kind,
                event_id,
                renewal_id,
                existing.id,
                existing.state,
            )
            return
        now = utcnow()
        activation = Activation(
            id=activation_id_for(renewal_id),
            renewal_id=renewal_id,
            payment_id=data.payment_id,
            iccid=terms.iccid,
            plan_code=terms.plan_code,
            data_mb=terms.data_mb,
            validity_days=terms.validity_days,
            start=terms.start,
            created_at=now,
            updated_at=now,
            deadline_at=now + timedelta(seconds=self.activation_deadline_s),
            due_at=now,
        )
        session.add(activation)
        logger.info(
            "activation %s of renewal %s: %s on card %s (start %s), due now",
            activation.id,
            renewal_id,
            activation.plan_code,
            activation.iccid,
            activation.start,
        )

    async def on_bundle_cancel_requested(
        self, session: AsyncSession, event: CloudEvent[BundleCancelRequested]
    ) -> None:
        """Record that a renewal's bundle is to be cancelled, due now; a repeat changes nothing.

        The row's primary key is the renewal_id, so a duplicate in one consumer batch fails the
        commit and the batch is redone one by one, finding the row.
        """
        data = event.data
        renewal_id = str(data.renewal_id)
        existing = await session.get(Cancellation, renewal_id)
        if existing is not None:
            logger.info(
                "BundleCancelRequested %s repeats renewal %s: cancellation %s stays as it is",
                event.id,
                renewal_id,
                existing.state,
            )
            return
        now = utcnow()
        session.add(
            Cancellation(
                id=renewal_id,
                iccid=data.iccid,
                reason=data.reason,
                replaced_by=str(data.replaced_by) if data.replaced_by is not None else None,
                request_event_id=event.id,
                state=CancellationState.PENDING,
                created_at=now,
                updated_at=now,
                due_at=now,
            )
        )
        logger.info(
            "cancellation of renewal %s on card %s (%s), due now",
            renewal_id,
            data.iccid,
            data.reason,
        )
