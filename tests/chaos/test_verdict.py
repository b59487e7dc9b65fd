"""The chaos verdict: a clean run passes, and each broken promise fails the rule that guards it."""

import math
from dataclasses import replace

import pytest

from tests.chaos.harness import page_was_up_s
from tests.chaos.verdict import (
    APPROVE,
    CANCEL,
    EXPIRED,
    UNANSWERED,
    Asked,
    Evidence,
    StopTimed,
    TerminalEvent,
    expected_status,
    judge,
    needs_approval,
)

ACTIVATED, FAILED, REJECTED, REFUNDED = "r-activated", "r-failed", "r-rejected", "r-refunded"
STOP = StopTimed("billing", 4.2, 20.0, 0, overstayed=False)


def clean() -> Evidence:
    """A run in which every renewal ended once, as the sandboxes decided."""
    return Evidence(
        asked=[
            Asked(ACTIVATED, "ACTIVATED"),
            Asked(FAILED, "PAYMENT_FAILED"),
            Asked(REJECTED, "REJECTED"),
            Asked(REFUNDED, "REFUNDED"),
        ],
        statuses={
            ACTIVATED: "ACTIVATED",
            FAILED: "PAYMENT_FAILED",
            REJECTED: "REJECTED",
            REFUNDED: "REFUNDED",
        },
        events=[
            TerminalEvent(ACTIVATED, "activated", "e1"),
            TerminalEvent(ACTIVATED, "activated", "e1"),  # a redelivery: the same id again
            TerminalEvent(FAILED, "payment_failed", "e2"),
            TerminalEvent(REJECTED, "rejected", "e3"),
            TerminalEvent(REFUNDED, "refunded", "e4"),
        ],
        captures=[ACTIVATED, REFUNDED],
        refunds=[REFUNDED],
        orders=[ACTIVATED, REFUNDED],
        stops=[STOP],
        kills=3,
    )


def test_a_clean_run_passes_with_its_counts() -> None:
    verdict = judge(clean())

    assert verdict.passed, verdict.failures
    assert verdict.word == "PASS"
    assert verdict.counts["terminal_by_state"] == {
        "ACTIVATED": 1,
        "PAYMENT_FAILED": 1,
        "REFUNDED": 1,
        "REJECTED": 1,
    }
    assert verdict.counts["terminal_events_redelivered"] == 1
    assert (verdict.counts["captures"], verdict.counts["refunds"]) == (2, 1)
    assert verdict.counts["bundle_orders"] == 2


def broken(**changes: object) -> Evidence:
    return replace(clean(), **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("evidence", "rules", "renewal"),
    [
        pytest.param(
            broken(statuses={**clean().statuses, ACTIVATED: "PAID"}),
            # Not terminal, and its capture has no ACTIVATED or REFUNDED saga behind it.
            {"terminal", "captures_match"},
            ACTIVATED,
            id="a saga stuck in PAID",
        ),
        pytest.param(
            broken(statuses={**clean().statuses, FAILED: None}),
            {"terminal"},
            FAILED,
            id="a renewal accounts never saw",
        ),
        pytest.param(
            broken(events=[e for e in clean().events if e.renewal_id != FAILED]),
            {"no_terminal_event"},
            FAILED,
            id="a lost terminal event",
        ),
        pytest.param(
            broken(events=[*clean().events, TerminalEvent(ACTIVATED, "activated", "e1-bis")]),
            {"one_terminal_event"},
            ACTIVATED,
            id="two ProfileActivated ids for one renewal",
        ),
        pytest.param(
            broken(events=[*clean().events, TerminalEvent(REFUNDED, "payment_failed", "e9")]),
            {"one_terminal_event"},
            REFUNDED,
            id="two terminal kinds for one renewal",
        ),
        pytest.param(
            broken(
                events=[
                    e if e.renewal_id != FAILED else TerminalEvent(FAILED, "rejected", "e2")
                    for e in clean().events
                ]
            ),
            {"event_matches_state"},
            FAILED,
            id="an event that contradicts the saga",
        ),
        pytest.param(
            broken(asked=[*clean().asked[:3], Asked(REFUNDED, "ACTIVATED")]),
            {"expected_outcome"},
            REFUNDED,
            id="an outcome the sandboxes did not decide",
        ),
        pytest.param(
            broken(captures=[*clean().captures, ACTIVATED]),
            {"one_capture"},
            ACTIVATED,
            id="a double charge",
        ),
        pytest.param(
            broken(captures=[*clean().captures, FAILED]),
            {"captures_match"},
            FAILED,
            id="a capture of a failed payment",
        ),
        pytest.param(
            broken(captures=[REFUNDED]),
            {"captures_match"},
            ACTIVATED,
            id="an activation without a capture",
        ),
        pytest.param(
            broken(refunds=[REFUNDED, REFUNDED]),
            {"one_refund"},
            REFUNDED,
            id="a double refund",
        ),
        pytest.param(
            broken(refunds=[]),
            {"refunds_match"},
            REFUNDED,
            id="a REFUNDED saga without a refund",
        ),
        pytest.param(
            broken(refunds=[REFUNDED, ACTIVATED]),
            {"refunds_match"},
            ACTIVATED,
            id="a refund of an activated renewal",
        ),
        pytest.param(
            broken(orders=[*clean().orders, REFUNDED]),
            {"one_order"},
            REFUNDED,
            id="a bundle ordered twice",
        ),
        pytest.param(
            broken(orders=[REFUNDED]),
            {"activated_has_order"},
            ACTIVATED,
            id="an activation without a bundle order",
        ),
        pytest.param(
            broken(captures=[*clean().captures, "r-stranger"]),
            {"unasked_effects"},
            "r-stranger",
            id="a capture nobody asked for",
        ),
    ],
)
def test_each_broken_promise_fails_its_rule(
    evidence: Evidence, rules: set[str], renewal: str
) -> None:
    verdict = judge(evidence)

    assert verdict.word == "FAIL"
    assert verdict.failed_rules() == rules
    assert renewal in verdict.renewals_at_fault()


