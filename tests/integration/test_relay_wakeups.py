"""Replicas wake the one that relays their outbox, through PostgreSQL's LISTEN/NOTIFY.

Two relays share one database, as two replicas of a service do; a lease lets one of them
publish. Their poll interval is a minute here, so an event that goes out within seconds was
woken by its commit's NOTIFY, not found by a poll. No broker and no platform: a PostgreSQL
server of the module's own takes a few seconds to start, once.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from esim_core.messaging.kafka import OutgoingMessage
from esim_core.messaging.outbox import RELAY_CHANNEL, Outbox, OutboxMessage, OutboxRelay
from esim_core.persistence.db import Database, notify_on_commit, send_notes
from esim_core.persistence.notify import Listener
from esim_core.settings import Topics
from esim_schemas import RenewalRequested
from esim_schemas.samples import SAMPLE_DATA
from sqlalchemy import text
from sqlmodel import select

from tests.support.infra import postgres

pytestmark = pytest.mark.integration

POLL_S = 60.0
"""The relays' poll interval: far longer than any test here waits."""

WOKEN_WITHIN_S = 10.0


class Lease:
    """A lease this test hands to one relay or the other."""

    def __init__(self, held: bool) -> None:
        self.held = held

    async def acquire(self) -> bool:
        return self.held


class Recorder:
    """Stands for the broker: keeps what was published, and wakes who waits for it."""

    def __init__(self) -> None:
        self.sent: list[OutgoingMessage] = []
        self.arrived = asyncio.Event()

    async def publish_many(self, messages: list[OutgoingMessage]) -> list[Exception | None]:
        self.sent.extend(messages)
        self.arrived.set()
        return [None] * len(messages)


@pytest.fixture(scope="module")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with postgres(tmp_path_factory.mktemp("pg")) as urls:
        yield urls["billing"]


@pytest_asyncio.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url, pool_size=4)
    await database.create_tables([OutboxMessage])
    async with database.session() as session:
        await session.exec(text("DELETE FROM outbox"))  # type: ignore[call-overload]
    yield database
    await database.close()


async def commit_event(database: Database, outbox: Outbox, begun: str) -> None:
    """Commit an event in a transaction of the kind named: an ORM session, or on the driver."""
    start = database.session if begun == "session" else database.transaction
    async with start() as transaction:
        outbox.add(transaction, RenewalRequested(**SAMPLE_DATA[RenewalRequested.event_type]))


@pytest.mark.parametrize("begun", ["session", "transaction"])
async def test_an_event_one_replica_commits_is_relayed_at_once_by_the_other(
    database: Database, database_url: str, begun: str
) -> None:
    topics = Topics()
    relaying, other = Recorder(), Recorder()
    # The second replica: its own engine and pool on the same database, as another process.
    second = Database(database_url, pool_size=4)
    outbox_a, outbox_b = Outbox("/a", topics), Outbox("/b", topics)
    relay_a = OutboxRelay(database, outbox_a, relaying, Lease(True), interval_s=POLL_S)  # type: ignore[arg-type]
    relay_b = OutboxRelay(second, outbox_b, other, Lease(False), interval_s=POLL_S)  # type: ignore[arg-type]
    tasks = [asyncio.create_task(relay_a.run()), asyncio.create_task(relay_b.run())]
    try:
        # Both have looked once (A found nothing): from now on only a wake-up makes A look.
        for _ in range(100):
            if relay_a._listener.listening and outbox_b.relayed_elsewhere:  # type: ignore[union-attr]
                break
            await asyncio.sleep(0.05)
        assert relay_a._listener.listening and outbox_b.relayed_elsewhere  # type: ignore[union-attr]
        assert not outbox_a.relayed_elsewhere
        await asyncio.sleep(0.2)
        relaying.arrived.clear()

        await commit_event(second, outbox_b, begun)
        await asyncio.wait_for(relaying.arrived.wait(), WOKEN_WITHIN_S)

        assert [message.topic for message in relaying.sent] == [topics.renewal_requested]
        assert other.sent == []
    finally:
        relay_a.stop()
        relay_b.stop()
        await asyncio.gather(*tasks)
        await second.close()
    assert not relay_a._listener.listening  # type: ignore[union-attr]
    # The relay marked what it published: no later round sends it again.
    async with database.session() as session:
        rows = (await session.exec(select(OutboxMessage))).all()
    assert [row.published_at is not None for row in rows] == [True]


@pytest.mark.parametrize("begun", ["session", "transaction"])
async def test_a_note_reaches_listeners_only_when_its_transaction_commits(
    database: Database, begun: str
) -> None:
    start = database.session if begun == "session" else database.transaction
    woken = asyncio.Event()
    listener = Listener(database, "esim_test", woken.set)
    await listener.open()
    woken.clear()  # opening looks once by itself
    try:
        with contextlib.suppress(RuntimeError):
            async with start() as transaction:
                notify_on_commit(transaction, "esim_test")
                await send_notes(transaction)  # sent, in a transaction that then rolls back
                raise RuntimeError("rolled back")
        async with start() as transaction:
            notify_on_commit(transaction, "another_channel")
        await asyncio.sleep(0.5)
        assert not woken.is_set()

        async with start() as transaction:
            notify_on_commit(transaction, "esim_test")
            notify_on_commit(transaction, "esim_test")
        await asyncio.wait_for(woken.wait(), WOKEN_WITHIN_S)
    finally:
        await listener.close()


async def test_a_listener_whose_connection_the_server_dropped_listens_again(
    database: Database,
) -> None:
    woken = asyncio.Event()
    listener = Listener(database, "esim_test", woken.set, retry_s=0.1)
    await listener.open()
    try:
        async with database.session() as session:
            await session.exec(  # type: ignore[call-overload]
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE query LIKE 'LISTEN%' AND pid <> pg_backend_pid()"
                )
            )
        for _ in range(100):
            if not listener.listening:
                break
            await asyncio.sleep(0.05)
        assert not listener.listening

        await listener.open()
        assert listener.listening
        woken.clear()
        async with database.session() as session:
            notify_on_commit(session, "esim_test")
        await asyncio.wait_for(woken.wait(), WOKEN_WITHIN_S)
    finally:
        await listener.close()


def test_the_relay_channel_is_a_plain_identifier() -> None:
    # LISTEN takes the channel as an identifier: no quoting surprises.
    assert RELAY_CHANNEL.isidentifier() and RELAY_CHANNEL.islower()
