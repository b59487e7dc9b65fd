"""Load on the platform as upstream frontends make it: travellers with cards, renewals at a rate.

The pieces, each usable on its own (the bench and the chaos test build on them):

* `Target`: where the platform is (accounts URL, Kafka bootstrap, topic suffix); `Target.of`
  takes a `tests.support.infra.Platform`.
* `setup_cards(target, n_cards)`: registers travellers, logs them in and binds demo cards
  (from `deploy/local/cards.csv` or another inventory) to them; returns `Card`s that know
  their owner's `user_id` and access token. Cards someone else already bound are skipped.
* `LoadDriver`: publishes `RenewalRequested` CloudEvents straight to Kafka (key = ICCID), one
  at a time (`publish_renewal`) or at a fixed rate (`run_at_rate`), or asks over the accounts
  HTTP API (`renew_over_http`, `run_http_at_rate`); remembers when each renewal was sent.
* `Outcomes`: reads the terminal topics (`esim.profile.activated`, `esim.payment.failed`,
  `esim.renewal.rejected`, `esim.payment.refunded`) from their end (or, with
  `from_beginning=True`, all of them) and records, per `renewal_id`, every terminal event seen
  and when; `wait_for` waits (bounded) for a set, `catch_up` until all written so far is read.
* `LatencyStats.of(samples)`: count, p50/p95/p99/max/mean.

Start `Outcomes` before publishing (it reads from the end), e.g.::

    cards = await setup_cards(Target.of(platform), 20)
    async with Outcomes(Target.of(platform)) as outcomes, LoadDriver(Target.of(platform)) as load:
        sent = await load.run_at_rate(cards, rate=20, seconds=10)
        missing = await outcomes.wait_for([s.renewal_id for s in sent], timeout=120)
        stats = LatencyStats.of(outcomes.latencies(sent))

Times are `time.monotonic()` of this process, so a latency is measured on one clock.
"""

import asyncio
import csv
import itertools
import json
import math
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from esim_schemas import (
    PaymentDetails,
    PaymentFailed,
    PaymentRefunded,
    ProfileActivated,
    RenewalRejected,
    RenewalRequested,
    new_event,
)

from tests.support.infra import ROOT, Platform

DEMO_CARDS = ROOT / "deploy/local/cards.csv"
PASSWORD = "bench traveller password"
DEFAULT_PLAN = "JP-30D-10GB"

Start = Literal["now", "after_current"]
#: Chooses the payment token of the n-th renewal of a run (e.g. every tenth `card_declined`);
#: a bare method name (`paypal`, `alipay`) asks for a payment without a token (see `payment_of`).
TokenChooser = Callable[[int, "Card"], str]
#: Called about once a second while a run or a wait goes on (for progress lines).
Tick = Callable[[], None]

#: Terminal contract topics (default names) and what each says about the saga.
TERMINAL_TOPICS: dict[str, str] = {
    ProfileActivated.topic: "activated",
    PaymentFailed.topic: "payment_failed",
    RenewalRejected.topic: "rejected",
    PaymentRefunded.topic: "refunded",
}


@dataclass(frozen=True)
class Target:
    """Where the platform under load is."""

    accounts_url: str
    kafka: str
    topic_suffix: str = ""

    @classmethod
    def of(cls, platform: Platform) -> "Target":
        """The target of a platform started by `tests.support.infra`."""
        return cls(platform.url("accounts"), platform.kafka, platform.topic_suffix)

    def topic(self, base: str) -> str:
        """The name the platform uses for a contract topic."""
        return base + self.topic_suffix


@dataclass(frozen=True)
class Card:
    """A card bound to a registered traveller."""

    iccid: str
    user_id: str
    access_token: str
    email: str


def read_inventory(path: Path = DEMO_CARDS) -> list[tuple[str, str]]:
    """The (iccid, activation_code) rows of a card inventory CSV."""
    with path.open(newline="", encoding="utf-8") as handle:
        return [(row["iccid"], row["activation_code"]) for row in csv.DictReader(handle)]


