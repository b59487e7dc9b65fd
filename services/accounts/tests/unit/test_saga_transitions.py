"""The product's saga table on its own: `decide` pair by pair, and that nothing moves a saga
outside it. (`test_saga_table.py` is the independent oracle, through the wired consumer.)"""

import ast
import itertools
import os
import re
from collections.abc import Mapping
from pathlib import Path

import pytest
from accounts.domain import SagaStatus
from accounts.renewals import transitions
from accounts.renewals.transitions import (
    OTHERWISE,
    TABLE,
    Command,
    Decision,
    Facts,
    Input,
    Row,
    Write,
    always,
    decide,
)

S = SagaStatus
SRC = Path(transitions.__file__).resolve().parents[1]
ARCHITECTURE = SRC.parents[3] / "docs" / "architecture.md"
BEGIN = "<!-- saga-table: generated from accounts/renewals/transitions.py -->"
END = "<!-- end of the saga table -->"

CAPTURED = {"captured": True}
REFUND = {"captured": True, "refund_requested": True}
QUEUED = {"captured": True, "bundle": "queued"}
HELD = {"held": True}
HELD_REFUND = {"held": True, "refund_requested": True}

# (status, facts besides, input) -> (next status or None, what it has carried out, refused).
CASES: list[tuple[S | None, Mapping[str, object], Input, S | None, tuple[Command, ...], bool]] = [
    (None, {}, Input.RENEWAL_REQUESTED, S.REQUESTED, (Command.PRICE,), False),
    (S.REQUESTED, {}, Input.RENEWAL_PRICED, S.PAYMENT_PENDING, (Command.REQUEST_PAYMENT,), False),
    (
        S.REQUESTED,
        {},
        Input.RENEWAL_INVALID,
        S.REJECTED,
        (Command.REJECT_RENEWAL, Command.RELEASE_PROMOTION),
        False,
    ),
    (S.PAID, CAPTURED, Input.RENEWAL_REQUESTED, None, (), False),
    (S.CANCELLED, REFUND, Input.RENEWAL_CONFLICTS, None, (Command.REJECT_DUPLICATE,), False),
    (S.PAYMENT_PENDING, {}, Input.PAYMENT_SETTLED, S.PAID, (), False),
    (S.ACTIVATED, CAPTURED, Input.PAYMENT_SETTLED, None, (), False),
    (
        S.PAYMENT_PENDING,
        {"auto_renewal": True, "token": True},
        Input.PAYMENT_DECLINED,
        S.PAYMENT_FAILED,
        (Command.DISABLE_AUTO_RENEW, Command.RELEASE_PROMOTION),
        False,
    ),
    (
        S.PAYMENT_PENDING,
        {"token": True},
        Input.PAYMENT_DECLINED,
        S.PAYMENT_FAILED,
        (Command.RELEASE_PROMOTION,),
        False,
    ),
    (
        S.REQUESTED,
        {"auto_renewal": True},
        Input.PAYMENT_FAILED,
        S.PAYMENT_FAILED,
        (Command.RELEASE_PROMOTION,),
        False,
    ),
    (S.PAID, CAPTURED, Input.PAYMENT_FAILED, None, (Command.RELEASE_PROMOTION,), False),
    (S.PAID, CAPTURED, Input.PROFILE_ACTIVATED, S.ACTIVATED, (Command.MOVE_CARD,), False),
    (S.TIMED_OUT, {}, Input.PROFILE_ACTIVATED, S.ACTIVATED, (Command.MOVE_CARD,), False),
    (S.TIMED_OUT, REFUND, Input.PROFILE_ACTIVATED, None, (Command.MOVE_CARD,), False),
    (S.REFUNDING, REFUND, Input.PROFILE_ACTIVATED, None, (Command.MOVE_CARD,), False),
    (S.CANCELLED, REFUND, Input.PROFILE_ACTIVATED, None, (), False),
    (S.PAID, CAPTURED, Input.ACTIVATION_FAILED, None, (), False),
    (S.PAID, CAPTURED, Input.REFUND_OWED, S.REFUNDING, (Command.REQUEST_REFUND,), False),
    (S.TIMED_OUT, CAPTURED, Input.REFUND_OWED, None, (Command.REQUEST_REFUND,), False),
    (S.TIMED_OUT, REFUND, Input.REFUND_OWED, None, (), False),
    (S.ACTIVATED, CAPTURED, Input.REFUND_OWED, None, (), False),
    (S.PAID, CAPTURED, Input.PAYMENT_REFUNDED, None, (), True),
    (S.REFUNDING, REFUND, Input.PAYMENT_REFUNDED, S.REFUNDED, (Command.RELEASE_PROMOTION,), False),
    (
        S.CANCELLING,
        REFUND,
        Input.PAYMENT_REFUNDED,
        S.CANCELLED,
        (Command.RELEASE_PROMOTION,),
        False,
    ),
    (S.ACTIVATED, QUEUED, Input.CANCEL, S.CANCELLING, (Command.REQUEST_BUNDLE_CANCEL,), False),
    (S.ACTIVATED, {"bundle": "queued"}, Input.CANCEL, None, (), True),
    (S.ACTIVATED, {"captured": True, "bundle": "active"}, Input.CANCEL, None, (), True),
    (S.CANCELLING, QUEUED, Input.BUNDLE_STARTED, S.ACTIVATED, (), False),
    (S.CANCELLING, {**QUEUED, "refund_requested": True}, Input.BUNDLE_ENDED, None, (), False),
    (S.CANCELLING, QUEUED, Input.CANCEL_OVERTAKEN, S.ACTIVATED, (), False),
    (
        S.PAYMENT_PENDING,
        {"overdue": True},
        Input.DEADLINE,
        S.TIMED_OUT,
        (Command.RELEASE_PROMOTION,),
        False,
    ),
    (S.PAYMENT_PENDING, {}, Input.DEADLINE, None, (), False),
    (S.REQUESTED, {"overdue": True}, Input.DEADLINE, None, (), False),
    (S.REQUESTED, {"token": True}, Input.RETRY, None, (Command.RESEND_RENEWAL_REQUEST,), False),
    (S.REQUESTED, {}, Input.RETRY, None, (), True),
    (S.PAYMENT_PENDING, {"token": True}, Input.RETRY, None, (Command.REQUEST_PAYMENT,), False),
    (S.PAID, CAPTURED, Input.RETRY, None, (), True),
    (S.CANCELLING, QUEUED, Input.RETRY, None, (Command.REQUEST_BUNDLE_CANCEL,), False),
    (S.TIMED_OUT, REFUND, Input.RETRY, None, (Command.REQUEST_REFUND,), False),
    (S.PAID, CAPTURED, Input.COMPENSATE, S.TIMED_OUT, (Command.RELEASE_PROMOTION,), False),
    (S.TIMED_OUT, CAPTURED, Input.COMPENSATE, None, (Command.RELEASE_PROMOTION,), False),
    (S.ACTIVATED, CAPTURED, Input.COMPENSATE, None, (), True),
    # The buyer's approval step, and authorize then capture after activation.
    (S.PAYMENT_PENDING, {}, Input.PAYMENT_ACTION_REQUIRED, S.PAYMENT_ACTION_REQUIRED, (), False),
    (
        S.PAYMENT_ACTION_REQUIRED,
        {},
        Input.PAYMENT_ACTION_REQUIRED,
        S.PAYMENT_ACTION_REQUIRED,
        (),
        False,
    ),
    (S.AUTHORIZED, HELD, Input.PAYMENT_ACTION_REQUIRED, None, (), False),
    (S.PAYMENT_FAILED, {}, Input.PAYMENT_ACTION_REQUIRED, None, (), False),
    (S.PAYMENT_PENDING, {}, Input.PAYMENT_AUTHORIZED, S.AUTHORIZED, (), False),
    (S.PAYMENT_ACTION_REQUIRED, {}, Input.PAYMENT_AUTHORIZED, S.AUTHORIZED, (), False),
    (S.PAYMENT_ACTION_REQUIRED, {}, Input.PAYMENT_SETTLED, S.PAID, (), False),
    (
        S.PAYMENT_ACTION_REQUIRED,
        {},
        Input.PAYMENT_FAILED,
        S.PAYMENT_FAILED,
        (Command.RELEASE_PROMOTION,),
        False,
    ),
    (S.AUTHORIZED, HELD, Input.PROFILE_ACTIVATED, S.ACTIVATED, (Command.MOVE_CARD,), False),
    (
        S.PAYMENT_ACTION_REQUIRED,
        {},
        Input.PROFILE_ACTIVATED,
        S.ACTIVATED,
        (Command.MOVE_CARD,),
        False,
    ),
    (S.AUTHORIZED, CAPTURED, Input.PAYMENT_CAPTURED, S.PAID, (), False),
    (S.ACTIVATED, CAPTURED, Input.PAYMENT_CAPTURED, None, (), False),
    (S.ACTIVATED, HELD, Input.PAYMENT_AUTHORIZED, None, (), False),
    (S.AUTHORIZED, HELD, Input.ACTIVATION_FAILED, None, (), False),
    (S.AUTHORIZED, HELD, Input.REFUND_OWED, S.REFUNDING, (Command.REQUEST_REFUND,), False),
    (
        S.REFUNDING,
        HELD_REFUND,
        Input.PAYMENT_VOIDED,
        S.REFUNDED,
        (Command.RELEASE_PROMOTION,),
        False,
    ),
    (S.AUTHORIZED, HELD, Input.PAYMENT_VOIDED, None, (), True),
    (S.REFUNDED, HELD_REFUND, Input.PAYMENT_VOIDED, None, (Command.RELEASE_PROMOTION,), False),
    (
        S.PAYMENT_ACTION_REQUIRED,
        {"overdue": True},
        Input.DEADLINE,
        S.TIMED_OUT,
        (Command.RELEASE_PROMOTION,),
        False,
    ),
    (S.PAYMENT_ACTION_REQUIRED, {}, Input.DEADLINE, None, (), False),
    (
        S.AUTHORIZED,
        {**HELD, "overdue": True},
        Input.DEADLINE,
        S.TIMED_OUT,
        (Command.RELEASE_PROMOTION,),
        False,
    ),
    (S.PAYMENT_ACTION_REQUIRED, {"token": True}, Input.RETRY, None, (), True),
    (S.AUTHORIZED, HELD, Input.RETRY, None, (), True),
    (S.AUTHORIZED, HELD, Input.COMPENSATE, S.TIMED_OUT, (Command.RELEASE_PROMOTION,), False),
    (S.TIMED_OUT, {"compensated": True}, Input.PAYMENT_AUTHORIZED, None, (), False),
]


