"""Property tests of the renewal saga, driven through the consumer the service wires.

For any interleaving, duplication and delay of ONE renewal's events, the saga ends in one final
state, puts each command in its outbox once, and never asks for a refund without a capture.

The world around accounts is modelled as it behaves, not as a free-for-all:

- frontends publish the RenewalRequested events: the original and, sometimes, re-requests of the
  same renewal_id with the same content or with other content, each a distinct CloudEvent; a
  requester may use the renewal_id (its idempotency key) as the CloudEvents id;
- billing answers a PaymentRequested only once accounts' outbox relay has published it, with
  PaymentSettled or PaymentFailed, never both; or, for a payment it holds first (card, PayPal),
  with PaymentAuthorized, and then captures it (PaymentSettled) only once provisioning has
  published ProfileActivated, or releases it (PaymentRefunded `via` `void`) when asked;
- provisioning answers a PaymentSettled (or a PaymentAuthorized) once billing has published it
  (it consumes that topic on its own, so ProfileActivated may reach accounts before the payment
  does), with ProfileActivated or ActivationFailed;
- billing answers a RefundRequested, once it is published, with PaymentRefunded;
- every published event is delivered at least once and in any order; any of them may be
  delivered again (the same Kafka message: same bytes, same offset) or re-published (the same
  CloudEvents id in a new envelope, from a producer's relay that crashed between send and mark);
- the deadline sweep runs at any point, after the saga's clock moved on by a day, or to a
  second before or after the deadline the saga should be waiting on.

A late event is one delivered after the sweep has moved the saga past the deadline of the state
it waited in. That is realistic although billing and provisioning answer within the deadlines
(billing within minutes of dunning; provisioning gives up after its 24 h SLA, an hour before
accounts' 25 h activation deadline): each starts its clock when it consumes, and a consumer that
lags (an outage, a rebalance storm, scaling behind a sales peak) delivers an answer made in time
after accounts' deadline. The sweep runs apart from the consumer, so it fires while the answer
waits in Kafka. Any in-flight event may therefore arrive after any sweep.

Final states: `accounts.domain.TERMINAL` (ACTIVATED, REJECTED, PAYMENT_FAILED, REFUNDED,
CANCELLED), and TIMED_OUT for a saga that never saw a capture (nothing is left to compensate); a
timed-out saga that did see one waits for provisioning's answer and ends ACTIVATED or REFUNDED.

Once every event is delivered and the outbox relayed, these must hold:

- the saga rests in a final state with no deadline left, a later sweep changes nothing, and its
  timeline never leaves a terminal state once it reached one;
- PaymentRequested and RefundRequested are each in the outbox at most once (rows and distinct
  ids); the saga's own RenewalRejected at most once; one conflicting_duplicate rejection per
  distinct conflicting request, and no two RenewalRejected rows share an id;
- no RefundRequested before a PaymentSettled or PaymentAuthorized reached accounts (checked
  after every step), and it names the captured or held payment and amount; nothing is
  dead-lettered; the inbox holds each delivered event id once;
- the final state is the one the facts call for: the winning request invalid: REJECTED; the
  payment failed: PAYMENT_FAILED, or TIMED_OUT if its deadline passed first; captured and
  activated, even after a deadline passed: ACTIVATED (provisioning cancels a bundle that is not
  live by its own deadline, so its ProfileActivated means a plan that runs); captured and the
  activation failed: REFUNDED; a refund was requested exactly in that last case;
- the sweep expires the saga exactly when the clock has passed the deadline of the state it
  waits in (set on entering PAYMENT_PENDING and PAID), never early, never late;
- the card carries the plan of an ACTIVATED saga, and nothing that never reached accounts.

A late answer never leaves a live bundle refunded (`test_a_late_answer_...` below): the
deadline sweep does not refund by itself, provisioning's answer does.

The saga's transitions are code in `accounts.renewals.saga`, not a table in `accounts.domain`, so
the pure-domain property here is on the request fingerprint, which tells a duplicate from a
conflict. Hypothesis settings come from the profiles in conftest.py (`ci` is derandomized).
"""

import itertools
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pytest
from accounts.bootstrap import Accounts
from accounts.cards.plans import plans_of
from accounts.catalogue.plans import seed_catalogue
from accounts.domain import TERMINAL, SagaStatus, request_fingerprint
from accounts.renewals.deadlines import sweep_deadlines
from accounts.store import Card, CardPlan, Renewal, RenewalStep, User
from accounts_testkit import ICCID, OTHER_ICCID, Clock, RecordingPublisher, wired_accounts
from esim_core.messaging.consumer import EventConsumer, MessageInfo
from esim_core.messaging.inbox import InboxEntry
from esim_core.messaging.outbox import OutboxMessage
from esim_core.persistence.db import Database
from esim_schemas import (
    ActivationFailed,
    EventData,
    PaymentAuthorized,
    PaymentFailed,
    PaymentRefunded,
    PaymentRequested,
    PaymentSettled,
    ProfileActivated,
    RefundRequested,
    RenewalRequested,
    new_event,
)
from hypothesis import currently_in_test_context, event, given, note
from hypothesis import strategies as st
from sqlmodel import col, delete, func, select

