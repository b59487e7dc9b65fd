"""The catalogue routes' bodies: a plan on sale, a public promotion, a quote asked for and
given."""

from typing import Annotated

from esim_schemas import Money
from esim_schemas.types import Start
from pydantic import BaseModel, ConfigDict, Field

from accounts.bodies import ApiTime, Body, with_example


class PlanPublic(BaseModel):
    """A plan of the catalogue, priced in the asked currency."""

    code: str
    name: str
    kind: str
    data_mb: int
    validity_days: int
    countries: list[str]
    price: Money


class PromotionPublic(BaseModel):
    """A promotion running now that any traveller may use: its code, what it takes off, when."""

    code: str = Field(description="what to enter as `promo_code` (case does not matter)")
    percent_off: int | None = Field(
        description="percent off the plan's price (1-100); null when it is a fixed amount"
    )
    amount_off: Money | None = Field(
        description="a fixed amount off, for plans paid in its currency only; null when it is "
        "a percentage"
    )
    valid_from: ApiTime | None = Field(description="when it started; null: no start date")
    valid_until: ApiTime | None = Field(
        description="when it ends (the first instant it no longer applies); null: no end date"
    )
    per_user_limit: int | None = Field(
        description="how many renewals of one traveller it may take off; null: any number"
    )

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "code": "WELCOME10",
                    "percent_off": 10,
                    "amount_off": None,
                    "valid_from": None,
                    "valid_until": None,
                    "per_user_limit": 1,
                }
            ]
        }
    )


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


class QuoteRequest(Body):
    """What a renewal would cost and give: nothing is charged or redeemed."""

    model_config = with_example(plan_code="JP-30D-10GB", start="now", promo_code="WELCOME10")

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
