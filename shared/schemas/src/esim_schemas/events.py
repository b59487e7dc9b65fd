"""One model per event of the public contract (CONTRACT.md), with its type and default topic."""

from typing import ClassVar, Literal
from uuid import UUID

from pydantic import EmailStr, Field

from esim_schemas.types import (
    BundleState,
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
    """The `data` of a CloudEvent; subclasses name their CloudEvents type and default topic."""

    event_type: ClassVar[str]
    topic: ClassVar[str]

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


PaymentFailureReason = Literal[
    "declined", "insufficient_funds", "expired_method", "provider_unavailable", "invalid_token"
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


class PlanExpiring(EventData):
    """A card's plan ends soon (3 days and 1 day before)."""

    event_type = "esim.plan.expiring.v1"
    topic = "esim.plan.expiring"

    iccid: Iccid
    user_id: str
    plan_code: str
    valid_until: UtcDatetime
    days_left: int = Field(ge=0)


class PasswordResetRequested(EventData):
    """A password reset code was issued; the code itself never travels on a shared topic."""

    event_type = "esim.account.password-reset.v1"
    topic = "esim.account.password-reset"

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


EVENT_MODELS: tuple[type[EventData], ...] = (
    RenewalRequested,
    RenewalRejected,
    PaymentRequested,
    PaymentSettled,
    PaymentFailed,
    ProfileActivated,
    ActivationFailed,
    RefundRequested,
    PaymentRefunded,
    PlanExpiring,
    PasswordResetRequested,
    PasswordChanged,
    CardBound,
)
EVENTS_BY_TYPE: dict[str, type[EventData]] = {model.event_type: model for model in EVENT_MODELS}
DEFAULT_TOPICS: dict[str, str] = {model.__name__: model.topic for model in EVENT_MODELS}
