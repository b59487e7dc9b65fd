"""The renewal saga's states and rules, and the plan catalogue's pricing; no framework here."""

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any


class SagaStatus(StrEnum):
    """Where one renewal stands."""

    REQUESTED = "REQUESTED"
    PAYMENT_PENDING = "PAYMENT_PENDING"
    PAID = "PAID"
    ACTIVATED = "ACTIVATED"
    REJECTED = "REJECTED"
    PAYMENT_FAILED = "PAYMENT_FAILED"
    REFUNDING = "REFUNDING"
    REFUNDED = "REFUNDED"
    TIMED_OUT = "TIMED_OUT"
    CANCELLING = "CANCELLING"
    CANCELLED = "CANCELLED"


TERMINAL = frozenset(
    {
        SagaStatus.ACTIVATED,
        SagaStatus.REJECTED,
        SagaStatus.PAYMENT_FAILED,
        SagaStatus.REFUNDED,
        SagaStatus.CANCELLED,
    }
)
WITH_DEADLINE = frozenset({SagaStatus.PAYMENT_PENDING, SagaStatus.PAID})

COMPENSATED = "compensated_by_operator"
"""The reason of a saga an operator gave up (`RenewalSaga.compensate`)."""

AUTO_RENEW_CHANNEL = "auto_renew"
#: Payment failures that no retry can cure: the saved payment is no good, auto-renew stops.
HARD_FAILURES = frozenset({"declined", "expired_method", "invalid_token"})


@dataclass(frozen=True)
class Deadlines:
    """How long a saga may wait for each outcome before the deadline sweep moves it on."""

    payment_s: float = 48 * 3600
    activation_s: float = 25 * 3600


class NotCancellableError(Exception):
    """A cancel of a renewal whose plan is not a queued one that has not started."""


def check_cancellable(
    status: str,
    bundle_state: str | None,
    plan_state: str | None,
    valid_from: datetime | None,
    now: datetime,
    *,
    captured: bool = True,
) -> None:
    """Whether the owner may cancel a renewal now: only a queued plan that has not started.

    `plan_state` is the plan's state as measured (queued, active, expired, ...), if known;
    `captured`, whether the payment's capture has reached accounts (ProfileActivated may come
    first): a cancellation is refunded, so it waits until there is a capture to refund.

    Raises:
        NotCancellableError: with what stands in the way.
    """
    if status == SagaStatus.CANCELLING:
        raise NotCancellableError("the renewal is already being cancelled")
    if status == SagaStatus.CANCELLED:
        raise NotCancellableError("the renewal is already cancelled")
    if status != SagaStatus.ACTIVATED:
        raise NotCancellableError(
            f"the renewal is {status}: only a queued plan that has not started can be cancelled"
        )
    if bundle_state != "queued":
        raise NotCancellableError("the plan went live at once: it was never queued")
    if plan_state not in (None, "queued") or valid_from is None or valid_from <= now:
        raise NotCancellableError("the queued plan has already started")
    if not captured:
        raise NotCancellableError("the payment is not confirmed yet: try again in a moment")


class RenewalInvalidError(Exception):
    """A renewal request that cannot be accepted; `reason` is the contract's rejection reason."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def request_fingerprint(
    *,
    user_id: str,
    iccid: str,
    plan_code: str,
    method: str,
    token: str,
    start: str,
    promo_code: str | None = None,
) -> str:
    """A digest of what a renewal request asks for, to tell a true duplicate from a conflict."""
    asked: dict[str, str] = {
        "user_id": user_id,
        "iccid": iccid,
        "plan_code": plan_code,
        "method": method,
        "token": token,
        "start": start,
    }
    if promo_code is not None:  # absent, the digest is the one stored before promotions
        asked["promo_code"] = promo_code
    canonical = json.dumps(asked, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def currency_for(locale: str | None) -> str:
    """The currency a traveller pays in: yuan for zh-CN, US dollars otherwise."""
    return "CNY" if locale == "zh-CN" else "USD"


def price_for(prices: dict[str, Any], currency: str) -> int:
    """The plan's price in a currency's minor unit.

    Raises:
        RenewalInvalidError: the plan has no price in that currency.
    """
    amount = prices.get(currency)
    if not isinstance(amount, int):
        raise RenewalInvalidError("plan_not_available", f"the plan is not sold in {currency}")
    return amount
