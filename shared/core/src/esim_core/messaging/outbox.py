"""Transactional outbox: events are stored with the state change, then relayed to Kafka."""

import asyncio
import logging
from dataclasses import KW_ONLY, dataclass, field
from datetime import datetime
from typing import Any

from esim_schemas import CloudEvent, EventData, new_event
from opentelemetry.trace import SpanKind
from sqlalchemy import Column, LargeBinary, bindparam, select, update
from sqlmodel import Field, SQLModel

from esim_core.clock import utcnow
from esim_core.duework.leases import Lock
from esim_core.duework.loop import sleep_unless
from esim_core.duework.purge import Retention
from esim_core.messaging.kafka import EventPublisher, OutgoingMessage
from esim_core.observability.metrics import EVENTS_PUBLISHED, OUTBOX_PUBLISHED, OUTBOX_RELAY_ERRORS
from esim_core.observability.tracing import (
    TRACEPARENT,
    current_traceparent,
    detached_span,
    recording,
    traceparent_in,
)
from esim_core.persistence.db import Database, add_row, notify_on_commit, on_commit
from esim_core.persistence.driver import Statement, Target, fetch, run_many
from esim_core.persistence.notify import Listener
from esim_core.settings import Topics

logger = logging.getLogger(__name__)

#: The PostgreSQL channel on which a service's replicas wake the one that relays its outbox.
RELAY_CHANNEL = "esim_outbox"


class OutboxMessage(SQLModel, table=True):
    """One event waiting to be published, or already published (`published_at` set)."""

    __tablename__ = "outbox"

    id: int | None = Field(default=None, primary_key=True)
    event_id: str = Field(index=True, max_length=256)
    event_type: str = Field(max_length=256)
    topic: str = Field(max_length=256)
    key: str | None = Field(default=None, max_length=64)
    value: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)
    published_at: datetime | None = Field(default=None, index=True)


class Outbox:
    """Adds events to the outbox inside the caller's transaction."""

    def __init__(self, source: str, topics: Topics) -> None:
        self.source = source
        self.topics = topics
        self._pending = asyncio.Event()
        self._wake_key = f"esim_core.messaging.outbox.wake.{id(self)}"
        #: Whether another replica relays now, so that a commit adding events must wake it
        #: (`RELAY_CHANNEL`); `OutboxRelay` keeps it, from its lease, on PostgreSQL.
        self.relayed_elsewhere = False

    def add(
        self, session: Target, data: EventData, *, event_id: str | None = None
    ) -> CloudEvent[EventData]:
        """Store an event to publish; it commits or rolls back with the session's transaction.

        Args:
            session: the unit of work that also holds the state change.
            data: the event's fields.
            event_id: a deterministic id, where the caller derives one from what caused it.
        """
        # The span this transaction works in (a request, an event, a round) goes with the
        # event: its consumers continue the trace (esim_core.observability.tracing).
        envelope: CloudEvent[EventData] = new_event(
            data, source=self.source, event_id=event_id, traceparent=current_traceparent()
        )
        add_row(
            session,
            OutboxMessage,
            {
                "event_id": envelope.id,
                "event_type": data.event_type,
                "topic": self.topics.for_event(type(data)),
                "key": envelope.subject,
                "value": envelope.to_json(),
                "created_at": utcnow(),
                "published_at": None,
            },
        )
        # Waking the relay at `add` would let it look before the row is visible and then sleep
        # a whole interval; the commit is the moment the row can be published.
        on_commit(session, self._wake_key, self._pending.set)
        if self.relayed_elsewhere:
            notify_on_commit(session, RELAY_CHANNEL)
        return envelope

    def notify(self) -> None:
        """Wake the relay: something was committed that it may publish."""
        self._pending.set()

    async def wait_for_pending(self, seconds: float) -> bool:
        """Return when an event was committed since the last call (true), or after `seconds`
        (false)."""
        await sleep_unless(self._pending, seconds)
        woken = self._pending.is_set()
        self._pending.clear()
        return woken