RENEWAL_ID = uuid.UUID("5b0f3c2e-8d1a-4f6b-9c3e-2a7d4e6f8a10")
USER_ID = "u-1"
START = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
PAYMENT_DEADLINE_S = 48 * 3600
ACTIVATION_DEADLINE_S = 25 * 3600
# Drawn steps per example, and how many of them may be other than progress (a redelivery, a
# re-publish, a sweep); past either bound the rest is delivered in order.
MAX_STEPS = 60
MAX_DETOURS = 10

PAYMENT_REQUESTED = PaymentRequested.event_type
REFUND_REQUESTED = RefundRequested.event_type
RENEWAL_REJECTED = "esim.renewal.rejected.v1"
CONFLICT = "conflicting_duplicate"

_IDS = uuid.uuid5(uuid.NAMESPACE_URL, "https://esim.example/tests/saga-properties")


def fixed_id(name: str) -> str:
    """A stable CloudEvents id for an outside producer's event, so examples replay alike."""
    return str(uuid.uuid5(_IDS, name))


def tell(text: str) -> None:
    """Show `text` with a failing example: a Hypothesis note, or printed in a plain test."""
    if currently_in_test_context():
        note(text)
    else:
        print(text)


def count(label: str) -> None:
    """Count an example in Hypothesis' statistics (`--hypothesis-show-statistics`)."""
    if currently_in_test_context():
        event(label)


@dataclass(frozen=True)
class Content:
    """What a RenewalRequested asks for; `rejection` is why accounts must refuse it, if so."""

    name: str
    plan_code: str = "JP-30D-10GB"
    iccid: str = ICCID
    token: str = "alipay_ok"
    start: str = "now"
    rejection: str | None = None

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.plan_code, self.iccid, self.token, self.start)


VALID = Content("the plan asked for")
INVALID = (
    Content("an unknown plan", plan_code="XX-1D", rejection="unknown_plan"),
    Content("a plan no longer sold", plan_code="RU-30D-10GB", rejection="plan_not_available"),
    Content("someone else's card", iccid=OTHER_ICCID, rejection="card_not_owned"),
)
OTHER_CONTENT = (
    Content("another plan", plan_code="JP-1D-1GB"),
    Content("another token", token="alipay_other_ok"),
    Content("a start after the current plan", start="after_current"),
    *INVALID,
)


@dataclass(frozen=True)
class Ask:
    """One RenewalRequested a frontend publishes."""

    label: str
    content: Content
    event_id: str


@dataclass(frozen=True)
class Scenario:
    """What the outside world will do for this renewal, drawn before anything happens."""

    asks: tuple[Ask, ...]
    payment: str  # "settled", "failed" or "authorized" (held, captured after the activation)
    activation: str  # "active", "queued" or "failed"


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    # Mostly a valid original (shrinks to it); sometimes one accounts must reject.
    pick = draw(st.integers(0, 9))
    original = VALID if pick < 8 else INVALID[pick % 3]
    # None: a re-request with the same content.
    again = draw(st.lists(st.sampled_from((None, *OTHER_CONTENT)), max_size=2))
    contents = [original] + [item or original for item in again]
    keyed = draw(st.sampled_from([None, *range(len(contents))]))
    asks = tuple(
        Ask(
            label=f"RenewalRequested#{index} ({content.name}, id = renewal_id)"
            if index == keyed
            else f"RenewalRequested#{index} ({content.name})",
            content=content,
            event_id=str(RENEWAL_ID) if index == keyed else fixed_id(f"request-{index}"),
        )
        for index, content in enumerate(contents)
    )
    return Scenario(
        asks=asks,
        payment=draw(st.sampled_from(("settled", "failed", "authorized"))),
        activation=draw(st.sampled_from(("active", "queued", "failed"))),
    )


@dataclass
class Message:
    """One event as it travels through Kafka to accounts."""

    label: str
    kind: str
    topic: str
    event_id: str
    body: bytes
    offset: int
    data: EventData
    source: str
    ask: Ask | None = None
    deliveries: int = 0


