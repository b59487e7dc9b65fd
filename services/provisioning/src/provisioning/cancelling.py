"""Cancelling a bundle that accounts asked to cancel: one platform call a round, then one commit.

A BundleCancelRequested becomes a `provisioning_cancellation` row due now (one per renewal, so a
redelivery is a no-op). A round cancels the renewal's bundle at the platform outside any
transaction (the call is idempotent at the platform), then commits the outcome: cancelled
means BundleCancelled for carriers (once per bundle, `usage.mark_cancelled`); refused (the
bundle had started, ended or failed) means the card is polled at once, so the BundleStarted or
BundleEnded that tells accounts the plan stays goes out; no answer means another round later.
"""

import logging
from datetime import datetime
from typing import Any, cast

from esim_core.clock import utcnow
from esim_core.duework.worker import DueWorker
from esim_schemas.events import BundleCancelReason
from prometheus_client import Counter
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from provisioning.domain import ActivationState, CancellationState, FollowUpRules, retry_delay
from provisioning.platforms import (
    BundleCancellation,
    EsimPlatform,
    OrderNotFoundError,
    PlatformRejectedError,
    PlatformUnavailableError,
)
from provisioning.store import Activation, Bundle, Cancellation
from provisioning.usage import mark_cancelled, watch_card

logger = logging.getLogger(__name__)

CANCELLATIONS = Counter(
    "esim_provisioning_cancellations_total",
    "Requested cancellations that ended, by outcome",
    ["outcome"],
)

_NOT_YET = "the renewal's bundle is not live here yet"


class CancellationWorker(DueWorker[EsimPlatform, FollowUpRules]):
    """Moves due cancellations on: cancel the bundle at the platform, then record the answer."""

    table = Cancellation
    what = "cancelling a bundle"
    claims_rows = True
    noun = "cancellation"
    transient = PlatformUnavailableError
    system = "eSIM platform"

    async def work_claimed(self, row: Any) -> None:
        """One round of a cancellation as its claim leased it: one platform call, one commit."""
        cancellation = cast(Cancellation, row)
        if cancellation.state != CancellationState.PENDING:
            await self.clear(cancellation)
            return
        async with self.database.session() as session:
            activation = (
                await session.exec(
                    select(Activation).where(Activation.renewal_id == cancellation.id)
                )
            ).first()
            bundle = (
                await session.get(Bundle, activation.order_id)
                if activation is not None and activation.order_id is not None
                else None
            )
        outcome: BundleCancellation | Exception | str
        if activation is not None and activation.state == ActivationState.FAILED:
            outcome = "nothing to cancel: the activation failed"
        elif bundle is None or activation is None:
            outcome = _NOT_YET
        elif bundle.cancelled_at is not None:
            outcome = f"already {bundle.cancel_reason}"
        else:
            order_id = bundle.order_id
            try:
                outcome = await self.within_round(
                    f"cancel of renewal {cancellation.id}",
                    lambda: self.port.cancel_bundle(order_id),
                )
            except (PlatformUnavailableError, PlatformRejectedError) as error:
                outcome = error

        async def apply(session: AsyncSession, current: Cancellation) -> None:
            await self._apply(session, current, outcome, utcnow())

        await self.commit_round(
            cancellation.id,
            cancellation.lease_until,
            apply,
            lambda row: row.state == CancellationState.PENDING,
        )

    async def _apply(
        self,
        session: AsyncSession,
        cancellation: Cancellation,
        outcome: BundleCancellation | Exception | str,
        now: datetime,
    ) -> None:
        self.count_round(session, cancellation, now)
        if isinstance(outcome, BundleCancellation):
            cancellation.order_id = outcome.order_id
            cancellation.bundle_status = outcome.bundle.status[:16]
            bundle = await session.get(Bundle, outcome.order_id, with_for_update=True)
            if outcome.cancelled and bundle is None:
                # Looked up before the call; gone since would be a bug worth an ERROR.
                logger.error(
                    "cancellation %s: bundle %s is gone", cancellation.id, outcome.order_id
                )
                self._done(cancellation, CancellationState.ABANDONED, "bundle row gone", now)
            elif outcome.cancelled and bundle is not None:
                reason = cast(BundleCancelReason, cancellation.reason)
                mark_cancelled(self.outbox, session, bundle, reason, now)
                self._done(cancellation, CancellationState.CANCELLED, None, now)
            else:
                # Started, ended or failed first: the poll tells accounts the plan stays.
                await watch_card(session, cancellation.iccid, now)
                self._done(
                    cancellation,
                    CancellationState.REFUSED,
                    f"the platform did not cancel: bundle {outcome.bundle.status[:64]}",
                    now,
                )
        elif outcome == f"already {cancellation.reason}":
            # Cancelled for this very reason before (a start=now plan replaced it): told once.
            self._done(cancellation, CancellationState.CANCELLED, outcome, now)
        elif isinstance(outcome, str) and outcome != _NOT_YET:
            self._done(cancellation, CancellationState.ABANDONED, outcome, now)
        elif isinstance(outcome, OrderNotFoundError):
            logger.error("cancellation %s: %s", cancellation.id, outcome)
            self._done(cancellation, CancellationState.ABANDONED, str(outcome), now)
        else:
            # No answer, or the activation not yet live here: another round later.
            delay = self.another_round(cancellation, str(outcome), now, retry_delay)
            logger.warning(
                "cancellation %s: %s; next round in %.1f s", cancellation.id, outcome, delay
            )

    @staticmethod
    def _done(
        cancellation: Cancellation, state: CancellationState, why: str | None, now: datetime
    ) -> None:
        cancellation.state = state
        cancellation.last_error = why[:500] if why else None
        cancellation.done_at = now
        cancellation.due_at = None
        CANCELLATIONS.labels(state.value).inc()
        logger.info("cancellation %s: %s%s", cancellation.id, state, f" ({why})" if why else "")
