"""Consuming events: validate, handle once through the inbox, dead-letter what cannot be handled."""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from itertools import chain
from typing import Any, Final, Literal, TypeVar, cast

from aiokafka import AIOKafkaConsumer
from esim_schemas import CloudEvent, EventData, EventDecodeError, decode_event, format_time
from faststream.kafka import KafkaBroker
from faststream.middlewares import AckPolicy
from opentelemetry.trace import SpanKind
from sqlalchemy.exc import IntegrityError
from sqlmodel.ext.asyncio.session import AsyncSession

from esim_core.duework.backoff import backoff
from esim_core.messaging.inbox import processed_ids, record_new
from esim_core.messaging.intake import Intake
from esim_core.messaging.kafka import EventPublisher
from esim_core.observability.logs import ids_bound
from esim_core.observability.metrics import DEAD_LETTERS, EVENT_HANDLING_SECONDS, EVENTS_CONSUMED
from esim_core.observability.tracing import TRACEPARENT, span
from esim_core.persistence.db import Database
from esim_core.persistence.driver import NeedsSession, Target

logger = logging.getLogger(__name__)

T = TypeVar("T")

Handler = Callable[[AsyncSession, CloudEvent[Any]], Awaitable[None]]
#: A handler that runs only driver statements (`persistence.driver`) on the transaction it is
#: given: an ORM session, or a driver transaction (see `Route.on_driver`).
DriverHandler = Callable[[Target, CloudEvent[Any]], Awaitable[None]]
#: Tells, from the event alone (and what the process knows for sure), that handling it would
#: change nothing; returns why, or None to handle it (see `Route.ignores`).
Ignores = Callable[[CloudEvent[Any]], str | None]


# How long one fetch waits for messages when none are there (it returns as soon as one comes).
POLL_MS = 500
#: How long the broker holds a fetch that finds nothing before it answers empty: it answers as
#: soon as a message comes, so this is no delay, only how often an idle consumer asks. At the
#: client's 500 ms an idle platform's four consumers took 7 % of a core in the broker and their
#: own processes; at 2 s, a third less. A consumer with an intake keeps 500 ms: partitions it
#: resumes are fetched only once the fetch in flight has come back.
FETCH_WAIT_MS = 2000
#: Where a group with no committed offset starts: at the oldest kept event, so none is skipped.
#: KEDA's kafka triggers must compute lag the same way (`offsetResetPolicy`, check_deploy.py).
AUTO_OFFSET_RESET: Final[Literal["earliest"]] = "earliest"
#: What the consumer fetches ahead of its handlers, at most: per response, and per partition.
#: The client's defaults (50 MB and 1 MB) hold a backlog in memory as far as it reaches: with
#: 42 MB of events waiting on 156 partitions (accounts reads 13 topics of 12), a consumer grew
#: by 59 MB, and a service that fell behind in a 30-minute soak grew from 211 to 256 MB. These
#: hold a few thousand events (some 700 bytes each), many batches' worth, and it grew by none.
FETCH_MAX_BYTES = 4 * 1024 * 1024
PARTITION_FETCH_MAX_BYTES = 256 * 1024


def _header(headers: Sequence[tuple[str, bytes]] | None, name: str) -> bytes | None:
    return next((value for key, value in headers or () if key == name), None)


def _consumer_span(event: CloudEvent[Any], info: "MessageInfo") -> Any:
    """The CONSUMER span of one event's handling, under the span that produced it: the event's
    `traceparent` attribute, else the message's `traceparent` header."""
    return span(
        f"process {info.topic}",
        kind=SpanKind.CONSUMER,
        parent=event.traceparent or info.traceparent,
        attributes={
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.destination.name": info.topic,
            "messaging.destination.partition.id": str(info.partition),
            "messaging.kafka.offset": info.offset,
            "messaging.message.id": event.id,
            "cloudevents.event_type": event.type,
        },
    )


def _ids(event: CloudEvent[Any]) -> dict[str, str | None]:
    """The ids a log line about `event` carries (esim_core.observability.logs)."""
    return {
        "event_id": event.id,
        "event_type": event.type,
        "renewal_id": event.renewalid,
        "iccid": event.subject,
    }