@dataclass
class Facts:
    """What accounts was told, in order, and the deadline its saga should be waiting on.

    The deadline follows the design: set on entering PAYMENT_PENDING and PAID, cleared on
    leaving them; the sweep must expire the saga exactly when the clock has passed it.
    """

    order: list[str] = field(default_factory=list)
    winner: Ask | None = None
    conflicts: set[str] = field(default_factory=set)
    deadline: datetime | None = None
    paid: bool = False

    @property
    def waiting_for(self) -> str:
        return "activation" if self.paid else "payment"

    def told(self, message: Message, now: datetime) -> None:
        kind = message.kind
        self.order.append(kind)
        if kind == "request":
            assert message.ask is not None
            if self.winner is None:
                self.winner = message.ask
                if message.ask.content.rejection is None:
                    self.deadline = now + timedelta(seconds=PAYMENT_DEADLINE_S)
            elif message.ask.content.key != self.winner.content.key:
                self.conflicts.add(message.event_id)
        elif kind in ("settled", "authorized", "captured"):
            # The first word of a payment (a capture or a hold) starts the wait for the
            # activation; the second (a hold's capture, or a late hold) changes no deadline.
            if not self.paid:
                waiting = self.deadline is not None
                if waiting and "activation_failed" not in self.order:
                    self.deadline = now + timedelta(seconds=ACTIVATION_DEADLINE_S)
                else:
                    self.deadline = None
            self.paid = True
        elif kind in ("failed", "activated") or (kind == "activation_failed" and self.paid):
            # An outcome ends the wait; an activation failure before the capture does not.
            self.deadline = None

    def sweep_due(self, now: datetime) -> bool:
        return self.deadline is not None and self.deadline <= now

    def expired(self) -> None:
        self.order.append("expired")
        self.deadline = None

    def outcome(self) -> str:
        """The final state these facts call for."""
        assert self.winner is not None, "no request was ever handled"
        if self.winner.content.rejection is not None:
            return SagaStatus.REJECTED
        on_time = (
            self.order[: self.order.index("expired")] if "expired" in self.order else self.order
        )
        if "failed" in self.order:
            return SagaStatus.PAYMENT_FAILED if "failed" in on_time else SagaStatus.TIMED_OUT
        if "activated" in self.order:
            # Provisioning's ProfileActivated means a bundle that runs, however late it comes.
            return SagaStatus.ACTIVATED
        # Captured, and then the activation failed: compensated.
        return SagaStatus.REFUNDED


