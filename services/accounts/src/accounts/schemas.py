"""Request and response bodies of the accounts HTTP API."""

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from esim_schemas.types import Iccid, Locale, Money, PaymentMethod, Start
from pydantic import BaseModel, ConfigDict, EmailStr, Field, model_validator


class Body(BaseModel):
    """A request body: unknown fields are refused, so typos are caught."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


Password = Annotated[str, Field(min_length=8, max_length=128, repr=False)]


class UserCreate(Body):
    """Registration."""

    email: EmailStr
    password: Password
    phone: str | None = Field(default=None, pattern=r"^\+?[0-9 ()-]{6,20}$")
    locale: Locale = "en"


class UserPublic(BaseModel):
    """A user as the API shows them."""

    id: str
    email: str
    phone: str | None
    locale: str
    created_at: datetime


class TokenResponse(BaseModel):
    """An OAuth2 bearer token."""

    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int


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
    valid_from: datetime
    valid_until: datetime


class CardPublic(BaseModel):
    """A card's status."""

    iccid: str
    plan_code: str | None
    state: str
    data_total_mb: int
    data_remaining_mb: int
    usage_as_of: datetime | None = Field(
        default=None, description="when the platform last measured data_remaining_mb"
    )
    valid_from: datetime | None
    valid_until: datetime | None
    queued: list[QueuedPlan]
    auto_renew: bool
    auto_renew_plan_code: str | None


class PlanHistoryEntry(BaseModel):
    """One plan a card had, has or will have, with what the platform measured."""

    renewal_id: str
    plan_code: str | None
    state: str = Field(description="queued, active, expired or depleted")
    data_mb: int | None
    data_remaining_mb: int
    usage_as_of: datetime | None
    valid_from: datetime
    valid_until: datetime
    ended_at: datetime | None


class PaymentIn(Body):
    """How the renewal is paid."""

    method: PaymentMethod
    token: str = Field(min_length=1, max_length=256, repr=False)


class RenewalCreate(Body):
    """A renewal request from a frontend."""

    plan_code: str = Field(min_length=1, max_length=64)
    payment: PaymentIn
    start: Start = "after_current"


class RenewalAccepted(BaseModel):
    """The answer to a renewal request."""

    renewal_id: UUID
    status: str


class TimelineStep(BaseModel):
    """One step of a renewal's timeline."""

    step: str
    status: str
    at: datetime
    detail: str | None = None


class RenewalPublic(BaseModel):
    """A renewal saga as the traveller sees it."""

    renewal_id: UUID
    iccid: str
    plan_code: str
    status: str
    start: str
    price: Money | None
    reason: str | None
    detail: str | None
    valid_from: datetime | None
    valid_until: datetime | None
    bundle_state: str | None
    created_at: datetime
    updated_at: datetime
    timeline: list[TimelineStep]


class AutoRenewUpdate(Body):
    """Turning automatic renewal on or off."""

    enabled: bool
    plan_code: str | None = Field(default=None, min_length=1, max_length=64)
    payment: PaymentIn | None = None

    @model_validator(mode="after")
    def _complete_when_enabled(self) -> "AutoRenewUpdate":
        if self.enabled and (self.plan_code is None or self.payment is None):
            raise ValueError("plan_code and payment are required when enabled is true")
        return self
