"""The cards routes' bodies: binding a card, a card's status and its plans."""

from collections.abc import Sequence

from esim_core.clock import utcnow
from esim_schemas import Money
from esim_schemas.types import Iccid
from pydantic import BaseModel, Field

from accounts.bodies import ApiTime, Body, stored_money
from accounts.cards.plans import card_status
from accounts.store import Card, CardPlan


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


def card_public(card: Card, plans: Sequence[CardPlan] = ()) -> CardPublic:
    """A card's status as the API shows it: from its plans as the platform measured them."""
    status = card_status(plans, utcnow())
    queued = [QueuedPlan.model_validate(item) for item in status.pop("queued")]
    return CardPublic(
        iccid=card.iccid,
        queued=queued,
        auto_renew=card.auto_renew,
        auto_renew_plan_code=card.auto_renew_plan_code,
        auto_renew_monthly_cap=stored_money(
            card.auto_renew_cap_amount, card.auto_renew_cap_currency
        ),
        **status,
    )
