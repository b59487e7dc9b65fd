"""The catalogue's routes: the plans on sale (`/v1/plans`), the public promotions
(`/v1/promotions`) and a renewal's quote."""

from typing import Annotated

from esim_core.clock import utcnow
from esim_core.web.problems import problem_responses as problems
from esim_core.web.rows import row_view
from esim_schemas import Money
from fastapi import APIRouter, Query, Response
from sqlmodel import col, select

from accounts.cards.binding import own_card
from accounts.cards.plans import plans_of
from accounts.catalogue.models import PlanPublic, PromotionPublic, Quote, QuoteRequest
from accounts.catalogue.pricing import priced_plan, schedule
from accounts.catalogue.problems import promotion_problem, promotion_problems
from accounts.catalogue.promotions import PromotionError, preview, public_offers
from accounts.deps import CurrentUser, DatabaseDep
from accounts.store import Plan

plans_router = APIRouter(prefix="/v1/plans", tags=["plans"])
promotions_router = APIRouter(prefix="/v1/promotions", tags=["plans"])
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
        row_view(PlanPublic, plan, price=Money(amount=plan.prices[currency], currency=currency))
        for plan in rows
        if (wanted is None or wanted in plan.countries) and currency in plan.prices
    ]


# How long a cache (the website, a CDN, a browser) may reuse the list of offers: a new or
# withdrawn promotion shows within this; a start or end by the clock shows on time (max-age
# stops before it).
PROMOTIONS_MAX_AGE_S = 60


@promotions_router.get("")
async def promotions(database: DatabaseDep, response: Response) -> list[PromotionPublic]:
    """The promotions running now that anyone may use (no sign-in), the soonest ending first.

    Codes given to some travellers only are never listed, nor one used as often as it may be.
    """
    now = utcnow()
    async with database.session() as unit:
        offers = await public_offers(unit, now)
    max_age = PROMOTIONS_MAX_AGE_S
    if offers.next_change is not None:
        max_age = max(0, min(max_age, int((offers.next_change - now).total_seconds())))
    response.headers["Cache-Control"] = f"public, max-age={max_age}"
    return [
        PromotionPublic(
            code=promotion.code,
            percent_off=promotion.percent_off,
            amount_off=(
                Money(amount=promotion.amount_off, currency=promotion.currency)
                if promotion.percent_off is None
                and promotion.amount_off is not None
                and promotion.currency is not None
                else None
            ),
            valid_from=promotion.valid_from,
            valid_until=promotion.valid_until,
            per_user_limit=promotion.per_user_limit,
        )
        for promotion in offers.promotions
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
