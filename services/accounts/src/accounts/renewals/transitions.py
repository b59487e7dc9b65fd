"""The renewal saga's moves as data: the facts, the inputs, one table, and `decide`.

A row reads (states, input, guard) -> decision: the status the saga moves to (or stays in), the
fields written, the commands carried out, the step put on its timeline, and an input that
follows at once (a refund owed, a price known), or a refusal. The first row that matches
decides; an input no row matches does what `OTHERWISE` says (a step at most). Nothing here does
I/O: `accounts.renewals.saga.RenewalSaga` loads the saga, decides, applies the decision and saves.

Adding a state: add it to `accounts.domain.SagaStatus`, then one row for each input it meets.
Where two inputs follow one rule (a hold and a capture; a refund and a hold's release), one
function makes the rows of both, and a decision several rows share is named once above them.
"""

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from accounts.domain import COMPENSATED, SagaStatus

S = SagaStatus


@dataclass(frozen=True)
class Facts:
    """What a decision needs to know of a saga (`status` None: no saga has this renewal_id)."""

    status: SagaStatus | None
    captured: bool = False
    held: bool = False  # an authorization: the money is held at the provider, not yet taken
    refund_requested: bool = False
    activation_failed: bool = False
    bundle: str | None = None  # "active" or "queued", once a ProfileActivated announced it
    compensated: bool = False
    token: bool = False
    auto_renewal: bool = False
    overdue: bool = False


class Input(StrEnum):
    """What a saga meets: the events it consumes, the actions on it, and what follows a move."""

    RENEWAL_REQUESTED = "RenewalRequested"
    RENEWAL_CONFLICTS = "RenewalRequested, other content"
    RENEWAL_PRICED = "RenewalRequested, priced"
    RENEWAL_INVALID = "RenewalRequested, invalid"
    PAYMENT_ACTION_REQUIRED = "PaymentActionRequired"
    PAYMENT_AUTHORIZED = "PaymentAuthorized"
    PAYMENT_SETTLED = "PaymentSettled"
    PAYMENT_CAPTURED = "PaymentSettled, of an authorization"
    PAYMENT_FAILED = "PaymentFailed"
    PAYMENT_DECLINED = "PaymentFailed, a hard decline"
    PROFILE_ACTIVATED = "ProfileActivated"
    ACTIVATION_FAILED = "ActivationFailed"
    PAYMENT_REFUNDED = "PaymentRefunded"
    PAYMENT_VOIDED = "PaymentRefunded (via void)"
    BUNDLE_CANCELLED = "BundleCancelled (cancelled_by_user)"
    BUNDLE_REPLACED = "BundleCancelled (replaced)"
    BUNDLE_STARTED = "BundleStarted"
    BUNDLE_ENDED = "BundleEnded"
    DEADLINE = "the deadline sweep"
    CANCEL = "the owner's cancel"
    RETRY = "operator retry"
    COMPENSATE = "operator compensate"
    REFUND_OWED = "a refund owed"
    CANCEL_OVERTAKEN = "a cancel overtaken"


class Command(StrEnum):
    """What a decision has carried out besides writing the saga row."""

    PRICE = "price the request"
    REQUEST_PAYMENT = "PaymentRequested"
    REQUEST_REFUND = "RefundRequested"
    REQUEST_BUNDLE_CANCEL = "BundleCancelRequested"
    REJECT_RENEWAL = "RenewalRejected"
    REJECT_DUPLICATE = "RenewalRejected (conflicting_duplicate)"
    RESEND_RENEWAL_REQUEST = "RenewalRequested"
    DISABLE_AUTO_RENEW = "AutoRenewDisabled"
    RELEASE_PROMOTION = "promotion released if uncaptured"
    MOVE_CARD = "the card's plans updated"


class Write(StrEnum):
    """A field of the saga row a decision writes, besides its status."""

    PAYMENT_DEADLINE = "payment deadline set"
    ACTION = "buyer's action and its deadline kept"
    ACTIVATION_DEADLINE = "activation deadline set"
    NO_DEADLINE = "deadline cleared"
    FORGET_TOKEN = "payment token forgotten"
    REASON = "reason from the cause"
    REASON_AND_DETAIL = "reason and detail from the cause"
    NO_REASON = "reason cleared"
    REMEMBER_FAILURE = "activation failure remembered"
    REFUND_ASKED = "refund marked requested"