@pytest.mark.parametrize(
    ("status", "facts", "given", "to", "sends", "refused"),
    CASES,
    ids=[f"{status} {facts} x {given}" for status, facts, given, *_ in CASES],
)
def test_decide_moves_each_pair_as_the_saga_does(
    status: S | None,
    facts: Mapping[str, object],
    given: Input,
    to: S | None,
    sends: tuple[Command, ...],
    refused: bool,
) -> None:
    decision = decide(Facts(status=status, **facts), given)  # type: ignore[arg-type]

    assert decision.to == to
    assert decision.sends == sends
    assert (decision.refused is not None) == refused


def test_a_capture_after_activation_failed_first_is_paid_then_refunded() -> None:
    facts = Facts(S.PAYMENT_PENDING, captured=True, activation_failed=True)

    decision = decide(facts, Input.PAYMENT_SETTLED)

    assert (decision.to, decision.then) == (S.PAID, Input.REFUND_OWED)
    assert decide(Facts(S.PAID, captured=True), Input.REFUND_OWED) == Decision(
        to=S.REFUNDING,
        writes=(Write.REFUND_ASKED, Write.NO_DEADLINE),
        sends=(Command.REQUEST_REFUND,),
        step="refund_requested",
    )


def test_a_hold_when_activation_failed_first_is_authorized_then_released() -> None:
    facts = Facts(S.PAYMENT_ACTION_REQUIRED, held=True, activation_failed=True)

    decision = decide(facts, Input.PAYMENT_AUTHORIZED)

    assert (decision.to, decision.then) == (S.AUTHORIZED, Input.REFUND_OWED)
    assert decide(Facts(S.AUTHORIZED, held=True), Input.REFUND_OWED).sends == (
        Command.REQUEST_REFUND,
    )


