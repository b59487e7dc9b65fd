"""Metrics the hot path does not record itself: gauges computed when Prometheus scrapes
(outbox backlog, due work, consumer lag, dead letters, and what a service adds, such as the
sagas by state) and the latency of calls to outside systems.

Gauges read the database and Kafka, so each replica reports the same numbers: dashboards and
alerts take the `max` over replicas. A source that cannot be read within `SCRAPE_TIMEOUT_S`
keeps its last values and counts `esim_scrape_errors_total`, so a scrape never hangs or fails.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from fastapi import FastAPI
from prometheus_client import Counter, Gauge
from sqlalchemy import func
from sqlmodel import col, select
from starlette.types import ASGIApp, Receive, Scope, Send

from esim_core.clock import as_utc, utcnow
from esim_core.duework.loop import DueLoop
from esim_core.messaging.kafka import client_options
from esim_core.messaging.outbox import OutboxMessage
from esim_core.persistence.db import Database
from esim_core.settings import KafkaSettings

logger = logging.getLogger(__name__)

#: Each source's bound. The Kafka gauges open an admin client and a consumer per scrape: over
#: TLS with SCRAM that is several round trips each, which a loaded node can stretch past 3 s.
#: Under Prometheus' default `scrape_timeout` (10 s), so a slow source costs its gauges, never
#: the whole answer.
SCRAPE_TIMEOUT_S = 8.0

OUTBOX_UNPUBLISHED = Gauge(
    "esim_outbox_unpublished", "Outbox events committed but not yet published", ["service"]
)
OUTBOX_OLDEST_AGE = Gauge(
    "esim_outbox_oldest_unpublished_age_seconds",
    "Age of the oldest unpublished outbox event (relay lag); 0 when none waits",
    ["service"],
)
DUE_WORK_BACKLOG = Gauge(
    "esim_due_work_backlog", "Rows of due work that are due now", ["service", "work"]
)
CONSUMER_LAG = Gauge(
    "esim_consumer_lag",
    "Messages not yet committed by the service's consumer group, per topic",
    ["service", "topic"],
)
DEAD_LETTERS_WAITING = Gauge(
    "esim_dead_letters_waiting",
    "Messages kept on <topic>.dlq of a topic the service consumes",
    ["service", "topic"],
)
SCRAPE_ERRORS = Counter(
    "esim_scrape_errors_total",
    "Scrape-time gauge sources that could not be read",
    ["service", "source"],
)
Refresh = Callable[[], Awaitable[None]]


class ScrapeGauges:
    """The refreshers one service runs before each `/metrics` answer."""

    def __init__(self, service: str) -> None:
        self.service = service
        self._sources: list[tuple[str, Refresh]] = []

    def add(self, source: str, refresh: Refresh) -> None:
        """Run `refresh` (which sets gauges) at every scrape."""
        self._sources.append((source, refresh))

    async def refresh(self) -> None:
        """Run every refresher side by side, each bounded by `SCRAPE_TIMEOUT_S`."""

        async def bounded(source: str, refresh: Refresh) -> None:
            try:
                async with asyncio.timeout(SCRAPE_TIMEOUT_S):
                    await refresh()
            except Exception as error:
                SCRAPE_ERRORS.labels(self.service, source).inc()
                logger.warning("metrics: %s of %s not read: %r", source, self.service, error)

        await asyncio.gather(*(bounded(source, refresh) for source, refresh in self._sources))


class RefreshOnScrape:
    """ASGI middleware: refresh the scrape-time gauges before `GET /metrics` is answered.

    Pure ASGI, so every other request passes through at the cost of one comparison.
    """

    def __init__(self, app: ASGIApp, gauges: ScrapeGauges, path: str = "/metrics") -> None:
        self.app = app
        self.gauges = gauges
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refresh first on a scrape; pass everything through."""
        if scope["type"] == "http" and scope.get("path") == self.path:
            await self.gauges.refresh()
        await self.app(scope, receive, send)


def outbox_gauges(database: Database, service: str) -> Refresh:
    """Refresh `esim_outbox_unpublished` and the oldest unpublished event's age."""

    async def refresh() -> None:
        async with database.session() as session:
            count, oldest = (
                await session.exec(
                    select(func.count(), func.min(col(OutboxMessage.created_at))).where(
                        col(OutboxMessage.published_at).is_(None)
                    )
                )
            ).one()
        OUTBOX_UNPUBLISHED.labels(service).set(count)
        OUTBOX_OLDEST_AGE.labels(service).set(_age(oldest))

    return refresh