@dataclass(frozen=True)
class Decision:
    """What an input does to a saga.

    `to` None: the status stays. `step` None: nothing on the timeline; `detail` None: the
    cause's. `reason` is a fixed reason written. `refund_reason` is the refund's reason for
    a `REFUND_OWED` that follows (a template over the saga's `activation_failure`; None: the
    cause's). `answer` and `refused` are what an action answers (templates over `status` and
    the `event_id` sent).
    """

    to: SagaStatus | None = None
    writes: tuple[Write, ...] = ()
    sends: tuple[Command, ...] = ()
    step: str | None = None
    detail: str | None = None
    reason: str | None = None
    then: Input | None = None
    refund_reason: str | None = None
    answer: str | None = None
    refused: str | None = None


Guard = Callable[[Facts], bool]


def always(facts: Facts) -> bool:
    """No condition."""
    return True


def captured(facts: Facts) -> bool:
    """The payment's capture has reached accounts."""
    return facts.captured


def activation_failed_first(facts: Facts) -> bool:
    """An ActivationFailed came before the capture was known."""
    return facts.activation_failed


def refund_asked(facts: Facts) -> bool:
    """The saga has requested its refund."""
    return facts.refund_requested


def no_refund_asked(facts: Facts) -> bool:
    """The saga has not requested a refund."""
    return not facts.refund_requested


def held(facts: Facts) -> bool:
    """The payment is an authorization: money held at the provider, not yet captured."""
    return facts.held


def refund_due(facts: Facts) -> bool:
    """A capture to refund or a hold to release, and no refund requested yet: at most one."""
    return (facts.captured or facts.held) and not facts.refund_requested


def compensated(facts: Facts) -> bool:
    """An operator gave the saga up."""
    return facts.compensated


def announced(facts: Facts) -> bool:
    """A ProfileActivated announced the plan (live or queued)."""
    return facts.bundle is not None


def queued_and_captured(facts: Facts) -> bool:
    """A queued plan whose capture is known: what a cancel can refund."""
    return facts.bundle == "queued" and facts.captured


def holds_token(facts: Facts) -> bool:
    """The saga can send its payment again: it holds its token, or its payment needs none."""
    return facts.token


def auto_renewal(facts: Facts) -> bool:
    """The renewal was requested by auto-renew."""
    return facts.auto_renewal


def overdue(facts: Facts) -> bool:
    """The saga's deadline has passed."""
    return facts.overdue


@dataclass(frozen=True)
class Row:
    """One transition: in any of `states`, on `given`, when `guard` holds: `decision`."""

    states: tuple[SagaStatus | None, ...]
    given: Input
    decision: Decision
    guard: Guard = always


ANY: tuple[SagaStatus, ...] = tuple(SagaStatus)
ENDED = (S.ACTIVATED, S.REJECTED, S.PAYMENT_FAILED, S.REFUNDED, S.CANCELLED)
AWAITING_PAYMENT = (S.REQUESTED, S.PAYMENT_PENDING, S.PAYMENT_ACTION_REQUIRED)
# Paid for, captured or held: provisioning's answer decides.
PAID_FOR = (S.AUTHORIZED, S.PAID)
OPEN = (*AWAITING_PAYMENT, *PAID_FOR)

_ACTIVATION_FAILED = "activation failed: {activation_failure}"
_RELEASED = "the hold on the payment was released; nothing was taken"
_ENDS = (Write.FORGET_TOKEN, Write.NO_DEADLINE)
_PAYMENT_FAILED = Decision(
    to=S.PAYMENT_FAILED,
    writes=(Write.REASON, *_ENDS),
    sends=(Command.RELEASE_PROMOTION,),
    step="payment_failed",
)
# Money taken or held for a plan that cannot be activated is given back.
_REFUND_FAILED_ACTIVATION = Decision(
    writes=(Write.REMEMBER_FAILURE,),
    step="activation_failed",
    then=Input.REFUND_OWED,
    refund_reason=_ACTIVATION_FAILED,
)
_CANCEL_TOO_LATE = Decision(
    to=S.ACTIVATED, step="cancel_refused", detail="the plan started before it was cancelled"
)