def test_a_stop_past_the_bound_fails() -> None:
    slow = StopTimed("accounts", 21.3, 20.0, -9, overstayed=True)

    verdict = judge(broken(stops=[STOP, slow]))

    assert verdict.failed_rules() == {"stop_bound"}
    assert verdict.failures[0].examples == ("accounts (21.3 s > 20 s)",)


def test_a_run_without_chaos_or_load_fails() -> None:
    assert judge(broken(stops=[])).failed_rules() == {"chaos"}
    assert judge(broken(kills=0)).failed_rules() == {"chaos"}
    nothing = broken(asked=[], statuses={}, events=[], captures=[], refunds=[], orders=[])
    assert judge(nothing).failed_rules() == {"load"}


def test_a_restart_that_failed_fails() -> None:
    verdict = judge(broken(troubles=["billing did not start again: TimeoutError"]))

    assert verdict.failed_rules() == {"recovery"}


def test_a_dead_letter_fails() -> None:
    letter = "esim.payment.settled.dlq: retries_exhausted: OperationalError: database is locked"

    verdict = judge(broken(dead_letters=[letter]))

    assert verdict.failed_rules() == {"no_dead_letters"}
    assert verdict.failures[0].examples == (letter,)


def test_an_unacknowledged_request_counts_only_once_it_shows() -> None:
    lost = Asked("r-lost", "ACTIVATED", acknowledged=False)
    arrived = Asked(ACTIVATED, "ACTIVATED", acknowledged=False)
    evidence = broken(asked=[*clean().asked[1:], arrived, lost], statuses={**clean().statuses})

    verdict = judge(evidence)

    assert verdict.passed, verdict.failures
    assert verdict.counts["unacknowledged"] == 2
    assert verdict.counts["undelivered"] == 1
    assert verdict.counts["renewals_counted"] == 4


@pytest.mark.parametrize(
    ("token", "fault", "plan_exists", "status"),
    [
        ("card_ok", "none", True, "ACTIVATED"),
        ("paypal_flaky", "flaky", True, "ACTIVATED"),
        ("alipay_slow", "none", True, "ACTIVATED"),
        ("card_ok", "fail", True, "REFUNDED"),
        ("card_declined", "fail", True, "PAYMENT_FAILED"),
        ("paypal_insufficient", "none", True, "PAYMENT_FAILED"),
        ("card_ok", "none", False, "REJECTED"),
    ],
)
def test_expected_status_follows_the_sandbox_contract(
    token: str, fault: str, plan_exists: bool, status: str
) -> None:
    assert expected_status(token, fault, plan_exists=plan_exists) == status


HELD = "r-held-refunded"


def with_a_released_hold() -> Evidence:
    """The clean run plus a card renewal whose activation failed: its hold released, no capture."""
    base = clean()
    return replace(
        base,
        asked=[*base.asked, Asked(HELD, "REFUNDED", holds=True)],
        statuses={**base.statuses, HELD: "REFUNDED"},
        events=[*base.events, TerminalEvent(HELD, "refunded", "e5")],
        authorizations=[HELD, ACTIVATED],
        captures=[*base.captures],
        voids=[HELD],
        orders=[*base.orders, HELD],
    )