class World:
    """Accounts as wired by its bootstrap, and the outside world that answers its commands."""

    def __init__(self, harness: "Harness", scenario: Scenario) -> None:
        self.harness = harness
        self.accounts = harness.accounts
        self.consumer = harness.consumer
        self.scenario = scenario
        self.clock = harness.clock
        self.messages: list[Message] = []
        self.offsets = itertools.count()
        self.seen: set[str] = set()
        self.facts = Facts()
        self.trace: list[str] = []
        self.read_from_relay = 0
        self.detours = 0
        self.charge: PaymentRequested | None = None
        self.refund: RefundRequested | None = None
        self.settled: PaymentSettled | None = None
        self.held: PaymentAuthorized | None = None
        self.answered: set[str] = set()
        for ask in scenario.asks:
            self.publish(
                RenewalRequested(
                    renewal_id=RENEWAL_ID,
                    user_id=USER_ID,
                    iccid=ask.content.iccid,
                    plan_code=ask.content.plan_code,
                    payment={"method": "alipay", "token": ask.content.token},
                    start=ask.content.start,
                    requested_at=START,
                ),
                label=ask.label,
                kind="request",
                source="/frontends/web",
                event_id=ask.event_id,
                ask=ask,
            )

    @property
    def database(self) -> Database:
        return self.accounts.runtime.database

    def publish(
        self,
        data: EventData,
        *,
        label: str,
        kind: str,
        source: str,
        event_id: str,
        ask: Ask | None = None,
        at: datetime | None = None,
    ) -> Message:
        envelope = new_event(data, source=source, event_id=event_id, time=at or self.clock())
        message = Message(
            label=label,
            kind=kind,
            topic=self.accounts.runtime.topics.for_event(type(data)),
            event_id=event_id,
            body=envelope.to_json(),
            offset=next(self.offsets),
            data=data,
            source=source,
            ask=ask,
        )
        self.messages.append(message)
        return message

    def actions(self) -> dict[str, dict[str, Callable[[], Awaitable[None]]]]:
        """What may happen next, by kind: progress, the same event again, or a deadline sweep."""
        progress: dict[str, Callable[[], Awaitable[None]]] = {}
        for message in self.messages:
            if not message.deliveries:
                progress[f"deliver {message.label}"] = partial(self.deliver, message)
        if self.charge is not None and "billing" not in self.answered:
            progress["billing answers the charge"] = self.billing_answers
        if self.paid() is not None and "provisioning" not in self.answered:
            progress["provisioning answers the capture"] = self.provisioning_answers
        activated = any(message.kind == "activated" for message in self.messages)
        if self.held is not None and activated and "capture" not in self.answered:
            progress["billing captures the hold"] = self.billing_captures
        if self.refund is not None and "refund" not in self.answered:
            progress["billing answers the refund"] = self.billing_refunds
        progress["relay the accounts outbox"] = self.relay
        again: dict[str, Callable[[], Awaitable[None]]] = {}
        for message in self.messages:
            if message.deliveries:
                again[f"redeliver {message.label}"] = partial(self.deliver, message)
        for message in list(self.messages):
            if "re-published" not in message.label:
                again[f"re-publish {message.label}"] = partial(self.republish, message)
        sweeps: dict[str, Callable[[], Awaitable[None]]] = {}
        deadline, waiting_for = self.facts.deadline, self.facts.waiting_for
        if deadline is not None:
            left = max((deadline - self.clock()).total_seconds(), 1.0)
            sweeps[f"sweep a second after the {waiting_for} deadline"] = partial(
                self.sweep, left + 1
            )
            sweeps[f"sweep a second before the {waiting_for} deadline"] = partial(
                self.sweep, left - 1
            )
        sweeps["sweep a day later"] = partial(self.sweep, 24 * 3600.0)
        return {"progress": progress, "again": again, "sweep": sweeps}

    def calm(self) -> bool:
        """Nothing in flight: every event delivered and every outside answer given."""
        progress = self.actions()["progress"]
        return list(progress) == ["relay the accounts outbox"]

    def next_step(self) -> st.SearchStrategy[str]:
        """A step to take: progress six times in ten (and shrinks to it), else a detour.

        Detours are the same event again (two in ten) or a deadline sweep (two in ten, half of
        them just past the deadline the saga waits on, the moment that matters most).
        """
        acts = self.actions()
        progress = list(acts["progress"])
        if self.detours >= MAX_DETOURS:
            return st.sampled_from(progress)
        sweeps = list(acts["sweep"])
        kinds = [progress] * 6 + [list(acts["again"])] * 2 + [sweeps[:1], sweeps]
        return st.integers(0, len(kinds) - 1).flatmap(lambda kind: st.sampled_from(kinds[kind]))

    def act(self, label: str) -> Callable[[], Awaitable[None]]:
        return next(acts[label] for acts in self.actions().values() if label in acts)

    async def step(self, label: str, act: Callable[[], Awaitable[None]]) -> None:
        self.trace.append(label)
        if label not in self.actions()["progress"]:
            self.detours += 1
        await act()
        await self.check_along_the_way()

    async def deliver(self, message: Message) -> None:
        key = message.data.subject()
        info = MessageInfo(
            topic=message.topic,
            partition=0,
            offset=message.offset,
            key=key.encode() if key is not None else None,
        )
        await self.consumer.handle(message.body, info)
        message.deliveries += 1
        if message.event_id not in self.seen:
            self.seen.add(message.event_id)
            self.facts.told(message, self.clock())

    async def republish(self, message: Message) -> None:
        copies = sum(1 for other in self.messages if other.event_id == message.event_id)
        self.publish(
            message.data,
            label=f"{message.label} re-published#{copies}",
            kind=message.kind,
            source=message.source,
            event_id=message.event_id,
            ask=message.ask,
            at=self.clock() + timedelta(milliseconds=copies),
        )

    async def relay(self) -> None:
        sent = self.harness.relayed
        await self.accounts.runtime.relay.relay_once()
        for _topic, value, _headers in sent.sent[self.read_from_relay :]:
            body = json.loads(value)
            if body["type"] == PAYMENT_REQUESTED and self.charge is None:
                self.charge = PaymentRequested.model_validate(body["data"])
            elif body["type"] == REFUND_REQUESTED and self.refund is None:
                self.refund = RefundRequested.model_validate(body["data"])
        self.read_from_relay = len(sent.sent)

    def paid(self) -> PaymentSettled | PaymentAuthorized | None:
        """What billing said it took or holds first: provisioning activates on it."""
        return self.held or self.settled

    async def billing_answers(self) -> None:
        charge = self.charge
        assert charge is not None
        self.answered.add("billing")
        if self.scenario.payment == "authorized":
            self.held = PaymentAuthorized(
                renewal_id=RENEWAL_ID,
                payment_id="pay_1",
                iccid=charge.iccid,
                plan=charge.plan,
                price=charge.price,
                method="paypal",
                provider_reference="auth_1",
                authorized_at=self.clock(),
                capture_before=self.clock() + timedelta(days=29),
                start=charge.start,
            )
            self.publish(
                self.held,
                label="PaymentAuthorized",
                kind="authorized",
                source="/services/billing",
                event_id=fixed_id("authorized"),
            )
        elif self.scenario.payment == "settled":
            self.settled = PaymentSettled(
                renewal_id=RENEWAL_ID,
                payment_id="pay_1",
                iccid=charge.iccid,
                plan=charge.plan,
                price=charge.price,
                method=charge.payment.method,
                provider_reference="ch_1",
                attempts=1,
                settled_at=self.clock(),
                start=charge.start,
            )
            self.publish(
                self.settled,
                label="PaymentSettled",
                kind="settled",
                source="/services/billing",
                event_id=fixed_id("settled"),
            )
        else:
            failed = PaymentFailed(
                renewal_id=RENEWAL_ID,
                payment_id="pay_1",
                iccid=charge.iccid,
                reason="declined",
                attempts=1,
                failed_at=self.clock(),
            )
            self.publish(
                failed,
                label="PaymentFailed",
                kind="failed",
                source="/services/billing",
                event_id=fixed_id("failed"),
            )

    async def billing_captures(self) -> None:
        """Billing saw ProfileActivated: it captures the hold and says so (PaymentSettled)."""
        held = self.held
        assert held is not None
        self.answered.add("capture")
        self.settled = PaymentSettled(
            renewal_id=RENEWAL_ID,
            payment_id=held.payment_id,
            iccid=held.iccid,
            plan=held.plan,
            price=held.price,
            method=held.method,
            provider_reference=held.provider_reference,
            attempts=1,
            settled_at=self.clock(),
            start=held.start,
        )
        self.publish(
            self.settled,
            label="PaymentSettled (the hold captured)",
            kind="captured",
            source="/services/billing",
            event_id=fixed_id("captured"),
        )

    async def provisioning_answers(self) -> None:
        settled = self.paid()
        assert settled is not None
        self.answered.add("provisioning")
        data: EventData
        if self.scenario.activation == "failed":
            data = ActivationFailed(
                renewal_id=RENEWAL_ID,
                iccid=settled.iccid,
                reason="bundle_rejected",
                attempts=3,
                failed_at=self.clock(),
            )
            label, kind = "ActivationFailed", "activation_failed"
        else:
            valid_from = (
                START if self.scenario.activation == "active" else START + timedelta(days=30)
            )
            data = ProfileActivated(
                renewal_id=RENEWAL_ID,
                iccid=settled.iccid,
                plan_code=settled.plan.code,
                data_mb=settled.plan.data_mb,
                valid_from=valid_from,
                valid_until=valid_from + timedelta(days=settled.plan.validity_days),
                bundle_state=self.scenario.activation,
                platform_reference="ord_1",
                activated_at=self.clock(),
            )
            label, kind = "ProfileActivated", "activated"
        self.publish(
            data, label=label, kind=kind, source="/services/provisioning", event_id=fixed_id(kind)
        )

    async def billing_refunds(self) -> None:
        refund = self.refund
        paid = self.paid()
        assert refund is not None and paid is not None
        self.answered.add("refund")
        # Billing refunds only a payment of this renewal it took or holds, for its amount; a
        # hold never captured is released (void).
        assert (refund.payment_id, refund.price) == (paid.payment_id, paid.price)
        released = self.held is not None and self.settled is None
        self.publish(
            PaymentRefunded(
                renewal_id=RENEWAL_ID,
                payment_id=refund.payment_id,
                refund_id="void_1" if released else "re_1",
                iccid=refund.iccid,
                price=refund.price,
                refunded_at=self.clock(),
                via="void" if released else None,
            ),
            label="PaymentRefunded",
            kind="refunded",
            source="/services/billing",
            event_id=fixed_id("refunded"),
        )

    async def sweep(self, seconds: float) -> None:
        self.clock.advance(seconds)
        due = self.facts.sweep_due(self.clock())
        expired = await sweep_deadlines(self.database, self.accounts.saga)
        assert expired == int(due), (
            f"the sweep at {self.clock()} expired {expired} saga(s); "
            f"the deadline was {self.facts.deadline}"
        )
        if expired:
            self.facts.expired()

    async def settle_down(self) -> None:
        """Deliver everything still in flight and let every outside answer come, until calm."""
        for _ in range(20):
            progressed = False
            for message in list(self.messages):
                if not message.deliveries:
                    await self.step(f"deliver {message.label}", partial(self.deliver, message))
                    progressed = True
            before = self.read_from_relay
            await self.relay()
            if self.read_from_relay != before:
                self.trace.append("relay the accounts outbox")
                progressed = True
            acts = self.actions()["progress"]
            for label in (
                "billing answers the charge",
                "provisioning answers the capture",
                "billing captures the hold",
                "billing answers the refund",
            ):
                if label in acts:
                    await self.step(label, acts[label])
                    progressed = True
            if not progressed:
                return
        raise AssertionError("the world never calmed down")

    async def outbox(self, event_type: str) -> list[dict[str, Any]]:
        async with self.database.session() as session:
            rows = (
                await session.exec(
                    select(OutboxMessage)
                    .where(OutboxMessage.event_type == event_type)
                    .order_by(col(OutboxMessage.id))
                )
            ).all()
        return [json.loads(row.value) for row in rows]

    async def check_along_the_way(self) -> None:
        """What must hold after every step, not only at the end."""
        assert self.harness.dead_letters.sent == [], "an event of a real run was dead-lettered"
        if {"settled", "authorized", "captured"} & set(self.facts.order):
            return  # from here on a refund has its capture or hold; no need to look
        async with self.database.session() as session:
            refunds = (
                await session.exec(
                    select(func.count())
                    .select_from(OutboxMessage)
                    .where(OutboxMessage.event_type == REFUND_REQUESTED)
                )
            ).one()
        if refunds:
            raise AssertionError("a refund was requested before any capture or hold")

    async def check_final(self) -> None:
        tell("steps: " + " -> ".join(self.trace))
        tell("facts: " + " -> ".join(self.facts.order))
        async with self.database.session() as session:
            saga = await session.get(Renewal, str(RENEWAL_ID))
            steps = (
                await session.exec(
                    select(RenewalStep)
                    .where(RenewalStep.renewal_id == str(RENEWAL_ID))
                    .order_by(col(RenewalStep.id))
                )
            ).all()
            inbox = (await session.exec(select(func.count()).select_from(InboxEntry))).one()
            plans = (await plans_of(session, [ICCID])).get(ICCID, [])
        assert saga is not None
        tell("timeline: " + " -> ".join(f"{s.step}:{s.status}" for s in steps))

        # One final state, reached once and never left.
        final = saga.status in TERMINAL or (
            saga.status == SagaStatus.TIMED_OUT and saga.payment_id is None
        )
        assert final, f"the saga rests in {saga.status}, which is not final"
        assert saga.deadline_at is None
        reached = [s.status for s in steps if s.status in TERMINAL]
        if reached:
            assert reached == [saga.status] * len(reached), "the saga left a terminal state"
            first = next(i for i, s in enumerate(steps) if s.status in TERMINAL)
            assert all(s.status == saga.status for s in steps[first:])

        # Each command once, by distinct ids and by rows.
        payments = await self.outbox(PAYMENT_REQUESTED)
        refunds = await self.outbox(REFUND_REQUESTED)
        rejections = await self.outbox(RENEWAL_REJECTED)
        for name, rows in (("PaymentRequested", payments), ("RefundRequested", refunds)):
            assert len(rows) <= 1, f"{name} is in the outbox {len(rows)} times"
            assert len({row["id"] for row in rows}) == len(rows)
        ids = [row["id"] for row in rejections]
        assert len(set(ids)) == len(ids), f"two RenewalRejected rows share an id: {ids}"
        own = [row for row in rejections if row["data"]["reason"] != CONFLICT]
        conflicts = [row for row in rejections if row["data"]["reason"] == CONFLICT]
        assert len(own) <= 1
        # A conflicting request is answered once per distinct request, however often it came.
        assert len(conflicts) == len(self.facts.conflicts)
        assert inbox == len(self.seen), "each event id is in the inbox once"

        # The final state matches what the outside world did.
        winner = self.facts.winner
        assert winner is not None
        expected = self.facts.outcome()
        count(f"ends {expected}")
        if self.facts.conflicts:
            keyed = str(RENEWAL_ID) in self.facts.conflicts
            count("a conflicting request" + (" whose id is the renewal_id" if keyed else ""))
        if "expired" in self.facts.order:
            late = self.facts.order[self.facts.order.index("expired") + 1 :]
            count("a deadline passed" + (f", then came {', '.join(late)}" if late else ""))
        assert saga.status == expected, f"ended {saga.status}, the facts call for {expected}"
        assert saga.plan_code == winner.content.plan_code
        if winner.content.rejection is not None:
            assert [row["data"]["reason"] for row in own] == [winner.content.rejection]
            assert payments == []
        else:
            assert own == []
            assert len(payments) == 1
        if refunds:
            paid = self.paid()
            assert paid is not None
            assert refunds[0]["data"]["payment_id"] == paid.payment_id
            assert refunds[0]["data"]["price"] == paid.price.model_dump()
        assert bool(refunds) == (expected == SagaStatus.REFUNDED)

        # The card carries the plan once the saga is ACTIVATED, and nothing it was not told of.
        carried = [(plan.renewal_id, plan.plan_code, plan.state) for plan in plans]
        if saga.status == SagaStatus.ACTIVATED and self.scenario.activation == "queued":
            assert carried == [(str(RENEWAL_ID), winner.content.plan_code, "queued")]
        elif saga.status == SagaStatus.ACTIVATED:
            assert carried == [(str(RENEWAL_ID), winner.content.plan_code, "active")]
        elif "activated" not in self.facts.order:
            assert carried == []

        # Calm means calm: nothing is left waiting for a deadline.
        self.clock.advance(PAYMENT_DEADLINE_S + ACTIVATION_DEADLINE_S)
        assert await sweep_deadlines(self.database, self.accounts.saga) == 0