async def fetch_batch(
    consumer: AIOKafkaConsumer, *, max_records: int, intake: Intake | None = None
) -> tuple[Any, ...]:
    """The records the consumer has fetched, up to `max_records`; waits at most POLL_MS.

    With an `intake`, its topics are paused while the work in flight is at its limit (and the
    fetch then waits only until the intake is looked at again).
    """
    timeout_ms = POLL_MS
    if intake is not None:
        max_records = await intake.regulate(consumer, max_records)
        if intake.held:
            timeout_ms = min(POLL_MS, intake.recheck_ms)
    fetched = await consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
    records = tuple(chain.from_iterable(fetched.values()))
    if intake is not None:
        intake.taken(records)
    return records


#: SQLSTATEs that blame the database, not the statement: the connection lost or refused (class
#: 08, but for 08P01, a protocol violation a malformed message can cause), the server shutting
#: down or starting (57P01 to 57P03), no connection slot left (53300), a read-only server
#: (25006: a standby, a failover not done yet).
_AWAY_STATES = ("08", "57P01", "57P02", "57P03", "53300", "25006")


def database_is_away(error: BaseException) -> bool:
    """Whether `error`, or an error it wraps, carries a SQLSTATE that blames the database."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [error]
    while todo:
        each = todo.pop()
        if not isinstance(each, BaseException) or id(each) in seen:
            continue
        seen.add(id(each))
        state = getattr(each, "sqlstate", None) or getattr(each, "pgcode", None)
        if isinstance(state, str) and state.startswith(_AWAY_STATES) and state != "08P01":
            return True
        # What it wraps, only: not `__context__`, which also names whatever was being handled
        # when it was raised (a batch that failed on the database, say) and would blame the
        # database for a message's own fault.
        todo.extend((getattr(each, "orig", None), each.__cause__))
    return False


class PermanentEventError(Exception):
    """An event that fits the schema but can never be handled; it is dead-lettered at once."""


@dataclass(frozen=True)
class Route:
    """Which handler takes which event model on a topic.

    `ignores`, where given, is asked first: an event it names a reason for is counted as
    `ignored` and goes to no transaction, inbox row or handler at all. Only for events whose
    handler would change nothing, now and on every redelivery (a notice nobody is told about, a
    second payment event of an activation already committed): such an event needs no inbox
    row, as handling it again changes nothing either. It must not block (no I/O).
    """

    model: type[EventData]
    handler: Handler | DriverHandler
    ignores: Ignores | None = None
    on_driver: bool = False
    """The handler is a `DriverHandler`: it runs driver statements only. A transaction whose
    every event's handler is one runs on the driver (`Database.transaction`), without an ORM
    session, a third of the cost; one event of another handler makes it a session."""


@dataclass(frozen=True, eq=False)
class _OnDriver:
    """The handler of a route `on_driver`, marked so (each route's its own, even where two
    routes share a function)."""

    handler: DriverHandler

    async def __call__(self, transaction: Target, event: CloudEvent[Any]) -> None:
        await self.handler(transaction, event)


@dataclass(frozen=True)
class MessageInfo:
    """Where a message came from, for dead-letter headers and logs."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    traceparent: bytes | None = None
    """The message's `traceparent` header, where it has one."""