def test_a_failed_activation_of_a_hold_asks_for_its_release() -> None:
    decision = decide(Facts(S.AUTHORIZED, held=True), Input.ACTIVATION_FAILED)

    assert decision.then is Input.REFUND_OWED
    assert Write.REMEMBER_FAILURE in decision.writes


def test_a_release_ends_the_saga_saying_nothing_was_taken() -> None:
    decision = decide(Facts(S.REFUNDING, held=True, refund_requested=True), Input.PAYMENT_VOIDED)

    assert (decision.to, decision.step) == (S.REFUNDED, "hold_released")
    assert decision.detail is not None and "nothing was taken" in decision.detail


def test_the_buyers_action_keeps_its_url_and_expiry() -> None:
    decision = decide(Facts(S.PAYMENT_PENDING), Input.PAYMENT_ACTION_REQUIRED)

    assert Write.ACTION in decision.writes


def test_a_late_hold_of_a_compensated_saga_is_released() -> None:
    facts = Facts(S.TIMED_OUT, held=True, compensated=True)

    assert decide(facts, Input.PAYMENT_AUTHORIZED).then is Input.REFUND_OWED
    assert decide(Facts(S.TIMED_OUT, held=True), Input.PAYMENT_AUTHORIZED).then is None


def test_a_late_capture_of_a_compensated_saga_is_refunded() -> None:
    facts = Facts(S.TIMED_OUT, captured=True, compensated=True)

    assert decide(facts, Input.PAYMENT_SETTLED).then is Input.REFUND_OWED
    assert decide(Facts(S.TIMED_OUT, captured=True), Input.PAYMENT_SETTLED).then is None


