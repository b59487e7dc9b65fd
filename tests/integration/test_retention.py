"""Purging the inbox on each service's migrated schema, on SQLite and on PostgreSQL.

Each service's revisions build the index the purge's cutoff query reads, and the database's
own planner takes it; two purgers that overlap (a lease that ran out mid-pass) each delete
what the other did not, without waiting on or deadlocking with each other. No broker, no
platform: a PostgreSQL server of the test's own takes a few seconds to start.
"""

import asyncio
import importlib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from esim_core.clock import utcnow
from esim_core.duework.leases import LocalLock
from esim_core.duework.purge import Purger
from esim_core.messaging.inbox import InboxEntry, inbox_retention
from esim_core.persistence.db import Database
from esim_core.persistence.migrations import alembic_config, upgrade_to_head
from sqlmodel import col, func, select

from tests.support.infra import DATABASE_MODES, SERVICES, postgres

pytestmark = pytest.mark.integration

DAY = timedelta(days=1)
INDEX = "ix_inbox_consumer_processed_at"


@pytest.fixture(params=DATABASE_MODES)
def database_urls(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    """An empty database per service on SQLite, or on a PostgreSQL server of the test's own."""
    if request.param == "sqlite":
        yield {name: f"sqlite+aiosqlite:///{tmp_path}/{name}.sqlite" for name in SERVICES}
        return
    with postgres(tmp_path) as urls:
        yield urls


async def chunk_plan(database: Database) -> str:
    """How the database runs one chunk of the inbox purge, as its EXPLAIN says."""
    purger = Purger(database, LocalLock())
    retention = inbox_retention("inbox", ["billing"], DAY.total_seconds())
    async with database.engine.connect() as connection:
        if database.is_postgresql:
            # A table this small is read whole anyway; the point is that the index can serve.
            await connection.execute(sa.text("SET enable_seqscan = off"))
            explain = "EXPLAIN "
        else:
            explain = "EXPLAIN QUERY PLAN "
        compiled = purger.chunk_statement(retention, utcnow() - DAY).compile(
            dialect=connection.dialect, compile_kwargs={"render_postcompile": True}
        )
        values = compiled.construct_params()
        arguments = tuple(values[name] for name in compiled.positiontup or ())
        rows = await connection.exec_driver_sql(explain + str(compiled), arguments)
        return "\n".join(" ".join(str(part) for part in row) for row in rows)


async def test_every_service_migrates_to_an_inbox_the_purge_reads_by_index(
    database_urls: dict[str, str],
) -> None:
    for service in SERVICES:
        url = database_urls[service]
        migrations = importlib.import_module(f"{service}.bootstrap").MIGRATIONS
        await upgrade_to_head(url, migrations)
        database = Database(url)
        try:
            assert await inbox_indexes(database) == {INDEX: ["consumer", "processed_at"]}, service
            plan = await chunk_plan(database)
            assert INDEX in plan, f"{service}: {plan}"
            # Down, and up again over an index an operator built beforehand, without a lock on
            # the writes: the revision leaves it as it is.
            config = alembic_config(url, migrations)
            await asyncio.to_thread(command.downgrade, config, "-1")
            assert await inbox_indexes(database) == {}, service
            await build_by_hand(database)
            await upgrade_to_head(url, migrations)
            assert await inbox_indexes(database) == {INDEX: ["consumer", "processed_at"]}, service
        finally:
            await database.close()


async def build_by_hand(database: Database) -> None:
    """The index as deploy/README.md tells an operator to build it on a large inbox."""
    concurrently = "CONCURRENTLY " if database.is_postgresql else ""
    statement = f"CREATE INDEX {concurrently}{INDEX} ON inbox (consumer, processed_at)"
    async with database.engine.connect() as connection:
        autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
        await autocommit.execute(sa.text(statement))


async def inbox_indexes(database: Database) -> dict[str, list[str | None]]:
    """The inbox's indexes but its primary key, by name."""
    async with database.engine.connect() as connection:
        indexes = await connection.run_sync(lambda sync: sa.inspect(sync).get_indexes("inbox"))
    return {str(index["name"]): list(index["column_names"]) for index in indexes}


async def test_two_overlapping_purgers_delete_each_expired_row_once(
    database_urls: dict[str, str],
) -> None:
    url = database_urls["billing"]
    await upgrade_to_head(url, importlib.import_module("billing.bootstrap").MIGRATIONS)
    # Two processes' worth of connections: on SQLite two engines on one file.
    replicas = [Database(url), Database(url)]
    try:
        now = utcnow()
        async with replicas[0].session() as session:
            for number in range(600):
                session.add(
                    InboxEntry(
                        consumer="billing",
                        event_id=f"old-{number}",
                        event_type="t",
                        processed_at=now - 2 * DAY,
                    )
                )
            for number in range(20):
                session.add(
                    InboxEntry(consumer="billing", event_id=f"young-{number}", event_type="t")
                )
        purgers = [Purger(database, LocalLock(), chunk=50, pause_s=0) for database in replicas]
        for purger in purgers:
            purger.keep(inbox_retention("inbox", ["billing"], DAY.total_seconds()))

        outcomes = await asyncio.gather(*(purger.purge() for purger in purgers))

        assert sum(outcome["inbox"] for outcome in outcomes) == 600
        async with replicas[0].session() as session:
            left = (await session.exec(select(func.count()).select_from(InboxEntry))).one()
            young = (
                await session.exec(
                    select(func.count())
                    .select_from(InboxEntry)
                    .where(col(InboxEntry.event_id).startswith("young-"))
                )
            ).one()
        assert (left, young) == (20, 20)
    finally:
        for database in replicas:
            await database.close()
