"""The chaos run's verdict: what was asked, what the platform and the sandboxes show, PASS or FAIL.

Pure: it takes what the harness gathered from the outside (saga statuses over HTTP, terminal
events from the topics, the sandboxes' ledgers, the stops it timed) and names every rule that
does not hold, with the renewals that break it. `tests/chaos/test_verdict.py` makes each rule
fail once, so a checker that cannot fail is caught.
"""

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: Saga states in which a renewal is over, and the terminal event kind that announces each.
TERMINAL_EVENT_OF: dict[str, str] = {
    "ACTIVATED": "activated",
    "PAYMENT_FAILED": "payment_failed",
    "REJECTED": "rejected",
    "REFUNDED": "refunded",
}
#: Saga states with a capture at the gateway.
CAPTURED_STATES = frozenset({"ACTIVATED", "REFUNDED"})
#: How many renewal ids a failure lists (the count is always complete).
SAMPLE = 20

#: The payment sandbox's outcome by token suffix: a capture, or the saga's failed state.
_DECLINING_SUFFIXES = ("_declined", "_insufficient", "_expired")
#: Methods that ask the buyer when the payment names no token (CONTRACT.md).
_ASKING_WITHOUT_TOKEN = ("paypal", "alipay")
#: What the buyer did on the provider's page; `unanswered` when the load never could;
#: `expired` when the page reached the buyer with too little time left to answer (an outage
#: of the broker or accounts held the saga's news back past billing's approval window).
APPROVE, CANCEL, UNANSWERED, EXPIRED = "approve", "cancel", "unanswered", "expired"
#: The reason of the `PaymentFailed` that ends a cancelled or expired approval.
NOT_APPROVED = "not_approved"


def needs_approval(token: str) -> bool:
    """True when the payment waits for the buyer at the provider's page.

    Args:
        token: the payment token (`card_action`, ...), or a bare method name (`paypal`,
            `alipay`) for a payment that names no token.
    """
    return token.endswith("_action") or token in _ASKING_WITHOUT_TOKEN


def expected_status(
    token: str, card_fault: str, *, plan_exists: bool = True, approval: str | None = None
) -> str:
    """The terminal state the sandboxes decide for a renewal, whatever crashes happen meanwhile.

    Args:
        token: the payment token; its suffix decides the charge (CONTRACT.md). A bare method
            name stands for a payment without a token.
        card_fault: the eSIM sandbox fault on the card: `fail` (every order fails for good),
            or `flaky`/`slow`/`none` (the bundle goes live in the end).
        plan_exists: False for a renewal of a plan the catalogue does not have.
        approval: for a payment that needs the buyer, what the buyer did (`approve`, `cancel`,
            `unanswered`, `expired`): only an approval goes on, as `_ok` does; the rest end
            `PAYMENT_FAILED` (`not_approved`).
    """
    if not plan_exists:
        return "REJECTED"
    if token.endswith(_DECLINING_SUFFIXES):
        return "PAYMENT_FAILED"
    if needs_approval(token) and approval != APPROVE:
        return "PAYMENT_FAILED"
    if card_fault == "fail":
        return "REFUNDED"
    return "ACTIVATED"


@dataclass(frozen=True)
class Asked:
    """A renewal the load asked for, and the state it must end in."""

    renewal_id: str
    expected: str
    #: False when the broker never acknowledged the request (it may or may not have arrived).
    acknowledged: bool = True
    #: True for a method whose money is held first and captured after activation (card,
    #: PayPal): a failed activation releases the hold (a void), never captures it.
    holds: bool = False
    #: For a payment that waits for the buyer: `approve` or `cancel` once the load answered
    #: the provider's page (a 303 back), `unanswered` when it never could. None otherwise.
    approval: str | None = None


@dataclass(frozen=True)
class TerminalEvent:
    """One terminal record read from a topic (a redelivery is a second record, same id)."""

    renewal_id: str
    kind: str
    event_id: str
    #: The `reason` of a `PaymentFailed` (`declined`, `not_approved`, ...); None for the others.
    reason: str | None = None


@dataclass(frozen=True)
class StopTimed:
    """A SIGTERM stop of a service: how long until the process was gone."""

    service: str
    seconds: float
    bound_s: float
    exit_code: int | None
    overstayed: bool