def every_facts() -> list[Facts]:
    flags = ("captured", "held", "refund_requested", "activation_failed", "compensated", "token")
    more = ("auto_renewal", "overdue")
    return [
        Facts(status, bundle=bundle, **dict(zip(flags + more, values, strict=True)))
        for status in (None, *SagaStatus)
        for bundle in (None, "active", "queued")
        for values in itertools.product((False, True), repeat=len(flags + more))
        # A payment is captured or held, never both at once.
        if not (values[0] and values[1])
    ]


def test_an_ended_saga_never_moves_but_by_its_owners_cancel() -> None:
    ended = {S.ACTIVATED, S.REJECTED, S.PAYMENT_FAILED, S.REFUNDED, S.CANCELLED}
    for facts, given in itertools.product(every_facts(), Input):
        decision = decide(facts, given)
        if facts.status in ended and decision.to is not None:
            assert (facts.status, given, facts.bundle) == (S.ACTIVATED, Input.CANCEL, "queued")


def test_a_refund_is_requested_only_once_and_only_of_a_capture_or_a_hold() -> None:
    for facts, given in itertools.product(every_facts(), Input):
        decision = decide(facts, given)
        if Command.REQUEST_REFUND in decision.sends and given is not Input.RETRY:
            assert (facts.captured or facts.held) and not facts.refund_requested, (facts, given)


def test_a_refund_or_release_nobody_asked_for_is_refused_in_every_state() -> None:
    for status in SagaStatus:
        assert decide(Facts(status), Input.PAYMENT_REFUNDED).refused is not None
        assert decide(Facts(status, held=True), Input.PAYMENT_VOIDED).refused is not None


def test_a_capture_never_ends_a_saga_nor_moves_one_but_an_authorized_one() -> None:
    for facts in every_facts():
        decision = decide(facts, Input.PAYMENT_CAPTURED)
        assert decision.to in (None, S.PAID), facts
        if decision.to is not None:
            assert facts.status is S.AUTHORIZED


def test_a_wait_for_the_buyer_ends_only_by_billings_answer_activation_or_the_sweep() -> None:
    # Waiting for the buyer, nothing is captured or held yet, so nothing is given back.
    waits = [
        f
        for f in every_facts()
        if f.status is S.PAYMENT_ACTION_REQUIRED
        and not (f.captured or f.held or f.refund_requested)
    ]
    for facts, given in itertools.product(waits, Input):
        moved = decide(facts, given).to
        if moved is not None and moved is not S.PAYMENT_ACTION_REQUIRED:
            assert given in {
                Input.PAYMENT_AUTHORIZED,
                Input.PAYMENT_SETTLED,
                Input.PAYMENT_FAILED,
                Input.PAYMENT_DECLINED,
                Input.PROFILE_ACTIVATED,
                Input.DEADLINE,
                Input.COMPENSATE,
            }, (facts, given, moved)