class Harness:
    """The accounts service built once per module; each example starts from a clean database."""

    def __init__(
        self,
        accounts: Accounts,
        consumer: EventConsumer,
        clock: Clock,
        relayed: RecordingPublisher,
        dead_letters: RecordingPublisher,
    ) -> None:
        self.accounts = accounts
        self.consumer = consumer
        self.clock = clock
        self.relayed = relayed
        self.dead_letters = dead_letters

    def __repr__(self) -> str:
        return "Harness(accounts as bootstrap wires it, over in-memory SQLite)"

    async def world(self, scenario: Scenario) -> World:
        self.clock.reset()
        self.relayed.sent.clear()
        self.dead_letters.sent.clear()
        async with self.accounts.runtime.database.session() as session:
            for table in (InboxEntry, OutboxMessage, RenewalStep, Renewal, CardPlan, Card, User):
                await session.exec(delete(table))
            session.add(
                User(id=USER_ID, email="u-1@example.com", password_hash="x", locale="zh-CN")
            )
            session.add(Card(iccid=ICCID, activation_code="LPA:1$x$y", user_id=USER_ID))
            session.add(Card(iccid=OTHER_ICCID, activation_code="LPA:1$x$z"))
        return World(self, scenario)


@pytest.fixture(scope="module")
async def harness() -> AsyncIterator[Harness]:
    clock = Clock(START)
    async with wired_accounts(
        clock, payment_deadline_s=PAYMENT_DEADLINE_S, activation_deadline_s=ACTIVATION_DEADLINE_S
    ) as wired:
        await seed_catalogue(wired.accounts.runtime.database)
        yield Harness(wired.accounts, wired.consumer, clock, wired.relayed, wired.dead_letters)


