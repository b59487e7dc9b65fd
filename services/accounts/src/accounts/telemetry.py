"""The accounts gauges computed at scrape time: sagas by state, stuck, and the oldest open one."""

from esim_core.clock import as_utc, utcnow
from esim_core.observability.telemetry import Refresh
from esim_core.persistence.db import Database
from prometheus_client import Gauge
from sqlalchemy import func, or_
from sqlmodel import col, select

from accounts.domain import TERMINAL, SagaStatus
from accounts.renewals.stuck import DEFAULT_STUCK_AFTER_S, stuck_clause
from accounts.store import Renewal

SAGAS = Gauge("esim_sagas", "Renewal sagas, by state", ["state"])
SAGAS_STUCK = Gauge(
    "esim_sagas_stuck",
    f"Sagas past their deadline, or without progress for {DEFAULT_STUCK_AFTER_S:.0f} s",
)
OLDEST_OPEN_SAGA_AGE = Gauge(
    "esim_saga_oldest_open_age_seconds",
    "Age of the oldest saga that has not ended (0 when none is open)",
)


def saga_gauges(database: Database) -> Refresh:
    """Refresh the saga gauges from the accounts database."""
    open_states = [state.value for state in SagaStatus if state not in TERMINAL]
    # TIMED_OUT with nothing captured is over: no refund is owed and nothing will move it.
    is_open = col(Renewal.status).in_(open_states) & or_(
        col(Renewal.status) != SagaStatus.TIMED_OUT.value,
        col(Renewal.refund_requested),
        col(Renewal.payment_id).is_not(None),
    )

    async def refresh() -> None:
        now = utcnow()
        async with database.session() as session:
            counts = dict(
                (
                    await session.exec(
                        select(Renewal.status, func.count()).group_by(Renewal.status)
                    )
                ).all()
            )
            stuck = (
                await session.exec(
                    select(func.count()).where(stuck_clause(now, DEFAULT_STUCK_AFTER_S))
                )
            ).one()
            oldest = (
                await session.exec(select(func.min(col(Renewal.created_at))).where(is_open))
            ).one()
        for state in SagaStatus:
            SAGAS.labels(state.value).set(counts.get(state.value, 0))
        SAGAS_STUCK.set(stuck)
        age = (now - as_utc(oldest)).total_seconds() if oldest is not None else 0.0
        OLDEST_OPEN_SAGA_AGE.set(max(0.0, age))

    return refresh
