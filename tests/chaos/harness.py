"""One chaos run: start the platform, load it while crashing its parts, drain, judge, report.

Everything is judged from the outside: saga states over the accounts API (as each renewal's
owner), terminal events from the topics, and the sandboxes' ledgers of authorizations,
captures, voids, refunds and bundle orders. A share of the load waits for the buyer (3-D
Secure, PayPal's approval, Alipay's cashier): the load plays each buyer, as a website would,
opening the provider's page from the saga's `payment_action` and approving or cancelling it.
The platform's workdir (one log per process) is kept under `var/chaos/<run>/`.
"""

import asyncio
import contextlib
import itertools
import json
import logging
import math
import os
import random
import shutil
import sys
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from esim_core.settings import Topics

from tests.chaos.config import ChaosConfig
from tests.chaos.mayhem import ActionRecord, Mayhem, Plan
from tests.chaos.verdict import (
    APPROVE,
    CANCEL,
    EXPIRED,
    TERMINAL_EVENT_OF,
    UNANSWERED,
    Asked,
    Evidence,
    StopTimed,
    TerminalEvent,
    Verdict,
    expected_status,
    judge,
    needs_approval,
)
from tests.support.infra import (
    SERVICES,
    Platform,
    Server,
    kafka_server,
    new_suffix,
    postgres_databases,
    redis_server,
)
from tests.support.load import Card, LoadDriver, Outcomes, Target, setup_cards

#: The token mix of the load, by weight (method prefixes drawn evenly): what the payment
#: sandbox does with each is in CONTRACT.md.
TOKEN_MIX: dict[str, int] = {"ok": 50, "flaky": 15, "slow": 10, "declined": 15, "insufficient": 10}
METHODS = ("card", "paypal", "alipay")
#: The methods whose money is held first, captured after activation, released if it fails.
HOLDING_METHODS = frozenset({"card", "paypal"})
#: Share of the load whose payment waits for the buyer at the provider's page, and the tokens
#: that do so: 3-D Secure for a card, PayPal's approval (with its `_action` token or none at
#: all: a bare method name sends no token), Alipay's cashier likewise.
APPROVAL_SHARE = 0.2
APPROVAL_TOKENS = ("card_action", "paypal_action", "paypal", "alipay_action", "alipay")
#: Share of those buyers who cancel instead of approving.
CANCEL_SHARE = 0.25
#: How long billing waits for a buyer in a chaos run (BILLING_APPROVAL_EXPIRY_S). Three times
#: as long as a crashed accounts or broker keeps a buyer from the page (about 20 s at most), so
#: an approval is seldom lost to the expiry (a buyer who could not answer in time is counted as
#: unanswered, and its renewal expected to fail `not_approved`); short, since the drain waits
#: for it: PayPal's cancels, which billing learns only at the expiry, are the last to end.
APPROVAL_EXPIRY_S = 60
#: A buyer answers only while the page has this much time left (else the approval might race
#: the expiry, and the outcome would not be decided): such a buyer counts as unanswered.
ANSWER_MARGIN_S = 10.0
#: Share of the load asking for a plan the catalogue does not have (ends in RenewalRejected).
UNKNOWN_PLAN_SHARE = 0.04
UNKNOWN_PLAN = "XX-NO-SUCH-PLAN"
#: A broker restart must not make the load's requests expire in the producer.
PRODUCER_OPTIONS = {"request_timeout_ms": 180_000}
#: How long the terminal topics must stay quiet after the drain before the census.
QUIET_S = 8.0
RUNS_KEPT = 3


@dataclass
class Gathered:
    """What the run saw, for the verdict and the report."""

    asked: list[Asked] = field(default_factory=list)
    statuses: dict[str, str | None] = field(default_factory=dict)
    events: list[TerminalEvent] = field(default_factory=list)
    captures: list[str] = field(default_factory=list)
    refunds: list[str] = field(default_factory=list)
    authorizations: list[str] = field(default_factory=list)
    voids: list[str] = field(default_factory=list)
    orders: list[str] = field(default_factory=list)
    records: list[ActionRecord] = field(default_factory=list)
    troubles: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    owners: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: What each buyer did on the provider's page (approve, cancel, unanswered), by renewal.
    approvals: dict[str, str] = field(default_factory=dict)
    dead_letters: list[str] = field(default_factory=list)


