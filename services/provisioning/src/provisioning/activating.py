"""Activating: claim due activations, order or follow the bundle, commit the outcome.

Each round makes one call to the eSIM platform outside any transaction, then writes the outcome,
the outbox event and the next due time in one transaction. The order carries an idempotency key
derived from the renewal_id, so a crash between the call and the commit only means the next
round orders again and gets the same order back: the bundle is never applied twice.
"""

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from esim_core.clock import as_utc, utcnow
from esim_core.duework.worker import DueWorker
from esim_core.persistence.driver import Target
from esim_schemas import ActivationFailed, ProfileActivated
from prometheus_client import Counter, Histogram

from provisioning.domain import (
    ACTIVATION_TIMEOUT,
    FINAL_STATES,
    ORDER_REJECTED,
    UNKNOWN_ICCID,
    ActivationState,
    FollowUpRules,
    bundle_state,
    cancel_verdict,
    event_id,
    failure_reason,
    next_due,
    order_key,
    poll_delay,
    retry_delay,
    verdict,
)
from provisioning.platforms import (
    BundleCancellation,
    BundleOrder,
    BundleOrderRequest,
    BundleStatus,
    EsimPlatform,
    OrderNotFoundError,
    PlatformRejectedError,
    PlatformUnavailableError,
    UnknownIccidError,
)
from provisioning.store import Activation, write_activation_round
from provisioning.usage import (
    LiveBundles,
    live_bundles,
    replaced_at,
    track_bundle,
    watch_card,
)

logger = logging.getLogger(__name__)

ACTIVATIONS = Counter(
    "esim_provisioning_activations_total", "Activations that ended, by outcome", ["outcome"]
)
ACTIVATION_SECONDS = Histogram(
    "esim_provisioning_activation_seconds",
    "Time from PaymentSettled to a live bundle",
    buckets=(0.5, 1, 2, 5, 10, 30, 60, 300, 3600, 21600, 86400),
)

Outcome = (
    BundleOrder
    | BundleStatus
    | BundleCancellation
    | UnknownIccidError
    | PlatformUnavailableError
    | PlatformRejectedError
)

# Refusals of an order that no later try can turn into a bundle; other refusals (401, 403, ...)
# are likely a configuration fault that ops can fix before the deadline, so they are retried.
_FINAL_ORDER_REFUSALS = frozenset({400, 409, 422})


def _settled_bundle(outcome: Outcome, follow_up: BundleStatus | None) -> BundleStatus | None:
    """The bundle a round's answer settles, where it names one: a status, a cancel's answer,
    or an order answered with its bundle (`follow_up`)."""
    if follow_up is not None:
        return follow_up
    if isinstance(outcome, BundleStatus):
        return outcome
    if isinstance(outcome, BundleCancellation):
        return outcome.bundle
    return None


def _complete(bundle: BundleStatus | None) -> bool:
    """Whether an order's answer tells all that activating or failing its bundle needs."""
    if bundle is None:
        return False
    meaning = verdict(bundle.status)
    if meaning == "activated":
        return bundle.valid_from is not None and bundle.valid_until is not None
    return meaning == "failed"


class _Dropped(Exception):
    """A round's outcome is not written: its row was claimed again, or moved on."""


