"""One model per event of the public contract (CONTRACT.md), with its type and default topic."""

from typing import ClassVar, Literal
from uuid import UUID

from pydantic import EmailStr, Field

from esim_schemas.types import (
    BundleState,
    BundleStatus,
    ContractModel,
    Iccid,
    Locale,
    Money,
    PaymentDetails,
    PaymentMethod,
    PlanRef,
    Start,
    UtcDatetime,
)


class EventData(ContractModel):
    """The `data` of a CloudEvent; subclasses name their CloudEvents type and default topic.

    The model is the one source of an event's facts: `esim_core.settings.Topics` derives its
    settings (`TOPIC_<NAME>`) from `topic_setting()`, and `EVENT_MODELS` lists every model.
    """

    event_type: ClassVar[str]
    topic: ClassVar[str]
    topic_name: ClassVar[str | None] = None
    """The topic's setting name where it is not the topic without `esim.` (dots and dashes
    become underscores)."""

    @classmethod
    def topic_setting(cls) -> str:
        """The name of the topic's setting: `payment_settled` is `TOPIC_PAYMENT_SETTLED`."""
        if cls.topic_name is not None:
            return cls.topic_name
        return cls.topic.removeprefix("esim.").replace(".", "_").replace("-", "_")

    def subject(self) -> str | None:
        """The CloudEvents subject: the ICCID where the event has one."""
        return getattr(self, "iccid", None)

    def renewal(self) -> str | None:
        """The saga's renewal id where the event belongs to one."""
        renewal_id = getattr(self, "renewal_id", None)
        return str(renewal_id) if renewal_id is not None else None


class RenewalRequested(EventData):
    """A traveller (through a frontend) asked to renew a card's plan."""

    event_type = "esim.renewal.requested.v1"
    topic = "esim.renewal.requested"

    renewal_id: UUID = Field(description="chosen by the requester; the idempotency key")
    user_id: str = Field(min_length=1, max_length=64)
    iccid: Iccid
    plan_code: str = Field(min_length=1, max_length=64)
    payment: PaymentDetails
    start: Start
    requested_at: UtcDatetime
    locale: Locale | None = None
    channel: str | None = Field(default=None, max_length=64)
    promo_code: str | None = Field(
        default=None,
        min_length=1,
        max_length=32,
        description="an addition: a promotion code to apply; a bad one rejects the request",
    )


RejectionReason = Literal[
    "unknown_card",
    "card_not_owned",
    "unknown_plan",
    "plan_not_available",
    "conflicting_duplicate",
    "invalid_request",
]


class RenewalRejected(EventData):
    """The renewal request was invalid; nothing was charged."""

    event_type = "esim.renewal.rejected.v1"
    topic = "esim.renewal.rejected"

    renewal_id: UUID
    iccid: Iccid
    user_id: str | None = None
    reason: RejectionReason
    detail: str


class PaymentRequested(EventData):
    """Accounts priced a valid renewal and asks billing to charge it."""

    event_type = "esim.payment.requested.v1"
    topic = "esim.payment.requested"

    renewal_id: UUID
    user_id: str
    iccid: Iccid
    plan: PlanRef
    price: Money
    payment: PaymentDetails
    start: Start
    discount: Money | None = Field(
        default=None, description="an addition: what a promotion took off; `price` is after it"
    )
    promo_code: str | None = Field(default=None, max_length=32, description="an addition")


class PaymentSettled(EventData):
    """The charge was captured at the payment provider."""

    event_type = "esim.payment.settled.v1"
    topic = "esim.payment.settled"

    renewal_id: UUID
    payment_id: str
    iccid: Iccid
    plan: PlanRef
    price: Money
    method: PaymentMethod
    provider_reference: str
    attempts: int = Field(ge=1)
    settled_at: UtcDatetime
    start: Start
    discount: Money | None = Field(
        default=None, description="an addition: what a promotion took off; `price` is after it"
    )
    promo_code: str | None = Field(default=None, max_length=32, description="an addition")


class PaymentAction(ContractModel):
    """What the buyer must do at the provider: open `url` (3-D Secure, PayPal, Alipay's cashier)."""

    type: Literal["redirect"] = "redirect"
    url: str = Field(min_length=1, max_length=2048)


class PaymentActionRequired(EventData):
    """The provider needs the buyer before it takes the money: the saga waits for their answer."""

    event_type = "esim.payment.action-required.v1"
    topic = "esim.payment.action-required"

    renewal_id: UUID
    payment_id: str
    iccid: Iccid
    method: PaymentMethod
    action: PaymentAction
    expires_at: UtcDatetime


class PaymentAuthorized(EventData):
    """The money is held at the provider, not yet taken: billing captures it after activation."""

    event_type = "esim.payment.authorized.v1"
    topic = "esim.payment.authorized"

    renewal_id: UUID
    payment_id: str
    iccid: Iccid
    plan: PlanRef
    price: Money
    method: PaymentMethod
    provider_reference: str
    authorized_at: UtcDatetime
    capture_before: UtcDatetime
    start: Start
    discount: Money | None = Field(
        default=None, description="an addition: what a promotion took off; `price` is after it"
    )
    promo_code: str | None = Field(default=None, max_length=32, description="an addition")


