"""The PaymentGateway port: what billing asks of a payment provider, and how the answers look.

A payment goes the way its provider takes it (CONTRACT.md, "Payments, the way each provider
takes them"):

- `pay` starts it, or carries it on as far as the provider lets without the buyer: the money
  held (`Authorized`: card, PayPal), taken at once (`Captured`: Alipay, or a provider that
  cannot hold), or waiting for the buyer at the provider's page (`ActionRequired`);
- `capture` takes held money once the plan is live; `void` releases it when activation fails;
  `refund` gives captured money back;
- `look_up` asks the provider where a payment stands without changing anything: what billing
  does when a call's answer was lost, a webhook arrives or the buyer comes back;
- `list_payments` is the provider's own list, for reconciliation;
- `read_webhook` verifies a provider's signed call and says what it reports.

Every call that moves money carries an idempotency key derived from the renewal, the same on
every repeat, so a repeat never takes money twice; an answer that was lost is never followed
by a call under a new key: billing asks (`look_up`) until it knows. The one new key is a
dunning charge after a recorded decline at a provider that replays a key's first answer
(Stripe: `charge:<renewal>:<attempt>`, a new PaymentIntent); a decline is an answer that
arrived, so nothing can be taken twice by it.

Each adapter serves one provider (Stripe for `card`, PayPal for `paypal`, Alipay for `alipay`);
`billing.gateways.router.MethodRouter` sends each call to the adapter of its method.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from esim_core.outside.errors import RejectedError


@dataclass(frozen=True)
class PaymentRequest:
    """One renewal's payment; repeating it with the same `idempotency_key` never pays twice.

    `token` is a source saved at the provider (required for card and for charges without the
    buyer); without one the provider asks the buyer and sends them back to `return_url`.
    `reference` is the renewal id: Alipay's `out_trade_no`, Stripe's metadata, PayPal's
    `reference_id`, and what `look_up` and reconciliation find the payment by.
    """

    idempotency_key: str
    reference: str
    amount: int
    currency: str
    method: str
    token: str | None = field(default=None, repr=False)
    return_url: str | None = None
    description: str | None = None


ChargeRequest = PaymentRequest
"""The name the charge loop has always used for a payment request."""


@dataclass(frozen=True)
class Authorized:
    """The money is held at the provider until `capture_before`; nothing is taken yet."""

    provider_reference: str
    amount: int
    currency: str
    capture_before: datetime


@dataclass(frozen=True)
class Captured:
    """The money is taken; `provider_reference` names the capture (or the paid trade)."""

    provider_reference: str
    amount: int
    currency: str
    payment_reference: str | None = None
    """The payment's own reference where the capture has another (a PayPal order, a Stripe
    PaymentIntent); None where they are one."""


Capture = Captured
"""The name the charge loop has always used for a captured payment."""


@dataclass(frozen=True)
class ActionRequired:
    """The provider needs the buyer first: they open `url` before `expires_at`."""

    provider_reference: str
    url: str
    expires_at: datetime


PayOutcome = Authorized | Captured | ActionRequired


@dataclass(frozen=True)
class CaptureRequest:
    """Take the money an authorization holds, once per `idempotency_key`."""

    idempotency_key: str
    reference: str
    provider_reference: str
    amount: int
    currency: str
    method: str


@dataclass(frozen=True)
class VoidRequest:
    """Release an authorization (or cancel a payment still waiting for the buyer)."""

    idempotency_key: str
    reference: str
    provider_reference: str
    method: str


@dataclass(frozen=True)
class Voided:
    """The authorization is released: nothing was, or ever will be, taken under it."""

    provider_reference: str


@dataclass(frozen=True)
class RefundRequest:
    """Give back `amount` of a captured payment, once per `idempotency_key`."""

    idempotency_key: str
    charge_id: str
    amount: int
    method: str
    reason: str | None = None
    reference: str | None = None
    currency: str | None = None


@dataclass(frozen=True)
class RefundReceipt:
    """A completed refund; `refund_id` is the provider's reference."""

    refund_id: str
    amount: int
    currency: str


class Standing(StrEnum):
    """Where a payment stands at the provider, as `look_up` and webhooks report it."""

    NOT_FOUND = "not_found"
    """The provider has no such payment: the call that would have made it never arrived."""
    ACTION_REQUIRED = "action_required"
    """Waiting for the buyer at the provider's page."""
    APPROVED = "approved"
    """The buyer approved; the payment still has to be authorized (PayPal) by `pay` again."""
    AUTHORIZED = "authorized"
    CAPTURED = "captured"
    DECLINED = "declined"
    """The provider refused the payment (`decline_code` says why)."""
    CANCELLED = "cancelled"
    """The buyer cancelled, the approval expired, or the payment was closed before any money."""
    VOIDED = "voided"
    REFUNDED = "refunded"


