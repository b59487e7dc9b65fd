"""The auto-renew route: `PUT /v1/cards/{iccid}/auto-renew` turns automatic renewal on or off."""

from esim_core.web.problems import ProblemError
from esim_core.web.problems import problem_responses as problems
from fastapi import APIRouter

from accounts.cards.binding import own_card
from accounts.cards.models import CardPublic, card_public
from accounts.cards.plans import plans_of
from accounts.deps import CurrentUser, DatabaseDep, WatcherDep
from accounts.domain import CHARGEABLE_WITHOUT_BUYER, auto_renew_refusal
from accounts.lifecycle.models import AutoRenewUpdate
from accounts.lifecycle.planwatch import disable_auto_renew
from accounts.renewals.routes import payment_field_problem
from accounts.store import Plan

auto_renew_router = APIRouter(prefix="/v1/cards", tags=["cards"])


@auto_renew_router.put("/{iccid}/auto-renew", responses=problems(401, 404, 422))
async def auto_renew(
    caller: CurrentUser,
    iccid: str,
    body: AutoRenewUpdate,
    database: DatabaseDep,
    watcher: WatcherDep,
) -> CardPublic:
    """Turn automatic renewal on (with a plan and a way to pay) or off.

    Auto-renew charges without the buyer, so it takes only a source chargeable that way: a
    `card` with its token, or `paypal` with a vault token (422 `auto-renew-payment` otherwise).
    """
    async with database.session() as unit:
        found = await own_card(unit, caller, iccid)
        if body.enabled:
            assert body.plan_code is not None and body.payment is not None
            payment = body.payment
            refusal = auto_renew_refusal(payment.method, payment.token)
            if refusal is not None:
                field = "token" if payment.method in CHARGEABLE_WITHOUT_BUYER else "method"
                raise payment_field_problem(field, refusal, kind="auto-renew-payment")
            plan = await unit.get(Plan, body.plan_code)
            if plan is None or not plan.available:
                raise ProblemError(
                    422, f"plan {body.plan_code!r} is not on sale", kind="unknown-plan"
                )
            cap = body.monthly_cap
            if cap is not None and cap.currency not in plan.prices:
                raise ProblemError(
                    422,
                    f"plan {plan.code!r} is not sold in {cap.currency}, the cap's currency",
                    kind="cap-currency",
                )
            found.auto_renew_plan_code = plan.code
            found.auto_renew_method = payment.method
            found.auto_renew_token = payment.token
            found.auto_renew_return_url = payment.return_url
            found.auto_renew_cap_amount = cap.amount if cap is not None else None
            found.auto_renew_cap_currency = cap.currency if cap is not None else None
            found.auto_renew = True
            # A plan whose auto-renew lead has passed already is renewed at once.
            await watcher.rearm(unit, iccid)
        else:
            disable_auto_renew(found)
        unit.add(found)
        plans = await plans_of(unit, [iccid])
    return card_public(found, plans.get(iccid, ()))
