"""Promotion codes: checking, pricing, redeeming once per renewal within limits, releasing.

A redemption is a row keyed by the renewal, and each limit is a counter that moves only in a
guarded UPDATE (`... SET redeemed = redeemed + 1 WHERE redeemed < total_limit`): the database
serializes those statements on the counter's row, so two renewals racing for the last use of
a code cannot both get it, on SQLite and PostgreSQL alike.
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from esim_core.clock import as_utc
from esim_core.persistence.db import Database, add_row
from esim_core.persistence.driver import Target, orm_session
from sqlalchemy import update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from accounts.domain import RenewalInvalidError, SagaStatus
from accounts.store import Promotion, PromotionUse, Redemption, Renewal

#: The promotions the local run offers (added at start when `ACCOUNTS_SEED_PROMOTIONS`).
PROMOTIONS: list[dict[str, Any]] = [
    {"code": "WELCOME10", "percent_off": 10, "per_user_limit": 1, "public": True},
]

# Sagas that ended without keeping a capture give their redemption back. CANCELLED (a queued
# plan refunded) is named as a string: its state comes with the cancellation.
_UNPAID = frozenset({SagaStatus.REJECTED, SagaStatus.PAYMENT_FAILED, SagaStatus.REFUNDED})
_CANCELLED = "CANCELLED"


class PromotionError(Exception):
    """A code that cannot be applied; `kind` names the problem, `status` its HTTP answer."""

    def __init__(self, kind: str, status: int, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.status = status
        self.detail = detail


#: Every problem a promotion code can answer, for the OpenAPI document and docs/contract.md.
PROBLEMS: dict[str, tuple[int, str]] = {
    "promo-unknown": (422, "no promotion WELCOME11 exists"),
    "promo-not-started": (422, "promotion SPRING runs from 2027-03-01T00:00:00Z"),
    "promo-expired": (422, "promotion WINTER ended at 2026-02-28T23:59:59Z"),
    "promo-not-applicable": (422, "promotion TEN-USD takes USD off; this renewal is paid in CNY"),
    "promo-exhausted": (409, "promotion LAUNCH has been used as often as it may be"),
    "promo-used": (409, "you have already used promotion WELCOME10"),
}


def normalized(code: str) -> str:
    """Codes are matched without regard to case or surrounding spaces."""
    return code.strip().upper()


@dataclass(frozen=True)
class Priced:
    """A price with a promotion applied."""

    code: str
    discount: int
    total: int


def discount_for(promotion: Promotion, price: int, currency: str) -> int:
    """What a promotion takes off a price; it never takes the total below one minor unit.

    Raises:
        PromotionError: a fixed discount in another currency.
    """
    if promotion.percent_off is not None:
        off = (price * promotion.percent_off + 50) // 100
    else:
        if promotion.currency != currency:
            raise PromotionError(
                "promo-not-applicable",
                422,
                f"promotion {promotion.code} takes {promotion.currency} off; "
                f"this renewal is paid in {currency}",
            )
        off = promotion.amount_off or 0
    return max(0, min(off, price - 1))


def check_window(promotion: Promotion, now: datetime) -> None:
    """Raises PromotionError outside the promotion's validity window."""
    if promotion.valid_from is not None and as_utc(promotion.valid_from) > now:
        start = as_utc(promotion.valid_from).isoformat()
        raise PromotionError(
            "promo-not-started", 422, f"promotion {promotion.code} runs from {start}"
        )
    if promotion.valid_until is not None and as_utc(promotion.valid_until) <= now:
        end = as_utc(promotion.valid_until).isoformat()
        raise PromotionError("promo-expired", 422, f"promotion {promotion.code} ended at {end}")


async def _promotion(session: AsyncSession, code: str) -> Promotion:
    promotion = await session.get(Promotion, normalized(code))
    if promotion is None:
        raise PromotionError("promo-unknown", 422, f"no promotion {normalized(code)} exists")
    return promotion


def _exhausted(code: str) -> PromotionError:
    return PromotionError(
        "promo-exhausted", 409, f"promotion {code} has been used as often as it may be"
    )