def due_work_gauges(database: Database, service: str, loops: Sequence[DueLoop]) -> Refresh:
    """Refresh `esim_due_work_backlog` for each due-work loop's table."""

    async def refresh() -> None:
        now = utcnow()
        async with database.session() as session:
            for loop in loops:
                due: Any = loop.table.due_at  # type: ignore[attr-defined]
                count = (await session.exec(select(func.count()).where(due <= now))).one()
                DUE_WORK_BACKLOG.labels(service, loop.what).set(count)

    return refresh


class KafkaGauges:
    """Consumer lag and dead letters waiting, per consumed topic, read from the brokers.

    Each scrape opens its own clients and closes them: a scrape every 15 s or so costs a few
    metadata requests, and nothing is left open when the service stops.
    """

    def __init__(
        self, kafka: KafkaSettings, service: str, topics: Callable[[], Sequence[str]]
    ) -> None:
        self.kafka = kafka
        self.service = service
        self.topics = topics

    async def refresh(self) -> None:
        """Set `esim_consumer_lag` and `esim_dead_letters_waiting` for each topic."""
        admin = AIOKafkaAdminClient(**client_options(self.kafka), request_timeout_ms=3000)
        consumer = AIOKafkaConsumer(
            **client_options(self.kafka), enable_auto_commit=False, request_timeout_ms=3000
        )
        try:
            await admin.start()
            await consumer.start()
            known = set(await admin.list_topics())
            topics = [topic for topic in self.topics() if topic in known]
            dead_topics = [f"{topic}.dlq" for topic in topics if f"{topic}.dlq" in known]
            if not topics:
                return
            partitions = [
                TopicPartition(described["topic"], part["partition"])
                for described in await admin.describe_topics([*topics, *dead_topics])
                for part in described["partitions"]
            ]
            committed = await admin.list_consumer_group_offsets(
                self.kafka.consumer_group(self.service)
            )
            ends = await consumer.end_offsets(partitions)
            starts = await consumer.beginning_offsets(partitions)
        finally:
            await _close(admin, consumer)
        for topic in topics:
            lag = 0
            for tp in (tp for tp in partitions if tp.topic == topic):
                done = committed.get(tp)
                position = done.offset if done is not None and done.offset >= 0 else starts[tp]
                lag += max(0, ends[tp] - position)
            CONSUMER_LAG.labels(self.service, topic).set(lag)
            waiting = sum(ends[tp] - starts[tp] for tp in partitions if tp.topic == f"{topic}.dlq")
            DEAD_LETTERS_WAITING.labels(self.service, topic).set(waiting)


async def _close(admin: AIOKafkaAdminClient, consumer: AIOKafkaConsumer) -> None:
    for action in (admin.close(), consumer.stop()):
        try:
            await action
        except Exception as error:  # closing what failed must not fail the scrape
            logger.debug("metrics: closing a Kafka client: %r", error)


def _age(oldest: datetime | None) -> float:
    return max(0.0, (utcnow() - as_utc(oldest)).total_seconds()) if oldest is not None else 0.0


def refresh_on_scrape(app: FastAPI, gauges: ScrapeGauges) -> FastAPI:
    """Have `app` refresh `gauges` before it answers `GET /metrics`; returns the app."""
    app.add_middleware(RefreshOnScrape, gauges=gauges)
    return app


def scrape_gauges(runtime: Any) -> ScrapeGauges:
    """The gauges every service has: outbox, due work, consumer lag and dead letters.

    `runtime` is the service's `ServiceRuntime` (typed loosely: this module sits below it).
    """
    gauges = ScrapeGauges(runtime.name)
    gauges.add("outbox", outbox_gauges(runtime.database, runtime.name))
    if runtime.due_loops:
        gauges.add("due-work", due_work_gauges(runtime.database, runtime.name, runtime.due_loops))
    kafka = KafkaGauges(
        runtime.settings,
        runtime.name,
        lambda: list(runtime.consumer.topics) if runtime.consumer is not None else [],
    )
    gauges.add("kafka", kafka.refresh)
    return gauges
