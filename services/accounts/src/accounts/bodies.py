"""Request and response bodies of the accounts HTTP API."""

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from esim_core.clock import as_utc, utcnow
from esim_schemas import format_time
from esim_schemas.types import Iccid, Locale, Money, PaymentMethod, Start
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    PlainSerializer,
    model_validator,
)

from accounts.cards.plans import card_status
from accounts.store import Card, CardPlan

# Every time the API answers with is RFC 3339 with an offset, whatever the database handed back
# (SQLite returns naive datetimes, PostgreSQL aware ones; both hold UTC).
ApiTime = Annotated[
    datetime,
    AfterValidator(as_utc),
    PlainSerializer(format_time, return_type=str, when_used="json"),
    Field(description="RFC 3339 timestamp in UTC, e.g. 2026-11-23T10:15:30.123Z"),
]


class Body(BaseModel):
    """A request body: unknown fields are refused, so typos are caught, and types are strict.

    Strict: `0` is not `false` and `"5"` is not `5`; a client that sends the wrong type hears
    so instead of having it guessed.
    """

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, strict=True)


Password = Annotated[str, Field(min_length=8, max_length=128, repr=False)]
Phone = Annotated[
    str,
    Field(
        pattern=r"^\+[1-9][0-9]{6,14}$",
        description="E.164: a plus, the country code and the number, no spaces",
        examples=["+8613800138000"],
    ),
]
Name = Annotated[str, Field(min_length=1, max_length=128, examples=["Li Wei"])]
ResetCode = Annotated[str, Field(pattern=r"^[0-9]{6}$", repr=False, examples=["042137"])]


class UserCreate(Body):
    """Registration."""

    model_config = ConfigDict(
        **Body.model_config,
        json_schema_extra={
            "examples": [
                {
                    "email": "li.wei@example.com",
                    "password": "a long password",
                    "name": "Li Wei",
                    "phone": "+8613800138000",
                    "locale": "zh-CN",
                }
            ]
        },
    )

    email: EmailStr
    password: Password
    name: Name | None = None
    phone: Phone | None = None
    locale: Locale = "en"


class NotifyChoices(BaseModel):
    """Which channels the traveller hears from us on."""

    model_config = ConfigDict(extra="forbid", strict=True)

    email: bool = True
    sms: bool = True


class UserUpdate(Body):
    """A change to the caller's profile; only the fields given change (null clears a phone)."""

    model_config = ConfigDict(
        **Body.model_config,
        json_schema_extra={
            "examples": [
                {
                    "name": "Li Wei",
                    "phone": "+8613800138000",
                    "locale": "en",
                    "notify": {"email": True, "sms": False},
                }
            ]
        },
    )

    name: Name | None = None
    phone: Phone | None = None
    locale: Locale | None = None
    notify: NotifyChoices | None = None


class UserPublic(BaseModel):
    """A user as the API shows them."""

    id: str = Field(description="the user_id used in events")
    email: str
    name: str | None
    phone: str | None
    locale: str
    notify: NotifyChoices
    created_at: ApiTime


class TokenResponse(BaseModel):
    """OAuth2 bearer tokens: a short-lived access token and the refresh token that renews it."""

    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="seconds the access token stays valid")


