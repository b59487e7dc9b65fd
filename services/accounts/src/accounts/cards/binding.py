"""Whose a card is: the owner check of every card route, and the CardBound the notifier reads."""

from esim_core.web.problems import ProblemError
from esim_schemas import CardBound
from sqlmodel.ext.asyncio.session import AsyncSession

from accounts.store import Card, User


async def own_card(unit: AsyncSession, caller: User, iccid: str) -> Card:
    """The caller's card, or a 404 problem (also for a card of someone else)."""
    card = await unit.get(Card, iccid)
    if card is None or card.user_id != caller.id:
        raise card_not_found(iccid)
    return card


def card_not_found(iccid: str) -> ProblemError:
    """The 404 problem for a card that is not the caller's (or does not exist)."""
    return ProblemError(404, f"no card {iccid} on your account", kind="card-not-found")


def card_bound(user: User, iccid: str) -> CardBound:
    """Whom the notifier writes to about a card: the holder's address, phone and language."""
    return CardBound(
        user_id=user.id,
        iccid=iccid,
        email=user.email,
        phone=user.phone if user.notify_sms else None,
        locale=user.locale,
    )
