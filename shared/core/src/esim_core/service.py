"""A service's runtime: database, broker, outbox relay, consumers, background loops, HTTP surface.

Each service builds one `ServiceRuntime` in its bootstrap, registers its consumers and loops on
it, and serves `runtime.http_app(...)` (the FastAPI app, which also runs the FastStream worker)
or `runtime.worker_app()` (the worker alone).
"""

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from esim_schemas import CloudEvent, EventData
from fastapi import APIRouter, FastAPI, Response
from faststream import FastStream
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.asyncio import Redis
from sqlmodel import SQLModel

from esim_core.consumer import EventConsumer, Route
from esim_core.db import Database
from esim_core.http import install_problem_handlers, problem_response
from esim_core.inbox import InboxEntry
from esim_core.kafka import EventPublisher, make_broker
from esim_core.locks import RedisLock
from esim_core.migrations import upgrade_to_head
from esim_core.outbox import Outbox, OutboxMessage, OutboxRelay
from esim_core.settings import ServiceSettings, Topics
from esim_core.topics import ensure_topics
from esim_core.worker import run_forever

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
        self.database = Database(settings.database_url)
        self.redis: Redis = Redis.from_url(settings.redis_url, socket_timeout=5)
        self.broker = make_broker(settings, client_id=name)
        self.publisher = EventPublisher(self.broker)
        self.outbox = Outbox(f"/services/{name}", self.topics)
        self.tables: list[type[SQLModel]] = [OutboxMessage, InboxEntry, *tables]
        self.consumer: EventConsumer | None = None
        self._subscriptions: dict[str, list[Route]] = {}
        self._produces: list[type[EventData]] = []
        self.routers: list[APIRouter] = []
        self._loops: list[tuple[str, Callable[[], Awaitable[Any]], float, bool]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._startup: list[Callable[[], Awaitable[None]]] = []
        self.relay = OutboxRelay(
            self.database,
            self.outbox,
            self.publisher,
            RedisLock(self.redis, f"{name}:outbox-relay", ttl_s=10),
            interval_s=settings.relay_interval_s,
        )

    def consume(self, topic: str, routes: Sequence[Route]) -> None:
        """Consume a topic in this service's consumer group, routing each event model."""
        if self.consumer is not None:
            raise RuntimeError("consumers must be registered before the service starts")
        self._subscriptions.setdefault(topic, []).extend(routes)

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
                after_commit=self.outbox.notify,
            )
            self.consumer.subscribe(self.broker, group_id=self.name)
            for model in self._produces:
                # Publishing goes through the outbox relay; these only document the channels.
                self.broker.publisher(
                    self.topics.for_event(model),
                    title=f"{self.name}:{model.event_type}",
                    description=(model.__doc__ or "").strip(),
                    schema=CloudEvent[model],  # type: ignore[valid-type]
                )
        return self.consumer

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

    def on_startup(self, action: Callable[[], Awaitable[None]]) -> None:
        """Run `action` once at start, after the migrations and before consuming.

        Startup actions of replicas that start together run one replica at a time, so an
        action that adds what is missing (seed data) finds what the other one added.
        """
        self._startup.append(action)

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
        await self.broker.start()
        self._tasks.append(asyncio.create_task(self.relay.run(), name="outbox-relay"))
        for name, step, interval_s, singleton in self._loops:
            self._tasks.append(
                asyncio.create_task(self._run_loop(name, step, interval_s, singleton), name=name)
            )
        logger.info("%s started", self.name)
        try:
            yield
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._tasks.clear()
            await self.broker.stop()
            await self.redis.aclose()
            await self.database.close()
            logger.info("%s stopped", self.name)

    async def _create_topics(self) -> None:
        try:
            await ensure_topics(
                self.settings.kafka_bootstrap_servers,
                self.topics,
                partitions=self.settings.topic_partitions,
                replication=self.settings.topic_replication,
            )
        except Exception as error:
            # Another replica may create them at the same moment; the broker may auto-create.
            logger.warning("could not create topics: %s", error)

    async def _run_loop(
        self, name: str, step: Callable[[], Awaitable[Any]], interval_s: float, singleton: bool
    ) -> None:
        if not singleton:
            await run_forever(name, step, interval_s)
            return
        lock = RedisLock(self.redis, f"{self.name}:{name}", ttl_s=max(10.0, interval_s * 4))

        async def guarded() -> None:
            if await lock.acquire():
                await step()

        await run_forever(name, guarded, interval_s)

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

        app = FastAPI(title=title, lifespan=lifespan, **kwargs)
        install_problem_handlers(app)
        app.include_router(self.health_router())
        for router in [*self.routers, *routers]:
            app.include_router(router)
        return app

    def worker_app(self) -> FastStream:
        """The FastStream worker alone, for `faststream run`, without the HTTP surface."""

        @asynccontextmanager
        async def lifespan() -> AsyncIterator[None]:
            async with self.running():
                yield

        return FastStream(self.broker, lifespan=lifespan)


def serve(app: FastAPI, settings: ServiceSettings) -> None:
    """Serve the app with uvicorn until SIGTERM or SIGINT."""
    import uvicorn

    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # aiosqlite logs every call with its arguments at DEBUG, tokens included.
    logging.getLogger("aiosqlite").setLevel(max(logging.INFO, logging.getLogger().level))
    uvicorn.run(app, host=settings.http_host, port=settings.http_port, log_config=None)