@dataclass(frozen=True)
class LookupRequest:
    """Which payment to ask about: by the key and reference billing sent, and the provider's
    reference where billing knows it (a PayPal order id, a Stripe PaymentIntent id)."""

    method: str
    reference: str
    idempotency_key: str
    provider_reference: str | None = None
    amount: int | None = None
    currency: str | None = None


@dataclass(frozen=True)
class PaymentView:
    """What the provider says of one payment, by `look_up`, a webhook or its list."""

    standing: Standing
    reference: str | None = None
    provider_reference: str | None = None
    amount: int | None = None
    currency: str | None = None
    captured_amount: int = 0
    refunded_amount: int = 0
    capture_reference: str | None = None
    capture_before: datetime | None = None
    action_url: str | None = None
    action_expires_at: datetime | None = None
    decline_code: str | None = None
    method: str | None = None
    at: datetime | None = None
    idempotency_key: str | None = None
    """The key of the call that made this payment, where the provider says it (Stripe keeps it
    in the PaymentIntent's metadata): which charge attempt the view is about."""


@dataclass(frozen=True)
class WebhookNotice:
    """A verified call from a provider: its own event id (to apply it once) and what it says."""

    provider_event_id: str
    method: str
    view: PaymentView
    answer: str = ""
    """The body the provider expects back (Alipay: the literal `success`); empty for a 200."""


class PaymentDeclinedError(Exception):
    """The provider refused the payment; `retryable` tells whether a later attempt may succeed."""

    def __init__(self, code: str, retryable: bool, message: str = "") -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.retryable = retryable


class GatewayUnavailableError(Exception):
    """The provider could not answer now (connection, timeout, 5xx).

    Whether the call took effect is unknown: billing asks (`look_up`) before anything else.
    """


class GatewayRejectedError(RejectedError):
    """The provider refused the request itself (unknown payment, over-refund, key conflict)."""


class WebhookRejectedError(Exception):
    """A call to a webhook endpoint that is forged, malformed or stale: answered 400."""


class PaymentGateway(Protocol):
    """Payments at a provider: pay, capture, void, refund, look up, list, and its webhooks."""

    async def pay(self, request: PaymentRequest) -> PayOutcome:
        """Start the payment, or carry it on as far as the provider allows without the buyer.

        Idempotent under `request.idempotency_key`: a repeat returns where the payment stands
        now (held, taken or waiting for the buyer), and after the buyer approved it goes on
        (PayPal: authorizes the approved order).

        Raises:
            PaymentDeclinedError: the provider declined the payment.
            GatewayUnavailableError: no answer now; ask with `look_up` before anything else.
            GatewayRejectedError: the request itself was refused.
        """
        ...

    async def capture(self, request: CaptureRequest) -> Captured:
        """Take the held money, or return the capture already made under the key.

        Raises:
            PaymentDeclinedError: the provider refused the capture (PayPal's DECLINED capture).
            GatewayUnavailableError: no answer now; ask with `look_up` before anything else.
            GatewayRejectedError: nothing to capture (voided, expired, unknown).
        """
        ...

    async def void(self, request: VoidRequest) -> Voided:
        """Release the authorization (or close a payment still waiting for the buyer).

        Raises:
            GatewayUnavailableError: no answer now; ask with `look_up` before anything else.
            GatewayRejectedError: it cannot be released (already captured, unknown).
        """
        ...

    async def refund(self, request: RefundRequest) -> RefundReceipt:
        """Refund a capture, or return the refund already made under its idempotency key.

        Raises:
            GatewayUnavailableError: no answer now; repeating the call is safe.
            GatewayRejectedError: the refund was refused (unknown charge, over-refund, ...).
        """
        ...

    async def look_up(self, request: LookupRequest) -> PaymentView:
        """Where the payment stands at the provider; changes nothing.

        Raises:
            GatewayUnavailableError: no answer now.
        """
        ...

    async def list_payments(self, since: datetime) -> list[PaymentView]:
        """The provider's own record of payments since `since`, for reconciliation.

        Raises:
            GatewayUnavailableError: no answer now.
        """
        ...

    async def read_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookNotice:
        """Verify a provider's call by its own scheme and say what it reports.

        Async because some schemes ask the provider (PayPal's verify-webhook-signature).

        Raises:
            WebhookRejectedError: forged, malformed or stale.
            GatewayUnavailableError: the provider could not be asked now (answer 5xx: it retries).
        """
        ...