class ActivationWorker(DueWorker[EsimPlatform, FollowUpRules]):
    """Moves due activations on: order the bundle, follow it, then activate or fail.

    A live (or queued) bundle is handed to the usage poller in the same commit.
    """

    table = Activation
    what = "advancing activation"
    claims_rows = True  # a round starts from the row its claim returned: no read of its own
    usage_poll_after_s: float = 10.0
    noun = "activation"
    kept_by = "the order's idempotency key keeps one bundle"
    transient = PlatformUnavailableError
    system = "eSIM platform"

    async def advance(self, activation: Activation) -> None:
        """One round of an activation as its claim leased it: one platform call, one commit."""
        activation_id = activation.id
        if activation.state in FINAL_STATES:
            # Final already: a stale due time must not send it to the platform again.
            await self.clear(activation)
            return
        now = utcnow()
        if (
            activation.state == ActivationState.ORDERING
            and activation.attempts == 0
            and now >= as_utc(activation.deadline_at)
        ):
            # Never sent to the platform: ordering now would apply a bundle nobody waits for.
            # (After a round without an answer the order may exist: it is asked for again under
            # its key below, and cancelled.)
            async def give_up(session: Target, current: Activation) -> None:
                current.last_error = "not sent to the platform by the deadline"
                current.lease_until = None
                current.updated_at = now
                self._fail(session, current, ACTIVATION_TIMEOUT, now)

            await self._commit(activation, activation.lease_until, give_up)
            return
        lease = activation.lease_until
        outcome = await self._call(activation)
        # An order the platform answers as already live (or failed) is looked up in the same
        # round, for its dates: one commit instead of a second round a poll interval later.
        follow_up: BundleStatus | None = None
        if isinstance(outcome, BundleOrder) and verdict(outcome.status) != "pending":
            follow_up = outcome.bundle if _complete(outcome.bundle) else None
            if follow_up is None:
                follow_up = await self._status_now(activation_id, outcome.order_id)

        async def apply(session: Target, current: Activation) -> None:
            # A plan started at once that goes live in this round ends the card's live one: that
            # one is looked up (and locked) first, so ProfileActivated can name what it replaced.
            # Locks in the usage poller's order, the card's usage watch before its bundles: the
            # other order deadlocked the two on PostgreSQL.
            settled = _settled_bundle(outcome, follow_up)
            replacing = (
                current.start == "now"
                and settled is not None
                and verdict(settled.status) == "activated"
            )
            due = utcnow() + timedelta(seconds=self.usage_poll_after_s)
            live = LiveBundles()
            if replacing:
                assert settled is not None
                await watch_card(session, current.iccid, due)
                live = await live_bundles(session, current.iccid, settled.valid_from or utcnow())
            self._apply(session, current, outcome, live)
            if follow_up is not None and current.state == ActivationState.FOLLOWING:
                self._follow(
                    session, current, follow_up, utcnow(), as_utc(current.deadline_at), live
                )
            await live.write(session)
            activated = current.state == ActivationState.ACTIVATED and current.order_id is not None
            if activated and not replacing:
                await watch_card(session, current.iccid, due)

        await self._commit(activation, lease, apply)

    work_claimed = advance

    def count_round(self, session: Target, row: Any, now: datetime) -> None:
        """Record on the round's copy that a round ran, and end its lease (`_commit` writes
        it: the copy is not added to the session, which would insert it)."""
        row.attempts += 1
        row.updated_at = now
        row.lease_until = None

    async def _commit(
        self,
        activation: Activation,
        lease: datetime | None,
        apply: Callable[[Target, Activation], Awaitable[None]],
    ) -> None:
        """Commit a round's outcome with `apply`, if the activation is still in the state its
        claim found and still carries the claim's lease (`DueWorker.commit_round`, in Core).

        The round goes on from the row its claim returned (nothing else of it changes under a
        lease but the due time, which every outcome sets): `apply` changes that copy, and one
        statement writes it back where the state and the lease are still the claim's. A row
        claimed again meanwhile (its lease ran out mid-round) belongs to the newer round, and a
        row moved on by another is not this round's either: the transaction rolls back, with
        everything `apply` wrote.
        """
        state = activation.state
        try:
            async with self.database.transaction() as transaction:
                await apply(transaction, activation)
                written = await write_activation_round(
                    transaction, activation, was=state, lease=lease
                )
                if not written:
                    raise _Dropped
        except _Dropped:
            logger.warning(
                "%s %s was claimed again or moved on during its round; this round's outcome "
                "is dropped (%s)",
                self.noun,
                activation.id,
                self.kept_by,
            )

    async def _status_now(self, activation_id: str, order_id: str) -> BundleStatus | None:
        try:
            return await self.within_round(
                f"status of activation {activation_id}",
                lambda: self.port.bundle_status(order_id),
            )
        except (PlatformUnavailableError, PlatformRejectedError) as error:
            logger.info(
                "activation %s: no status right after the order (%s); it is polled later",
                activation_id,
                error,
            )
            return None

    async def _call(self, activation: Activation) -> Outcome:
        if activation.state == ActivationState.ORDERING:
            request = BundleOrderRequest(
                idempotency_key=order_key(activation.renewal_id),
                iccid=activation.iccid,
                bundle_code=activation.plan_code,
                data_mb=activation.data_mb,
                validity_days=activation.validity_days,
                start=activation.start,
                reference=activation.renewal_id,
            )
            try:
                return await self.within_round(
                    f"order of activation {activation.id}",
                    lambda: self.port.order_bundle(request),
                )
            except (UnknownIccidError, PlatformUnavailableError, PlatformRejectedError) as error:
                return error
        order_id = activation.order_id
        if order_id is None:
            raise RuntimeError(f"activation {activation.id} is {activation.state} without an order")
        cancelling = activation.state == ActivationState.CANCELLING
        call: Callable[[], Awaitable[BundleStatus | BundleCancellation]] = (
            (lambda: self.port.cancel_bundle(order_id))
            if cancelling
            else (lambda: self.port.bundle_status(order_id))
        )
        what = "cancel" if cancelling else "status"
        try:
            return await self.within_round(f"{what} of activation {activation.id}", call)
        except (PlatformUnavailableError, PlatformRejectedError) as error:
            return error

    def _apply(
        self,
        session: Target,
        activation: Activation,
        outcome: Outcome,
        live: LiveBundles | None = None,
    ) -> None:
        now = utcnow()
        self.count_round(session, activation, now)
        deadline = as_utc(activation.deadline_at)
        if activation.state == ActivationState.CANCELLING:
            self._after_cancel(session, activation, outcome, now, live)
        elif isinstance(outcome, BundleOrder):
            activation.state = ActivationState.FOLLOWING
            activation.order_id = outcome.order_id
            activation.ordered_at = now
            activation.polls = 0
            activation.unavailable_rounds = 0
            activation.last_error = None
            activation.due_at = next_due(now, poll_delay(0, self.rules), deadline)
            logger.info(
                "activation %s of renewal %s: bundle ordered as %s (%s)",
                activation.id,
                activation.renewal_id,
                outcome.order_id,
                outcome.status,
            )
            if now >= deadline:
                # Placed by an unanswered round before the deadline, or by this one: too late.
                self._cancel_at_deadline(activation, "ordered only at the deadline", now)
        elif isinstance(outcome, UnknownIccidError):
            activation.last_error = str(outcome)[:500]
            self._fail(session, activation, UNKNOWN_ICCID, now)
        elif isinstance(outcome, BundleStatus):
            self._follow(session, activation, outcome, now, deadline, live)
        elif (
            isinstance(outcome, PlatformRejectedError)
            and activation.state == ActivationState.ORDERING
            and outcome.status in _FINAL_ORDER_REFUSALS
        ):
            activation.last_error = f"order refused: {outcome}"[:500]
            logger.error(
                "activation %s of renewal %s: the platform refused the order (%s)",
                activation.id,
                activation.renewal_id,
                outcome,
            )
            self._fail(session, activation, ORDER_REJECTED, now)
        elif isinstance(outcome, Exception):
            self._no_answer(session, activation, outcome, now, deadline)
        else:
            raise RuntimeError(
                f"activation {activation.id}: a cancel answer while {activation.state}"
            )

    def _follow(
        self,
        session: Target,
        activation: Activation,
        bundle: BundleStatus,
        now: datetime,
        deadline: datetime,
        live: LiveBundles | None = None,
    ) -> None:
        activation.unavailable_rounds = 0
        meaning = verdict(bundle.status)
        if meaning == "activated":
            self._activate(session, activation, bundle, now, live)
            return
        if meaning == "failed":
            # The status is the platform's text: bounded like every last_error (VARCHAR(512)).
            activation.last_error = (
                f"bundle {bundle.status}"
                + (f": {bundle.failure_reason}" if bundle.failure_reason else "")
            )[:500]
            reason = failure_reason(bundle.status, bundle.failure_reason)
            self._fail(session, activation, reason, now)
            return
        activation.polls += 1
        if meaning == "unexpected":
            activation.last_error = f"unexpected bundle status {bundle.status[:64]!r}"
            logger.warning(
                "activation %s: order %s has status %r, which provisioning does not know; "
                "following it like a pending bundle",
                activation.id,
                activation.order_id,
                bundle.status[:64],
            )
        else:
            activation.last_error = None
        if now >= deadline:
            self._cancel_at_deadline(activation, f"bundle still {bundle.status[:64]!r}", now)
            return
        activation.due_at = next_due(now, poll_delay(activation.polls, self.rules), deadline)

    def _cancel_at_deadline(self, activation: Activation, why: str, now: datetime) -> None:
        # Failing now would refund a bundle the platform may still make live: cancel it first.
        activation.state = ActivationState.CANCELLING
        activation.last_error = f"{why} at the deadline; cancelling it at the platform"[:500]
        activation.unavailable_rounds = 0
        activation.due_at = now
        logger.warning(
            "activation %s of renewal %s: %s; cancelling order %s before giving up",
            activation.id,
            activation.renewal_id,
            why,
            activation.order_id,
        )

    def _after_cancel(
        self,
        session: Target,
        activation: Activation,
        outcome: Outcome,
        now: datetime,
        live: LiveBundles | None = None,
    ) -> None:
        """The platform's answer to the cancel at the deadline: failed, live after all, or again."""
        if isinstance(outcome, BundleCancellation):
            bundle = outcome.bundle
            meaning = cancel_verdict(outcome.cancelled, bundle.status)
            if meaning == "activated":
                logger.warning(
                    "activation %s: order %s went %s before it could be cancelled; the plan stays",
                    activation.id,
                    activation.order_id,
                    bundle.status,
                )
                self._activate(session, activation, bundle, now, live)
                return
            if meaning == "failed":
                if outcome.cancelled:
                    activation.last_error = "not live by the deadline; cancelled at the platform"
                    reason = ACTIVATION_TIMEOUT
                else:
                    activation.last_error = f"bundle {bundle.status[:64]} at the deadline"
                    reason = failure_reason(bundle.status, bundle.failure_reason)
                self._fail(session, activation, reason, now)
                return
            error = f"cancel not done, bundle still {bundle.status[:64]!r}"
        elif isinstance(outcome, OrderNotFoundError):
            # An order the platform does not know can never go live.
            activation.last_error = f"cancel at the deadline: {outcome}"[:500]
            self._fail(session, activation, ACTIVATION_TIMEOUT, now)
            return
        else:
            error = f"{type(outcome).__name__}: {outcome}"
        # Until the platform answers, nobody knows whether the bundle runs: ask again, past the
        # deadline if need be (accounts' own deadline is later; ops see the row in `cancelling`).
        delay = self.another_round(activation, error, now, retry_delay)
        logger.warning(
            "activation %s: cancel at the deadline not answered (%s); next try in %.0f s",
            activation.id,
            activation.last_error,
            delay,
        )

    def _no_answer(
        self,
        session: Target,
        activation: Activation,
        error: Exception,
        now: datetime,
        deadline: datetime,
    ) -> None:
        late = now >= deadline
        # An order sent without an answer may exist: past the deadline it is asked for again
        # under its key (later than the deadline if need be) until the platform says, then
        # cancelled; before it, the next round comes no later than the deadline.
        self.another_round(
            activation,
            f"{type(error).__name__}: {error}",
            now,
            retry_delay,
            until=None if late else deadline,
        )
        # A refused request is not an outage but a fault on one side: worth an ERROR.
        log = logger.error if isinstance(error, PlatformRejectedError) else logger.warning
        if late:
            log(
                "activation %s: no answer from the platform by the deadline (%s)",
                activation.id,
                activation.last_error,
            )
            if activation.state == ActivationState.FOLLOWING:
                self._cancel_at_deadline(activation, "no answer", now)
            return
        assert activation.due_at is not None
        log(
            "activation %s (%s): no answer in round %d in a row (%s); next round at %s",
            activation.id,
            activation.state,
            activation.unavailable_rounds,
            activation.last_error,
            activation.due_at.isoformat(timespec="milliseconds"),
        )

    def _activate(
        self,
        session: Target,
        activation: Activation,
        bundle: BundleStatus,
        now: datetime,
        live: LiveBundles | None = None,
    ) -> None:
        """The bundle is live or queued: ProfileActivated, once; a plan started at once ends
        the card's live one (`live`, locked by the round), which carriers hear as
        BundleCancelled (`replaced`) and the traveller in this plan's receipt (`replaces`)."""
        assert activation.order_id is not None
        valid_from, valid_until = bundle.valid_from, bundle.valid_until
        if valid_from is None or valid_until is None:
            # The contract needs both; a live bundle is not failed over missing dates.
            valid_from = valid_from or now
            valid_until = valid_until or valid_from + timedelta(days=activation.validity_days)
            logger.warning(
                "activation %s: order %s is %s without valid_from/valid_until; "
                "reporting %s .. %s from the plan",
                activation.id,
                activation.order_id,
                bundle.status,
                valid_from.isoformat(),
                valid_until.isoformat(),
            )
        data_mb = bundle.data_mb or activation.data_mb
        if data_mb != activation.data_mb:
            logger.warning(
                "activation %s: the platform applied %d MB where the plan says %d MB",
                activation.id,
                data_mb,
                activation.data_mb,
            )
        state = bundle_state(bundle.status)
        activation.state = ActivationState.ACTIVATED
        activation.bundle_state = state
        activation.valid_from = valid_from
        activation.valid_until = valid_until
        activation.activated_at = now
        activation.due_at = None
        activation.last_error = None
        track_bundle(session, activation, data_mb)
        replaced = (
            replaced_at(live.rows, activation.order_id, valid_from)
            if live is not None and activation.start == "now" and state == "active"
            else []
        )
        self.outbox.add(
            session,
            ProfileActivated(
                renewal_id=UUID(activation.renewal_id),
                iccid=activation.iccid,
                plan_code=activation.plan_code,
                data_mb=data_mb,
                valid_from=valid_from,
                valid_until=valid_until,
                bundle_state=state,
                platform_reference=activation.order_id,
                activated_at=now,
                replaces=[bundle.plan_code for bundle in replaced] or None,
            ),
            event_id=event_id("profile-activated", activation.renewal_id),
        )
        if live is not None and replaced:
            live.replace(self.outbox, session, replaced, now, replaced_by=activation.renewal_id)
        ACTIVATIONS.labels("activated").inc()
        ACTIVATION_SECONDS.observe((now - as_utc(activation.created_at)).total_seconds())
        logger.info(
            "activation %s of renewal %s: %s is %s on card %s (%s .. %s) after %d round(s)",
            activation.id,
            activation.renewal_id,
            activation.plan_code,
            state,
            activation.iccid,
            valid_from.isoformat(),
            valid_until.isoformat(),
            activation.attempts,
        )

    def _fail(self, session: Target, activation: Activation, reason: str, now: datetime) -> None:
        activation.state = ActivationState.FAILED
        activation.failure_reason = reason
        activation.failed_at = now
        activation.due_at = None
        self.outbox.add(
            session,
            ActivationFailed(
                renewal_id=UUID(activation.renewal_id),
                iccid=activation.iccid,
                reason=reason,
                # The contract counts at least one try, also when the deadline passed unordered.
                attempts=max(1, activation.attempts),
                failed_at=now,
            ),
            event_id=event_id("activation-failed", activation.renewal_id),
        )
        ACTIVATIONS.labels("failed").inc()
        logger.warning(
            "activation %s of renewal %s failed: %s after %d round(s) (%s)",
            activation.id,
            activation.renewal_id,
            reason,
            activation.attempts,
            activation.last_error,
        )
