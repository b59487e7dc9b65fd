"""A renewal priced: the plan on sale in the caller's currency, and the dates it would run."""

from datetime import datetime, timedelta
from typing import Any

from esim_core.web.problems import ProblemError
from sqlmodel.ext.asyncio.session import AsyncSession

from accounts.cards.plans import card_status
from accounts.catalogue.models import Forfeits
from accounts.domain import RenewalInvalidError, currency_for, price_for
from accounts.lifecycle.rules import DAY_S
from accounts.store import CardPlan, Plan


async def priced_plan(unit: AsyncSession, plan_code: str, locale: str) -> tuple[Plan, int, str]:
    """A plan on sale and its price in the caller's currency, or the problem answer."""
    plan = await unit.get(Plan, plan_code)
    price, currency = sale_price(
        plan_code, plan.prices if plan is not None and plan.available else None, locale
    )
    assert plan is not None
    return plan, price, currency


def sale_price(plan_code: str, prices: dict[str, Any] | None, locale: str) -> tuple[int, str]:
    """A plan's price in the caller's currency (`prices` None: not on sale), or the problem."""
    if prices is None:
        raise ProblemError(422, f"plan {plan_code!r} is not on sale", kind="unknown-plan")
    currency = currency_for(locale)
    try:
        return price_for(prices, currency), currency
    except RenewalInvalidError as invalid:
        raise ProblemError(422, invalid.detail, kind="plan-not-available") from invalid


def schedule(
    plans: list[CardPlan], validity_days: int, start: str, now: datetime
) -> tuple[datetime, datetime, Forfeits]:
    """When a renewal would run, and what `start=now` gives up of the live plan.

    `after_current` starts when the last live or queued plan ends (now, without one); `now`
    starts now and forfeits the live plan's data left (as last measured) and whole days left.
    """
    status = card_status(plans, now)
    live = status["state"] == "active" and status["valid_until"] is not None
    if start == "now":
        valid_from = now
        forfeits = Forfeits(data_mb=0, days=0)
        if live:
            left_s = (status["valid_until"] - now).total_seconds()
            forfeits = Forfeits(
                data_mb=int(status["data_remaining_mb"]), days=max(0, int(left_s // DAY_S))
            )
    else:
        ends = [item["valid_until"] for item in status["queued"]]
        if live:
            ends.append(status["valid_until"])
        valid_from = max([now, *ends])
        forfeits = Forfeits(data_mb=0, days=0)
    return valid_from, valid_from + timedelta(days=validity_days), forfeits
