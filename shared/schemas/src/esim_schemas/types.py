"""Value types shared by every event: ICCIDs, money, UTC timestamps."""

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
)


def luhn_valid(digits: str) -> bool:
    """Tell whether a string of digits ends with a valid Luhn check digit."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _check_iccid(value: str) -> str:
    if not luhn_valid(value):
        raise ValueError("ICCID check digit is wrong (Luhn)")
    return value


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def format_time(value: datetime) -> str:
    """Render a timestamp as RFC 3339 UTC with milliseconds and a `Z`."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


Iccid = Annotated[
    str,
    Field(pattern=r"^\d{19,20}$", description="19 or 20 digits with a valid Luhn check digit"),
    AfterValidator(_check_iccid),
]
UtcDatetime = Annotated[
    AwareDatetime,
    AfterValidator(_to_utc),
    PlainSerializer(format_time, return_type=str, when_used="json"),
    Field(description="RFC 3339 timestamp with a time zone; rendered in UTC"),
]
PaymentMethod = Literal["card", "paypal", "alipay"]
Start = Literal["now", "after_current"]
Locale = Literal["zh-CN", "en"]
BundleState = Literal["active", "queued"]
BundleStatus = Literal["queued", "active", "depleted", "expired"]
"""Where a bundle that went live stands at the platform."""
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code")]


class ContractModel(BaseModel):
    """Every event payload's base: unknown fields are ignored (producers may add optional ones)."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class Money(ContractModel):
    """An amount in the currency's minor unit (9900 CNY is 99.00 CNY)."""

    amount: int = Field(ge=0, description="minor units")
    currency: Currency


PaymentToken = Annotated[str, StringConstraints(min_length=1, max_length=256)]
"""A payment source saved at the provider (a secret: never logged, kept out of `repr`)."""

ReturnUrl = Annotated[str, StringConstraints(max_length=2048, pattern=r"^https?://[^\s]+$")]
"""The page a provider sends the buyer back to after an approval step."""


class PaymentDetails(ContractModel):
    """How the traveller pays: the method, a source saved at the provider, where to come back.

    `token` (a secret: never logged) is a payment source saved at the provider (a Stripe payment
    method `pm_...`, a PayPal vault token, or a sandbox token such as `card_ok`): required for
    `card` and for any charge made without the buyer present. Without one, PayPal and Alipay ask
    the buyer at the provider's page, and `return_url` is where the provider sends them back.
    """

    method: PaymentMethod
    # Optional here so that a card request without one reaches accounts and is answered
    # (`RenewalRejected` `invalid_request`) instead of being dead-lettered as undecodable.
    token: PaymentToken | None = Field(
        default=None,
        repr=False,
        description="a payment source saved at the provider: required for `card` and for any "
        "charge made without the buyer (auto-renew); without one, PayPal and Alipay ask the buyer",
    )
    return_url: ReturnUrl | None = Field(
        default=None,
        description="the frontend page the provider sends the buyer back to after an approval "
        "step (default: a setting)",
    )


class PlanRef(ContractModel):
    """The plan a renewal buys, as billing and provisioning need it."""

    code: str = Field(min_length=1, max_length=64)
    data_mb: int = Field(gt=0)
    validity_days: int = Field(gt=0)
