"""Activations and bundles: states, ids, and the rules for polling, retries, usage and alerts."""

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Literal, Protocol
from uuid import UUID

from esim_core.duework.backoff import backoff
from esim_core.ids import derived_id, namespace
from esim_core.terms import Terms

_IDS = namespace("provisioning")

UNKNOWN_ICCID = "unknown_iccid"
"""ActivationFailed reason: the eSIM platform does not know the card."""

ACTIVATION_TIMEOUT = "activation_timeout"
"""ActivationFailed reason: the bundle was not live before the activation deadline (the SLA)."""

ORDER_REJECTED = "order_rejected"
"""ActivationFailed reason: the platform refused the bundle order itself (not the card)."""

BUNDLE_FAILED = "bundle_failed"
"""ActivationFailed reason when the platform says `failed` without saying why."""


class ActivationState(StrEnum):
    """Where an activation is: ordering the bundle, following it, cancelling it, or final.

    `cancelling`: the deadline passed while the order was not live; the bundle is cancelled at
    the platform before the activation fails, so a refunded renewal never goes live later.
    """

    ORDERING = "ordering"
    FOLLOWING = "following"
    CANCELLING = "cancelling"
    ACTIVATED = "activated"
    FAILED = "failed"


class CancellationState(StrEnum):
    """Where a requested cancellation is: waiting for the platform, or its answer.

    `cancelled`: the bundle will never run (BundleCancelled published); `refused`: it had
    started, ended or failed; `abandoned`: there is nothing that could be cancelled.
    """

    PENDING = "pending"
    CANCELLED = "cancelled"
    REFUSED = "refused"
    ABANDONED = "abandoned"


FINAL_STATES: frozenset[str] = frozenset({ActivationState.ACTIVATED, ActivationState.FAILED})

Verdict = Literal["pending", "activated", "failed", "unexpected"]

_PENDING_STATUSES = frozenset({"processing"})
_LIVE_STATUSES = frozenset({"active", "queued"})
# Bundles that were live once and have run out since: the plan was applied, nothing to refund.
_SPENT_STATUSES = frozenset({"depleted", "expired"})
_FAILED_STATUSES = frozenset({"failed", "revoked"})


def activation_id_for(renewal_id: UUID | str) -> str:
    """The activation id of a renewal: the same for every delivery of its PaymentSettled."""
    return f"act_{derived_id(_IDS, f'activation:{renewal_id}')}"


def order_key(renewal_id: UUID | str) -> str:
    """The platform Idempotency-Key of a renewal's bundle order: identical on every attempt."""
    return f"bundle:{renewal_id}"


def cancel_verdict(cancelled: bool, status: str) -> Verdict:
    """What the platform's answer to a cancel at the deadline means for the activation.

    Cancelled: it will never run, so the activation fails; not cancelled: the bundle's status
    decides (live or spent: activated; failed: failed; still pending: ask again).
    """
    if cancelled:
        return "failed"
    return verdict(status)


def event_id(kind: str, renewal_id: UUID | str) -> str:
    """A CloudEvents id derived from what caused the event, so a redo publishes the same id."""
    return derived_id(_IDS, f"{kind}:{renewal_id}")


def verdict(status: str) -> Verdict:
    """What a bundle status at the platform means for the activation.

    `processing` is still pending; `active` and `queued` are live (and `depleted` / `expired`
    were); `failed` and `revoked` will never be live; anything else is unexpected and is
    followed like a pending bundle until the deadline.
    """
    if status in _PENDING_STATUSES:
        return "pending"
    if status in _LIVE_STATUSES or status in _SPENT_STATUSES:
        return "activated"
    if status in _FAILED_STATUSES:
        return "failed"
    return "unexpected"


def bundle_state(status: str) -> Literal["active", "queued"]:
    """The contract's `bundle_state` of a live bundle."""
    return "queued" if status == "queued" else "active"


def failure_reason(status: str, platform_reason: str | None) -> str:
    """The ActivationFailed reason of a bundle the platform gave up on."""
    if platform_reason:
        return platform_reason[:128]
    return BUNDLE_FAILED if status == "failed" else f"bundle_{status}"[:128]


@dataclass(frozen=True)
class FollowUpRules:
    """How often a bundle is polled, and how long to wait after a round without an answer."""

    poll_interval_s: float
    poll_interval_max_s: float
    retry_backoff_s: float
    retry_backoff_max_s: float


def poll_delay(polls: int, rules: FollowUpRules) -> float:
    """Seconds to the next status check after `polls` checks that found the bundle pending.

    The first check comes one poll interval after the order; each further one waits 1.5 times
    longer, up to the cap, so a slow activation is not hammered.
    """
    return backoff(polls + 1, rules.poll_interval_s, rules.poll_interval_max_s, factor=1.5)


class Backoff(Protocol):
    """Rules with a back-off for rounds in which the platform did not answer."""

    @property
    def retry_backoff_s(self) -> float:
        """The first pause."""
        ...

    @property
    def retry_backoff_max_s(self) -> float:
        """The longest pause."""
        ...


def retry_delay(rounds: int, rules: Backoff) -> float:
    """Seconds to the next round after `rounds` rounds in a row without an answer (jittered)."""
    # Many activations hit by one outage should not all come back in the same instant.
    return backoff(rounds, rules.retry_backoff_s, rules.retry_backoff_max_s, jitter=0.25)


def next_due(now: datetime, delay_s: float, deadline: datetime) -> datetime:
    """When to look again: after `delay_s`, but never later than the deadline."""
    return min(now + timedelta(seconds=delay_s), deadline)


@dataclass(frozen=True)
class ActivationTerms(Terms):
    """What a renewal asks provisioning to apply; two deliveries of one renewal must agree."""

    iccid: str
    plan_code: str
    data_mb: int
    validity_days: int
    start: str


THRESHOLDS: tuple[int, ...] = (75, 90, 100)
"""Per cent of a bundle's data at which `DataLow` is published, once each (100 = used up)."""

_BUNDLE_RANKS = {"queued": 0, "active": 1, "depleted": 2, "expired": 2}
ENDED_STATUSES = frozenset({"depleted", "expired"})


def bundle_rank(status: str) -> int | None:
    """How far along a bundle is (queued, active, ended); None for a status that is not one."""
    return _BUNDLE_RANKS.get(status)


def later_status(known: str, reported: str) -> str:
    """A bundle's status after a report: it never goes back (a late report changes nothing)."""
    new, old = bundle_rank(reported), bundle_rank(known)
    if new is None:
        return known
    if old is None or new > old:
        return reported
    return known


def thresholds_reached(used_mb: int, total_mb: int, status: str, already: int) -> list[int]:
    """The thresholds newly reached by a bundle's use, in order; `already` is the highest sent.

    A bundle the platform calls `depleted` is used up whatever the count says.
    """
    if total_mb <= 0:
        return []
    used_up = status == "depleted"
    return [
        threshold
        for threshold in THRESHOLDS
        if threshold > already and (used_up or used_mb * 100 >= threshold * total_mb)
    ]


@dataclass(frozen=True)
class UsageRules:
    """How often a card's usage is polled: quickly after a change, slower while nothing moves."""

    interval_s: float
    interval_max_s: float
    retry_backoff_s: float
    retry_backoff_max_s: float


def usage_poll_delay(idle_polls: int, rules: UsageRules) -> float:
    """Seconds to the next usage poll after `idle_polls` polls in a row that saw no change."""
    return backoff(idle_polls + 1, rules.interval_s, rules.interval_max_s, factor=1.5)