@dataclass(frozen=True)
class Evidence:
    """Everything the verdict looks at."""

    asked: Sequence[Asked]
    #: Saga status per renewal over the accounts API; None where accounts does not know it.
    statuses: Mapping[str, str | None]
    events: Sequence[TerminalEvent]
    #: The renewal_id (charge reference) of every capture in the payment sandbox's ledger.
    captures: Sequence[str]
    #: The renewal_id of every refund in the payment sandbox's ledger.
    refunds: Sequence[str]
    #: The renewal_id (order reference) of every bundle order in the eSIM sandbox's ledger.
    orders: Sequence[str]
    stops: Sequence[StopTimed] = ()
    #: How many times a service was SIGKILLed.
    kills: int = 0
    #: Chaos steps that could not be done: a restart that failed, a service not ready again.
    troubles: Sequence[str] = ()
    #: Every record on a `<topic>.dlq`, described (topic, error type, error). Nothing the load
    #: sends is poison, so each is an event a service gave up on.
    dead_letters: Sequence[str] = ()
    #: The renewal_id of every authorization (a hold) and every void (a hold released).
    authorizations: Sequence[str] = ()
    voids: Sequence[str] = ()


@dataclass(frozen=True)
class RuleFailure:
    """One rule that does not hold, and the renewals (or processes) that break it."""

    rule: str
    message: str
    count: int
    examples: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly."""
        return {
            "rule": self.rule,
            "message": self.message,
            "count": self.count,
            "examples": list(self.examples),
        }


@dataclass(frozen=True)
class Verdict:
    """PASS when no rule failed; the counts are printed and reported either way."""

    counts: dict[str, Any]
    failures: tuple[RuleFailure, ...] = field(default=())

    @property
    def passed(self) -> bool:
        """True when every rule held."""
        return not self.failures

    @property
    def word(self) -> str:
        """PASS or FAIL."""
        return "PASS" if self.passed else "FAIL"

    def failed_rules(self) -> set[str]:
        """The names of the rules that failed."""
        return {failure.rule for failure in self.failures}

    def renewals_at_fault(self) -> list[str]:
        """Every renewal id a failure names, in order, without repeats."""
        seen: dict[str, None] = {}
        for failure in self.failures:
            for example in failure.examples:
                seen.setdefault(example, None)
        return list(seen)


class _Rules:
    def __init__(self) -> None:
        self.failures: list[RuleFailure] = []

    def check(self, rule: str, message: str, offenders: Iterable[str]) -> None:
        found = sorted(set(offenders))
        if found:
            self.failures.append(RuleFailure(rule, message, len(found), tuple(found[:SAMPLE])))

    def fail(self, rule: str, message: str, examples: Sequence[str] = ()) -> None:
        shown = tuple(examples[:SAMPLE])
        self.failures.append(RuleFailure(rule, message, max(1, len(examples)), shown))


def judge(evidence: Evidence) -> Verdict:
    """Apply every rule to the evidence."""
    rules = _Rules()
    known = _traced(evidence)
    # A request the broker never acknowledged counts once anything shows it arrived.
    counted = [a for a in evidence.asked if a.acknowledged or a.renewal_id in known]
    ids = {a.renewal_id for a in counted}
    undelivered = [a.renewal_id for a in evidence.asked if a.renewal_id not in ids]
    statuses = {rid: evidence.statuses.get(rid) for rid in ids}

    events: dict[str, dict[str, str]] = {}  # renewal -> event id -> kind
    for event in evidence.events:
        events.setdefault(event.renewal_id, {})[event.event_id] = event.kind
    redelivered = sum(Counter(e.event_id for e in evidence.events).values()) - sum(
        len(by_id) for by_id in events.values()
    )
    captures, refunds, orders = (
        Counter(evidence.captures),
        Counter(evidence.refunds),
        Counter(evidence.orders),
    )

    if not counted:
        rules.fail("load", "no renewal reached the platform: the run tested nothing")
    if not evidence.stops or not evidence.kills:
        rules.fail(
            "chaos",
            f"{evidence.kills} SIGKILL(s) and {len(evidence.stops)} SIGTERM stop(s): a run needs "
            "both to test crash recovery and the stop bound (a longer CHAOS_SECONDS)",
        )

    rules.check(
        "terminal",
        "renewals not in a terminal state (ACTIVATED, PAYMENT_FAILED, REJECTED, REFUNDED) "
        "after the drain, or unknown to accounts",
        (rid for rid, status in statuses.items() if status not in TERMINAL_EVENT_OF),
    )
    rules.check(
        "no_terminal_event",
        "renewals without any terminal event (ProfileActivated, PaymentFailed, "
        "RenewalRejected, PaymentRefunded) on the topics",
        (rid for rid in ids if not events.get(rid)),
    )
    rules.check(
        "one_terminal_event",
        "renewals with more than one terminal event id (a duplicated or contradictory outcome)",
        (rid for rid in ids if len(events.get(rid, {})) > 1),
    )
    rules.check(
        "event_matches_state",
        "renewals whose terminal event does not announce their saga state",
        (
            rid
            for rid in ids
            if len(events.get(rid, {})) == 1
            and statuses[rid] in TERMINAL_EVENT_OF
            and set(events[rid].values()) != {TERMINAL_EVENT_OF[str(statuses[rid])]}
        ),
    )
    rules.check(
        "expected_outcome",
        "renewals that ended otherwise than their token and card fault decide",
        (
            a.renewal_id
            for a in counted
            if statuses[a.renewal_id] in TERMINAL_EVENT_OF and statuses[a.renewal_id] != a.expected
        ),
    )
    rules.check(
        "one_capture",
        "renewals captured more than once at the payment gateway",
        (rid for rid, n in captures.items() if n > 1),
    )
    holding = {a.renewal_id for a in counted if a.holds}
    # ACTIVATED is captured exactly once; a failed activation (REFUNDED) is captured and refunded
    # where the money was taken at once (Alipay), and never captured where it was held.
    captured_states = {
        rid
        for rid, status in statuses.items()
        if status == "ACTIVATED" or (status in CAPTURED_STATES and rid not in holding)
    }
    rules.check(
        "captures_match",
        "captures without an ACTIVATED saga (or a REFUNDED one paid at once), or such sagas "
        f"without a capture (captures {sum(captures.values())}, expected {len(captured_states)})",
        (set(captures) & ids) ^ captured_states,
    )
    refunded = {
        rid for rid, status in statuses.items() if status == "REFUNDED" and rid not in holding
    }
    released = {rid for rid, status in statuses.items() if status == "REFUNDED" and rid in holding}
    rules.check(
        "one_refund",
        "renewals refunded more than once",
        (rid for rid, n in refunds.items() if n > 1),
    )
    rules.check(
        "refunds_match",
        "refunds without a REFUNDED saga paid at once, or such sagas without a refund "
        f"(refunds {sum(refunds.values())}, expected {len(refunded)})",
        (set(refunds) & ids) ^ refunded,
    )
    voids = Counter(evidence.voids)
    rules.check(
        "voids_match",
        "voids without a REFUNDED saga whose money was held, or such sagas without a void "
        f"(voids {sum(voids.values())}, expected {len(released)})",
        (set(voids) & ids) ^ released,
    )
    authorizations = Counter(evidence.authorizations)
    rules.check(
        "nothing_held",
        "renewals whose hold was neither captured nor released at the end",
        (
            rid
            for rid, n in authorizations.items()
            if rid in ids and n > captures.get(rid, 0) + voids.get(rid, 0)
        ),
    )
    _check_approvals(rules, counted, statuses, evidence.events)
    rules.check(
        "one_order",
        "renewals with more than one bundle order at the eSIM platform",
        (rid for rid, n in orders.items() if n > 1),
    )
    rules.check(
        "activated_has_order",
        "ACTIVATED renewals without a bundle order at the eSIM platform",
        (rid for rid, status in statuses.items() if status == "ACTIVATED" and rid not in orders),
    )
    rules.check(
        "unasked_effects",
        "captures, refunds, bundle orders or terminal events of renewals the load never asked for",
        known - {a.renewal_id for a in evidence.asked},
    )
    rules.check(
        "stop_bound",
        "SIGTERM stops that did not end the process within the bound",
        (
            f"{stop.service} ({stop.seconds:.1f} s > {stop.bound_s:g} s)"
            for stop in evidence.stops
            if stop.overstayed or stop.seconds > stop.bound_s
        ),
    )
    if evidence.troubles:
        rules.fail("recovery", "chaos steps the platform did not recover from", evidence.troubles)
    if evidence.dead_letters:
        rules.fail(
            "no_dead_letters",
            "events dead-lettered during the run (none of the load is poison)",
            evidence.dead_letters,
        )

    by_state = Counter(str(status) for status in statuses.values())
    by_kind = Counter(kind for by_id in events.values() for kind in by_id.values())
    counts: dict[str, Any] = {
        "renewals_sent": len(evidence.asked),
        "renewals_counted": len(counted),
        "unacknowledged": sum(1 for a in evidence.asked if not a.acknowledged),
        "undelivered": len(undelivered),
        "terminal_by_state": dict(sorted(by_state.items())),
        "terminal_events_by_kind": dict(sorted(by_kind.items())),
        "terminal_events_redelivered": redelivered,
        "expected_by_state": dict(sorted(Counter(a.expected for a in counted).items())),
        "approvals": dict(sorted(Counter(a.approval for a in counted if a.approval).items())),
        "captures": sum(captures.values()),
        "refunds": sum(refunds.values()),
        "authorizations": sum(authorizations.values()),
        "voids": sum(voids.values()),
        "bundle_orders": sum(orders.values()),
        "dead_letters": len(evidence.dead_letters),
        "sigkills": evidence.kills,
        "sigterm_stops": len(evidence.stops),
    }
    return Verdict(counts=counts, failures=tuple(rules.failures))


def _check_approvals(
    rules: _Rules,
    counted: Sequence[Asked],
    statuses: Mapping[str, str | None],
    events: Sequence[TerminalEvent],
) -> None:
    """The buyer's step: every payment that waits for the buyer is answered and ends; one not
    approved ends `PAYMENT_FAILED` with `not_approved` (its captures and holds are judged with
    everyone's: a `PAYMENT_FAILED` saga has none)."""
    waiting = [a for a in counted if a.approval is not None]
    rules.check(
        "approval_answered",
        "renewals waiting for the buyer whose provider page the load could not answer "
        "(no payment_action before the saga ended or the drain, or the page refused; a page "
        "shown only as it expired is `expired`, and must end not_approved)",
        (a.renewal_id for a in waiting if a.approval == UNANSWERED),
    )
    rules.check(
        "approval_ends",
        "renewals waiting for the buyer that did not end (still PAYMENT_ACTION_REQUIRED, "
        "AUTHORIZED, ... after the drain)",
        (a.renewal_id for a in waiting if statuses.get(a.renewal_id) not in TERMINAL_EVENT_OF),
    )
    reasons: dict[str, set[str | None]] = {}
    for event in events:
        if event.kind == "payment_failed":
            reasons.setdefault(event.renewal_id, set()).add(event.reason)
    rules.check(
        "not_approved",
        "renewals whose buyer cancelled (or never answered) that did not end PAYMENT_FAILED "
        "with the reason not_approved",
        (
            a.renewal_id
            for a in waiting
            if a.approval != APPROVE
            and (
                statuses.get(a.renewal_id) != "PAYMENT_FAILED"
                or reasons.get(a.renewal_id) != {NOT_APPROVED}
            )
        ),
    )
    rules.check(
        "approved_not_refused",
        "renewals the buyer approved that ended PaymentFailed not_approved all the same",
        (
            a.renewal_id
            for a in waiting
            if a.approval == APPROVE and NOT_APPROVED in reasons.get(a.renewal_id, set())
        ),
    )


def _traced(evidence: Evidence) -> set[str]:
    """Renewals that something on the platform or at a sandbox shows."""
    found = {rid for rid, status in evidence.statuses.items() if status is not None}
    found.update(event.renewal_id for event in evidence.events)
    found.update(evidence.captures)
    found.update(evidence.refunds)
    found.update(evidence.authorizations)
    found.update(evidence.voids)
    found.update(evidence.orders)
    return found