def main() -> int:
    """Run once with the `CHAOS_*` settings; 0 on PASS, 1 on FAIL, 2 when it could not run."""
    try:
        config = ChaosConfig.from_env()
    except ValueError as error:
        print(f"chaos: {error}", file=sys.stderr)
        return 2
    started = datetime.now(UTC)
    run_id = f"{started:%Y%m%dT%H%M%SZ}-{config.seed}"
    workdir = config.out_dir / run_id
    workdir.mkdir(parents=True, exist_ok=True)
    _prune(config.out_dir, keep=RUNS_KEPT)
    # The clients' own complaints (a broker that is down, on purpose) go to a log, not the screen.
    logging.basicConfig(
        filename=workdir / "harness.log",
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    say(
        f"chaos: run {run_id}: {config.seconds:g} s at {config.rate:g} renewals/s on "
        f"{config.db}"
        + (f" with {config.replicas} replicas of each service" if config.replicas > 1 else "")
        + f", {config.cards} cards ({config.failing_cards} failing, "
        f"{config.flaky_cards} flaky), stop bound {config.stop_bound_s:g} s; workdir {workdir}"
    )
    gathered = Gathered()
    skipped: list[str] = []
    try:
        with ExitStack() as stack:
            database: Server | None = None
            databases: dict[str, str] = {}
            if config.db == "postgres":
                # Durable: the run kills it, and what it acknowledged must outlive that.
                databases, database = stack.enter_context(postgres_databases(workdir, durable=True))
                if database.process is None:
                    skipped.append(
                        f"PostgreSQL kill: the server ({database.address.split('@')[-1]}) is "
                        "not a local process"
                    )
            broker = stack.enter_context(kafka_server(workdir))
            redis = stack.enter_context(redis_server(workdir))
            if broker.process is None:
                skipped.append(
                    f"broker kill: the broker ({broker.address}) is not a local process "
                    "(KAFKA_BOOTSTRAP_SERVERS or a testcontainer)"
                )
            if redis.process is None:
                skipped.append(f"Redis kill: Redis ({redis.address}) is not a local process")
            platform = Platform(
                workdir,
                broker.address,
                redis.address,
                topic_suffix=new_suffix() if os.environ.get("KAFKA_BOOTSTRAP_SERVERS") else "",
                databases=databases,
                service_env=_service_env(config),
                replicas=config.replicas,
            )
            stack.callback(platform.stop)
            say("chaos: starting the platform")
            begun = time.monotonic()
            platform.start()
            gathered.timings["startup_s"] = time.monotonic() - begun
            asyncio.run(exercise(platform, broker, redis, database, config, gathered))
            verdict = judge(_evidence(gathered, config))
            diagnosis = asyncio.run(diagnose(platform, verdict, gathered))
            report = _report(
                config, run_id, workdir, started, gathered, verdict, skipped, diagnosis
            )
            _write_report(config.out_dir, workdir, report)
            _print_summary(config, gathered, verdict, skipped, workdir)
            say("chaos: stopping the platform")
    except Exception as error:
        traceback.print_exc()
        say(f"chaos: the run could not be completed: {type(error).__name__}: {error}")
        say(f"chaos: logs are in {workdir}")
        return 2
    return 0 if verdict.passed else 1


def _evidence(gathered: Gathered, config: ChaosConfig) -> Evidence:
    stops = [
        StopTimed(r.target, r.stop_s, config.stop_bound_s, r.exit_code, r.overstayed)
        for r in gathered.records
        if r.kind == "stop" and r.stop_s is not None
    ]
    return Evidence(
        asked=gathered.asked,
        statuses=gathered.statuses,
        events=gathered.events,
        captures=gathered.captures,
        refunds=gathered.refunds,
        authorizations=gathered.authorizations,
        voids=gathered.voids,
        orders=gathered.orders,
        stops=stops,
        kills=sum(1 for r in gathered.records if r.kind == "kill"),
        troubles=gathered.troubles,
        dead_letters=gathered.dead_letters,
    )


def say(line: str) -> None:
    """Print a progress line at once (make shows it as it comes)."""
    print(line, flush=True)


def _service_env(config: ChaosConfig) -> dict[str, str]:
    env = {f"{name.upper()}_STOP_TIMEOUT_S": f"{config.stop_timeout_s:g}" for name in SERVICES}
    # The verdict asks accounts as each renewal's owner long after the tokens were issued.
    env["ACCOUNTS_JWT_TTL_S"] = "86400"
    # Low enough that a killed billing or provisioning makes the intake hold new requests back,
    # so the run also shows none of them is lost or doubled when it pauses and resumes.
    env["ACCOUNTS_MAX_SAGAS_IN_FLIGHT"] = "60"
    env["BILLING_APPROVAL_EXPIRY_S"] = str(APPROVAL_EXPIRY_S)
    return env


async def exercise(
    platform: Platform,
    broker: Server,
    redis: Server,
    database: Server | None,
    config: ChaosConfig,
    gathered: Gathered,
) -> None:
    """Bind cards, inject faults, run the load and the crashes, drain, and gather the evidence."""
    rng = random.Random(config.seed)
    target = Target.of(platform)
    say(f"chaos: binding {config.cards} cards")
    cards = await setup_cards(target, config.cards)
    faults = _card_faults(cards, config)
    esim = platform.url("esim")
    await _set_faults(esim, {iccid: f for iccid, f in faults.items() if f != "none"})
    flaky = [iccid for iccid, fault in faults.items() if fault == "flaky"]
    tokens = _token_chooser(random.Random(rng.random()))
    plan = Plan(
        config.seconds,
        rng,
        every_s=(config.every_min_s, config.every_max_s),
        broker=broker.process is not None,
        redis=redis.process is not None,
        postgres=database is not None and database.process is not None,
        targets=platform.service_processes,
    )
    say(f"chaos: plan: {plan.describe()}")
    mayhem = Mayhem(
        platform,
        broker,
        redis,
        database=database,
        stop_bound_s=config.stop_bound_s,
        rng=rng,
        say=say,
    )
    by_card = {card.iccid: card for card in cards}
    accounts = [
        platform.url(name) for name in platform.service_processes if name.startswith("accounts")
    ]
    buyers = Buyers(accounts, by_card, random.Random(rng.random()))

    # The load lasts its seconds, and on until the last crash is over, so that every crash
    # of the plan happens under load; `longest` bounds it should a crash take forever.
    longest = config.seconds + max(120.0, config.seconds)
    async with (
        Outcomes(target) as live,
        LoadDriver(target, producer_options=PRODUCER_OPTIONS) as load,
        LoadDriver(
            target,
            source="/frontends/chaos-unknown-plan",
            plan_code=UNKNOWN_PLAN,
            producer_options=PRODUCER_OPTIONS,
        ) as strays,
    ):
        end_load, load_over = asyncio.Event(), asyncio.Event()
        began = time.monotonic()
        progress = _Progress(began, load, strays, live, mayhem)

        async def steady() -> None:
            try:
                await asyncio.gather(
                    load.run_at_rate(
                        cards,
                        config.rate * (1 - UNKNOWN_PLAN_SHARE),
                        longest,
                        token_chooser=tokens,
                        on_tick=progress.tick,
                        keep_going=True,
                        stop=end_load,
                    ),
                    strays.run_at_rate(
                        cards,
                        config.rate * UNKNOWN_PLAN_SHARE,
                        longest,
                        keep_going=True,
                        stop=end_load,
                    ),
                )
            finally:
                load_over.set()

        async def crashes() -> None:
            try:
                await mayhem.run(plan, began, load_over)
            finally:
                left = began + config.seconds - time.monotonic()
                if left > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(load_over.wait(), left)
                end_load.set()

        rearm = asyncio.create_task(_rearm_flaky(esim, flaky, load_over))
        # The buyers act until the drain is over (each stops once its renewal has ended).
        buying = asyncio.create_task(buyers.run(load, until=began + longest + 2 * config.drain_s))
        await asyncio.gather(steady(), crashes())
        buyers.no_more_renewals()
        gathered.timings["load_s"] = time.monotonic() - began
        await rearm
        if plan.owed():
            gathered.notes.append(
                f"not done ({', '.join(plan.owed())}): the load reached its longest length "
                f"({longest:g} s)"
            )
        say("chaos: load over; checking that every service is up")
        await asyncio.to_thread(mayhem.revive_the_dead, began)
        if await asyncio.to_thread(mayhem.all_ready) is None:
            mayhem.troubles.append("not every service was ready after the load")
        gathered.records = mayhem.records
        gathered.troubles = mayhem.troubles

        for driver in (load, strays):
            for sent in driver.sent.values():
                gathered.owners[sent.renewal_id] = by_card[sent.iccid].access_token
        if load.unacknowledged or strays.unacknowledged:
            gathered.notes.append(
                f"{len(load.unacknowledged) + len(strays.unacknowledged)} request(s) not "
                "acknowledged by the broker, e.g. "
                + next(iter({**load.unacknowledged, **strays.unacknowledged}.values()))[:200]
            )

        drain_began = time.monotonic()
        deadline = drain_began + config.drain_s
        acknowledged = [
            renewal_id
            for driver in (load, strays)
            for renewal_id in driver.sent
            if renewal_id not in driver.unacknowledged
        ]
        say(f"chaos: draining: waiting up to {config.drain_s:g} s for {len(acknowledged)} renewals")
        missing = await live.wait_for(
            acknowledged, timeout=config.drain_s, on_tick=_every(10, lambda: _drain_line(live))
        )
        if missing:
            say(f"chaos: {len(missing)} renewal(s) without a terminal event after the drain")
        gathered.statuses = await saga_statuses(
            platform.url("accounts"),
            gathered.owners,
            deadline=max(deadline, time.monotonic() + 15),
        )
        await _quiet(live, QUIET_S, timeout=30)
        gathered.timings["drain_s"] = time.monotonic() - drain_began
        await buyers.stop(buying)
        gathered.approvals = buyers.approvals()
        for driver, plan_exists in ((load, True), (strays, False)):
            for sent in driver.sent.values():
                approval = gathered.approvals.get(sent.renewal_id)
                gathered.asked.append(
                    Asked(
                        sent.renewal_id,
                        expected_status(
                            sent.token,
                            faults[sent.iccid],
                            plan_exists=plan_exists,
                            approval=approval,
                        ),
                        acknowledged=sent.renewal_id not in driver.unacknowledged,
                        holds=sent.token.split("_", 1)[0] in HOLDING_METHODS,
                        approval=approval,
                    )
                )

    say("chaos: census of the terminal topics and the sandboxes' ledgers")
    census = Outcomes(target, from_beginning=True)
    await census.start()
    try:
        if not await census.catch_up(timeout=120):
            gathered.troubles.append("the terminal topics could not be read to their end")
    finally:
        await census.stop()
    gathered.events = [
        TerminalEvent(o.renewal_id, o.kind, str(o.event.get("id")), _reason(o.event))
        for outcomes in census.by_renewal.values()
        for o in outcomes
    ]
    gathered.dead_letters = await dead_letters(target)
    async with httpx.AsyncClient(timeout=60) as client:
        payments = (await client.get(f"{platform.url('payment')}/sandbox/ledger")).json()
        bundles = (await client.get(f"{esim}/sandbox/ledger")).json()
    gathered.captures = [c["reference"] for c in payments["captures"]]
    gathered.refunds = [r["reference"] for r in payments["refunds"]]
    gathered.authorizations = [a["reference"] for a in payments["authorizations"]]
    gathered.voids = [v["reference"] for v in payments["voids"]]
    gathered.orders = [o["reference"] for o in bundles["orders"]]


def _reason(event: Mapping[str, Any]) -> str | None:
    """The `reason` of a terminal event's data (PaymentFailed has one), if any."""
    data = event.get("data")
    reason = data.get("reason") if isinstance(data, dict) else None
    return str(reason) if reason is not None else None


def page_was_up_s(saga: Mapping[str, Any]) -> float | None:
    """How long a saga showed its payment page: from its `payment_action_required` step to the
    step after it (infinite when it never left it, None when it never showed one, 0 when the
    page's news reached accounts only after the saga had ended: an outage held it back past
    the approval window, and nobody could have seen the page)."""
    steps = saga.get("timeline") or []
    for index, step in enumerate(steps):
        if step.get("step") == "payment_action_required":
            if step.get("status", "PAYMENT_ACTION_REQUIRED") != "PAYMENT_ACTION_REQUIRED":
                return 0.0
            if index + 1 == len(steps):
                return math.inf
            shown = datetime.fromisoformat(step["at"])
            return (datetime.fromisoformat(steps[index + 1]["at"]) - shown).total_seconds()
    return None


class Buyers:
    """The buyers of the renewals that wait for them, each answering at the provider's page.

    For each such renewal the load sends, a buyer (its card's owner) follows the saga over the
    accounts API until it shows `payment_action`, opens the page (`GET <url>`) and posts its
    decision (`POST <url>` with `decision`), as a website sends its traveller there and back.
    A buyer approves or, for `CANCEL_SHARE` of them, cancels; what it did is kept: `approve` or
    `cancel` once the page answered 303, `expired` when the page had less than
    `ANSWER_MARGIN_S` left when the buyer saw it, or was up for less than that in all (the
    saga's news reached accounts just before the expiry), `unanswered` when it never could
    (the saga ended first, or the page refused).

    With more than one accounts replica, a buyer reads the saga as a website does through its
    load balancer: from one replica (each buyer its own, so the reads are spread), and from the
    next one when that replica does not answer or answers 5xx (it was stopped or killed).
    """

    def __init__(
        self, accounts_urls: Sequence[str], cards: Mapping[str, Card], rng: random.Random
    ) -> None:
        """Args:
        accounts_urls: where the saga's status is read: each accounts replica's base URL.
        cards: the load's cards by ICCID (their owners' access tokens).
        rng: draws each buyer's decision.
        """
        self.accounts_urls = list(accounts_urls)
        self.cards = cards
        self.rng = rng
        self._meant: dict[str, str] = {}
        self._done: dict[str, str] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._more = True

    def no_more_renewals(self) -> None:
        """The load is over: the buyers of what it sent are all under way."""
        self._more = False

    def approvals(self) -> dict[str, str]:
        """What each buyer did, by renewal (after `stop`)."""
        return {rid: self._done.get(rid, UNANSWERED) for rid in self._meant}

    async def run(self, load: LoadDriver, *, until: float) -> None:
        """Start a buyer for each renewal of `load` that needs one, until the load is over."""
        seen = 0
        limits = httpx.Limits(max_connections=32)
        async with httpx.AsyncClient(timeout=15, limits=limits) as client:
            while True:
                more = self._more  # read first: what was sent before it ended is taken below
                sent = list(load.sent.values())
                for one in sent[seen:]:
                    if not needs_approval(one.token):
                        continue
                    decision = CANCEL if self.rng.random() < CANCEL_SHARE else APPROVE
                    self._meant[one.renewal_id] = decision
                    self._tasks.append(
                        asyncio.create_task(self._buy(client, one.renewal_id, one.iccid, until))
                    )
                seen = len(sent)
                if not more:
                    break
                await asyncio.sleep(0.5)
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def stop(self, running: "asyncio.Task[None]") -> None:
        """End the buyers still waiting (their renewals never showed a page) and the loop."""
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _buy(
        self, client: httpx.AsyncClient, renewal_id: str, iccid: str, until: float
    ) -> None:
        headers = {"Authorization": f"Bearer {self.cards[iccid].access_token}"}
        path = f"/v1/renewals/{renewal_id}"
        replica = uuid.UUID(renewal_id).int % len(self.accounts_urls)  # each buyer its own
        while time.monotonic() < until:
            await asyncio.sleep(1)
            try:
                answer = await client.get(self.accounts_urls[replica] + path, headers=headers)
            except httpx.HTTPError:
                answer = None  # that replica is down (on purpose)
            if answer is None or answer.status_code >= 500:
                replica = (replica + 1) % len(self.accounts_urls)  # ask the next one
                continue
            if answer.status_code != 200:
                continue  # 404 until accounts has the request
            saga = answer.json()
            if saga["status"] in TERMINAL_EVENT_OF:
                up_s = page_was_up_s(saga)
                if up_s is not None and up_s < ANSWER_MARGIN_S:
                    # The page was up for less than a buyer needs (the saga's news came just
                    # before the expiry, held back by an outage): expired, not a lost buyer.
                    self._done[renewal_id] = EXPIRED
                return
            action = saga.get("payment_action")
            if saga["status"] != "PAYMENT_ACTION_REQUIRED" or not action:
                continue
            expires = datetime.fromisoformat(action["expires_at"])
            if (expires - datetime.now(UTC)).total_seconds() < ANSWER_MARGIN_S:
                # The saga's news came too late (an outage held it back): the buyer finds an
                # expired page, and the renewal must end not_approved with nothing taken.
                logging.warning("buyer of %s: the page expires too soon to answer", renewal_id)
                self._done[renewal_id] = EXPIRED
                return
            await self._answer(client, renewal_id, action["url"])
            return

    async def _answer(self, client: httpx.AsyncClient, renewal_id: str, page: str) -> None:
        decision = self._meant[renewal_id]
        try:
            shown = await resent(lambda: client.get(page))
            if shown.status_code != 200:
                logging.warning("buyer of %s: page answered %s", renewal_id, shown.status_code)
                return
            answered = await resent(lambda: client.post(page, data={"decision": decision}))
        except httpx.HTTPError as error:
            logging.warning("buyer of %s: page unreachable: %r", renewal_id, error)
            return
        if answered.status_code != 303:
            logging.warning(
                "buyer of %s: %s answered %s %s",
                renewal_id,
                decision,
                answered.status_code,
                answered.text[:200],
            )
            return
        self._done[renewal_id] = decision


async def dead_letters(target: Target, timeout: float = 60) -> list[str]:
    """Every record on the platform's dead-letter topics, as `topic: error type: error`."""
    names = [target.topic(name) + ".dlq" for name in Topics().model_dump().values()]
    consumer = AIOKafkaConsumer(bootstrap_servers=target.kafka, enable_auto_commit=False)
    await consumer.start()
    found: list[str] = []
    try:
        await consumer._client.force_metadata_update()
        partitions = [
            TopicPartition(topic, p)
            for topic in names
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        if not partitions:
            return found
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            behind = [tp for tp in partitions if await consumer.position(tp) < ends[tp]]
            if not behind:
                return found
            batches = await consumer.getmany(timeout_ms=500)
            for partition, records in batches.items():
                for record in records:
                    headers = {k: v.decode(errors="replace") for k, v in record.headers}
                    found.append(
                        f"{partition.topic}@{record.offset}: {headers.get('x-error-type')}: "
                        f"{headers.get('x-error', '')[:300]}"
                    )
        found.append(f"(the dead-letter topics could not be read to their end in {timeout:g} s)")
        return found
    finally:
        await consumer.stop()


class _Progress:
    """A line every 15 s of load: renewals sent and ended, and the crashes so far."""

    def __init__(
        self,
        began: float,
        load: LoadDriver,
        strays: LoadDriver,
        live: Outcomes,
        mayhem: Mayhem,
    ) -> None:
        self.began, self.load, self.strays, self.live, self.mayhem = (
            began,
            load,
            strays,
            live,
            mayhem,
        )
        self.next_at = began + 15

    def tick(self) -> None:
        now = time.monotonic()
        if now < self.next_at:
            return
        self.next_at += 15
        sent = len(self.load.sent) + len(self.strays.sent)
        say(
            f"chaos: {now - self.began:5.0f} s: {sent} renewals sent, "
            f"{len(self.live.by_renewal)} ended, {len(self.mayhem.records)} crash(es) done"
        )


def _every(seconds: float, action: Callable[[], None]) -> Callable[[], None]:
    last = [time.monotonic()]

    def tick() -> None:
        if time.monotonic() - last[0] >= seconds:
            last[0] = time.monotonic()
            action()

    return tick


def _drain_line(live: Outcomes) -> None:
    say(f"chaos: draining: {len(live.by_renewal)} renewals ended so far")


def _card_faults(cards: Sequence[Card], config: ChaosConfig) -> dict[str, str]:
    """The eSIM sandbox fault of each card: the first ones fail, the next ones are flaky."""
    faults = {}
    for n, card in enumerate(cards):
        if n < config.failing_cards:
            faults[card.iccid] = "fail"
        elif n < config.failing_cards + config.flaky_cards:
            faults[card.iccid] = "flaky"
        else:
            faults[card.iccid] = "none"
    return faults


async def resent(send: Callable[[], Awaitable[httpx.Response]], tries: int = 3) -> httpx.Response:
    """`send()`, sent again (up to `tries` in all) when the connection fails under it.

    A kept-alive connection that a sandbox closed as idle (uvicorn's keep-alive is 5 s, and
    this process, busy with the load and the buyers on a loaded machine, can take longer to
    send its next request) fails the request sent on it before any answer; a browser sends
    such a request again on a new connection, and so does the harness.
    """
    for attempt in range(1, tries + 1):
        try:
            return await send()
        except httpx.TransportError:
            if attempt == tries:
                raise
    raise AssertionError("unreachable")


async def _set_faults(
    esim_url: str,
    faults: Mapping[str, str],
    transport: httpx.AsyncBaseTransport | None = None,
) -> None:
    """Set each card's fault at the eSIM sandbox (`transport`: another than the network's)."""
    async with httpx.AsyncClient(base_url=esim_url, timeout=30, transport=transport) as client:
        for iccid, mode in faults.items():
            body = {"iccid": iccid, "mode": mode}
            answer = await resent(lambda: client.post("/sandbox/faults", json=body))  # noqa: B023 (awaited here)
            answer.raise_for_status()


async def _rearm_flaky(esim_url: str, iccids: Sequence[str], stopping: asyncio.Event) -> None:
    """Keep the flaky cards flaky: each setting gives the card's next two calls a 503."""
    while not stopping.is_set():
        try:
            await asyncio.wait_for(stopping.wait(), 5)
        except TimeoutError:
            await _set_faults(esim_url, dict.fromkeys(iccids, "flaky"))


def _token_chooser(rng: random.Random) -> Callable[[int, Card], str]:
    kinds, weights = list(TOKEN_MIX), list(TOKEN_MIX.values())

    def choose(_n: int, _card: Card) -> str:
        if rng.random() < APPROVAL_SHARE:
            return rng.choice(APPROVAL_TOKENS)
        return f"{rng.choice(METHODS)}_{rng.choices(kinds, weights)[0]}"

    return choose


async def saga_statuses(
    accounts_url: str, owners: Mapping[str, str], *, deadline: float, concurrency: int = 16
) -> dict[str, str | None]:
    """Each renewal's saga status over the accounts API, as its owner; polled until terminal.

    None where accounts answers 404 (it does not know the renewal).
    """
    statuses: dict[str, str | None] = {}
    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=accounts_url, timeout=30, limits=limits) as client:

        async def one(renewal_id: str) -> None:
            async with gate:
                for _ in range(5):
                    try:
                        answer = await client.get(
                            f"/v1/renewals/{renewal_id}",
                            headers={"Authorization": f"Bearer {owners[renewal_id]}"},
                        )
                    except httpx.HTTPError:
                        await asyncio.sleep(1)
                        continue
                    if answer.status_code == 404:
                        statuses[renewal_id] = None
                        return
                    if answer.status_code == 200:
                        statuses[renewal_id] = str(answer.json()["status"])
                        return
                    await asyncio.sleep(1)
                raise RuntimeError(f"accounts did not answer for renewal {renewal_id}")

        pending = list(owners)
        while True:
            await asyncio.gather(*(one(renewal_id) for renewal_id in pending))
            pending = [r for r in owners if statuses.get(r) not in TERMINAL_EVENT_OF]
            if not pending or time.monotonic() >= deadline:
                return statuses
            await asyncio.sleep(2)


async def _quiet(live: Outcomes, seconds: float, *, timeout: float) -> None:
    """Wait until no terminal record has come for `seconds` (late duplicates would show)."""
    end = time.monotonic() + timeout
    seen, since = -1, time.monotonic()
    while time.monotonic() < end:
        now_seen = sum(len(outcomes) for outcomes in live.by_renewal.values())
        if now_seen != seen:
            seen, since = now_seen, time.monotonic()
        elif time.monotonic() - since >= seconds:
            return
        await asyncio.sleep(0.5)


async def diagnose(
    platform: Platform, verdict: Verdict, gathered: Gathered, *, most: int = 10
) -> dict[str, Any]:
    """For the first renewals a rule names: their timeline, effects, and the log lines on them."""
    found: dict[str, Any] = {}
    renewals = [r for r in verdict.renewals_at_fault() if r in gathered.owners][:most]
    if not renewals:
        return found
    # The platform's own logs; the harness's and the access lines only echo its questions.
    logs = sorted(log for log in platform.workdir.glob("*.log") if log.name != "harness.log")
    async with httpx.AsyncClient(base_url=platform.url("accounts"), timeout=30) as client:
        for renewal_id in renewals:
            answer = await client.get(
                f"/v1/renewals/{renewal_id}",
                headers={"Authorization": f"Bearer {gathered.owners[renewal_id]}"},
            )
            found[renewal_id] = {
                "expected": next(a.expected for a in gathered.asked if a.renewal_id == renewal_id),
                "saga": answer.json() if answer.status_code == 200 else answer.status_code,
                "terminal_events": [
                    {"kind": e.kind, "id": e.event_id}
                    for e in gathered.events
                    if e.renewal_id == renewal_id
                ],
                "buyer": gathered.approvals.get(renewal_id),
                "authorizations": gathered.authorizations.count(renewal_id),
                "captures": gathered.captures.count(renewal_id),
                "voids": gathered.voids.count(renewal_id),
                "refunds": gathered.refunds.count(renewal_id),
                "orders": gathered.orders.count(renewal_id),
                "log_lines": _grep(logs, renewal_id),
            }
    return found


def _grep(logs: Iterable[Path], needle: str, *, most: int = 40) -> list[str]:
    lines: list[str] = []
    for log in logs:
        with log.open(errors="replace") as handle:
            lines.extend(
                f"{log.name}: {line.rstrip()[:400]}"
                for line in handle
                if needle in line and "uvicorn.access" not in line
            )
    return lines[:most]


def _report(
    config: ChaosConfig,
    run_id: str,
    workdir: Path,
    started: datetime,
    gathered: Gathered,
    verdict: Verdict,
    skipped: list[str],
    diagnosis: dict[str, Any],
) -> dict[str, Any]:
    return {
        "verdict": verdict.word,
        "failures": [failure.as_dict() for failure in verdict.failures],
        "counts": verdict.counts,
        "config": config.as_dict(),
        "run": {
            "id": run_id,
            "workdir": str(workdir),
            "started_at": started.isoformat(),
            "finished_at": datetime.now(UTC).isoformat(),
            "timings_s": {k: round(v, 1) for k, v in gathered.timings.items()},
            "skipped": skipped,
            "notes": gathered.notes,
        },
        "actions": [record.as_dict() for record in gathered.records],
        "troubles": gathered.troubles,
        "diagnosis": diagnosis,
    }


def _write_report(out_dir: Path, workdir: Path, report: dict[str, Any]) -> None:
    text = json.dumps(report, indent=2, sort_keys=False, default=str)
    (workdir / "report.json").write_text(text + "\n")
    (out_dir / "latest.json").write_text(text + "\n")


def _print_summary(
    config: ChaosConfig,
    gathered: Gathered,
    verdict: Verdict,
    skipped: list[str],
    workdir: Path,
) -> None:
    counts = verdict.counts
    states = counts["terminal_by_state"]
    say("")
    say(
        f"==> chaos {verdict.word} (seed {config.seed}, {config.seconds:g} s at "
        f"{config.rate:g}/s, {config.db})"
    )
    say(
        f"renewals sent {counts['renewals_sent']} (counted {counts['renewals_counted']}, "
        f"not acknowledged {counts['unacknowledged']}, never arrived {counts['undelivered']})"
    )
    say("terminal by state: " + _pairs(states))
    say("expected by state: " + _pairs(counts["expected_by_state"]))
    say(
        "terminal events: "
        + _pairs(counts["terminal_events_by_kind"])
        + f" (redelivered duplicates, same id: {counts['terminal_events_redelivered']})"
    )
    say(
        f"captures {counts['captures']} (ACTIVATED = {states.get('ACTIVATED', 0)}, plus the "
        f"REFUNDED paid at once), authorizations {counts['authorizations']}, voids "
        f"{counts['voids']}, refunds {counts['refunds']} (REFUNDED = "
        f"{states.get('REFUNDED', 0)}, voided or refunded), bundle orders "
        f"{counts['bundle_orders']}, dead letters {counts['dead_letters']}"
    )
    say("buyers at the provider's page: " + _pairs(counts["approvals"]))
    kinds = Counter(record.kind for record in gathered.records)
    say(
        f"crashes: {kinds['kill']} SIGKILL, {kinds['stop']} SIGTERM (bound "
        f"{config.stop_bound_s:g} s), broker {kinds['kill-broker']}, Redis {kinds['kill-redis']}"
        + (f", PostgreSQL {kinds['kill-postgres']}" if config.db == "postgres" else "")
    )
    for record in gathered.records:
        say("  " + record.describe())
    stops = [r.stop_s for r in gathered.records if r.stop_s is not None]
    if stops:
        say("SIGTERM stop durations: " + ", ".join(f"{s:.1f} s" for s in stops))
    for line in skipped:
        say(f"skipped: {line}")
    for line in gathered.notes:
        say(f"note: {line}")
    for failure in verdict.failures:
        say(f"FAILED {failure.rule}: {failure.message}: {failure.count}")
        for example in failure.examples[:5]:
            say(f"    {example}")
    say(
        "timings: "
        + ", ".join(f"{k.removesuffix('_s')} {v:.0f} s" for k, v in gathered.timings.items())
    )
    say(f"report: {config.out_dir / 'latest.json'} (logs: {workdir})")
    say(f"==> chaos {verdict.word}")


def _pairs(values: Mapping[str, int]) -> str:
    return ", ".join(f"{key} {value}" for key, value in values.items()) or "none"


def _prune(out_dir: Path, *, keep: int) -> None:
    """Keep the workdirs of the last `keep` runs (each holds a broker's data)."""
    runs = sorted((path for path in out_dir.iterdir() if path.is_dir()), key=lambda p: p.name)
    for old in itertools.islice(runs, max(0, len(runs) - keep)):
        shutil.rmtree(old, ignore_errors=True)
