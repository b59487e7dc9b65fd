"""Provisioning's event handlers: the activation of a paid renewal, the cancellation of a bundle.

A renewal is paid for once billing says so by `PaymentAuthorized` (card and PayPal: the money is
held, billing captures it after `ProfileActivated`) or by `PaymentSettled` (Alipay, and anything
captured at once); whichever comes first starts the activation, the other changes nothing.

Each handler only writes a row that is due now, once per renewal; the activation loop
(`activating.py`) and the cancellation loop (`cancelling.py`) call the eSIM platform, so a handler
never calls anything outside its own transaction.
"""

import logging
from collections import OrderedDict
from datetime import timedelta

from esim_core.clock import utcnow
from esim_core.duework.loop import made_due
from esim_core.messaging.consumer import PermanentEventError
from esim_core.persistence.db import on_commit
from esim_core.persistence.driver import Target
from esim_schemas import BundleCancelRequested, CloudEvent, PaymentAuthorized, PaymentSettled
from sqlmodel.ext.asyncio.session import AsyncSession

from provisioning.domain import ActivationTerms, CancellationState, activation_id_for
from provisioning.store import (
    Activation,
    Cancellation,
    activation_of_renewal,
    add_activation,
    new_activation,
)

logger = logging.getLogger(__name__)


def _terms(data: PaymentSettled | PaymentAuthorized) -> ActivationTerms:
    return ActivationTerms(
        iccid=data.iccid,
        plan_code=data.plan.code,
        data_mb=data.plan.data_mb,
        validity_days=data.plan.validity_days,
        start=data.start,
    )


class CommittedActivations:
    """The terms of the activations this process saw committed, the newest `size` of them.

    A committed activation's terms never change and its row is never deleted, so a payment
    event whose renewal is here with the same terms would change nothing: the consumer ignores
    it before any transaction (`Handlers.ignores`). What is not here (another replica's, one
    from before a restart, one pushed out by newer ones) takes the handler's path, as always.
    """

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self._terms: OrderedDict[str, ActivationTerms] = OrderedDict()

    def holds(self, renewal_id: str, terms: ActivationTerms) -> bool:
        """Whether the renewal's activation is known committed with exactly these terms."""
        return self._terms.get(renewal_id) == terms

    def after_commit(self, session: Target, renewal_id: str, terms: ActivationTerms) -> None:
        """Remember the activation once the session's transaction commits (not before: a
        rolled-back one may never be)."""
        on_commit(session, f"{_PENDING}.{renewal_id}", lambda: self._remember(renewal_id, terms))

    def _remember(self, renewal_id: str, terms: ActivationTerms) -> None:
        self._terms[renewal_id] = terms
        self._terms.move_to_end(renewal_id)
        while len(self._terms) > self.size:
            self._terms.popitem(last=False)


_PENDING = "provisioning.handlers.committed_activations"


class Handlers:
    """The handlers of provisioning's consumer, with the rules they need."""

    def __init__(self, *, activation_deadline_s: float) -> None:
        self.activation_deadline_s = activation_deadline_s
        self.committed = CommittedActivations()

    async def on_payment_settled(self, session: Target, event: CloudEvent[PaymentSettled]) -> None:
        """Record the activation of a paid renewal, due now; a repeat changes nothing.

        Raises:
            PermanentEventError: the renewal already has an activation of another card, plan
                or start (a renewal_id reused with other content is rejected, not merged).
        """
        await self._activate(session, event.id, event.data, "PaymentSettled")

    async def on_payment_authorized(
        self, session: Target, event: CloudEvent[PaymentAuthorized]
    ) -> None:
        """Record the activation of a renewal whose payment is held, due now, exactly as for
        PaymentSettled: whichever of the two comes first starts it, the other changes nothing.

        Raises:
            PermanentEventError: the renewal already has an activation of another card, plan
                or start.
        """
        await self._activate(session, event.id, event.data, "PaymentAuthorized")

    def ignores(
        self, event: CloudEvent[PaymentSettled] | CloudEvent[PaymentAuthorized]
    ) -> str | None:
        """Why a payment event would change nothing, where this process knows it for sure: its
        renewal's activation was committed with the same terms (`Route.ignores`)."""
        data = event.data
        if self.committed.holds(str(data.renewal_id), _terms(data)):
            return "the renewal's activation is committed already, with these terms"
        return None

    async def _activate(
        self,
        session: Target,
        event_id: str,
        data: PaymentSettled | PaymentAuthorized,
        kind: str,
    ) -> None:
        renewal_id = str(data.renewal_id)
        terms = _terms(data)
        now = utcnow()
        activation_id = activation_id_for(renewal_id)
        deadline = now + timedelta(seconds=self.activation_deadline_s)
        row = new_activation(activation_id, renewal_id, data.payment_id, terms, now, deadline)
        if await add_activation(session, row):
            self.committed.after_commit(session, renewal_id, terms)
            made_due(session, Activation)
            logger.info(
                "activation %s of renewal %s: %s on card %s (start %s), due now",
                activation_id,
                renewal_id,
                terms.plan_code,
                terms.iccid,
                terms.start,
            )
            return
        existing = await activation_of_renewal(session, renewal_id)
        if existing is None:
            raise RuntimeError(f"renewal {renewal_id} has an activation that cannot be read")
        differing = existing.terms.differences(terms)
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
        self.committed.after_commit(session, renewal_id, terms)

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
        made_due(session, Cancellation)
        logger.info(
            "cancellation of renewal %s on card %s (%s), due now",
            renewal_id,
            data.iccid,
            data.reason,
        )