async def setup_cards(
    target: Target | Platform,
    n_cards: int,
    *,
    inventory: Path = DEMO_CARDS,
    cards_per_user: int = 1,
    concurrency: int = 4,
    skip: int = 0,
) -> list[Card]:
    """Register travellers, log them in and bind `n_cards` inventory cards to them.

    Args:
        target: the platform (its accounts API).
        n_cards: how many bound cards to return.
        inventory: the CSV the platform imported (`iccid,activation_code`).
        cards_per_user: cards each traveller owns.
        concurrency: registrations in flight at once (each costs accounts a password hash).
        skip: inventory rows to pass over first (e.g. rows another test uses).

    Raises:
        RuntimeError: the inventory has fewer than `n_cards` cards nobody has bound yet, or the
            API refused a registration, a login or a binding for another reason.
    """
    where = target if isinstance(target, Target) else Target.of(target)
    rows = iter(read_inventory(inventory)[skip:])
    rows_lock = asyncio.Lock()
    cards: list[Card] = []
    users_needed = math.ceil(n_cards / cards_per_user)
    gate = asyncio.Semaphore(concurrency)

    async def next_row() -> tuple[str, str] | None:
        async with rows_lock:
            return next(rows, None)

    async def traveller(client: httpx.AsyncClient) -> None:
        async with gate:
            email = f"bench-{uuid.uuid4().hex[:12]}@example.com"
            # Each traveller as its own client behind the trusted local proxy, so the limits
            # per client address see many clients, as in production, not one.
            client_address = {"X-Forwarded-For": f"2001:db8::{uuid.uuid4().hex[:4]}"}
            created = await client.post(
                "/v1/users",
                json={"email": email, "password": PASSWORD, "locale": "en"},
                headers=client_address,
            )
            if created.status_code != 201:
                raise RuntimeError(f"registering {email}: {created.status_code} {created.text}")
            login = await client.post(
                "/v1/auth/token",
                data={"username": email, "password": PASSWORD},
                headers=client_address,
            )
            if login.status_code != 200:
                raise RuntimeError(f"logging in {email}: {login.status_code} {login.text}")
            token = login.json()["access_token"]
            user_id = created.json()["id"]
        headers = {"Authorization": f"Bearer {token}"}
        owned = 0
        while owned < cards_per_user and len(cards) < n_cards:
            row = await next_row()
            if row is None:
                return
            iccid, code = row
            bound = await client.post(
                "/v1/cards", json={"iccid": iccid, "activation_code": code}, headers=headers
            )
            if bound.status_code == 409:  # someone bound it before (a running stack)
                continue
            if bound.status_code != 201:
                raise RuntimeError(f"binding {iccid}: {bound.status_code} {bound.text}")
            cards.append(Card(iccid, user_id, token, email))
            owned += 1

    async with httpx.AsyncClient(base_url=where.accounts_url, timeout=60) as client:
        await asyncio.gather(*(traveller(client) for _ in range(users_needed)))
    if len(cards) < n_cards:
        raise RuntimeError(
            f"only {len(cards)} of {n_cards} cards of {inventory} could be bound "
            "(the others are unknown to accounts or bound by someone else)"
        )
    return cards[:n_cards]


@dataclass(frozen=True)
class Sent:
    """One renewal asked for: what, and when (monotonic seconds)."""

    renewal_id: str
    iccid: str
    token: str
    at: float


def payment_of(token: str) -> PaymentDetails:
    """The payment a load token stands for: the method is its prefix (`paypal_ok` is PayPal);
    a bare method name (`paypal`) is that method without a token, which asks the buyer."""
    method, _, suffix = token.partition("_")
    return PaymentDetails(method=method, token=token if suffix else None)


def _payment_json(token: str) -> dict[str, str]:
    """The API's payment object for a load token, as `payment_of` reads it (not validated here:
    the API answers a wrong one)."""
    method, _, suffix = token.partition("_")
    return {"method": method, "token": token} if suffix else {"method": method}


def always(token: str) -> TokenChooser:
    """A token chooser that always answers `token`."""
    return lambda _n, _card: token


