"""Payments and refunds: their states, ids, and the rules that decide retries and failures."""

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from uuid import UUID

from esim_core.duework.backoff import backoff
from esim_core.ids import derived_id, namespace
from esim_core.terms import Terms
from esim_schemas.events import PaymentFailureReason

_IDS = namespace("billing")

FailureReason = PaymentFailureReason
"""Why a payment ends without money: the reasons the contract lets PaymentFailed carry."""

HARD_DECLINES: frozenset[str] = frozenset(
    {"declined", "expired_method", "invalid_token", "not_approved"}
)
"""Decline codes that no later attempt can turn into a capture: the payment fails at once."""

SOFT_DECLINES: frozenset[str] = frozenset({"insufficient_funds"})
"""Decline codes that a later attempt may overcome: retried on the dunning schedule."""


class PaymentState(StrEnum):
    """Where a payment is (CONTRACT.md, "Payments, the way each provider takes them").

    pending → (pay) → authorized | settled | action_required | failed; action_required →
    (the buyer's answer, by webhook or by asking at the expiry) → authorized | settled | failed
    (not_approved); authorized → (ProfileActivated) → settled, or (RefundRequested) → voided.
    A call whose answer was lost leaves the payment `unknown` with the step it was taking
    (`unknown_step`) until asking the provider tells.
    """

    PENDING = "pending"
    ACTION_REQUIRED = "action_required"
    AUTHORIZED = "authorized"
    SETTLED = "settled"
    """Captured: the money is taken (the name every earlier client knows)."""
    FAILED = "failed"
    VOIDED = "voided"
    """The authorization was released after a failed activation; nothing was taken."""
    UNKNOWN = "unknown"


FINAL_PAYMENT_STATES: frozenset[str] = frozenset(
    {PaymentState.SETTLED, PaymentState.FAILED, PaymentState.VOIDED}
)


class Step(StrEnum):
    """The call a payment was making when its answer was lost (`Payment.unknown_step`)."""

    PAY = "pay"
    CAPTURE = "capture"
    VOID = "void"
    """Releasing an authorization after a failed activation."""
    CLOSE = "close"
    """Closing a payment whose buyer never answered before the expiry."""


class RefundState(StrEnum):
    """Where a refund is; `failed` is parked for ops, never dropped (see README).

    `unknown`: the refund call's answer was lost; the next rounds ask the provider first.
    """

    PENDING = "pending"
    REFUNDED = "refunded"
    FAILED = "failed"
    UNKNOWN = "unknown"


def payment_id_for(renewal_id: UUID | str) -> str:
    """The payment id of a renewal: the same for every delivery of its PaymentRequested."""
    return f"pay_{derived_id(_IDS, f'payment:{renewal_id}')}"


def refund_row_id_for(renewal_id: UUID | str) -> str:
    """The id of billing's refund record of a renewal (the provider's refund id is separate)."""
    return f"rfd_{derived_id(_IDS, f'refund:{renewal_id}')}"


def charge_key(renewal_id: UUID | str, attempt: int = 1) -> str:
    """The gateway Idempotency-Key of a renewal's charge `attempt` (1 for the first charge).

    Every repeat of one attempt (a transient error, a lost answer, a crash) uses the same key,
    so it never pays twice. A new attempt comes only after a decline, an answer that arrived,
    so its new key cannot pay twice either; it is what lets a dunning charge reach the card at
    a provider that replays a key's first answer (Stripe). The first attempt keeps the key
    `charge:<renewal>` that every payment has always been made under.
    """
    if attempt < 1:
        raise ValueError(f"a charge attempt counts from 1, not {attempt}")
    return f"charge:{renewal_id}" if attempt == 1 else f"charge:{renewal_id}:{attempt}"


REPLAYING_METHODS = frozenset({"card"})
"""Methods whose provider answers a repeated idempotency key with its first answer, a decline
included (Stripe): each dunning charge of these goes under its own key. PayPal and Alipay try a
payment again under the same request, so their charges keep one key."""


def capture_key(renewal_id: UUID | str) -> str:
    """The idempotency key of a renewal's capture: identical on every attempt."""
    return f"capture:{renewal_id}"


def void_key(renewal_id: UUID | str) -> str:
    """The idempotency key of releasing (or closing) a renewal's payment."""
    return f"void:{renewal_id}"


def refund_key(renewal_id: UUID | str) -> str:
    """The gateway Idempotency-Key of a renewal's refund: identical on every attempt."""
    return f"refund:{renewal_id}"


def event_id(kind: str, renewal_id: UUID | str) -> str:
    """A CloudEvents id derived from what caused the event, so a redo publishes the same id."""
    return derived_id(_IDS, f"{kind}:{renewal_id}")


@dataclass(frozen=True)
class RetryRules:
    """How long to wait, and how often, before a payment or refund stops trying."""

    dunning_schedule_s: Sequence[float]
    max_unavailable_rounds: int
    backoff_s: float
    backoff_max_s: float
    unknown_schedule_s: Sequence[float] = (5.0, 30.0, 120.0, 600.0, 1800.0)
    """Pauses between the look-ups of a payment whose call's answer was lost."""
    approval_expiry_s: float = 1800.0
    """The longest a payment waits for the buyer, whatever the provider allows."""
    capture_window_s: float = 7 * 86400.0
    """An authorization's capture window where the provider does not say (Stripe: 7 days)."""


def decline_reason(code: str, retryable: bool) -> tuple[FailureReason, bool]:
    """Map a provider's decline code to the contract's reason and whether dunning may retry it.

    Known codes decide by themselves; an unknown code trusts the provider's `retryable` flag
    and is reported as `declined`, the only contract reason that fits any refusal.
    """
    if code in HARD_DECLINES:
        return _reason(code), False
    if code in SOFT_DECLINES:
        return _reason(code), True
    return "declined", retryable


def dunning_delay(soft_declines: int, rules: RetryRules) -> float | None:
    """Seconds to the next charge after the n-th soft decline; None once the schedule is used up."""
    schedule = list(rules.dunning_schedule_s)
    return schedule[soft_declines - 1] if soft_declines <= len(schedule) else None


def unavailable_delay(rounds: int, rules: RetryRules) -> float | None:
    """Seconds to the next round after `rounds` unavailable rounds in a row; None: stop trying."""
    if rounds >= rules.max_unavailable_rounds:
        return None
    # Many payments hit by one outage should not all come back in the same instant.
    return backoff(rounds, rules.backoff_s, rules.backoff_max_s, jitter=0.25)


def unknown_delay(rounds: int, schedule: Sequence[float]) -> float:
    """Seconds to the next look-up after `rounds` rounds without an answer.

    Past the schedule the last pause repeats: the payment is still asked about, and listed for
    an operator (`esimctl payments unknown`).
    """
    return schedule[min(max(rounds, 1), len(schedule)) - 1]


def scrub(text: str, secret: str | None) -> str:
    """An error text fit to store: the payment token masked, at most 500 characters."""
    if secret:
        text = text.replace(secret, "***")
    return text[:500]


def _reason(code: str) -> FailureReason:
    reasons: dict[str, FailureReason] = {
        "declined": "declined",
        "insufficient_funds": "insufficient_funds",
        "expired_method": "expired_method",
        "invalid_token": "invalid_token",
        "not_approved": "not_approved",
    }
    return reasons[code]


@dataclass(frozen=True)
class PaymentTerms(Terms):
    """What a payment request asks for; two requests of one renewal must agree on all of it."""

    user_id: str
    iccid: str
    plan_code: str
    data_mb: int
    validity_days: int
    amount: int
    currency: str
    method: str
    start: str