def _money_in(given: Input, to: SagaStatus, step: str, after_compensate: str) -> tuple[Row, ...]:
    """A hold (`to` AUTHORIZED) or a capture (`to` PAID), recorded in every state by one rule.

    Awaited, it moves the saga and starts the activation deadline; where activation failed
    first, or an operator gave the saga up (`after_compensate`, the refund's reason), the
    money is given back.
    """
    return (
        Row(
            AWAITING_PAYMENT,
            given,
            Decision(
                to=to,
                writes=(Write.ACTIVATION_DEADLINE,),
                step=step,
                then=Input.REFUND_OWED,
                refund_reason=_ACTIVATION_FAILED,
            ),
            activation_failed_first,
        ),
        Row(
            AWAITING_PAYMENT, given, Decision(to=to, writes=(Write.ACTIVATION_DEADLINE,), step=step)
        ),
        Row(
            ANY,
            given,
            Decision(step=step, then=Input.REFUND_OWED, refund_reason=_ACTIVATION_FAILED),
            activation_failed_first,
        ),
        Row(
            (S.TIMED_OUT,),
            given,
            Decision(step=step, then=Input.REFUND_OWED, refund_reason=after_compensate),
            compensated,
        ),
    )


def _given_back(given: Input, step: str, detail: str | None, named: str) -> tuple[Row, ...]:
    """A refund, or a hold's release, ends the saga by one rule: CANCELLED where its owner
    cancelled, else REFUNDED; refused where no refund was asked (`named` in the refusal).
    """
    return (
        Row(
            ANY,
            given,
            Decision(
                refused=named + " for renewal {renewal_id} ({status}), which asked for no refund"
            ),
            no_refund_asked,
        ),
        Row(
            (S.CANCELLING,),
            given,
            Decision(
                to=S.CANCELLED,
                writes=(Write.FORGET_TOKEN,),
                sends=(Command.RELEASE_PROMOTION,),
                step=step,
                detail=detail,
            ),
        ),
        Row(
            (*OPEN, S.REFUNDING, S.TIMED_OUT),
            given,
            Decision(
                to=S.REFUNDED,
                writes=_ENDS,
                sends=(Command.RELEASE_PROMOTION,),
                step=step,
                detail=detail,
            ),
        ),
    )


def _timed_out(
    reason: str,
    detail: str | None = None,
    *,
    step: str = "timed_out",
    then: Input | None = None,
    answer: str | None = None,
) -> Decision:
    """The saga ends TIMED_OUT: its deadline cleared and its promotion given back.

    The deadline sweep's way (step `timed_out`, with what it waited for in `detail`) and an
    operator's compensate (`_given_up`) end a saga alike, so what ending so does is said once.
    """
    return Decision(
        to=S.TIMED_OUT,
        reason=reason,
        writes=(Write.NO_DEADLINE,),
        sends=(Command.RELEASE_PROMOTION,),
        step=step,
        detail=detail,
        then=then,
        answer=answer,
    )


def _sent_again(command: Command, *, writes: tuple[Write, ...] = (), more: str = "") -> Decision:
    """An operator's retry: `command` (named by its event) sent again under its id."""
    return Decision(
        writes=writes,
        sends=(command,),
        step="operator_retried",
        detail=f"{command.value} sent again",
        answer=f"{command.value} {{event_id}} sent again{more}",
    )


def _given_up(answer: str, then: Input | None = None) -> Decision:
    """An operator's compensate of an open saga: it ends TIMED_OUT as a missed deadline does."""
    return _timed_out(COMPENSATED, step="operator_compensated", then=then, answer=answer)


def _left_as_it_is(answer: str) -> Decision:
    """An operator's compensate that changes nothing but gives a promotion back."""
    return Decision(sends=(Command.RELEASE_PROMOTION,), answer=answer)


