"""The accounts API's lifecycle routes: a renewal's quote and a card's renewal history."""

import base64
import binascii
import json
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Annotated, Any
from uuid import UUID

from esim_core.clock import as_utc, utcnow
from esim_core.web.problems import ProblemError
from esim_core.web.problems import problem_responses as problems
from esim_schemas import Money
from fastapi import APIRouter, Depends, FastAPI, Query
from sqlalchemy import and_, or_
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from accounts.auth import AuthParts
from accounts.cardplans import card_status, plans_of
from accounts.domain import RenewalInvalidError, currency_for, price_for
from accounts.lifecycle import DAY_S
from accounts.promotions import PROBLEMS, PromotionError, preview
from accounts.schemas import Forfeits, Quote, QuoteRequest, RenewalPage, RenewalSummary
from accounts.store import Card, CardPlan, Plan, Renewal, User

MAX_PAGE = 100


def promotion_problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`problems(...)`, with every promotion problem of those statuses as a named example."""
    responses = problems(*statuses)
    for status in statuses:
        kinds = {kind: detail for kind, (code, detail) in PROBLEMS.items() if code == status}
        if not kinds:
            continue
        content = responses[status]["content"]["application/problem+json"]
        examples = {"default": {"value": content.pop("example")}}
        for kind, detail in kinds.items():
            examples[kind] = {
                "summary": detail,
                "value": {
                    "type": f"https://esim.example/problems/{kind}",
                    "title": responses[status]["description"],
                    "status": status,
                    "detail": detail,
                },
            }
        content["examples"] = examples
        responses[status]["description"] += " (promotion codes: " + ", ".join(kinds) + ")"
    return responses


def promotion_problem(error: PromotionError) -> ProblemError:
    """The HTTP answer to a code that cannot be applied."""
    return ProblemError(error.status, error.detail, kind=error.kind)


async def priced_plan(unit: AsyncSession, plan_code: str, locale: str) -> tuple[Plan, int, str]:
    """A plan on sale and its price in the caller's currency, or the problem answer."""
    plan = await unit.get(Plan, plan_code)
    if plan is None or not plan.available:
        raise ProblemError(422, f"plan {plan_code!r} is not on sale", kind="unknown-plan")
    currency = currency_for(locale)
    try:
        return plan, price_for(plan.prices, currency), currency
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


def encode_cursor(saga: Renewal) -> str:
    """An opaque cursor: the position of the last renewal of a page."""
    raw = json.dumps({"t": as_utc(saga.created_at).isoformat(), "id": saga.renewal_id})
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The position a cursor names, or a 400 problem for one this API did not hand out."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        position = json.loads(raw)
        return as_utc(datetime.fromisoformat(position["t"])), str(UUID(position["id"]))
    except (binascii.Error, ValueError, KeyError, TypeError) as error:
        raise ProblemError(
            400, "the cursor is not one this API handed out", kind="invalid-cursor"
        ) from error


def _money(amount: int | None, currency: str | None) -> Money | None:
    return Money(amount=amount, currency=currency) if amount is not None and currency else None


def summary(saga: Renewal) -> RenewalSummary:
    """One renewal as a card's history lists it."""
    return RenewalSummary(
        renewal_id=UUID(saga.renewal_id),
        plan_code=saga.plan_code,
        status=saga.status,
        start=saga.start,
        channel=saga.channel,
        price=_money(saga.price_amount, saga.currency),
        discount=_money(saga.discount_amount, saga.currency),
        promo_code=saga.promo_code if saga.discount_amount is not None else None,
        valid_from=as_utc(saga.valid_from) if saga.valid_from else None,
        valid_until=as_utc(saga.valid_until) if saga.valid_until else None,
        created_at=as_utc(saga.created_at),
        updated_at=as_utc(saga.updated_at),
    )


def build_lifecycle_router(
    parts: AuthParts,
    current_user: Callable[..., Awaitable[User]],
    own_card: Callable[[AsyncSession, User, str], Awaitable[Card]],
) -> APIRouter:
    """The quote and history routes, with the caller and card checks of the main router."""
    router = APIRouter()
    database = parts.database
    Caller = Annotated[User, Depends(current_user)]

    @router.post(
        "/cards/{iccid}/quote",
        tags=["renewals"],
        responses=promotion_problems(401, 404, 409, 422),
    )
    async def quote(caller: Caller, iccid: str, body: QuoteRequest) -> Quote:
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
            plans = (await plans_of(unit, [iccid])).get(iccid, [])
            valid_from, valid_until, forfeits = schedule(plans, plan.validity_days, body.start, now)
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

    @router.get(
        "/cards/{iccid}/renewals", tags=["renewals"], responses=problems(400, 401, 404, 422)
    )
    async def card_renewals(
        caller: Caller,
        iccid: str,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="renewals per page")] = 20,
        cursor: Annotated[
            str | None, Query(max_length=512, description="`next_cursor` of the page before")
        ] = None,
    ) -> RenewalPage:
        """The card's renewals, newest first, a page at a time."""
        async with database.session() as unit:
            await own_card(unit, caller, iccid)
            query = select(Renewal).where(
                col(Renewal.iccid) == iccid, col(Renewal.user_id) == caller.id
            )
            if cursor is not None:
                created_at, renewal_id = decode_cursor(cursor)
                query = query.where(
                    or_(
                        col(Renewal.created_at) < created_at,
                        and_(
                            col(Renewal.created_at) == created_at,
                            col(Renewal.renewal_id) < renewal_id,
                        ),
                    )
                )
            query = query.order_by(col(Renewal.created_at).desc(), col(Renewal.renewal_id).desc())
            rows = list((await unit.exec(query.limit(limit + 1))).all())
        more = len(rows) > limit
        page = rows[:limit]
        return RenewalPage(
            items=[summary(row) for row in page],
            next_cursor=encode_cursor(page[-1]) if more else None,
        )

    return router


# The operations that take a promotion code: their 422 answer names the promotion problems too.
_WITH_CODES = (("/v1/cards/{iccid}/renewals", "post"), ("/v1/cards/{iccid}/quote", "post"))


def document_promotion_problems(app: FastAPI) -> None:
    """Add the promotion problems to the 422 answers of the operations that take a code.

    The core documents every 422 as a validation problem, after the routes declared theirs;
    this runs after it, so the generic example stays the default and each code problem is one
    more named example.
    """
    documented = app.openapi

    def openapi() -> dict[str, Any]:
        schema = documented()
        for path, method in _WITH_CODES:
            operation = schema.get("paths", {}).get(path, {}).get(method)
            if operation is None or "422" not in operation["responses"]:
                continue
            if "examples" in operation["responses"]["422"]["content"]["application/problem+json"]:
                continue  # the schema is built once and kept: done already
            answer = dict(operation["responses"]["422"])
            content = dict(answer["content"]["application/problem+json"])
            examples = promotion_problems(422)[422]["content"]["application/problem+json"]
            content["examples"] = {"default": {"value": content.pop("example")}} | {
                kind: example for kind, example in examples["examples"].items() if kind != "default"
            }
            answer["content"] = {"application/problem+json": content}
            answer["description"] = promotion_problems(422)[422]["description"]
            operation["responses"]["422"] = answer
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
