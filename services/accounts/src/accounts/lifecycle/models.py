"""The auto-renew route's body: automatic renewal on (with a plan, a payment, a cap) or off."""

from typing import Literal

from pydantic import Field, model_validator

from accounts.bodies import Body, with_example
from accounts.renewals.models import PaymentIn


class MonthlyCap(Body):
    """An amount in a currency's minor unit."""

    amount: int = Field(gt=0, description="minor units (9900 is 99.00)")
    currency: Literal["CNY", "USD"]


class AutoRenewUpdate(Body):
    """Turning automatic renewal on or off."""

    model_config = with_example(
        enabled=True,
        plan_code="JP-30D-10GB",
        payment={"method": "card", "token": "tok_card_ok"},
        monthly_cap={"amount": 20000, "currency": "CNY"},
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