def test_a_hold_of_an_ended_saga_is_given_back_only_once_and_only_when_asked() -> None:
    for facts in every_facts():
        if facts.status in {S.ACTIVATED, S.REJECTED, S.PAYMENT_FAILED, S.REFUNDED}:
            decision = decide(facts, Input.PAYMENT_AUTHORIZED)
            assert decision.to is None


def test_every_row_names_a_step_a_move_or_a_command_and_is_reachable() -> None:
    for number, row in enumerate(TABLE):
        decision = row.decision
        assert decision.step or decision.to or decision.sends or decision.answer or decision.refused
        # An earlier unguarded row for the same input and states would hide this one.
        for earlier in TABLE[:number]:
            if earlier.given is row.given and earlier.guard is always:
                assert not set(row.states) <= set(earlier.states), f"row {number} is hidden"


def test_the_table_module_does_no_io() -> None:
    tree = ast.parse(Path(transitions.__file__).read_text())
    imported = {
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported <= {"collections.abc", "dataclasses", "enum", "accounts.domain"}


def status_writes() -> list[str]:
    """Every `<something>.status = ...` in accounts' source, as `file:function`."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(function):
                targets = (
                    node.targets
                    if isinstance(node, ast.Assign)
                    else [node.target]
                    if isinstance(node, ast.AnnAssign | ast.AugAssign)
                    else []
                )
                for target in targets:
                    if (
                        isinstance(target, ast.Attribute)
                        and target.attr == "status"
                        and not (isinstance(target.value, ast.Name) and target.value.id == "self")
                    ):
                        found.append(f"{path.relative_to(SRC)}:{function.name}")
    return found


def test_only_the_apply_step_writes_a_sagas_status() -> None:
    assert status_writes() == ["renewals/saga.py:_apply"], (
        "a saga's status is written outside RenewalSaga._apply: add a row to "
        "accounts/renewals/transitions.py instead"
    )


def _names(states: tuple[S | None, ...]) -> str:
    if set(states) == set(SagaStatus):
        return "any"
    return ", ".join("(none)" if state is None else f"`{state}`" for state in states)


def _does(decision: Decision) -> str:
    if decision.refused is not None:
        return ""
    done = [command.value for command in decision.sends]
    if decision.then is not None:
        done.append(f"then {decision.then.value}")
    return "; ".join(done)


def _line(states: str, given: Input, when: str, decision: Decision) -> str:
    to = "refused" if decision.refused is not None else f"`{decision.to}`" if decision.to else ""
    step = f"`{decision.step}`" if decision.step else ""
    return f"| {states} | {given.value} | {when} | {to} | {_does(decision)} | {step} |"


def rendered() -> str:
    """The saga table as docs/architecture.md shows it, from the product's table."""
    lines = [
        BEGIN,
        "| state | input | when | next state | carried out | timeline step |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    row: Row
    for row in TABLE:
        when = "" if row.guard is always else row.guard.__name__.replace("_", " ")
        lines.append(_line(_names(row.states), row.given, when, row.decision))
    for given, decision in OTHERWISE.items():
        lines.append(_line("otherwise", given, "", decision))
    lines.append(END)
    return "\n".join(lines)


def test_the_architecture_doc_shows_the_products_saga_table() -> None:
    text = ARCHITECTURE.read_text()
    block = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.DOTALL)
    if os.environ.get("SAGA_TABLE_WRITE") == "1":
        ARCHITECTURE.write_text(block.sub(lambda _: rendered(), text))
        text = ARCHITECTURE.read_text()
    shown = block.search(text)
    assert shown is not None, f"docs/architecture.md has no block between {BEGIN} and {END}"
    assert shown.group(0) == rendered(), (
        "docs/architecture.md's saga table is not accounts/renewals/transitions.py's; "
        "regenerate it with SAGA_TABLE_WRITE=1 .venv/bin/pytest -p no:cacheprovider -q "
        "services/accounts/tests/unit/test_saga_transitions.py"
    )
