"""The cards routes (`/v1/cards`): binding a card, the caller's cards, a card and its plans."""

from esim_core.clock import utcnow
from esim_core.web.problems import ProblemError
from esim_core.web.problems import problem_responses as problems
from fastapi import APIRouter, Response, status
from sqlmodel import col, select

from accounts.cards.binding import card_bound, own_card
from accounts.cards.models import CardBind, CardPublic, PlanHistoryEntry, card_public
from accounts.cards.plans import plan_entry, plans_of
from accounts.deps import CurrentUser, DatabaseDep, OutboxDep
from accounts.store import Card

cards_router = APIRouter(prefix="/v1/cards", tags=["cards"])


@cards_router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses={
        200: {"description": "already bound to the caller"},
        **problems(401, 404, 409, 422),
    },
)
async def bind_card(
    body: CardBind,
    caller: CurrentUser,
    response: Response,
    database: DatabaseDep,
    outbox: OutboxDep,
) -> CardPublic:
    """Bind a card to the caller with the activation code printed with it."""
    async with database.session() as unit:
        # Locked: travellers binding one card at once take turns, so one of them owns it
        # and the others get 409 (PostgreSQL would otherwise let each overwrite the last).
        card = await unit.get(Card, body.iccid, with_for_update=True)
        if card is None or card.activation_code != body.activation_code:
            # One answer for both, so card numbers cannot be probed.
            raise ProblemError(
                404, f"no card {body.iccid} with that activation code", kind="card-not-found"
            )
        if card.user_id == caller.id:
            response.status_code = status.HTTP_200_OK
            return card_public(card)
        if card.user_id is not None:
            raise ProblemError(
                409, f"card {body.iccid} is bound to another account", kind="card-taken"
            )
        card.user_id = caller.id
        card.bound_at = utcnow()
        unit.add(card)
        outbox.add(unit, card_bound(caller, card.iccid))
    return card_public(card)


@cards_router.get("", responses=problems(401))
async def cards(caller: CurrentUser, database: DatabaseDep) -> list[CardPublic]:
    """The caller's cards."""
    async with database.session() as unit:
        query = select(Card).where(Card.user_id == caller.id).order_by(col(Card.iccid))
        found = (await unit.exec(query)).all()
        plans = await plans_of(unit, [card.iccid for card in found])
        return [card_public(card, plans.get(card.iccid, ())) for card in found]


@cards_router.get("/{iccid}", responses=problems(401, 404, 422))
async def card(caller: CurrentUser, iccid: str, database: DatabaseDep) -> CardPublic:
    """One of the caller's cards: plan, data left (as measured when), validity, queue."""
    async with database.session() as unit:
        found = await own_card(unit, caller, iccid)
        plans = await plans_of(unit, [iccid])
        return card_public(found, plans.get(iccid, ()))


@cards_router.get("/{iccid}/plans", responses=problems(401, 404, 422))
async def card_plans(
    caller: CurrentUser, iccid: str, database: DatabaseDep
) -> list[PlanHistoryEntry]:
    """The card's plans, newest first: queued, live, and those that expired or were used up."""
    async with database.session() as unit:
        await own_card(unit, caller, iccid)
        plans = (await plans_of(unit, [iccid])).get(iccid, [])
    now = utcnow()
    entries = [
        PlanHistoryEntry.model_validate(plan_entry(plan, now))
        for plan in plans
        if plan.valid_from is not None
    ]
    return sorted(entries, key=lambda entry: entry.valid_from, reverse=True)
