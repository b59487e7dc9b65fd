"""The deadline sweep: durable timers that move on sagas stuck waiting for an outcome."""

from datetime import datetime, timedelta

from esim_core.persistence.db import Database
from sqlalchemy import func
from sqlmodel import col, select

from accounts.domain import IN_FLIGHT, WITH_DEADLINE
from accounts.renewals.saga import RenewalSaga
from accounts.store import Renewal


async def sweep_deadlines(database: Database, saga: RenewalSaga, *, limit: int = 100) -> int:
    """Expire sagas whose deadline has passed, each in its own transaction; returns how many.

    The deadline is a column of the saga row, so it outlives any process; the runtime runs this
    sweep on one replica at a time (a Redis lease).
    """
    now = saga.clock()
    async with database.session() as session:
        query = (
            select(Renewal.renewal_id)
            .where(col(Renewal.deadline_at).is_not(None), col(Renewal.deadline_at) <= now)
            .where(col(Renewal.status).in_(list(WITH_DEADLINE)))
            .order_by(col(Renewal.deadline_at))
            .limit(limit)
        )
        due = list((await session.exec(query)).all())
    expired = 0
    for renewal_id in due:
        async with database.session() as session:
            row = await session.get(Renewal, renewal_id, with_for_update=True)
            if row is not None and await saga.expire(session, row, saga.clock()):
                expired += 1
    return expired


async def sagas_in_flight(database: Database, now: datetime, *, window_s: float) -> int:
    """How many sagas wait on a payment or an activation and moved in the last `window_s`.

    One waiting for the buyer's approval at the provider (PAYMENT_ACTION_REQUIRED) waits on a
    person, not on the platform, and is not counted.

    The work in flight that the intake limit counts (`ACCOUNTS_MAX_SAGAS_IN_FLIGHT`). A saga
    that has waited longer is stuck or slow, and stops holding new requests back: at worst the
    limit lets a new `limit` in per window while the platform is down.
    """
    query = (
        select(func.count())
        .select_from(Renewal)
        .where(col(Renewal.status).in_(list(IN_FLIGHT)))
        .where(col(Renewal.updated_at) >= now - timedelta(seconds=window_s))
    )
    async with database.session() as session:
        return int((await session.exec(query)).one())