def test_a_hold_released_after_a_failed_activation_passes() -> None:
    verdict = judge(with_a_released_hold())
    assert verdict.passed, verdict.failures
    assert (verdict.counts["authorizations"], verdict.counts["voids"]) == (2, 1)


@pytest.mark.parametrize(
    ("changes", "rules"),
    [
        pytest.param(
            {"captures": [ACTIVATED, REFUNDED, HELD]},
            {"captures_match"},
            id="a failed activation's hold captured",
        ),
        pytest.param({"voids": []}, {"voids_match", "nothing_held"}, id="a hold never released"),
        pytest.param(
            {"refunds": [REFUNDED, HELD]},
            {"refunds_match"},
            id="a hold refunded instead of released",
        ),
    ],
)
def test_a_broken_promise_about_holds_fails_its_rule(
    changes: dict[str, object], rules: set[str]
) -> None:
    verdict = judge(replace(with_a_released_hold(), **changes))  # type: ignore[arg-type]
    assert verdict.failed_rules() == rules
    assert HELD in verdict.renewals_at_fault()


@pytest.mark.parametrize(
    ("token", "fault", "approval", "status"),
    [
        ("card_action", "none", APPROVE, "ACTIVATED"),
        ("paypal", "flaky", APPROVE, "ACTIVATED"),
        ("alipay_action", "fail", APPROVE, "REFUNDED"),
        ("paypal_action", "none", CANCEL, "PAYMENT_FAILED"),
        ("alipay", "none", UNANSWERED, "PAYMENT_FAILED"),
        ("paypal", "none", EXPIRED, "PAYMENT_FAILED"),
        ("card_action", "fail", CANCEL, "PAYMENT_FAILED"),
    ],
)
def test_a_payment_waiting_for_the_buyer_goes_on_only_once_approved(
    token: str, fault: str, approval: str, status: str
) -> None:
    assert needs_approval(token)
    assert expected_status(token, fault, approval=approval) == status


@pytest.mark.parametrize("token", ["card_ok", "paypal_flaky", "alipay_declined", "card"])
def test_a_saved_source_or_a_card_without_a_token_needs_no_buyer(token: str) -> None:
    assert not needs_approval(token)


APPROVED, CANCELLED, ALIPAY_FAILED = "r-approved", "r-cancelled", "r-alipay-approved-failed"


def _statuses_with(renewal_id: str, status: str) -> dict[str, str | None]:
    return {**with_buyers().statuses, renewal_id: status}


def with_buyers() -> Evidence:
    """The clean run plus three buyers at a provider's page: a card approved after 3-D Secure
    (held, then captured), a PayPal approval cancelled (nothing taken), an Alipay payment
    approved whose activation failed (paid at once, refunded once)."""
    base = clean()
    return replace(
        base,
        asked=[
            *base.asked,
            Asked(APPROVED, "ACTIVATED", holds=True, approval=APPROVE),
            Asked(CANCELLED, "PAYMENT_FAILED", holds=True, approval=CANCEL),
            Asked(ALIPAY_FAILED, "REFUNDED", approval=APPROVE),
        ],
        statuses={
            **base.statuses,
            APPROVED: "ACTIVATED",
            CANCELLED: "PAYMENT_FAILED",
            ALIPAY_FAILED: "REFUNDED",
        },
        events=[
            *base.events,
            TerminalEvent(APPROVED, "activated", "e6"),
            TerminalEvent(CANCELLED, "payment_failed", "e7", reason="not_approved"),
            TerminalEvent(ALIPAY_FAILED, "refunded", "e8"),
        ],
        authorizations=[APPROVED],
        captures=[*base.captures, APPROVED, ALIPAY_FAILED],
        refunds=[*base.refunds, ALIPAY_FAILED],
        orders=[*base.orders, APPROVED, ALIPAY_FAILED],
    )


def test_buyers_who_approve_or_cancel_pass_with_their_counts() -> None:
    verdict = judge(with_buyers())

    assert verdict.passed, verdict.failures
    assert verdict.counts["approvals"] == {"approve": 2, "cancel": 1}


def _failed_with(reason: str) -> list[TerminalEvent]:
    return [
        TerminalEvent(e.renewal_id, e.kind, e.event_id, reason) if e.renewal_id == CANCELLED else e
        for e in with_buyers().events
    ]


def _asked_as(renewal_id: str, **changes: object) -> list[Asked]:
    return [
        replace(a, **changes) if a.renewal_id == renewal_id else a  # type: ignore[arg-type]
        for a in with_buyers().asked
    ]


