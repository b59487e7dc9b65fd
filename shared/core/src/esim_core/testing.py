"""Helpers every service's tests use the same way: a database, events, what the outbox holds."""

import json
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from esim_schemas import CloudEvent, EventData, new_event
from fastapi import APIRouter, FastAPI
from sqlalchemy import update
from sqlmodel import SQLModel, col, select

from esim_core.clock import utcnow
from esim_core.duework.rows import DueColumns
from esim_core.messaging.outbox import OutboxMessage
from esim_core.persistence.db import Database
from esim_core.service import ServiceRuntime
from esim_core.web.problems import install_problem_handlers


@asynccontextmanager
async def temporary_database(
    directory: Path, tables: Iterable[type[SQLModel]], name: str = "test"
) -> AsyncIterator[Database]:
    """A SQLite database in `directory` with `tables` created; closed on the way out."""
    database = Database(f"sqlite+aiosqlite:///{directory}/{name}.sqlite")
    await database.create_tables(list(tables))
    try:
        yield database
    finally:
        await database.close()


@asynccontextmanager
async def with_tables(runtime: ServiceRuntime) -> AsyncIterator[ServiceRuntime]:
    """A wired runtime with its tables created, not started; its connections closed on the way out.

    Closed without `stop()`: nothing was started, and unit tests should not wait for a shutdown.
    """
    await runtime.database.create_tables(runtime.tables)
    try:
        yield runtime
    finally:
        await runtime.database.close()
        await runtime.redis.aclose()


def problem_app(*routers: APIRouter) -> FastAPI:
    """An app of `routers` that answers errors as RFC 9457 problems, as every service's does."""
    app = FastAPI()
    install_problem_handlers(app)
    for router in routers:
        app.include_router(router)
    return app


@asynccontextmanager
async def api_client(app: FastAPI, base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client that calls `app` in this process, without a server."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url) as http:
        yield http


def event(
    data: EventData, event_id: str | None = None, *, source: str = "/services/accounts"
) -> CloudEvent[Any]:
    """A CloudEvent of `data`, as its producer (by default accounts) would publish it."""
    return new_event(data, source=source, event_id=event_id)


async def handle(
    database: Database,
    handler: Any,
    data: EventData,
    event_id: str | None = None,
    *,
    source: str = "/services/accounts",
) -> None:
    """Run a handler on one event in one transaction, as the consumer does."""
    async with database.session() as session:
        await handler(session, event(data, event_id, source=source))


async def outbox_rows(database: Database, event_type: str | None = None) -> list[OutboxMessage]:
    """The outbox's rows, oldest first, optionally of one type."""
    async with database.session() as session:
        query = select(OutboxMessage).order_by(col(OutboxMessage.id))
        if event_type is not None:
            query = query.where(OutboxMessage.event_type == event_type)
        return list((await session.exec(query)).all())


async def published(database: Database, event_type: str | None = None) -> list[dict[str, Any]]:
    """The outbox's CloudEvents as JSON, oldest first, with their `_key` and `_topic`."""
    return [
        json.loads(row.value) | {"_key": row.key, "_topic": row.topic}
        for row in await outbox_rows(database, event_type)
    ]


async def make_due_now(database: Database, tables: Iterable[type[DueColumns]]) -> None:
    """Make every scheduled row of `tables` due now, and let every lease run out."""
    past = utcnow() - timedelta(seconds=1)
    async with database.session() as session:
        for table in tables:
            await session.exec(
                update(table)
                .where(col(table.due_at).is_not(None))
                .values(due_at=past, lease_until=None)
            )


async def expire_leases(database: Database, tables: Iterable[type[DueColumns]]) -> None:
    """Let every lease on rows of `tables` run out, as if the replica holding it had died."""
    past = utcnow() - timedelta(seconds=1)
    async with database.session() as session:
        for table in tables:
            await session.exec(update(table).values(lease_until=past))