PaymentFailureReason = Literal[
    "declined",
    "insufficient_funds",
    "expired_method",
    "provider_unavailable",
    "invalid_token",
    "not_approved",
]


class PaymentFailed(EventData):
    """The charge could not be captured, after the retries its reason allows."""

    event_type = "esim.payment.failed.v1"
    topic = "esim.payment.failed"

    renewal_id: UUID
    payment_id: str
    iccid: Iccid
    reason: PaymentFailureReason
    attempts: int = Field(ge=1)
    failed_at: UtcDatetime


class ProfileActivated(EventData):
    """The bought plan is live on the eSIM, or queued behind the current one."""

    event_type = "esim.profile.activated.v1"
    topic = "esim.profile.activated"

    renewal_id: UUID
    iccid: Iccid
    plan_code: str
    data_mb: int = Field(gt=0)
    valid_from: UtcDatetime
    valid_until: UtcDatetime
    bundle_state: BundleState
    platform_reference: str
    activated_at: UtcDatetime
    replaces: list[str] | None = Field(
        default=None,
        description="an addition: for a plan started at once, the plan codes of the live plans "
        "it ended; each is also announced by BundleCancelled (`replaced`, `replaced_by` this "
        "renewal), so the traveller hears of both in the receipt",
    )


class ActivationFailed(EventData):
    """The eSIM platform could not apply the bundle; the payment is to be refunded."""

    event_type = "esim.activation.failed.v1"
    topic = "esim.activation.failed"

    renewal_id: UUID
    iccid: Iccid
    reason: str
    attempts: int = Field(ge=1)
    failed_at: UtcDatetime


class RefundRequested(EventData):
    """Accounts asks billing to give a captured payment back."""

    event_type = "esim.refund.requested.v1"
    topic = "esim.refund.requested"

    renewal_id: UUID
    payment_id: str
    iccid: Iccid
    price: Money
    reason: str


class PaymentRefunded(EventData):
    """The captured payment was refunded."""

    event_type = "esim.payment.refunded.v1"
    topic = "esim.payment.refunded"

    renewal_id: UUID
    payment_id: str
    refund_id: str
    iccid: Iccid
    price: Money
    refunded_at: UtcDatetime
    via: Literal["refund", "void"] | None = Field(
        default=None,
        description="an addition: `void` where an authorization was released and nothing was "
        "captured; `refund` (also when absent) where captured money was given back",
    )


class PlanExpiring(EventData):
    """A card's plan ends soon (3 days and 1 day before)."""

    event_type = "esim.plan.expiring.v1"
    topic = "esim.plan.expiring"

    iccid: Iccid
    user_id: str
    plan_code: str
    valid_until: UtcDatetime
    days_left: int = Field(ge=0)
    renewal_id: UUID | None = Field(default=None, description="an addition: the plan's renewal")
    auto_renew: bool | None = Field(
        default=None, description="an addition: whether auto-renew will queue the next plan"
    )


class PasswordResetRequested(EventData):
    """A password reset code was issued; the code itself never travels on a shared topic."""

    event_type = "esim.account.password-reset.v1"
    topic = "esim.account.password-reset"
    topic_name = "password_reset"

    user_id: str
    email: EmailStr
    code_expires_at: UtcDatetime
    phone: str | None = Field(default=None, description="E.164; the code goes by SMS there too")
    locale: Locale | None = None
    code_sealed: str | None = Field(
        default=None,
        repr=False,
        description="the code, AES-256-GCM sealed with the key that only accounts and the "
        "notifier hold (RESET_CODE_KEY), bound to user_id; opaque to every other reader",
    )


class PasswordChanged(EventData):
    """A user's password was changed (by a reset); every earlier session was ended.

    An addition to the contract, so the notifier can tell the user it happened.
    """

    event_type = "esim.account.password-changed.v1"
    topic = "esim.account.password-changed"
    topic_name = "password_changed"

    user_id: str
    email: EmailStr
    phone: str | None = None
    locale: Locale | None = None
    changed_at: UtcDatetime


class CardBound(EventData):
    """A user bound a card to their account: who to tell about that card, and in which language.

    An addition to the contract, so the notifier can address people without asking accounts.
    """

    event_type = "esim.card.bound.v1"
    topic = "esim.card.bound"

    user_id: str
    iccid: Iccid
    email: EmailStr
    phone: str | None = None
    locale: Locale = "en"


class UsageUpdated(EventData):
    """The eSIM platform measured a bundle's data use anew (a poll or a signed callback)."""

    event_type = "esim.usage.updated.v1"
    topic = "esim.usage.updated"

    iccid: Iccid
    renewal_id: UUID | None = Field(default=None, description="the bundle's renewal")
    data_total_mb: int = Field(ge=0)
    data_used_mb: int = Field(ge=0)
    as_of: UtcDatetime
    plan_code: str | None = Field(default=None, description="an addition: the bundle's plan")
    bundle_status: BundleStatus | None = Field(
        default=None, description="an addition: the bundle's state at the platform then"
    )