# Shrinking a failure takes minutes on a busy machine; Hypothesis stops itself after five.
@pytest.mark.timeout(900)
@given(scenario=scenarios(), data=st.data())
async def test_any_interleaving_of_one_renewal_ends_in_one_final_state(
    harness: Harness, scenario: Scenario, data: st.DataObject
) -> None:
    world = await harness.world(scenario)
    for _ in range(MAX_STEPS):
        if world.calm():
            await world.relay()  # the relay runs on its own; what it sends may start more
            if world.calm():
                break
        label = data.draw(world.next_step(), label="step")
        await world.step(label, world.act(label))
    await world.settle_down()
    await world.check_final()


def one_request(content: Content = VALID, event_id: str | None = None) -> tuple[Ask, ...]:
    return (Ask("RenewalRequested", content, event_id or fixed_id("request-0")),)


# Interleavings that matter most, run on every run whatever the random ones drew: the same
# checks as the property, from named starts (the rest is delivered in order).
NAMED: dict[str, tuple[Scenario, list[str]]] = {
    "activation before the capture": (
        Scenario(one_request(), "settled", "active"),
        [
            "deliver RenewalRequested",
            "relay the accounts outbox",
            "billing answers the charge",
            "provisioning answers the capture",
            "deliver ProfileActivated",
        ],
    ),
    "activation failure before the capture": (
        Scenario(one_request(), "settled", "failed"),
        [
            "deliver RenewalRequested",
            "relay the accounts outbox",
            "billing answers the charge",
            "provisioning answers the capture",
            "deliver ActivationFailed",
        ],
    ),
    "a paid saga times out, then the activation fails": (
        Scenario(one_request(), "settled", "failed"),
        [
            "deliver RenewalRequested",
            "relay the accounts outbox",
            "billing answers the charge",
            "deliver PaymentSettled",
            "sweep a second after the activation deadline",
            "provisioning answers the capture",
            "deliver ActivationFailed",
        ],
    ),
    "the payment deadline passes, then the charge fails": (
        Scenario(one_request(), "failed", "active"),
        [
            "deliver RenewalRequested",
            "relay the accounts outbox",
            "sweep a second after the payment deadline",
            "billing answers the charge",
            "deliver PaymentFailed",
        ],
    ),
    "the payment deadline passes, then the capture comes": (
        Scenario(one_request(), "settled", "queued"),
        [
            "deliver RenewalRequested",
            "relay the accounts outbox",
            "sweep a second after the payment deadline",
            "billing answers the charge",
            "deliver PaymentSettled",
        ],
    ),
    "the payment deadline passes, then the activation fails before the capture arrives": (
        Scenario(one_request(), "settled", "failed"),
        [
            "deliver RenewalRequested",
            "relay the accounts outbox",
            "billing answers the charge",
            "provisioning answers the capture",
            "sweep a second after the payment deadline",
            "deliver ActivationFailed",
            "deliver PaymentSettled",
        ],
    ),
    "every event twice, and re-published": (
        Scenario(one_request(), "settled", "failed"),
        [
            "deliver RenewalRequested",
            "redeliver RenewalRequested",
            "relay the accounts outbox",
            "billing answers the charge",
            "re-publish PaymentSettled",
            "deliver PaymentSettled re-published#1",
            "deliver PaymentSettled",
            "provisioning answers the capture",
            "deliver ActivationFailed",
            "redeliver ActivationFailed",
            "relay the accounts outbox",
            "billing answers the refund",
            "deliver PaymentRefunded",
            "redeliver PaymentRefunded",
            "redeliver PaymentSettled",
        ],
    ),
    "an invalid request, then a conflict whose id is the renewal_id": (
        Scenario(
            (
                Ask("RenewalRequested", INVALID[0], fixed_id("request-0")),
                Ask("RenewalRequested again", OTHER_CONTENT[0], str(RENEWAL_ID)),
            ),
            "settled",
            "active",
        ),
        ["deliver RenewalRequested", "deliver RenewalRequested again"],
    ),
    "a hold captured after the activation, the capture heard before the hold": (
        Scenario(one_request(), "authorized", "active"),
        [
            "deliver RenewalRequested",
            "relay the accounts outbox",
            "billing answers the charge",
            "provisioning answers the capture",
            "billing captures the hold",
            "deliver PaymentSettled (the hold captured)",
            "deliver ProfileActivated",
            "deliver PaymentAuthorized",
        ],
    ),
    "a hold released after the activation failed, then the activation deadline": (
        Scenario(one_request(), "authorized", "failed"),
        [
            "deliver RenewalRequested",
            "relay the accounts outbox",
            "billing answers the charge",
            "deliver PaymentAuthorized",
            "sweep a second after the activation deadline",
            "provisioning answers the capture",
            "deliver ActivationFailed",
            "relay the accounts outbox",
            "billing answers the refund",
            "deliver PaymentRefunded",
        ],
    ),
}