class LoadDriver:
    """Asks for renewals as a frontend would: RenewalRequested on Kafka, or the HTTP API."""

    def __init__(
        self,
        target: Target | Platform,
        *,
        source: str = "/frontends/load-driver",
        plan_code: str = DEFAULT_PLAN,
        http_connections: int = 64,
        producer_options: Mapping[str, Any] | None = None,
    ) -> None:
        """Args:
        target: the platform, or where it is.
        source: the CloudEvents `source` of what this driver publishes.
        plan_code: the plan every renewal asks for.
        http_connections: most HTTP connections to accounts at once.
        producer_options: extra `AIOKafkaProducer` arguments, e.g. a longer
            `request_timeout_ms` to ride out a broker restart.
        """
        self.target = target if isinstance(target, Target) else Target.of(target)
        self.source = source
        self.plan_code = plan_code
        self.topic = self.target.topic(RenewalRequested.topic)
        #: Every renewal this driver asked for, by renewal_id.
        self.sent: dict[str, Sent] = {}
        #: HTTP renewals the API did not accept, as (status, body) pairs.
        self.http_errors: list[tuple[int, str]] = []
        #: Seconds each accepted HTTP renewal took to be answered (202).
        self.http_answer_s: list[float] = []
        #: Renewals published with `keep_going` whose send or ack failed: renewal_id -> error.
        #: Such a renewal may still have reached the broker (an ack lost, not the message).
        self.unacknowledged: dict[str, str] = {}
        self._http_connections = http_connections
        self._producer_options = dict(producer_options or {})
        self._producer: AIOKafkaProducer | None = None
        self._http: httpx.AsyncClient | None = None
        self._acks: list[tuple[str, asyncio.Future[Any]]] = []

    async def __aenter__(self) -> Self:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.target.kafka,
            acks="all",
            enable_idempotence=True,
            linger_ms=2,
            **self._producer_options,
        )
        await self._producer.start()
        limits = httpx.Limits(max_connections=self._http_connections)
        self._http = httpx.AsyncClient(base_url=self.target.accounts_url, timeout=60, limits=limits)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._producer is not None:
            await self._producer.stop()
        if self._http is not None:
            await self._http.aclose()

    def renewal_requested(
        self,
        card: Card,
        *,
        token: str = "card_ok",
        start: Start = "now",
        renewal_id: str | None = None,
    ) -> bytes:
        """The wire value of a RenewalRequested CloudEvent for this card."""
        data = RenewalRequested(
            renewal_id=uuid.UUID(renewal_id) if renewal_id else uuid.uuid4(),
            user_id=card.user_id,
            iccid=card.iccid,
            plan_code=self.plan_code,
            payment=payment_of(token),
            start=start,
            requested_at=datetime.now(UTC),
            locale="en",
            channel="load-driver",
        )
        return new_event(data, source=self.source).to_json()

    async def publish_renewal(
        self,
        card: Card,
        *,
        token: str = "card_ok",
        start: Start = "now",
        renewal_id: str | None = None,
        wait: bool = True,
    ) -> str:
        """Publish one RenewalRequested (key = ICCID); returns its renewal_id.

        Args:
            card: the card to renew (its owner is the event's `user_id`).
            token: the payment token (`card_ok`, `paypal_declined`, ...).
            start: `now` or `after_current`.
            renewal_id: reuse this id (a duplicate request); a new UUID when omitted.
            wait: wait for the broker's ack; otherwise `flush` waits for all of them.
        """
        assert self._producer is not None, "use LoadDriver in `async with`"
        renewal = renewal_id or str(uuid.uuid4())
        value = self.renewal_requested(card, token=token, start=start, renewal_id=renewal)
        self.sent.setdefault(renewal, Sent(renewal, card.iccid, token, time.monotonic()))
        ack = await self._producer.send(self.topic, value=value, key=card.iccid.encode())
        if wait:
            await ack
        else:
            self._acks.append((renewal, ack))
        return renewal

    async def flush(self, *, keep_going: bool = False) -> None:
        """Wait for the broker's ack of every message published with `wait=False`.

        Args:
            keep_going: record a failed ack in `unacknowledged` instead of raising it.
        """
        acks, self._acks = self._acks, []
        outcomes = await asyncio.gather(*(ack for _, ack in acks), return_exceptions=True)
        for (renewal, _), outcome in zip(acks, outcomes, strict=True):
            if isinstance(outcome, Exception) and keep_going:
                self.unacknowledged[renewal] = repr(outcome)
            elif isinstance(outcome, BaseException):
                raise outcome

    async def renew_over_http(
        self, card: Card, *, token: str = "card_ok", start: Start = "now"
    ) -> str | None:
        """`POST /v1/cards/{iccid}/renewals` as the card's owner; the renewal_id, or None.

        A refusal is kept in `http_errors`. The request's start is the renewal's sent time.
        """
        assert self._http is not None, "use LoadDriver in `async with`"
        key = str(uuid.uuid4())
        at = time.monotonic()
        try:
            answer = await self._http.post(
                f"/v1/cards/{card.iccid}/renewals",
                json={
                    "plan_code": self.plan_code,
                    "payment": _payment_json(token),
                    "start": start,
                },
                headers={"Authorization": f"Bearer {card.access_token}", "Idempotency-Key": key},
            )
        except httpx.HTTPError as error:
            self.http_errors.append((0, repr(error)))
            return None
        if answer.status_code != 202:
            self.http_errors.append((answer.status_code, answer.text[:500]))
            return None
        renewal: str = answer.json()["renewal_id"]
        self.http_answer_s.append(time.monotonic() - at)
        self.sent.setdefault(renewal, Sent(renewal, card.iccid, token, at))
        return renewal

    async def run_at_rate(
        self,
        cards: Sequence[Card],
        rate: float,
        seconds: float,
        *,
        token_chooser: TokenChooser = always("card_ok"),
        start: Start = "now",
        on_tick: Tick | None = None,
        keep_going: bool = False,
        stop: asyncio.Event | None = None,
    ) -> list[Sent]:
        """Publish `rate` renewals a second for `seconds`, cycling over the cards.

        The schedule is fixed in advance (the n-th at n / rate); when publishing falls behind
        it catches up at once, so what was offered is `len(result) / seconds` at best.
        With `keep_going` a renewal whose send or ack fails (the broker is down) is recorded in
        `unacknowledged` and the run goes on; it is still in the result. Setting `stop` ends
        the run early (then `seconds` is only its longest length).
        """

        async def one(n: int, card: Card) -> str:
            renewal = str(uuid.uuid4())
            try:
                return await self.publish_renewal(
                    card, token=token_chooser(n, card), start=start, renewal_id=renewal, wait=False
                )
            except Exception as error:
                if not keep_going:
                    raise
                self.unacknowledged[renewal] = repr(error)
                return renewal

        ids = await _paced(cards, rate, seconds, one, on_tick, stop)
        await self.flush(keep_going=keep_going)
        return [self.sent[renewal] for renewal in ids if renewal is not None]

    async def run_http_at_rate(
        self,
        cards: Sequence[Card],
        rate: float,
        seconds: float,
        *,
        token_chooser: TokenChooser = always("card_ok"),
        start: Start = "now",
        on_tick: Tick | None = None,
    ) -> list[Sent]:
        """Ask for `rate` renewals a second over HTTP for `seconds` (open loop: a slow answer
        does not hold back the next request)."""
        requests: list[asyncio.Task[str | None]] = []

        async def one(n: int, card: Card) -> None:
            coroutine = self.renew_over_http(card, token=token_chooser(n, card), start=start)
            requests.append(asyncio.create_task(coroutine))

        await _paced(cards, rate, seconds, one, on_tick)
        ids = await asyncio.gather(*requests)
        return [self.sent[renewal] for renewal in ids if renewal is not None]


