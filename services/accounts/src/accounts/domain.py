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
    PAYMENT_ACTION_REQUIRED = "PAYMENT_ACTION_REQUIRED"
    AUTHORIZED = "AUTHORIZED"
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
WITH_DEADLINE = frozenset(
    {
        SagaStatus.PAYMENT_PENDING,
        SagaStatus.PAYMENT_ACTION_REQUIRED,
        SagaStatus.AUTHORIZED,
        SagaStatus.PAID,
    }
)
#: Sagas the platform works on (the intake limit counts them); one that waits for the buyer's
#: approval at the provider waits on a person, not on the platform.
IN_FLIGHT = WITH_DEADLINE - {SagaStatus.PAYMENT_ACTION_REQUIRED}

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
    #: How long past the buyer's approval expiry the saga still waits for billing's answer
    #: (billing asks the provider once nothing came by the expiry).
    action_grace_s: float = 15 * 60


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


#: Methods whose provider can ask the buyer when no saved source (token) is given.
BUYER_APPROVES = frozenset({"paypal", "alipay"})
#: Methods that can be charged without the buyer, given a saved source: a card payment method,
#: a PayPal vault token (Alipay's page pay always needs the buyer).
CHARGEABLE_WITHOUT_BUYER = frozenset({"card", "paypal"})


def payment_refusal(method: str, token: str | None, *, buyer_present: bool) -> str | None:
    """Why a payment object cannot be used, or None: the contract's rule on `token`.

    `token` is required for `card`, and for any charge made without the buyer present
    (auto-renew); PayPal and Alipay without one ask the buyer at the provider's page.
    """
    if token is not None:
        return None
    if not buyer_present:
        return (
            "payment.token is required for auto-renew, which charges without the buyer: a "
            "payment source saved at the provider (a card payment method or a PayPal vault token)"
        )
    if method not in BUYER_APPROVES:
        return f"payment.token is required for {method}: a payment source saved at the provider"
    return None


def auto_renew_refusal(method: str, token: str | None) -> str | None:
    """Why auto-renew cannot charge this payment without the buyer, or None.

    Only a source chargeable without the buyer will do: a saved card, a PayPal vault token;
    Alipay's page pay always needs the buyer.
    """
    if method not in CHARGEABLE_WITHOUT_BUYER:
        return (
            f"{method} cannot be charged without the buyer present: auto-renew takes a saved "
            "card or a PayPal vault token"
        )
    return payment_refusal(method, token, buyer_present=False)


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
    token: str | None,
    start: str,
    promo_code: str | None = None,
    return_url: str | None = None,
) -> str:
    """A digest of what a renewal request asks for, to tell a true duplicate from a conflict."""
    asked: dict[str, str | None] = {
        "user_id": user_id,
        "iccid": iccid,
        "plan_code": plan_code,
        "method": method,
        "token": token,
        "start": start,
    }
    # Absent, each leaves the digest as it was stored before it existed.
    if promo_code is not None:
        asked["promo_code"] = promo_code
    if return_url is not None:
        asked["return_url"] = return_url
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
