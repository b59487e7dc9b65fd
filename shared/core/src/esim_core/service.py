"""A service's runtime: database, broker, outbox relay, consumers, background loops, HTTP surface.

Each service builds one `ServiceRuntime` in its bootstrap, registers its consumers and loops on
it, and serves `runtime.http_app(...)` (the FastAPI app, which also runs the FastStream worker)
or `runtime.worker_app()` (the worker alone).
"""

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from esim_schemas import CloudEvent, EventData
from fastapi import APIRouter, FastAPI, Response
from faststream import FastStream
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.asyncio import Redis
from sqlmodel import SQLModel

from esim_core.duework.leases import RedisLock
from esim_core.duework.loop import DueLoop, Work, run_forever
from esim_core.duework.purge import Purger, Retention
from esim_core.duework.worker import DueWorker
from esim_core.messaging.consumer import EventConsumer, Route
from esim_core.messaging.inbox import InboxEntry, inbox_retention
from esim_core.messaging.intake import Intake
from esim_core.messaging.kafka import EventPublisher, make_broker
from esim_core.messaging.outbox import Outbox, OutboxMessage, OutboxRelay, outbox_retention
from esim_core.messaging.topics import TopicsError, prepare_topics
from esim_core.observability.telemetry import refresh_on_scrape, scrape_gauges
from esim_core.observability.tracing import shutdown_tracing
from esim_core.persistence.db import Database
from esim_core.persistence.migrations import upgrade_to_head
from esim_core.settings import ServiceSettings, Topics
from esim_core.web.docs import install_offline_docs
from esim_core.web.operator import OperatorAuth, outbox_router
from esim_core.web.problems import install_problem_handlers, problem_response

AdapterT = TypeVar("AdapterT")

logger = logging.getLogger(__name__)


