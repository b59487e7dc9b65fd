"""The renewals routes' bodies: a renewal asked for, shown and listed; the operator's view."""

from typing import Literal
from uuid import UUID

from esim_schemas import Money
from esim_schemas.types import PaymentMethod, PaymentToken, ReturnUrl, Start
from pydantic import BaseModel, Field

from accounts.bodies import ApiTime, Body, UtcTime
from accounts.catalogue.models import PromoCode


class PaymentIn(Body):
    """How the renewal is paid: the method, a source saved at the provider, where to come back.

    `token` is required for `card` and for auto-renew (a charge without the buyer); PayPal and
    Alipay without one ask the buyer at the provider's page (`payment_action` on the renewal).
    """

    method: PaymentMethod
    token: PaymentToken | None = Field(
        default=None,
        repr=False,
        description="a payment source saved at the provider (a Stripe payment method `pm_...`, "
        "a PayPal vault token): required for `card` and for auto-renew",
    )
    return_url: ReturnUrl | None = Field(
        default=None,
        description="the page the provider sends the buyer back to after an approval step "
        "(default: a setting of billing)",
    )


class PaymentActionOut(BaseModel):
    """What the buyer must do at the provider before the payment can go on."""

    type: Literal["redirect"] = Field(description="open `url` in the buyer's browser")
    url: str = Field(description="the provider's page: 3-D Secure, PayPal's approval, Alipay")
    expires_at: ApiTime = Field(description="past it, the renewal ends `PAYMENT_FAILED`")


class RenewalCreate(Body):
    """A renewal request from a frontend."""

    plan_code: str = Field(min_length=1, max_length=64)
    payment: PaymentIn
    start: Start = "after_current"
    promo_code: PromoCode | None = None


class RenewalSummary(BaseModel):
    """One renewal of a card, as its history lists it."""

    renewal_id: UUID
    plan_code: str
    status: str
    start: str
    channel: str | None
    price: Money | None = Field(description="what is (or would be) charged, after any discount")
    discount: Money | None
    promo_code: str | None
    valid_from: ApiTime | None
    valid_until: ApiTime | None
    created_at: ApiTime
    updated_at: ApiTime


class RenewalPage(BaseModel):
    """A page of a card's renewals, newest first; `next_cursor` fetches the next (null: none)."""

    items: list[RenewalSummary]
    next_cursor: str | None


class RenewalAccepted(BaseModel):
    """The answer to a renewal request."""

    renewal_id: UUID
    status: str


class TimelineStep(BaseModel):
    """One step of a renewal's timeline."""

    step: str
    status: str
    at: ApiTime
    detail: str | None = None


class RenewalPublic(BaseModel):
    """A renewal saga as the traveller sees it."""

    renewal_id: UUID
    iccid: str
    plan_code: str
    status: str
    start: str
    price: Money | None = Field(description="what is (or would be) charged, after any discount")
    discount: Money | None = Field(default=None, description="what a promotion took off")
    promo_code: str | None = None
    reason: str | None
    detail: str | None
    valid_from: ApiTime | None
    valid_until: ApiTime | None
    bundle_state: str | None
    payment_action: PaymentActionOut | None = Field(
        default=None,
        description="while the status is `PAYMENT_ACTION_REQUIRED`: where the buyer approves the "
        "payment, and until when; null otherwise",
    )
    created_at: ApiTime
    updated_at: ApiTime
    timeline: list[TimelineStep]


class StepOut(BaseModel):
    """One step of the saga's timeline, with the event that caused it."""

    step: str
    status: str
    at: UtcTime
    detail: str | None
    event_id: str | None = Field(description="the consumed event's id, if an event caused it")


class EventOut(BaseModel):
    """An event accounts published for this saga (kept for `OUTBOX_RETENTION_S`)."""

    event_id: str
    type: str
    topic: str
    created_at: UtcTime
    published_at: UtcTime | None = Field(description="null while the relay has not sent it")


class SagaDetail(BaseModel):
    """A renewal saga as an operator sees it; the payment token is never part of it."""

    renewal_id: str
    user_id: str
    iccid: str
    plan_code: str
    status: str
    terminal: bool
    reason: str | None
    detail: str | None
    start: str
    price: Money | None
    payment_method: str
    payment_id: str | None = Field(description="billing's payment id once authorized or settled")
    payment_held: bool = Field(
        default=False, description="the payment is an authorization, not captured yet"
    )
    refund_requested: bool
    activation_failure: str | None
    bundle_state: str | None
    valid_from: UtcTime | None
    valid_until: UtcTime | None
    deadline_at: UtcTime | None
    created_at: UtcTime
    updated_at: UtcTime
    stuck: str | None = Field(description="why the saga counts as stuck, or null")
    timeline: list[StepOut]
    events: list[EventOut]


class SagaSummary(BaseModel):
    """One line of the stuck list."""

    renewal_id: str
    iccid: str
    status: str
    updated_at: UtcTime
    deadline_at: UtcTime | None
    stuck: str


class SagaActionOut(BaseModel):
    """What an operator action did."""

    renewal_id: str
    action: str = Field(description="retry or compensate")
    status: str = Field(description="the saga's status after the action")
    outcome: str = Field(description="what was sent or changed, or why nothing was")