@pytest.mark.parametrize(
    ("changes", "rules", "renewal"),
    [
        pytest.param(
            {"events": _failed_with("declined")},
            {"not_approved"},
            CANCELLED,
            id="a cancel that ends with another reason",
        ),
        pytest.param(
            {
                "statuses": _statuses_with(CANCELLED, "PAYMENT_ACTION_REQUIRED"),
                "events": [e for e in with_buyers().events if e.renewal_id != CANCELLED],
            },
            {"terminal", "no_terminal_event", "approval_ends", "not_approved"},
            CANCELLED,
            id="a cancelled approval still waiting after the drain",
        ),
        pytest.param(
            {"statuses": _statuses_with(APPROVED, "AUTHORIZED")},
            {"terminal", "approval_ends", "captures_match"},
            APPROVED,
            id="an approved payment left authorized",
        ),
        pytest.param(
            {"captures": [*with_buyers().captures, CANCELLED]},
            {"captures_match"},
            CANCELLED,
            id="a cancelled approval captured",
        ),
        pytest.param(
            {"authorizations": [APPROVED, CANCELLED]},
            {"nothing_held"},
            CANCELLED,
            id="a cancelled approval left holding the money",
        ),
        pytest.param(
            {"asked": _asked_as(CANCELLED, approval=UNANSWERED)},
            {"approval_answered"},
            CANCELLED,
            id="a buyer who never reached the page",
        ),
        pytest.param(
            {"asked": _asked_as(APPROVED, approval=EXPIRED)},
            {"not_approved"},
            APPROVED,
            id="a page that expired before its buyer saw it, yet the payment went on",
        ),
        pytest.param(
            {
                "statuses": _statuses_with(APPROVED, "PAYMENT_FAILED"),
                "events": [
                    TerminalEvent(APPROVED, "payment_failed", "e6", "not_approved")
                    if e.renewal_id == APPROVED
                    else e
                    for e in with_buyers().events
                ],
                "authorizations": [],
                "captures": [c for c in with_buyers().captures if c != APPROVED],
                "orders": [o for o in with_buyers().orders if o != APPROVED],
            },
            {"expected_outcome", "approved_not_refused"},
            APPROVED,
            id="an approval taken for a cancel",
        ),
        pytest.param(
            {"voids": [ALIPAY_FAILED], "refunds": [REFUNDED]},
            {"refunds_match", "voids_match"},
            ALIPAY_FAILED,
            id="an Alipay payment voided instead of refunded",
        ),
    ],
)
def test_a_broken_promise_about_the_buyers_step_fails_its_rule(
    changes: dict[str, object], rules: set[str], renewal: str
) -> None:
    verdict = judge(replace(with_buyers(), **changes))  # type: ignore[arg-type]

    assert verdict.failed_rules() == rules
    assert renewal in verdict.renewals_at_fault()


def test_a_page_up_for_seconds_before_its_saga_ended_is_told_from_one_never_shown() -> None:
    def saga(*steps: tuple[str, str]) -> dict[str, object]:
        return {"timeline": [{"step": step, "at": at} for step, at in steps]}

    shown = ("payment_action_required", "2026-12-06T23:03:04.730Z")
    assert page_was_up_s(saga(shown, ("payment_failed", "2026-12-06T23:03:08.539Z"))) == (
        pytest.approx(3.809)
    )
    assert page_was_up_s(saga(("requested", "2026-12-06T23:01:59.019Z"), shown)) == math.inf
    assert page_was_up_s(saga(("payment_failed", "2026-12-06T23:03:08.539Z"))) is None


def test_a_page_whose_news_came_after_its_saga_ended_was_never_up() -> None:
    # Seen in a run: the broker was down 76 s, longer than the 60 s approval window, and the
    # PaymentActionRequired reached accounts after the PaymentFailed (not_approved).
    timeline = [
        {"step": "payment_requested", "status": "PAYMENT_PENDING", "at": "2026-12-07T02:09:03Z"},
        {"step": "payment_failed", "status": "PAYMENT_FAILED", "at": "2026-12-07T02:10:47Z"},
        {
            "step": "payment_action_required",
            "status": "PAYMENT_FAILED",
            "at": "2026-12-07T02:10:48Z",
        },
    ]
    assert page_was_up_s({"timeline": timeline}) == 0.0
    timeline[2]["status"] = "PAYMENT_ACTION_REQUIRED"  # shown, and never left: still up
    assert page_was_up_s({"timeline": timeline[:1] + timeline[2:]}) == math.inf