class LogoutRequest(Body):
    """Ending a session."""

    model_config = ConfigDict(
        **Body.model_config,
        json_schema_extra={
            "examples": [{"refresh_token": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9..."}]
        },
    )

    refresh_token: str = Field(min_length=1, max_length=4096, repr=False)


class PasswordResetRequest(Body):
    """Asking for a reset code."""

    model_config = ConfigDict(
        **Body.model_config, json_schema_extra={"examples": [{"email": "li.wei@example.com"}]}
    )

    email: EmailStr


class PasswordResetConfirm(Body):
    """Setting a new password with the code that was sent."""

    model_config = ConfigDict(
        **Body.model_config,
        json_schema_extra={
            "examples": [
                {
                    "email": "li.wei@example.com",
                    "code": "042137",
                    "new_password": "a new long password",
                }
            ]
        },
    )

    email: EmailStr
    code: ResetCode
    new_password: Password


class PlanPublic(BaseModel):
    """A plan of the catalogue, priced in the asked currency."""

    code: str
    name: str
    kind: str
    data_mb: int
    validity_days: int
    countries: list[str]
    price: Money


class CardBind(Body):
    """Binding a card to the caller."""

    iccid: Iccid
    activation_code: str = Field(min_length=1, max_length=256)


class QueuedPlan(BaseModel):
    """A plan waiting behind the current one."""

    renewal_id: str
    plan_code: str
    data_mb: int
    valid_from: ApiTime
    valid_until: ApiTime


class CardPublic(BaseModel):
    """A card's status."""

    iccid: str
    plan_code: str | None
    state: str
    data_total_mb: int
    data_remaining_mb: int
    usage_as_of: ApiTime | None = Field(
        default=None, description="when the platform last measured data_remaining_mb"
    )
    valid_from: ApiTime | None
    valid_until: ApiTime | None
    queued: list[QueuedPlan]
    auto_renew: bool
    auto_renew_plan_code: str | None
    auto_renew_monthly_cap: Money | None = None


class PlanHistoryEntry(BaseModel):
    """One plan a card had, has or will have, with what the platform measured."""

    renewal_id: str
    plan_code: str | None
    state: str = Field(description="queued, active, expired or depleted")
    data_mb: int | None
    data_remaining_mb: int
    usage_as_of: ApiTime | None
    valid_from: ApiTime
    valid_until: ApiTime
    ended_at: ApiTime | None


class PaymentIn(Body):
    """How the renewal is paid."""

    method: PaymentMethod
    token: str = Field(min_length=1, max_length=256, repr=False)


PromoCode = Annotated[
    str,
    Field(
        min_length=1,
        max_length=32,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="a promotion code (case does not matter)",
        examples=["WELCOME10"],
    ),
]


class RenewalCreate(Body):
    """A renewal request from a frontend."""

    plan_code: str = Field(min_length=1, max_length=64)
    payment: PaymentIn
    start: Start = "after_current"
    promo_code: PromoCode | None = None


class QuoteRequest(Body):
    """What a renewal would cost and give: nothing is charged or redeemed."""

    model_config = ConfigDict(
        **Body.model_config,
        json_schema_extra={
            "examples": [{"plan_code": "JP-30D-10GB", "start": "now", "promo_code": "WELCOME10"}]
        },
    )

    plan_code: str = Field(min_length=1, max_length=64)
    start: Start = "after_current"
    promo_code: PromoCode | None = None


class Forfeits(BaseModel):
    """What `start=now` gives up of the live plan: its data left and its whole days left."""

    data_mb: int
    days: int


class Quote(BaseModel):
    """A renewal's price before and after a promotion, and the dates it would run."""

    plan_code: str
    start: str
    price: Money = Field(description="the plan's price")
    discount: Money = Field(description="what the promotion takes off (zero without one)")
    total: Money = Field(description="what would be charged")
    promo_code: str | None
    valid_from: ApiTime
    valid_until: ApiTime
    forfeits: Forfeits


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
    created_at: ApiTime
    updated_at: ApiTime
    timeline: list[TimelineStep]


class MonthlyCap(Body):
    """An amount in a currency's minor unit."""

    amount: int = Field(gt=0, description="minor units (9900 is 99.00)")
    currency: Literal["CNY", "USD"]


class AutoRenewUpdate(Body):
    """Turning automatic renewal on or off."""

    model_config = ConfigDict(
        **Body.model_config,
        json_schema_extra={
            "examples": [
                {
                    "enabled": True,
                    "plan_code": "JP-30D-10GB",
                    "payment": {"method": "card", "token": "tok_card_ok"},
                    "monthly_cap": {"amount": 20000, "currency": "CNY"},
                }
            ]
        },
    )

    enabled: bool
    plan_code: str | None = Field(default=None, min_length=1, max_length=64)
    payment: PaymentIn | None = None
    monthly_cap: MonthlyCap | None = Field(
        default=None,
        description="the most auto-renewals may cost in a calendar month (UTC); past it "
        "auto-renew turns itself off",
    )

    @model_validator(mode="after")
    def _complete_when_enabled(self) -> "AutoRenewUpdate":
        if self.enabled and (self.plan_code is None or self.payment is None):
            raise ValueError("plan_code and payment are required when enabled is true")
        return self


class ResetAccepted(BaseModel):
    """The answer to a reset request, the same whether or not the address is registered."""

    detail: str = "If the address is registered, a code is on its way by e-mail (and SMS)."


def user_public(user: Any) -> UserPublic:
    """The public view of a stored user."""
    return UserPublic(
        id=user.id,
        email=user.email,
        name=user.name,
        phone=user.phone,
        locale=user.locale,
        notify=NotifyChoices(email=user.notify_email, sms=user.notify_sms),
        created_at=user.created_at,
    )


def card_public(card: Card, plans: Sequence[CardPlan] = ()) -> CardPublic:
    """A card's status as the API shows it: from its plans as the platform measured them."""
    status = card_status(plans, utcnow())
    queued = [QueuedPlan.model_validate(item) for item in status.pop("queued")]
    return CardPublic(
        iccid=card.iccid,
        queued=queued,
        auto_renew=card.auto_renew,
        auto_renew_plan_code=card.auto_renew_plan_code,
        auto_renew_monthly_cap=(
            Money(amount=card.auto_renew_cap_amount, currency=card.auto_renew_cap_currency)
            if card.auto_renew_cap_amount is not None and card.auto_renew_cap_currency
            else None
        ),
        **status,
    )