class EventConsumer:
    """Handles the messages of a service's topics, as one member of its consumer group.

    A message is decoded and validated; its handler runs in one transaction with the inbox
    row, so a redelivered event changes nothing. Handler errors are retried a bounded number
    of times; what still fails, and what does not fit the contract, goes to `<topic>.dlq`
    with the reason in headers, and the offset moves on so the partition is never blocked.
    A failure while the database does not answer is the database's, not the message's: the
    consumer waits until it answers again and tries once more, without spending an attempt.
    """

    def __init__(
        self,
        *,
        name: str,
        subscriptions: Mapping[str, Sequence[Route]],
        database: Database,
        publisher: EventPublisher,
        attempts: int = 3,
        after_commit: Callable[[], None] | None = None,
        batch_size: int = 100,
        intake: Intake | None = None,
    ) -> None:
        self.name = name
        self.topics = list(subscriptions)
        self.routes: dict[str, dict[type[EventData], Handler]] = {
            topic: {
                route.model: _OnDriver(cast(DriverHandler, route.handler))
                if route.on_driver
                else route.handler
                for route in routes
            }
            for topic, routes in subscriptions.items()
        }
        self.ignores: dict[type[EventData], Ignores] = {
            route.model: route.ignores
            for routes in subscriptions.values()
            for route in routes
            if route.ignores is not None
        }
        self.database = database
        self.publisher = publisher
        self.attempts = attempts
        self.after_commit = after_commit
        self.batch_size = batch_size
        self.intake = intake

    def subscribe(self, broker: KafkaBroker, group_id: str) -> None:
        """Register this consumer on the broker; offsets commit only after handling.

        One subscriber covers every topic, so the group rebalances once when a replica joins.
        It takes what the broker has fetched as a batch (up to `batch_size` messages) and
        commits the batch's offsets once every message of it is handled or dead-lettered.
        """

        subscriber = broker.subscriber(
            *self.topics,
            group_id=group_id,
            batch=True,
            max_records=self.batch_size,
            batch_timeout_ms=POLL_MS,
            fetch_max_wait_ms=FETCH_WAIT_MS if self.intake is None else POLL_MS,
            auto_offset_reset=AUTO_OFFSET_RESET,
            fetch_max_bytes=FETCH_MAX_BYTES,
            max_partition_fetch_bytes=PARTITION_FETCH_MAX_BYTES,
            ack_policy=AckPolicy.NACK_ON_ERROR,
            decoder=_raw_records,
            title=group_id,
            description=", ".join(
                model.event_type for routes in self.routes.values() for model in routes
            ),
        )
        # FastStream's batch fetch sleeps another `batch_timeout_ms` after an empty one, so a
        # message arriving then waits that long; with 10 ms that was 100 polls a second, some
        # 40 ms of CPU a second per idle service. Without the sleep, one fetch waits up to
        # POLL_MS and returns the moment a message arrives.
        subscriber.get_msg = partial(  # type: ignore[method-assign]
            fetch_batch, max_records=self.batch_size, intake=self.intake
        )

        @subscriber
        async def consume(records: Any) -> None:
            await self.handle_batch(
                [
                    (
                        record.value or b"",
                        MessageInfo(
                            topic=record.topic,
                            partition=record.partition,
                            offset=record.offset,
                            key=record.key,
                            traceparent=_header(record.headers, TRACEPARENT),
                        ),
                    )
                    for record in records
                ]
            )

    async def handle_batch(self, messages: Sequence[tuple[bytes, MessageInfo]]) -> None:
        """Handle fetched messages: each partition's in one transaction, partitions side by side.

        Messages are grouped by partition number, which is the same for one ICCID on every
        topic (same key, same partition count), so one card's events are handled in order and
        by one transaction, and groups never wait on each other's rows. Where one message of a
        group fails, the group's transaction rolls back and its messages are handled one by one
        (`handle`), each with its own retries and dead letter.
        """
        groups: dict[int, list[tuple[bytes, MessageInfo]]] = {}
        for body, info in messages:
            groups.setdefault(info.partition, []).append((body, info))
        outcomes = await asyncio.gather(
            *(self._handle_group(group) for group in groups.values()), return_exceptions=True
        )
        # Every group ran to its end; one that could not finish (a dead letter that could not
        # be published) fails the batch, so its offsets are not committed and it comes again.
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    async def _handle_group(self, group: Sequence[tuple[bytes, MessageInfo]]) -> None:
        started = time.perf_counter()
        decoded: list[tuple[bytes, MessageInfo, Handler, CloudEvent[Any]]] = []
        for body, info in group:
            routed = await self._decoded(body, info)
            if routed is not None:
                decoded.append((body, info, *routed))
        if not decoded:
            return
        if len(decoded) == 1:
            await self._handle_decoded(*decoded[0], started)
            return
        try:
            outcomes = await self._handle_together(decoded)
        except Exception as error:
            logger.info(
                "%s: a batch of %d messages rolled back (%s: %s); handling them one by one",
                self.name,
                len(decoded),
                type(error).__name__,
                str(error)[:200],
            )
            for item in decoded:
                await self._handle_decoded(*item, time.perf_counter())
            return
        share = (time.perf_counter() - started) / len(decoded)
        for (_, info, _, _), outcome in zip(decoded, outcomes, strict=True):
            EVENTS_CONSUMED.labels(info.topic, outcome).inc()
            EVENT_HANDLING_SECONDS.labels(info.topic).observe(share)

    async def _handle_together(
        self, decoded: Sequence[tuple[bytes, MessageInfo, Handler, CloudEvent[Any]]]
    ) -> list[str]:
        links = [event.traceparent or info.traceparent for _, info, _, event in decoded]

        async def work(transaction: Target) -> list[str]:
            outcomes: list[str] = []
            new = await record_new(transaction, self.name, [(e.id, e.type) for *_, e in decoded])
            for _, info, handler, event in decoded:
                if event.id not in new:
                    outcomes.append("duplicate")
                    continue
                new.discard(event.id)  # the same id twice in a batch is one event
                with ids_bound(**_ids(event)), _consumer_span(event, info):
                    await handler(transaction, event)  # type: ignore[arg-type]
                outcomes.append("handled")
            return outcomes

        outcomes = await self._in_transaction([item[2] for item in decoded], work, links)
        if self.after_commit is not None:
            self.after_commit()
        return outcomes

    async def _in_transaction(
        self,
        handlers: Sequence[Handler],
        work: Callable[[Target], Awaitable[T]],
        links: Sequence[str | bytes | None] = (),
    ) -> T:
        """`work` done in one transaction: on the driver where every handler runs driver
        statements only (`Route.on_driver`), else in an ORM session.

        A handler on the driver that finds it needs the ORM for this event (`orm_session`:
        a promotion to redeem, say) raises `NeedsSession`; the driver transaction rolls back
        and the work is done again in a session. In a session, what a handler changed is
        flushed once, at commit, not before each of its queries (a flush per query was a third
        of a handler's CPU); a handler reads its own changes from the objects it holds.
        """
        if all(isinstance(handler, _OnDriver) for handler in handlers):
            try:
                async with self.database.transaction(links=links) as transaction:
                    return await work(transaction)
            except NeedsSession as needed:
                logger.debug("%s: %s; done again in a session", self.name, needed)
        async with self.database.session(links=links) as session:
            with session.no_autoflush:
                return await work(session)

    async def handle(self, body: bytes, info: MessageInfo) -> None:
        """Handle one message; returns once it is handled, a duplicate, or dead-lettered."""
        started = time.perf_counter()
        routed = await self._decoded(body, info)
        if routed is not None:
            await self._handle_decoded(body, info, *routed, started)

    async def _decoded(
        self, body: bytes, info: MessageInfo
    ) -> tuple[Handler, CloudEvent[Any]] | None:
        """The message's event and the handler its model routes to; None when there is nothing
        to handle: the message does not decode (it is dead-lettered) or its route ignores it."""
        routes = self.routes[info.topic]
        try:
            event = decode_event(body, tuple(routes))
        except EventDecodeError as error:
            await self._dead_letter(body, info, str(error), error.error_type)
            return None
        if self._ignored(event, info):
            return None
        return routes[type(event.data)], event

    def _ignored(self, event: CloudEvent[Any], info: MessageInfo) -> bool:
        """Whether the event's route ignores it (`Route.ignores`): then it is counted, logged
        at DEBUG, and neither handled nor recorded."""
        ignores = self.ignores.get(type(event.data))
        if ignores is None:
            return False
        try:
            reason = ignores(event)
        except Exception:
            # A fault of the shortcut must not block the partition: the handler decides.
            logger.exception(
                "%s: asking whether to ignore %s %s failed", self.name, event.type, event.id
            )
            return False
        if reason is None:
            return False
        if logger.isEnabledFor(logging.DEBUG):
            with ids_bound(**_ids(event)):
                logger.debug("%s: %s %s ignored: %s", self.name, event.type, event.id, reason)
        EVENTS_CONSUMED.labels(info.topic, "ignored").inc()
        return True

    async def _handle_decoded(
        self,
        body: bytes,
        info: MessageInfo,
        handler: Handler,
        event: CloudEvent[Any],
        started: float,
    ) -> None:
        with ids_bound(**_ids(event)), _consumer_span(event, info):
            await self._handle_one(handler, event, body, info, started)

    async def _handle_one(
        self,
        handler: Handler,
        event: CloudEvent[Any],
        body: bytes,
        info: MessageInfo,
        started: float,
    ) -> None:
        try:
            outcome = await self._handle_with_retries(handler, event)
        except PermanentEventError as error:
            await self._dead_letter(body, info, str(error), "unprocessable")
            return
        except Exception as error:
            logger.exception(
                "%s: %s %s failed %d times", self.name, event.type, event.id, self.attempts
            )
            await self._dead_letter(
                body, info, f"{type(error).__name__}: {error}", "retries_exhausted"
            )
            return
        EVENTS_CONSUMED.labels(info.topic, outcome).inc()
        EVENT_HANDLING_SECONDS.labels(info.topic).observe(time.perf_counter() - started)

    async def _handle_with_retries(self, handler: Handler, event: CloudEvent[Any]) -> str:
        """Up to `attempts` tries, with jittered exponential waits (at most 5 s) between them.

        Exceptions only: a cancelled task (a stop) is not retried, nor a `PermanentEventError`.
        A try that failed while the database did not answer (a restart, a failover), or whose
        error says the database cannot take it now (`database_is_away`), does not count: the
        consumer waits for the database, as long as it takes, and tries again; its offsets
        stay uncommitted meanwhile, so a stop or a rebalance loses nothing.
        """
        attempt = waited = 0
        while True:
            try:
                return await self._handle_once(handler, event)
            except PermanentEventError:
                raise
            except Exception as error:
                if await self._database_was_away(error, waited):
                    waited += 1
                    continue
                attempt += 1
                if attempt >= self.attempts:
                    raise
                await asyncio.sleep(backoff(attempt, 0.2, 5.0, jitter=1.0))

    async def _database_was_away(self, error: Exception, waited: int) -> bool:
        """Whether the database was away for this failure; if so, return once it is back.

        Away: it does not answer a ping, or `error` says so (a ping answers on a read-only
        standby). `waited` is how many times this message waited already: the waits grow
        from 0.25 s to 5 s across them.
        """
        said = database_is_away(error)
        try:
            await self.database.ping()
        except Exception as down:
            answered, why = False, f"{type(down).__name__}: {str(down)[:200]}"
        else:
            if not said:
                return False
            answered, why = True, f"{type(error).__name__}: {str(error)[:200]}"
        if waited == 0:
            logger.warning(
                "%s: the database is away (%s) after %s; waiting for it",
                self.name,
                why,
                type(error).__name__,
            )
        waits = waited
        while True:
            waits += 1
            await asyncio.sleep(backoff(waits, 0.25, 5.0, jitter=0.5))
            if answered:
                return True  # it answers pings: try again, and find out by the statement
            try:
                await self.database.ping()
            except Exception as still:
                logger.debug("%s: the database still does not answer: %s", self.name, still)
                continue
            logger.info("%s: the database answers again", self.name)
            return True

    async def _handle_once(self, handler: Handler, event: CloudEvent[Any]) -> str:

        async def work(transaction: Target) -> str:
            if not await record_new(transaction, self.name, [(event.id, event.type)]):
                return "duplicate"
            await handler(transaction, event)  # type: ignore[arg-type]
            return "handled"

        try:
            outcome = await self._in_transaction([handler], work)
        except IntegrityError:
            # A handler's own unique constraint, met because another replica committed the
            # same event's effects under another id first: the effects exist once.
            async with self.database.session() as session:
                if await processed_ids(session, self.name, [event.id]):
                    return "duplicate"
            raise
        if outcome == "handled" and self.after_commit is not None:
            self.after_commit()
        return outcome

    async def _dead_letter(
        self, body: bytes, info: MessageInfo, error: str, error_type: str
    ) -> None:
        logger.warning(
            "%s: dead-lettering %s[%d]@%d (%s): %s",
            self.name,
            info.topic,
            info.partition,
            info.offset,
            error_type,
            error[:500],
        )
        headers = {
            "x-error": error[:4000],
            "x-error-type": error_type,
            "x-original-topic": info.topic,
            "x-original-partition": str(info.partition),
            "x-original-offset": str(info.offset),
            "x-failed-at": format_time(datetime.now(UTC)),
        }
        key = info.key.decode("utf-8", "replace") if info.key is not None else None
        await self.publisher.publish_raw(body, topic=f"{info.topic}.dlq", key=key, headers=headers)
        DEAD_LETTERS.labels(info.topic, error_type).inc()
        EVENTS_CONSUMED.labels(info.topic, "dead_lettered").inc()


async def _raw_records(message: Any) -> Any:
    # The contract is validated by decode_event, not by FastStream, so the handler gets the
    # fetched records themselves (topic, partition, offset, key and raw value).
    return message.raw_message
