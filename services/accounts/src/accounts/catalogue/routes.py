"""The catalogue's routes: the plans on sale (`/v1/plans`) and a renewal's quote."""

from typing import Annotated

from esim_core.clock import utcnow
from esim_core.web.problems import problem_responses as problems
from esim_schemas import Money
from fastapi import APIRouter, Query
from sqlmodel import col, select

from accounts.cards.binding import own_card
from accounts.cards.plans import plans_of
from accounts.catalogue.models import PlanPublic, Quote, QuoteRequest
from accounts.catalogue.pricing import priced_plan, schedule
from accounts.catalogue.problems import promotion_problem, promotion_problems
from accounts.catalogue.promotions import PromotionError, preview
from accounts.deps import CurrentUser, DatabaseDep
from accounts.store import Plan

plans_router = APIRouter(prefix="/v1/plans", tags=["plans"])
quote_router = APIRouter(prefix="/v1/cards", tags=["renewals"])


@plans_router.get("", responses=problems(422))
async def plans(
    database: DatabaseDep,
    country: Annotated[
        str | None, Query(pattern=r"^[A-Za-z]{2}$", description="ISO 3166 alpha-2")
    ] = None,
    currency: Annotated[str, Query(pattern=r"^(CNY|USD)$")] = "USD",
) -> list[PlanPublic]:
    """The plans on sale, optionally for one country."""
    async with database.session() as unit:
        query = select(Plan).where(col(Plan.available).is_(True)).order_by(col(Plan.code))
        rows = (await unit.exec(query)).all()
    wanted = country.upper() if country else None
    return [
        PlanPublic(
            code=plan.code,
            name=plan.name,
            kind=plan.kind,
            data_mb=plan.data_mb,
            validity_days=plan.validity_days,
            countries=plan.countries,
            price=Money(amount=plan.prices[currency], currency=currency),
        )
        for plan in rows
        if (wanted is None or wanted in plan.countries) and currency in plan.prices
    ]


@quote_router.post("/{iccid}/quote", responses=promotion_problems(401, 404, 409, 422))
async def quote(
    caller: CurrentUser, iccid: str, body: QuoteRequest, database: DatabaseDep
) -> Quote:
    """Price a renewal (with a promotion) and say what `start=now` would forfeit of the
    live plan; nothing is charged and no code is redeemed."""
    now = utcnow()
    async with database.session() as unit:
        await own_card(unit, caller, iccid)
        plan, price, currency = await priced_plan(unit, body.plan_code, caller.locale)
        discount, code = 0, None
        if body.promo_code is not None:
            try:
                priced = await preview(
                    unit,
                    body.promo_code,
                    user_id=caller.id,
                    price=price,
                    currency=currency,
                    now=now,
                )
            except PromotionError as error:
                raise promotion_problem(error) from error
            discount, code = priced.discount, priced.code
        plans_now = (await plans_of(unit, [iccid])).get(iccid, [])
        valid_from, valid_until, forfeits = schedule(plans_now, plan.validity_days, body.start, now)
    return Quote(
        plan_code=plan.code,
        start=body.start,
        price=Money(amount=price, currency=currency),
        discount=Money(amount=discount, currency=currency),
        total=Money(amount=price - discount, currency=currency),
        promo_code=code,
        valid_from=valid_from,
        valid_until=valid_until,
        forfeits=forfeits,
    )