@pytest.mark.parametrize(("scenario", "steps"), NAMED.values(), ids=list(NAMED))
async def test_named_interleavings_end_in_one_final_state(
    harness: Harness, scenario: Scenario, steps: list[str]
) -> None:
    world = await harness.world(scenario)
    for label in steps:
        await world.step(label, world.act(label))
    await world.settle_down()
    await world.check_final()


CONTENT_FIELDS = ("user_id", "iccid", "plan_code", "method", "token", "start")


@given(
    first=st.fixed_dictionaries({name: st.text(max_size=6) for name in CONTENT_FIELDS}),
    second=st.fixed_dictionaries({name: st.text(max_size=6) for name in CONTENT_FIELDS}),
)
def test_fingerprint_tells_a_true_duplicate_from_a_conflict(
    first: dict[str, str], second: dict[str, str]
) -> None:
    assert (request_fingerprint(**first) == request_fingerprint(**second)) == (first == second)


LATE = {
    "a capture after the payment deadline": [
        "deliver RenewalRequested",
        "relay the accounts outbox",
        "sweep a second after the payment deadline",
        "billing answers the charge",
        "provisioning answers the capture",
        "deliver PaymentSettled",
        "deliver ProfileActivated",
    ],
    "an activation after the activation deadline": [
        "deliver RenewalRequested",
        "relay the accounts outbox",
        "billing answers the charge",
        "deliver PaymentSettled",
        "provisioning answers the capture",
        "sweep a second after the activation deadline",
        "deliver ProfileActivated",
    ],
}