TABLE: tuple[Row, ...] = (
    # A request: a new saga is priced, then charged or rejected; other content is refused.
    Row(
        (None,),
        Input.RENEWAL_REQUESTED,
        Decision(to=S.REQUESTED, step="requested", sends=(Command.PRICE,)),
    ),
    Row((S.REQUESTED,), Input.RENEWAL_REQUESTED, Decision(sends=(Command.PRICE,))),
    Row(
        ANY,
        Input.RENEWAL_CONFLICTS,
        Decision(sends=(Command.REJECT_DUPLICATE,), step="conflicting_duplicate_rejected"),
    ),
    Row(
        (S.REQUESTED,),
        Input.RENEWAL_PRICED,
        Decision(
            to=S.PAYMENT_PENDING,
            writes=(Write.PAYMENT_DEADLINE,),
            sends=(Command.REQUEST_PAYMENT,),
            step="payment_requested",
        ),
    ),
    Row(
        (S.REQUESTED,),
        Input.RENEWAL_INVALID,
        Decision(
            to=S.REJECTED,
            writes=(Write.REASON_AND_DETAIL, Write.FORGET_TOKEN),
            sends=(Command.REJECT_RENEWAL, Command.RELEASE_PROMOTION),
            step="rejected",
        ),
    ),
    # Billing's answers. The provider needs the buyer: the saga waits for their answer (a
    # newer action replaces the one kept); once paid for, a late one changes nothing.
    Row(
        AWAITING_PAYMENT,
        Input.PAYMENT_ACTION_REQUIRED,
        Decision(
            to=S.PAYMENT_ACTION_REQUIRED, writes=(Write.ACTION,), step="payment_action_required"
        ),
    ),
    # A hold and a capture are recorded in every state by the same rule.
    *_money_in(
        Input.PAYMENT_AUTHORIZED,
        S.AUTHORIZED,
        "payment_authorized",
        "payment authorized after an operator compensated",
    ),
    # Billing captures a hold once it sees ProfileActivated, which may reach accounts later:
    # AUTHORIZED becomes PAID (its activation deadline stands); anywhere else, a timeline step.
    Row((S.AUTHORIZED,), Input.PAYMENT_CAPTURED, Decision(to=S.PAID, step="payment_captured")),
    # A late capture is refunded only if activation failed or an operator gave the saga up
    # (else provisioning's answer decides).
    *_money_in(
        Input.PAYMENT_SETTLED,
        S.PAID,
        "payment_settled",
        "payment settled after an operator compensated",
    ),
    Row(
        AWAITING_PAYMENT,
        Input.PAYMENT_DECLINED,
        Decision(
            to=S.PAYMENT_FAILED,
            writes=(Write.REASON, *_ENDS),
            # Auto-renew goes off first: it checks the card still has the token the saga forgets.
            sends=(Command.DISABLE_AUTO_RENEW, Command.RELEASE_PROMOTION),
            step="payment_failed",
        ),
        auto_renewal,
    ),
    Row(AWAITING_PAYMENT, Input.PAYMENT_DECLINED, _PAYMENT_FAILED),
    Row(AWAITING_PAYMENT, Input.PAYMENT_FAILED, _PAYMENT_FAILED),
    # Provisioning's answers. A plan that runs stays, however late, unless a refund was asked.
    Row(
        OPEN,
        Input.PROFILE_ACTIVATED,
        Decision(
            to=S.ACTIVATED, writes=_ENDS, step="profile_activated", sends=(Command.MOVE_CARD,)
        ),
    ),
    Row(
        (S.TIMED_OUT,),
        Input.PROFILE_ACTIVATED,
        Decision(
            to=S.ACTIVATED,
            writes=(*_ENDS, Write.NO_REASON),
            step="profile_activated",
            sends=(Command.MOVE_CARD,),
        ),
        no_refund_asked,
    ),
    # A late repeat must not put a cancelled plan back on the card.
    Row((S.CANCELLED,), Input.PROFILE_ACTIVATED, Decision(step="profile_activated")),
    # Provisioning answers once per renewal: after a ProfileActivated the plan stands.
    Row(ANY, Input.ACTIVATION_FAILED, Decision(step="activation_failed_ignored"), announced),
    Row(ANY, Input.ACTIVATION_FAILED, _REFUND_FAILED_ACTIVATION, captured),
    # A hold is released (billing voids it: nothing is taken).
    Row(ANY, Input.ACTIVATION_FAILED, _REFUND_FAILED_ACTIVATION, held),
    Row(
        ANY,
        Input.ACTIVATION_FAILED,
        Decision(writes=(Write.REMEMBER_FAILURE,), step="activation_failed"),
    ),
    # Billing refunds only what a RefundRequested asked for: anything else is a contradiction.
    *_given_back(Input.PAYMENT_REFUNDED, "payment_refunded", None, "PaymentRefunded {event_id}"),
    # The release of a hold ends the saga as a refund does; the timeline says nothing was taken.
    *_given_back(
        Input.PAYMENT_VOIDED, "hold_released", _RELEASED, "PaymentRefunded {event_id} (void)"
    ),
    # The owner's cancel of a queued plan, and provisioning's answer to it.
    Row(
        (S.ACTIVATED,),
        Input.CANCEL,
        Decision(to=S.CANCELLING, sends=(Command.REQUEST_BUNDLE_CANCEL,), step="cancel_requested"),
        queued_and_captured,
    ),
    Row(
        (S.CANCELLING,),
        Input.BUNDLE_CANCELLED,
        Decision(
            step="bundle_cancelled",
            then=Input.REFUND_OWED,
            refund_reason="cancelled by the user before the plan started",
        ),
    ),
    # It ran, and a start=now plan took its place: nothing to give back.
    Row(
        (S.CANCELLING,),
        Input.BUNDLE_REPLACED,
        Decision(step="bundle_cancelled", then=Input.CANCEL_OVERTAKEN),
    ),
    Row(
        (S.CANCELLING,),
        Input.CANCEL_OVERTAKEN,
        Decision(
            to=S.ACTIVATED, step="cancel_refused", detail="the plan was replaced after it started"
        ),
        no_refund_asked,
    ),
    Row((S.CANCELLING,), Input.BUNDLE_STARTED, _CANCEL_TOO_LATE, no_refund_asked),
    Row((S.CANCELLING,), Input.BUNDLE_ENDED, _CANCEL_TOO_LATE, no_refund_asked),
    # The sweep refunds nothing: once a capture is known, provisioning's answer decides.
    Row(
        (S.PAYMENT_PENDING,),
        Input.DEADLINE,
        _timed_out("payment_timed_out", "no payment outcome in time"),
        overdue,
    ),
    Row(
        (S.PAYMENT_ACTION_REQUIRED,),
        Input.DEADLINE,
        _timed_out("payment_timed_out", "no answer to the buyer's approval in time"),
        overdue,
    ),
    Row(
        PAID_FOR,
        Input.DEADLINE,
        _timed_out("activation_timed_out", "no activation outcome in time"),
        overdue,
    ),
    # An operator's retry sends the command the saga waits on again, under the same id.
    Row((S.REQUESTED,), Input.RETRY, _sent_again(Command.RESEND_RENEWAL_REQUEST), holds_token),
    Row(
        (S.PAYMENT_PENDING,),
        Input.RETRY,
        _sent_again(
            Command.REQUEST_PAYMENT,
            writes=(Write.PAYMENT_DEADLINE,),
            more="; payment deadline restarted",
        ),
        holds_token,
    ),
    Row((S.CANCELLING,), Input.RETRY, _sent_again(Command.REQUEST_BUNDLE_CANCEL), no_refund_asked),
    Row(
        (S.REFUNDING, S.TIMED_OUT, S.CANCELLING),
        Input.RETRY,
        _sent_again(Command.REQUEST_REFUND),
        refund_asked,
    ),
    Row(
        PAID_FOR,
        Input.RETRY,
        Decision(
            refused="renewal {renewal_id} is {status} and waits for provisioning to activate the "
            "bundle: look at its activation (esimctl sagas show), or compensate to refund"
        ),
    ),
    Row(
        (S.PAYMENT_ACTION_REQUIRED,),
        Input.RETRY,
        Decision(
            refused="renewal {renewal_id} is PAYMENT_ACTION_REQUIRED and waits for the buyer "
            "to approve the payment at the provider (billing asks the provider at its expiry): "
            "nothing to send again"
        ),
    ),
    # An operator's compensate gives an open saga up; one already compensating stays as it is.
    Row(
        ENDED,
        Input.COMPENSATE,
        Decision(refused="renewal {renewal_id} has ended ({status}): nothing to compensate"),
    ),
    Row(
        (S.REFUNDING, S.TIMED_OUT),
        Input.COMPENSATE,
        _left_as_it_is("already compensating ({status}, its refund is requested); nothing changed"),
        refund_asked,
    ),
    # Refunding now could leave a live plan paid back: provisioning's answer decides.
    Row(
        (S.REFUNDING, S.TIMED_OUT),
        Input.COMPENSATE,
        _left_as_it_is(
            "already compensating ({status}, captured; provisioning's answer decides: a "
            "failure is refunded); nothing changed"
        ),
        captured,
    ),
    Row(
        (S.REFUNDING, S.TIMED_OUT),
        Input.COMPENSATE,
        _left_as_it_is(
            "already compensating ({status}, the payment is held; provisioning's answer "
            "decides: a failure releases it); nothing changed"
        ),
        held,
    ),
    Row(
        (S.REFUNDING, S.TIMED_OUT),
        Input.COMPENSATE,
        _left_as_it_is("already compensating ({status}, nothing was captured); nothing changed"),
    ),
    # Provisioning decides whether the plan runs; retry sends the pending command again.
    Row(
        (S.CANCELLING,),
        Input.COMPENSATE,
        _left_as_it_is("its owner is cancelling it (CANCELLING); nothing changed"),
    ),
    Row(
        OPEN,
        Input.COMPENSATE,
        _given_up("TIMED_OUT; refund of the captured payment requested", Input.REFUND_OWED),
        captured,
    ),
    Row(
        OPEN,
        Input.COMPENSATE,
        _given_up("TIMED_OUT; release of the held payment requested", Input.REFUND_OWED),
        held,
    ),
    # A capture or hold that still comes is given back (TIMED_OUT, compensated).
    Row(
        OPEN,
        Input.COMPENSATE,
        _given_up("TIMED_OUT; no payment is captured or held yet (a late one is given back)"),
    ),
    # At most one refund per renewal, never once it has ended; a timed-out or cancelling saga
    # keeps its status (its end comes with PaymentRefunded).
    Row(
        (*OPEN, S.REFUNDING),
        Input.REFUND_OWED,
        Decision(
            to=S.REFUNDING,
            writes=(Write.REFUND_ASKED, Write.NO_DEADLINE),
            sends=(Command.REQUEST_REFUND,),
            step="refund_requested",
        ),
        refund_due,
    ),
    Row(
        (S.TIMED_OUT, S.CANCELLING),
        Input.REFUND_OWED,
        Decision(
            writes=(Write.REFUND_ASKED, Write.NO_DEADLINE),
            sends=(Command.REQUEST_REFUND,),
            step="refund_requested",
        ),
        refund_due,
    ),
)