async def _paced(
    cards: Sequence[Card],
    rate: float,
    seconds: float,
    action: Callable[[int, Card], Any],
    on_tick: Tick | None,
    stop: asyncio.Event | None = None,
) -> list[Any]:
    if not cards:
        raise ValueError("no cards to renew")
    total = max(1, round(rate * seconds))
    begin = time.monotonic()
    next_tick = begin + 1
    results: list[Any] = []
    for n, card in zip(range(total), itertools.cycle(cards), strict=False):
        if stop is not None and stop.is_set():
            break
        due = begin + n / rate
        now = time.monotonic()
        if due > now:
            await asyncio.sleep(due - now)
        elif n % 50 == 0:
            await asyncio.sleep(0)  # behind schedule: still let the acks and outcomes in
        results.append(await action(n, card))
        if on_tick is not None and time.monotonic() >= next_tick:
            on_tick()
            next_tick += 1
    return results


@dataclass(frozen=True)
class Outcome:
    """A terminal event seen for a renewal."""

    renewal_id: str
    kind: str
    topic: str
    at: float
    event: dict[str, Any]


class Outcomes:
    """Collects terminal events per renewal_id from the terminal topics, read from their end."""

    def __init__(
        self,
        target: Target | Platform | str,
        topics: Mapping[str, str] | None = None,
        *,
        from_beginning: bool = False,
    ) -> None:
        """Args:
        target: the platform, or a bootstrap address (then `topics` are taken as they are).
        topics: topic base name -> outcome kind; `TERMINAL_TOPICS` when omitted.
        from_beginning: read every record the topics hold, not only those written after
            `start` (a census of a run's own cluster or topic suffix).
        """
        if isinstance(target, str):
            bootstrap, suffix = target, ""
        else:
            where = target if isinstance(target, Target) else Target.of(target)
            bootstrap, suffix = where.kafka, where.topic_suffix
        self.bootstrap = bootstrap
        self.topics = {base + suffix: kind for base, kind in (topics or TERMINAL_TOPICS).items()}
        #: Every terminal event seen, by renewal_id, in the order seen (redeliveries included).
        self.by_renewal: dict[str, list[Outcome]] = {}
        #: Records that carried no renewal id or were not JSON.
        self.unreadable = 0
        self.from_beginning = from_beginning
        self._partitions: list[TopicPartition] = []
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._arrived = asyncio.Event()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self, timeout: float = 60) -> None:
        """Assign every partition of the topics and fix the positions at their current end
        (or at their beginning, with `from_beginning`)."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False, fetch_max_wait_ms=100
        )
        await consumer.start()
        self._consumer = consumer
        partitions: list[TopicPartition] = []
        deadline = time.monotonic() + timeout
        for topic in self.topics:
            while True:
                found = consumer.partitions_for_topic(topic)
                if found:
                    partitions.extend(TopicPartition(topic, p) for p in sorted(found))
                    break
                if time.monotonic() > deadline:
                    await consumer.stop()
                    raise TimeoutError(f"topic {topic} does not exist on {self.bootstrap}")
                # A consumer with no subscription refreshes metadata only every few minutes.
                await consumer._client.force_metadata_update()
                await asyncio.sleep(0.5)
        consumer.assign(partitions)
        if self.from_beginning:
            await consumer.seek_to_beginning(*partitions)
        else:
            await consumer.seek_to_end(*partitions)
        for partition in partitions:  # resolve "end" now, not at the first fetch
            await consumer.position(partition)
        self._partitions = partitions
        self._task = asyncio.create_task(self._consume())

    async def catch_up(self, timeout: float = 60) -> bool:
        """Wait until every record the topics held when called has been read; False on timeout."""
        assert self._consumer is not None, "start Outcomes first"
        consumer = self._consumer
        ends = await consumer.end_offsets(self._partitions)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            behind = [tp for tp in self._partitions if await consumer.position(tp) < ends[tp]]
            if not behind:
                return True
            await asyncio.sleep(0.2)
        return False

    async def stop(self) -> None:
        """Stop reading."""
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()

    async def _consume(self) -> None:
        assert self._consumer is not None
        while True:
            batches = await self._consumer.getmany(timeout_ms=200, max_records=5000)
            now = time.monotonic()
            for partition, records in batches.items():
                kind = self.topics[partition.topic]
                for record in records:
                    self._record(partition.topic, kind, record.value, now)
            if batches:
                self._arrived.set()

    def _record(self, topic: str, kind: str, value: bytes | None, now: float) -> None:
        try:
            event = json.loads(value or b"")
            renewal = event.get("renewalid") or event["data"]["renewal_id"]
        except (ValueError, KeyError, TypeError, AttributeError):
            self.unreadable += 1
            return
        outcome = Outcome(str(renewal), kind, topic, now, event)
        self.by_renewal.setdefault(outcome.renewal_id, []).append(outcome)

    def first(self, renewal_id: str) -> Outcome | None:
        """The first terminal event seen for a renewal, if any."""
        seen = self.by_renewal.get(renewal_id)
        return seen[0] if seen else None

    def first_of(self, renewal_id: str, kind: str) -> Outcome | None:
        """The first event of one kind seen for a renewal, if any."""
        for outcome in self.by_renewal.get(renewal_id, []):
            if outcome.kind == kind:
                return outcome
        return None

    def terminal(self, renewal_id: str) -> list[Outcome]:
        """The distinct terminal events of a renewal (one per CloudEvents id)."""
        distinct: dict[str, Outcome] = {}
        for outcome in self.by_renewal.get(renewal_id, []):
            distinct.setdefault(str(outcome.event.get("id")), outcome)
        return list(distinct.values())

    def done(self, renewal_ids: Iterable[str], kind: str | None = None) -> list[str]:
        """The renewals that ended (with `kind`, if given)."""
        return [
            r
            for r in renewal_ids
            if (o := self.first(r)) is not None and (kind is None or o.kind == kind)
        ]

    async def wait_for(
        self,
        renewal_ids: Iterable[str],
        timeout: float,
        *,
        on_tick: Tick | None = None,
    ) -> set[str]:
        """Wait until each renewal has a terminal event or `timeout` passes; the ones missing."""
        missing = {r for r in renewal_ids if r not in self.by_renewal}
        deadline = time.monotonic() + timeout
        while missing and time.monotonic() < deadline:
            self._arrived.clear()
            with suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), min(1.0, deadline - time.monotonic()))
            missing = {r for r in missing if r not in self.by_renewal}
            if on_tick is not None:
                on_tick()
        return missing

    def latencies(self, sent: Iterable[Sent], kind: str = "activated") -> list[float]:
        """Seconds from each renewal's request to its first terminal event of `kind`."""
        result = []
        for request in sent:
            outcome = self.first(request.renewal_id)
            if outcome is not None and outcome.kind == kind:
                result.append(outcome.at - request.at)
        return result