@pytest.mark.parametrize("steps", LATE.values(), ids=list(LATE))
async def test_a_late_answer_never_leaves_a_live_bundle_refunded(
    harness: Harness, steps: list[str]
) -> None:
    """CONTRACT: exactly one of ProfileActivated, PaymentFailed, RenewalRejected and
    PaymentRefunded ends a renewal, and a bundle carriers were told about either stays the
    renewal's outcome or is cancelled (BundleCancelled).

    The property test's shrunk example on main: the deadline passes while PaymentSettled (or
    ProfileActivated) waits in Kafka; accounts timed the saga out and requested a refund, but
    provisioning consumes PaymentSettled on its own and activates the bundle, so the traveller
    kept a live plan that was paid back. Now the sweep only marks the saga TIMED_OUT and the
    outcome is provisioning's (which cancels a bundle not live by its own deadline first): the
    plan runs and the saga ends ACTIVATED, with no refund.
    """
    world = await harness.world(Scenario(one_request(), "settled", "active"))
    for label in steps:
        await world.step(label, world.act(label))
    await world.settle_down()
    async with world.database.session() as session:
        saga = await session.get(Renewal, str(RENEWAL_ID))
        plans = (await plans_of(session, [ICCID])).get(ICCID, [])
    assert saga is not None
    tell(f"saga {saga.status}, card plans {[plan.plan_code for plan in plans]}")
    assert saga.status == SagaStatus.ACTIVATED
    assert await world.outbox(REFUND_REQUESTED) == []
    assert [plan.plan_code for plan in plans] == ["JP-30D-10GB"]