def _used(code: str) -> PromotionError:
    return PromotionError("promo-used", 409, f"you have already used promotion {code}")


async def preview(
    session: AsyncSession, code: str, *, user_id: str, price: int, currency: str, now: datetime
) -> Priced:
    """The price with a code applied, as redeeming it now would give; nothing is written.

    Raises:
        PromotionError: unknown, outside its window, not for this currency, or used up.
    """
    promotion = await _promotion(session, code)
    check_window(promotion, now)
    off = discount_for(promotion, price, currency)
    if promotion.total_limit is not None and promotion.redeemed >= promotion.total_limit:
        raise _exhausted(promotion.code)
    if promotion.per_user_limit is not None:
        use = await session.get(PromotionUse, (promotion.code, user_id))
        if use is not None and use.used >= promotion.per_user_limit:
            raise _used(promotion.code)
    return Priced(code=promotion.code, discount=off, total=price - off)


async def redeem(
    session: AsyncSession,
    code: str,
    *,
    renewal_id: str,
    user_id: str,
    iccid: str,
    price: int,
    currency: str,
    now: datetime,
) -> Priced:
    """Apply a code to a renewal, once: a second call for the renewal returns the first's.

    Runs in the caller's transaction: the counters and the redemption commit with the renewal.

    Raises:
        PromotionError: unknown, outside its window, not for this currency, used up in all,
            or used up by this user.
    """
    held = await session.get(Redemption, renewal_id)
    if held is not None and held.released_at is None:
        return Priced(
            code=held.code, discount=held.discount_amount, total=price - held.discount_amount
        )
    promotion = await _promotion(session, code)
    check_window(promotion, now)
    off = discount_for(promotion, price, currency)
    connection = await session.connection()
    taken = await connection.execute(
        update(Promotion)
        .where(col(Promotion.code) == promotion.code)
        .where(
            (col(Promotion.total_limit).is_(None))
            | (col(Promotion.redeemed) < col(Promotion.total_limit))
        )
        .values(redeemed=col(Promotion.redeemed) + 1)
    )
    if not taken.rowcount:
        raise _exhausted(promotion.code)
    if promotion.per_user_limit is not None:
        dialect_insert = sqlite_insert if connection.dialect.name == "sqlite" else pg_insert
        await connection.execute(
            dialect_insert(PromotionUse)
            .values(code=promotion.code, user_id=user_id, used=0)
            .on_conflict_do_nothing()
        )
        mine = await connection.execute(
            update(PromotionUse)
            .where(col(PromotionUse.code) == promotion.code, col(PromotionUse.user_id) == user_id)
            .where(col(PromotionUse.used) < promotion.per_user_limit)
            .values(used=col(PromotionUse.used) + 1)
        )
        if not mine.rowcount:
            # The caller may commit (a saga records its rejection): give the total back.
            await connection.execute(
                update(Promotion)
                .where(col(Promotion.code) == promotion.code)
                .values(redeemed=col(Promotion.redeemed) - 1)
            )
            raise _used(promotion.code)
    if held is not None:
        await connection.execute(
            update(Redemption)
            .where(col(Redemption.renewal_id) == renewal_id)
            .values(code=promotion.code, discount_amount=off, currency=currency, released_at=None)
        )
    else:
        add_row(
            session,
            Redemption,
            {
                "renewal_id": renewal_id,
                "code": promotion.code,
                "user_id": user_id,
                "iccid": iccid,
                "discount_amount": off,
                "currency": currency,
                "released_at": None,
                "created_at": now,
            },
        )
    return Priced(code=promotion.code, discount=off, total=price - off)