class ServiceRuntime:
    """Everything one service process runs, wired once."""

    def __init__(
        self,
        name: str,
        settings: ServiceSettings,
        tables: Sequence[type[SQLModel]],
        topics: Topics | None = None,
        migrations: Path | None = None,
    ) -> None:
        self.name = name
        # The service's Alembic scripts; without them (tests) the tables are created directly.
        self.migrations = migrations
        self.settings = settings
        self.topics = topics or Topics()
        self.database = Database(
            settings.database_url,
            sqlite_inline=settings.sqlite_inline,
            pool_size=settings.database_pool_size,
            pre_ping=settings.database_pre_ping,
        )
        self.redis: Redis = Redis.from_url(settings.redis_url, socket_timeout=5)
        self.broker = make_broker(settings, client_id=name)
        self.publisher = EventPublisher(settings, client_id=name)
        self.outbox = Outbox(f"/services/{name}", self.topics)
        self.tables: list[type[SQLModel]] = [OutboxMessage, InboxEntry, *tables]
        self.consumer: EventConsumer | None = None
        self.intake: Intake | None = None
        self._subscriptions: dict[str, list[Route]] = {}
        self._produces: list[type[EventData]] = []
        self.routers: list[APIRouter] = []
        self._loops: list[tuple[str, Callable[[], Awaitable[Any]], float, bool]] = []
        self.due_loops: list[DueLoop] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self._startup: list[Callable[[], Awaitable[None]]] = []
        self._on_stop: list[Callable[[], Awaitable[None]]] = []
        self.relay = OutboxRelay(
            self.database,
            self.outbox,
            self.publisher,
            RedisLock(self.redis, f"{name}:outbox-relay", ttl_s=10),
            interval_s=settings.relay_interval_s,
            idle_max_s=settings.relay_idle_max_s,
            batch_size=settings.relay_batch,
        )
        # The tables that only deduplicate or relay keep what a redelivery could still need,
        # no more; one replica at a time purges them (esim_core.duework.purge).
        self.purger = Purger(
            self.database,
            RedisLock(self.redis, f"{name}:purge", ttl_s=30),
            chunk=settings.purge_chunk,
            interval_s=settings.purge_interval_s,
        )
        self.purger.keep(outbox_retention(settings.outbox_retention_s))
        self.purger.keep(inbox_retention("inbox", [name], settings.inbox_retention_s))

    def consume(self, topic: str, routes: Sequence[Route]) -> None:
        """Consume a topic in this service's consumer group, routing each event model."""
        if self.consumer is not None:
            raise RuntimeError("consumers must be registered before the service starts")
        self._subscriptions.setdefault(topic, []).extend(routes)

    def consume_each(self, routes: Sequence[Route]) -> None:
        """Consume each route's event model on the topic configured for it."""
        for route in routes:
            self.consume(self.topics.for_event(route.model), [route])

    def limit_intake(
        self, topics: Sequence[str], in_flight: Callable[[], Awaitable[int]], limit: int
    ) -> None:
        """Hold back the topics that start new work while `in_flight()` is at `limit`
        (`esim_core.messaging.intake`)."""
        if self.consumer is not None:
            raise RuntimeError("the intake must be limited before the service starts")
        self.intake = Intake(self.name, topics, in_flight, limit=limit)

    def produces(self, *models: type[EventData]) -> None:
        """Declare the events this service publishes, for its AsyncAPI document."""
        self._produces.extend(model for model in models if model not in self._produces)

    def subscribe(self) -> EventConsumer | None:
        """Subscribe the service's one consumer to every registered topic (once)."""
        if self.consumer is None and self._subscriptions:
            self.consumer = EventConsumer(
                name=self.name,
                subscriptions=self._subscriptions,
                database=self.database,
                publisher=self.publisher,
                attempts=self.settings.consumer_retries,
                after_commit=self.wake,
                batch_size=self.settings.consumer_batch,
                intake=self.intake,
            )
            self.consumer.subscribe(self.broker, group_id=self.settings.consumer_group(self.name))
            for model in self._produces:
                # Publishing goes through the outbox relay; these only document the channels.
                self.broker.publisher(
                    self.topics.for_event(model),
                    title=f"{self.name}:{model.event_type}",
                    description=(model.__doc__ or "").strip(),
                    schema=CloudEvent[model],  # type: ignore[valid-type]
                )
        return self.consumer

    def wake(self) -> None:
        """A commit may have created due work: look for it now (the due loops woken only by
        notes excepted: see `duework.loop.made_due`).

        Not the relay: the commits that add outbox rows wake it themselves (`Outbox.add`), and
        a round after every other commit would be a transaction that finds nothing.
        """
        for due in self.due_loops:
            if due.woken_by_commits:
                due.wake()

    def due_work(
        self,
        table: type[SQLModel],
        work: Work,
        *,
        what: str,
        concurrency: int = 20,
        lease_s: float = 60.0,
        rows: bool = False,
        woken_by_commits: bool = True,
    ) -> DueLoop:
        """Work the due rows of `table`, up to `concurrency` at a time (see `DueLoop`).

        `work` gets each row's key, or with `rows` the row as its claim leased it.

        The loop is woken by every commit of the service's consumer, so a row that a handler
        makes due now is worked right after that commit; with `woken_by_commits` false, only
        by a commit that noted it made rows due now (`duework.loop.made_due`); see `DueLoop`.
        """
        due = DueLoop(
            self.database,
            table,
            work,
            what=what,
            concurrency=concurrency,
            lease_s=lease_s,
            interval_s=self.settings.worker_interval_s,
            idle_max_s=self.settings.worker_idle_max_s,
            rows=rows,
            woken_by_commits=woken_by_commits,
        )
        self.due_loops.append(due)
        return due

    def due_worker(
        self, worker: "DueWorker[Any, Any]", *, woken_by_commits: bool = True
    ) -> DueLoop:
        """Work a `DueWorker`'s table with its own batch, lease and way of claiming rows."""
        return self.due_work(
            worker.table,
            worker.round,
            what=worker.what,
            concurrency=worker.batch,
            lease_s=worker.lease_s,
            rows=worker.claims_rows,
            woken_by_commits=woken_by_commits,
        )

    def loop(
        self,
        name: str,
        step: Callable[[], Awaitable[Any]],
        interval_s: float,
        *,
        singleton: bool = False,
    ) -> None:
        """Run `step` every `interval_s` seconds; a singleton runs on one replica at a time."""
        self._loops.append((name, step, interval_s, singleton))

    def retain(self, retention: Retention) -> None:
        """Purge the rows of one more kind past its window (a callback log, a webhook inbox).

        The outbox and the inbox rows of this service's consumer have theirs already.
        """
        self.purger.keep(retention)

    def on_startup(self, action: Callable[[], Awaitable[None]]) -> None:
        """Run `action` once at start, after the migrations and before consuming.

        Startup actions of replicas that start together run one replica at a time, so an
        action that adds what is missing (seed data) finds what the other one added.
        """
        self._startup.append(action)

    def on_stop(self, action: Callable[[], Awaitable[None]]) -> None:
        """Run `action` once at stop, after the loops have ended and before the database closes.

        For what the loops used and the runtime does not own, such as an adapter's connection
        pool; an action that fails is logged and the stop goes on.
        """
        self._on_stop.append(action)

    def adapter(self, given: AdapterT | None, build: Callable[[], AdapterT]) -> AdapterT:
        """The adapter a test passed (`given`), else the one `build` opens from the settings.

        What the bootstrap opened it closes: a built HTTP adapter's pool is closed at stop, once
        the loops that call it have ended; a given one stays its owner's.
        """
        if given is not None:
            return given
        # Imported here: a service that calls no outside system (accounts) loads no HTTP client.
        from esim_core.outside.adapter import HttpAdapter

        built = build()
        if isinstance(built, HttpAdapter):
            self.on_stop(built.aclose)
        return built

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Start the database, the broker, the relay and the loops; stop them all on exit."""
        async with self.database.exclusive(f"{self.name}:startup"):
            if self.migrations is not None:
                await upgrade_to_head(self.settings.database_url, self.migrations)
            else:
                await self.database.create_tables(self.tables)
            for action in self._startup:
                await action()
        self.subscribe()
        await self._create_topics()
        await self.publisher.start()
        await self.broker.start()
        self._stopping.clear()
        self._tasks.append(asyncio.create_task(self.relay.run(), name="outbox-relay"))
        self._tasks.append(asyncio.create_task(self.purger.run(), name="purge"))
        for due in self.due_loops:
            self._tasks.append(asyncio.create_task(due.run(), name=due.what))
        for name, step, interval_s, singleton in self._loops:
            self._tasks.append(
                asyncio.create_task(self._run_loop(name, step, interval_s, singleton), name=name)
            )
        logger.info("%s started", self.name)
        try:
            yield
        finally:
            await self.stop()

    async def stop(self) -> None:
        """Stop in the order that leaves nothing consumed but unworked, within `stop_timeout_s`.

        First the consumer leaves its group (the batch being handled finishes and its offsets
        commit; the rest is redelivered to whoever takes the partitions); then the due-work
        loops stop claiming and their rounds in flight finish or are abandoned with their
        leases released; then the periodic loops end (the purge, told with them, after its
        chunk in hand); then the `on_stop` actions run; then the relay publishes what was
        committed; then the connections close. Whatever a step cannot do in time is durable
        (offsets, rows, outbox) and is redone by the next process.
        """
        started = time.monotonic()
        budget = self.settings.stop_timeout_s

        def left(reserve: float = 0.0) -> float:
            return max(0.05, budget - reserve - (time.monotonic() - started))

        async def step(what: str, action: Awaitable[Any], seconds: float) -> None:
            begun = time.monotonic()
            try:
                async with asyncio.timeout(seconds):
                    await action
            except TimeoutError:
                logger.warning("%s: %s did not finish within %.1f s", self.name, what, seconds)
            except Exception:
                logger.exception("%s: %s failed", self.name, what)
            else:
                logger.info("%s: %s in %.2f s", self.name, what, time.monotonic() - begun)

        # Leave room at the end for the relay's flush and closing the connections.
        await step("stopped consuming", self.broker.stop(), left(reserve=budget * 0.4))
        self._stopping.set()
        self.purger.stop()
        await step(
            "stopped due work",
            asyncio.gather(*(due.stop(left(reserve=budget * 0.3)) for due in self.due_loops)),
            left(reserve=budget * 0.2),
        )
        self.relay.stop()
        loops = [task for task in self._tasks if task.get_name() != "outbox-relay"]
        relay = [task for task in self._tasks if task.get_name() == "outbox-relay"]
        await step("stopped loops", asyncio.gather(*loops), min(2.0, left(reserve=budget * 0.2)))
        await step("stopped the relay", asyncio.gather(*relay), min(2.0, left(budget * 0.15)))
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        # Once each: what an action closed cannot be closed again by a second stop.
        actions, self._on_stop = self._on_stop, []
        for action in actions:
            name = getattr(action, "__qualname__", repr(action))
            await step(f"ran {name}", action(), min(2.0, left(reserve=1.0)))
        await step("flushed the outbox", self.relay.flush(), left(reserve=1.0))
        # The span processor's flush blocks on its exporter: a thread, within the bound.
        await step("flushed the traces", asyncio.to_thread(shutdown_tracing), min(2.0, left(0.5)))
        await step("closed the producer", self.publisher.stop(), left(reserve=0.5))
        await step("closed redis", self.redis.aclose(), min(1.0, left()))
        await step("closed the database", self.database.close(), min(1.0, left()))
        logger.info("%s stopped in %.2f s", self.name, time.monotonic() - started)

    def used_topics(self) -> set[str]:
        """The topics this service consumes (and dead-letters to) or publishes to."""
        used = {topic for name in self._subscriptions for topic in (name, f"{name}.dlq")}
        used.update(self.topics.for_event(model) for model in self._produces)
        return used

    async def _create_topics(self) -> None:
        """Create the declared topics that are missing; check (and, where allowed, grow) the
        partitions of those this service uses (`esim_core.messaging.topics.prepare_topics`)."""
        prefix = str(self.settings.model_config.get("env_prefix", "")).upper()
        for stale in (f"{prefix}TOPIC_PARTITIONS", f"{prefix}TOPIC_REPLICATION"):
            if stale in os.environ:
                logger.warning(
                    "%s is no longer read: partitions are declared in "
                    "esim_core/messaging/topics.py, copies set by KAFKA_TOPIC_REPLICATION; "
                    "remove it",
                    stale,
                )
        try:
            await prepare_topics(self.settings, self.settings, self.topics, self.used_topics())
        except TopicsError as error:
            logger.error("%s: topics not as declared: %s", self.name, error)
        except Exception as error:
            # Kafka unreachable for now: the clients retry it; `esimctl topics check` tells.
            logger.warning("%s: could not check the topics: %s", self.name, error)

    async def _run_loop(
        self, name: str, step: Callable[[], Awaitable[Any]], interval_s: float, singleton: bool
    ) -> None:
        if not singleton:
            await run_forever(name, step, interval_s, self._stopping)
            return
        lock = RedisLock(self.redis, f"{self.name}:{name}", ttl_s=max(10.0, interval_s * 4))

        async def guarded() -> None:
            if await lock.acquire():
                await step()

        await run_forever(name, guarded, interval_s, self._stopping)

    async def readiness(self) -> dict[str, str]:
        """Check the database, Redis and Kafka; each maps to `ok` or what is wrong."""
        checks: dict[str, str] = {}

        async def check(name: str, probe: Callable[[], Awaitable[Any]]) -> None:
            try:
                result = await asyncio.wait_for(probe(), timeout=3)
                checks[name] = "ok" if result is not False else "unreachable"
            except Exception as error:
                checks[name] = f"{type(error).__name__}: {error}"[:200]

        await asyncio.gather(
            check("database", self.database.ping),
            check("redis", self.redis.ping),
            check("kafka", lambda: self.broker.ping(timeout=2.5)),
        )
        return checks

    def health_router(self) -> APIRouter:
        """`/health/live`, `/health/ready` and `/metrics`."""
        router = APIRouter(tags=["operations"])

        @router.get("/health/live")
        async def live() -> dict[str, str]:
            return {"status": "ok", "service": self.name}

        @router.get("/health/ready", response_model=None)
        async def ready() -> Response | dict[str, Any]:
            checks = await self.readiness()
            if all(value == "ok" for value in checks.values()):
                return {"status": "ready", "service": self.name, "checks": checks}
            failing = ", ".join(f"{k} ({v})" for k, v in checks.items() if v != "ok")
            return problem_response(
                503, f"{self.name} is not ready: {failing}", kind="not-ready", checks=checks
            )

        @router.get("/metrics")
        async def metrics() -> Response:
            return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

        return router

    def http_app(self, title: str, routers: Sequence[APIRouter] = (), **kwargs: Any) -> FastAPI:
        """The service's FastAPI app; its lifespan runs the whole runtime."""

        @asynccontextmanager
        async def lifespan(_: FastAPI) -> AsyncIterator[None]:
            async with self.running():
                yield

        # The docs pages are ours (esim_core.web.docs): FastAPI's load their assets from a CDN.
        app = FastAPI(title=title, lifespan=lifespan, docs_url=None, redoc_url=None, **kwargs)
        install_offline_docs(app)
        # A SERVER span per request, under the caller's `traceparent` header; what a request adds
        # to the outbox carries it on (esim_core.observability.tracing). Probes and scrapes are
        # not.
        FastAPIInstrumentor.instrument_app(
            app,
            excluded_urls="/health/live,/health/ready,/metrics",
            exclude_spans=["receive", "send"],
        )
        install_problem_handlers(app)
        app.include_router(self.health_router())
        for router in [*self.routers, *routers]:
            app.include_router(router)
        return app

    def operator_app(
        self, title: str, operator: OperatorAuth, *routers: APIRouter, description: str
    ) -> FastAPI:
        """The HTTP surface of a service whose API is for operators.

        Health and metrics stay open; `routers` and the outbox status require the operator
        token, and the gauges are refreshed at each scrape.
        """
        guarded = operator.guard(*routers, outbox_router(self.database, self.name))
        app = self.http_app(title, routers=[guarded], description=description)
        return refresh_on_scrape(app, scrape_gauges(self))

    def worker_app(self) -> FastStream:
        """The FastStream worker alone, for `faststream run`, without the HTTP surface."""

        @asynccontextmanager
        async def lifespan() -> AsyncIterator[None]:
            async with self.running():
                yield

        return FastStream(self.broker, lifespan=lifespan)
