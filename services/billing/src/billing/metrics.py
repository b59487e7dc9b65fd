"""Billing's scrape-time gauges: captures overdue and payments still unknown past the schedule.

Both read the database at each scrape, so every replica reports the same value (the alert
rules take `max`); `deploy/prometheus/alerts.yaml` pages on either.
"""

from collections.abc import Awaitable, Callable

from esim_core.persistence.db import Database
from prometheus_client import Gauge
from sqlalchemy import func
from sqlmodel import col, select

from billing.domain import PaymentState
from billing.store import Payment

CAPTURE_OVERDUE = Gauge(
    "esim_payment_capture_overdue",
    "Payments whose plan is active but whose capture could not be made before capture_before",
)
PAYMENTS_UNKNOWN = Gauge(
    "esim_payments_unknown",
    "Payments whose last call's answer is still unknown past the look-up schedule",
)


def payment_gauges(database: Database, schedule_rounds: int) -> Callable[[], Awaitable[None]]:
    """A refresher of both gauges, for `esim_core.observability.telemetry.ScrapeGauges`."""

    async def refresh() -> None:
        async with database.session() as session:
            overdue = (
                await session.exec(
                    select(func.count())
                    .select_from(Payment)
                    .where(col(Payment.capture_overdue_at).is_not(None))
                    .where(Payment.state != PaymentState.SETTLED)
                )
            ).one()
            unknown = (
                await session.exec(
                    select(func.count())
                    .select_from(Payment)
                    .where(Payment.state == PaymentState.UNKNOWN)
                    .where(Payment.unavailable_rounds >= schedule_rounds)
                )
            ).one()
        CAPTURE_OVERDUE.set(overdue)
        PAYMENTS_UNKNOWN.set(unknown)

    return refresh