DataLowThreshold = Literal[75, 90, 100]


class DataLow(EventData):
    """A bundle's data use reached 75, 90 or 100 % (100 = used up); once per bundle, threshold."""

    event_type = "esim.data.low.v1"
    topic = "esim.data.low"

    iccid: Iccid
    renewal_id: UUID | None = None
    threshold: DataLowThreshold = Field(description="per cent used; 100 is depleted")
    data_remaining_mb: int = Field(ge=0)
    as_of: UtcDatetime
    data_total_mb: int | None = Field(default=None, ge=0, description="an addition")
    plan_code: str | None = Field(default=None, description="an addition: the bundle's plan")


class BundleStarted(EventData):
    """A queued bundle became the card's live plan (the one before it ended).

    An addition to the contract, for carriers and accounts: with `ProfileActivated` (active),
    `BundleEnded` and `BundleCancelled` it tells which plan of a card is live now.
    """

    event_type = "esim.bundle.started.v1"
    topic = "esim.bundle.started"

    renewal_id: UUID
    iccid: Iccid
    plan_code: str
    data_mb: int = Field(gt=0)
    valid_from: UtcDatetime
    valid_until: UtcDatetime
    platform_reference: str
    started_at: UtcDatetime


BundleEndReason = Literal["expired", "depleted"]


class BundleEnded(EventData):
    """A live bundle ended: its validity ran out (`expired`) or its data was used up (`depleted`).

    An addition to the contract; published once per bundle, for carriers and accounts.
    """

    event_type = "esim.bundle.ended.v1"
    topic = "esim.bundle.ended"

    renewal_id: UUID
    iccid: Iccid
    plan_code: str
    reason: BundleEndReason
    valid_from: UtcDatetime
    valid_until: UtcDatetime
    platform_reference: str
    ended_at: UtcDatetime


BundleCancelReason = Literal["cancelled_by_user", "replaced"]


class BundleCancelled(EventData):
    """A plan that carriers were told about (queued or active) will not run (further)."""

    event_type = "esim.bundle.cancelled.v1"
    topic = "esim.bundle.cancelled"

    renewal_id: UUID
    iccid: Iccid
    plan_code: str
    reason: BundleCancelReason
    cancelled_at: UtcDatetime
    platform_reference: str | None = Field(default=None, description="an addition")
    replaced_by: UUID | None = Field(
        default=None,
        description="an addition: for `replaced`, the renewal whose plan took its place, when "
        "known; its ProfileActivated lists this plan under `replaces`",
    )


class BundleCancelRequested(EventData):
    """Accounts asks provisioning to cancel a bundle at the eSIM platform.

    An addition to the contract (a command between services): `cancelled_by_user` for a queued
    plan its owner cancelled, `replaced` for the live plan a `start=now` renewal replaces.
    """

    event_type = "esim.bundle.cancel-requested.v1"
    topic = "esim.bundle.cancel-requested"
    topic_name = "bundle_cancel_requested"

    renewal_id: UUID = Field(description="the renewal whose bundle is to be cancelled")
    iccid: Iccid
    reason: BundleCancelReason
    requested_at: UtcDatetime
    replaced_by: UUID | None = Field(
        default=None, description="for `replaced`: the renewal whose plan takes its place"
    )


AutoRenewOffReason = Literal["declined", "expired_method", "invalid_token", "monthly_cap"]


class AutoRenewDisabled(EventData):
    """Accounts turned a card's auto-renew off because its saved payment cannot be used.

    An addition to the contract, so the notifier can tell the user why and what to do.
    """

    event_type = "esim.card.auto-renew-disabled.v1"
    topic = "esim.card.auto-renew-disabled"
    topic_name = "auto_renew_disabled"

    iccid: Iccid
    user_id: str
    reason: AutoRenewOffReason
    renewal_id: UUID | None = Field(default=None, description="the auto-renewal that failed")
    plan_code: str | None = None
    disabled_at: UtcDatetime


EVENT_MODELS: tuple[type[EventData], ...] = (
    RenewalRequested,
    RenewalRejected,
    PaymentRequested,
    PaymentSettled,
    PaymentFailed,
    PaymentActionRequired,
    PaymentAuthorized,
    ProfileActivated,
    ActivationFailed,
    RefundRequested,
    PaymentRefunded,
    PlanExpiring,
    PasswordResetRequested,
    PasswordChanged,
    CardBound,
    UsageUpdated,
    DataLow,
    BundleStarted,
    BundleEnded,
    BundleCancelled,
    BundleCancelRequested,
    AutoRenewDisabled,
)
EVENTS_BY_TYPE: dict[str, type[EventData]] = {model.event_type: model for model in EVENT_MODELS}
DEFAULT_TOPICS: dict[str, str] = {model.__name__: model.topic for model in EVENT_MODELS}