@dataclass(eq=False, repr=False)  # a service object: equal to itself alone, and no secrets in reprs
class OutboxRelay:
    """Publishes unpublished outbox rows in order and marks them published.

    A round sends a whole batch at once and awaits the acks together (the idempotent producer
    keeps each partition's order), then marks every acknowledged row in one statement. A row
    whose send failed stays unpublished and goes out in a later round. Publishing is at least
    once: a crash between the broker's ack and the mark publishes the row again with the same
    CloudEvents id, which consumers' inboxes drop. Published rows are purged by the service's
    `Purger` once `outbox_retention` says (not here: a purge would hold up the relay's rounds).

    On PostgreSQL the replica holding the lease LISTENs on `RELAY_CHANNEL`, and the others'
    commits that add events NOTIFY it, so an event committed anywhere goes out at once rather
    than after the interval, which stays as the fallback.

    The fallback look is for what no wake announces (a lease to take over, a round that
    failed). While look after look finds nothing and nothing wakes the relay, the wait doubles
    from `interval_s` up to `idle_max_s`, so an idle service does not spend its CPU on empty
    reads; a wake, or a look that finds events, brings it back to `interval_s`. `idle_max_s`
    stays well under the lease's renewal period (a third of its TTL), so the holder keeps it.
    """

    database: Database
    outbox: Outbox
    publisher: EventPublisher
    lock: Lock
    _: KW_ONLY
    interval_s: float = 0.5
    idle_max_s: float = 2.0
    batch_size: int = 500
    _stopping: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _listener: Listener | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        # Listening holds a connection of the pool: not the only one, which relaying needs.
        if self.database.is_postgresql and self.database.pool_size > 1:
            self._listener = Listener(self.database, RELAY_CHANNEL, self.outbox.notify)

    async def run(self) -> None:
        """Relay until `stop`; only the replica holding the lock publishes."""
        wait_s = self.interval_s
        try:
            while not self._stopping.is_set():
                found = 0
                try:
                    holding = await self.lock.acquire()
                    await self._listen_while(holding)
                    if holding:
                        while (found := await self.relay_once()) == self.batch_size:
                            if self._stopping.is_set():
                                break
                except asyncio.CancelledError:
                    raise
                except Exception:
                    OUTBOX_RELAY_ERRORS.inc()
                    logger.exception("outbox relay failed; will retry")
                    await sleep_unless(self._stopping, min(5.0, self.interval_s * 4))
                if found:
                    wait_s = self.interval_s
                woken = await self.outbox.wait_for_pending(wait_s)
                longest = max(self.idle_max_s, self.interval_s)
                wait_s = self.interval_s if woken else min(wait_s * 2, longest)
        finally:
            if self._listener is not None:
                await self._listener.close()

    async def _listen_while(self, holding: bool) -> None:
        """Listen for the other replicas' events while relaying; tell them to wake this one."""
        if self._listener is None:
            return
        self.outbox.relayed_elsewhere = not holding
        if holding:
            await self._listener.open()
        else:
            await self._listener.close()

    def stop(self) -> None:
        """Let `run` return after its current round."""
        self._stopping.set()
        self.outbox.notify()

    async def flush(self) -> int:
        """Publish what is pending now, for a stop; returns how many rows were published."""
        total = 0
        if await self.lock.acquire():
            while (published := await self.relay_once()) > 0:
                total += published
                if published < self.batch_size:
                    break
        return total

    async def relay_once(self) -> int:
        """Publish one batch of pending rows; returns how many were published."""
        async with self.database.transaction() as transaction:
            rows = await fetch(transaction, _PENDING, {"batch": self.batch_size})
        if not rows:
            return 0
        messages = [
            OutgoingMessage(value, topic, key, _headers(event_type, value))
            for _id, value, topic, key, event_type in rows
        ]
        # One PRODUCER span per event, under the span that added it to the outbox, where spans
        # are exported.
        spans = [
            detached_span(
                f"publish {message.topic}",
                kind=SpanKind.PRODUCER,
                parent=message.headers.get(TRACEPARENT),
                attributes={
                    "messaging.system": "kafka",
                    "messaging.operation.type": "send",
                    "messaging.destination.name": message.topic,
                },
            )
            for message in messages
            if recording()  # nobody sees a span that is not exported, nor its ids
        ]
        try:
            outcomes = await self.publisher.publish_many(messages)
        finally:
            for each in spans:
                each.end()
        published = [row for row, outcome in zip(rows, outcomes, strict=True) if outcome is None]
        if published:
            now = utcnow()
            async with self.database.transaction() as transaction:
                await run_many(
                    transaction, _PUBLISHED, [{"row_id": row[0], "at": now} for row in published]
                )
            OUTBOX_PUBLISHED.inc(len(published))
            for row in published:
                EVENTS_PUBLISHED.labels(row[2]).inc()
        failed = next((outcome for outcome in outcomes if outcome is not None), None)
        if failed is not None:
            logger.warning(
                "outbox relay: %d of %d rows not acknowledged; they go out in a later round",
                len(rows) - len(published),
                len(rows),
            )
            raise failed
        return len(published)


_TABLE: Any = OutboxMessage.__table__  # type: ignore[attr-defined]
#: The relay's two statements, compiled once and sent to the driver (`persistence.driver`): the
#: oldest pending rows, and each published row marked (an UPDATE with an IN list of the batch's
#: ids was compiled again for every batch, 7 % of an idle service's CPU).
_PENDING = Statement(
    select(_TABLE.c.id, _TABLE.c.value, _TABLE.c.topic, _TABLE.c.key, _TABLE.c.event_type)
    .where(_TABLE.c.published_at.is_(None))
    .order_by(_TABLE.c.id)
    .limit(bindparam("batch"))
)
_PUBLISHED = Statement(
    update(_TABLE).where(_TABLE.c.id == bindparam("row_id")).values(published_at=bindparam("at"))
)


def outbox_retention(keep_s: float) -> Retention:
    """The window of published outbox rows (`published_at`, indexed); unpublished ones stay."""
    return Retention("outbox", OutboxMessage, "published_at", keep_s)


def _headers(event_type: str, value: bytes) -> dict[str, str]:
    headers = {
        "content-type": "application/cloudevents+json; charset=utf-8",
        "ce_type": event_type,
    }
    traceparent = traceparent_in(value)
    if traceparent is not None:
        headers[TRACEPARENT] = traceparent  # the W3C header, for readers of the header alone
    return headers