def percentile(ordered: Sequence[float], q: float) -> float:
    """The `q`-th percentile (0-100) of sorted samples, interpolated between ranks."""
    if not ordered:
        return math.nan
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is not between 0 and 100")
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class LatencyStats:
    """Summary of latency samples in seconds (NaN where there are none)."""

    count: int
    p50: float
    p95: float
    p99: float
    max: float
    mean: float
    samples: tuple[float, ...] = field(default=(), repr=False, compare=False)

    @classmethod
    def of(cls, samples: Iterable[float]) -> "LatencyStats":
        """Summarize samples."""
        ordered = sorted(samples)
        if not ordered:
            return cls(0, math.nan, math.nan, math.nan, math.nan, math.nan)
        return cls(
            count=len(ordered),
            p50=percentile(ordered, 50),
            p95=percentile(ordered, 95),
            p99=percentile(ordered, 99),
            max=ordered[-1],
            mean=sum(ordered) / len(ordered),
            samples=tuple(ordered),
        )

    def as_dict(self) -> dict[str, float | int | None]:
        """JSON-friendly (NaN becomes None)."""
        values: dict[str, float | int | None] = {"count": self.count}
        for name in ("p50", "p95", "p99", "max", "mean"):
            value = getattr(self, name)
            values[name] = None if math.isnan(value) else round(value, 4)
        return values