async def release(session: AsyncSession, renewal_id: str, now: datetime) -> bool:
    """Give a renewal's redemption back (its limits count it no more); once. Returns whether."""
    connection = await session.connection()
    freed = await connection.execute(
        update(Redemption)
        .where(col(Redemption.renewal_id) == renewal_id, col(Redemption.released_at).is_(None))
        .values(released_at=now)
        .returning(col(Redemption.code), col(Redemption.user_id))
    )
    row = freed.first()
    if row is None:
        return False
    code, user_id = row
    await connection.execute(
        update(Promotion)
        .where(col(Promotion.code) == code, col(Promotion.redeemed) > 0)
        .values(redeemed=col(Promotion.redeemed) - 1)
    )
    await connection.execute(
        update(PromotionUse)
        .where(col(PromotionUse.code) == code, col(PromotionUse.user_id) == user_id)
        .where(col(PromotionUse.used) > 0)
        .values(used=col(PromotionUse.used) - 1)
    )
    return True


def uncaptured(saga: Renewal) -> bool:
    """Whether a saga has ended without keeping a payment (its redemption is given back)."""
    if saga.status in _UNPAID or saga.status == _CANCELLED:
        return True
    return saga.status == SagaStatus.TIMED_OUT and saga.payment_id is None


async def release_if_uncaptured(session: Target, saga: Renewal, now: datetime) -> bool:
    """Release the redemption of a saga that ended without a capture; returns whether. Only
    a saga with a promotion needs the ORM (`orm_session`)."""
    if saga.promo_code is None or not uncaptured(saga):
        return False
    return await release(orm_session(session, "a promotion to release"), saga.renewal_id, now)


async def seed_promotions(database: Database) -> None:
    """Add the local run's promotions that the database does not have yet, and list those the
    seed makes public (a database from before promotions could be listed has them unlisted)."""
    async with database.session() as session:
        known = {row.code: row for row in (await session.exec(select(Promotion))).all()}
        for promotion in PROMOTIONS:
            row = known.get(promotion["code"])
            if row is None:
                session.add(Promotion(**promotion))
            elif promotion.get("public") and not row.public:
                row.public = True
                session.add(row)


def running(promotion: Promotion, now: datetime) -> bool:
    """Within its window at `now` (`valid_until` is the first instant it no longer runs)."""
    started = promotion.valid_from is None or as_utc(promotion.valid_from) <= now
    ended = promotion.valid_until is not None and as_utc(promotion.valid_until) <= now
    return started and not ended


def used_up(promotion: Promotion) -> bool:
    """Redeemed as often as its total limit allows (a released redemption makes room again)."""
    return promotion.total_limit is not None and promotion.redeemed >= promotion.total_limit


@dataclass(frozen=True)
class Offers:
    """The public promotions running now, and when that list next changes by the clock."""

    promotions: list[Promotion]
    next_change: datetime | None


async def public_offers(session: AsyncSession, now: datetime) -> Offers:
    """The public promotions a traveller can use now, the soonest ending first.

    A promotion used up in all is left out: showing a code that can only be refused would
    mislead. `next_change` is the next start or end among the public ones, for caches.
    """
    query = select(Promotion).where(col(Promotion.public).is_(True))
    rows = (await session.exec(query)).all()
    offered = [row for row in rows if running(row, now) and not used_up(row)]
    never = datetime.max.replace(tzinfo=now.tzinfo)
    offered.sort(key=lambda row: (as_utc(row.valid_until) if row.valid_until else never, row.code))
    boundaries = [
        as_utc(moment)
        for row in rows
        for moment in (row.valid_from, row.valid_until)
        if moment is not None and as_utc(moment) > now
    ]
    return Offers(promotions=offered, next_change=min(boundaries, default=None))


async def apply_promotion(session: AsyncSession, saga: Renewal, code: str, now: datetime) -> None:
    """Take a code off a priced saga's price, redeeming it for the renewal.

    Raises:
        RenewalInvalidError: `invalid_request`, saying what is wrong with the code.
    """
    assert saga.price_amount is not None and saga.currency is not None
    try:
        priced = await redeem(
            session,
            code,
            renewal_id=saga.renewal_id,
            user_id=saga.user_id,
            iccid=saga.iccid,
            price=saga.price_amount,
            currency=saga.currency,
            now=now,
        )
    except PromotionError as error:
        raise RenewalInvalidError("invalid_request", error.detail) from error
    saga.price_amount = priced.total
    saga.discount_amount = priced.discount
    saga.promo_code = priced.code