#: What an input does where no row matches: a step on the timeline at most, or a refusal.
OTHERWISE: dict[Input, Decision] = {
    Input.PAYMENT_ACTION_REQUIRED: Decision(step="payment_action_required"),
    Input.PAYMENT_AUTHORIZED: Decision(step="payment_authorized"),
    Input.PAYMENT_SETTLED: Decision(step="payment_settled"),
    # Billing captured a hold after the activation: recorded, it never ends the saga again.
    Input.PAYMENT_CAPTURED: Decision(step="payment_captured"),
    # A promotion is given back after every failure of an ended saga it held (once at most).
    Input.PAYMENT_FAILED: Decision(sends=(Command.RELEASE_PROMOTION,), step="payment_failed"),
    Input.PAYMENT_DECLINED: Decision(sends=(Command.RELEASE_PROMOTION,), step="payment_failed"),
    Input.PROFILE_ACTIVATED: Decision(step="profile_activated", sends=(Command.MOVE_CARD,)),
    Input.PAYMENT_REFUNDED: Decision(sends=(Command.RELEASE_PROMOTION,), step="payment_refunded"),
    Input.PAYMENT_VOIDED: Decision(
        sends=(Command.RELEASE_PROMOTION,), step="hold_released", detail=_RELEASED
    ),
    Input.BUNDLE_CANCELLED: Decision(step="bundle_cancelled"),
    Input.BUNDLE_REPLACED: Decision(step="bundle_cancelled"),
    Input.CANCEL: Decision(
        refused="the renewal is {status}: only a queued plan that has not started can be cancelled"
    ),
    Input.RETRY: Decision(
        refused="renewal {renewal_id} is {status}: it waits on nothing accounts could send again"
    ),
}

_IGNORED = Decision()
_BY_INPUT: dict[Input, tuple[Row, ...]] = {
    given: tuple(row for row in TABLE if row.given is given) for given in Input
}


def decide(facts: Facts, given: Input) -> Decision:
    """What `given` does to a saga standing as `facts` says: the first row that matches."""
    for row in _BY_INPUT[given]:
        if facts.status in row.states and row.guard(facts):
            return row.decision
    return OTHERWISE.get(given, _IGNORED)
