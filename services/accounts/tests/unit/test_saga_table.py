"""The renewal saga's transition table: every (state, input) pair, the impossible ones too.

`TABLE` says, for each state a saga can be in (a status, and the facts that change what it
does next: a capture seen or not, a refund asked or not, a plan live or queued) and each input
it can meet (every event accounts consumes, the deadline sweep, the owner's cancel, the
operator's retry and compensate), the state it moves to and the commands and events it puts in
its outbox, or that it refuses the input (a dead letter for an event, a 409 for an action).

Each pair is run on accounts as its bootstrap wires it: the saga row is written in that state,
the event goes through the service's consumer (decode, inbox, the chained handlers of
promotions and the plan watch), and the same message delivered again must change nothing.
`docs/architecture.md` (the renewal saga) shows the same table for people.
"""

import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from accounts.catalogue.plans import seed_catalogue
from accounts.catalogue.promotions import release_if_uncaptured
from accounts.domain import TERMINAL, WITH_DEADLINE, NotCancellableError, SagaStatus
from accounts.renewals.deadlines import sweep_deadlines
from accounts.renewals.saga import COMPENSATED, SagaActionRefusedError, fingerprint_of
from accounts.store import Card, CardPlan, Plan, PlanWatch, Renewal, RenewalStep, User
from accounts_testkit import ICCID, Clock, Wired, wired_accounts
from esim_core.messaging.consumer import MessageInfo
from esim_core.messaging.inbox import InboxEntry
from esim_core.messaging.outbox import OutboxMessage
from esim_schemas import (
    ActivationFailed,
    AutoRenewDisabled,
    BundleCancelled,
    BundleCancelRequested,
    BundleEnded,
    BundleStarted,
    DataLow,
    EventData,
    PaymentActionRequired,
    PaymentAuthorized,
    PaymentFailed,
    PaymentRefunded,
    PaymentRequested,
    PaymentSettled,
    ProfileActivated,
    RefundRequested,
    RenewalRejected,
    RenewalRequested,
    UsageUpdated,
    new_event,
)
from sqlmodel import col, delete, select

RENEWAL_ID = uuid.UUID("0c7d3a52-6a0e-4f4b-8d57-3f1f0f7b9a21")
USER_ID = "u-table"
TOKEN = "alipay_ok"
PLAN = "JP-30D-10GB"
START = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
PAYMENT_DEADLINE_S = 48 * 3600
ACTIVATION_DEADLINE_S = 25 * 3600
PAYMENT_ID = "pay_table"
# The buyer's approval step: it expires half an hour in, and the saga waits a grace past it
# (accounts' default `ACCOUNTS_PAYMENT_ACTION_GRACE_S`).
ACTION_URL = "https://www.paypal.com/checkoutnow?token=5O190127TN364715T"
ACTION_EXPIRES = START + timedelta(minutes=30)
ACTION_GRACE_S = 15 * 60

# What the saga sends, by the model's name in the table.
SENT: dict[str, type[EventData]] = {
    model.__name__: model
    for model in (
        RenewalRequested,
        RenewalRejected,
        PaymentRequested,
        RefundRequested,
        BundleCancelRequested,
        AutoRenewDisabled,
    )
}


# ---------------------------------------------------------------------------------------------
# The states: a status and the facts of the saga row that decide what an input does.


@dataclass(frozen=True)
class State:
    """A saga as it stands: its status, and what the row says besides."""

    status: SagaStatus | None  # None: accounts knows no saga of this renewal_id
    priced: bool = True
    captured: bool = False
    held: bool = False  # authorized: the money is held at the provider, not yet captured
    refund_requested: bool = False
    activation_failure: bool = False
    bundle: str | None = None  # "active" or "queued": announced by ProfileActivated
    reason: str | None = None

    def deadline(self) -> datetime | None:
        if self.status == SagaStatus.PAYMENT_PENDING:
            return START + timedelta(seconds=PAYMENT_DEADLINE_S)
        if self.status == SagaStatus.PAYMENT_ACTION_REQUIRED:
            return ACTION_EXPIRES + timedelta(seconds=ACTION_GRACE_S)
        if self.status in (SagaStatus.PAID, SagaStatus.AUTHORIZED):
            return START + timedelta(seconds=ACTIVATION_DEADLINE_S)
        return None


S = SagaStatus
STATES: dict[str, State] = {
    "no saga": State(None),
    "REQUESTED": State(S.REQUESTED, priced=False),
    "PAYMENT_PENDING": State(S.PAYMENT_PENDING),
    "PAYMENT_PENDING, activation failed first": State(S.PAYMENT_PENDING, activation_failure=True),
    "PAID": State(S.PAID, captured=True),
    "ACTIVATED, live": State(S.ACTIVATED, captured=True, bundle="active"),
    "ACTIVATED, queued": State(S.ACTIVATED, captured=True, bundle="queued"),
    "ACTIVATED, queued, capture not seen yet": State(S.ACTIVATED, bundle="queued"),
    "REJECTED": State(S.REJECTED, priced=False, reason="plan_not_available"),
    "PAYMENT_FAILED": State(S.PAYMENT_FAILED, reason="declined"),
    "REFUNDING": State(S.REFUNDING, captured=True, refund_requested=True, activation_failure=True),
    "REFUNDED": State(S.REFUNDED, captured=True, refund_requested=True, activation_failure=True),
    "TIMED_OUT, payment": State(S.TIMED_OUT, reason="payment_timed_out"),
    "TIMED_OUT, activation": State(S.TIMED_OUT, captured=True, reason="activation_timed_out"),
    "TIMED_OUT, compensated, nothing captured": State(S.TIMED_OUT, reason=COMPENSATED),
    "TIMED_OUT, refund requested": State(
        S.TIMED_OUT, captured=True, refund_requested=True, reason=COMPENSATED
    ),
    "CANCELLING": State(S.CANCELLING, captured=True, bundle="queued"),
    "CANCELLING, refund requested": State(
        S.CANCELLING, captured=True, bundle="queued", refund_requested=True
    ),
    "CANCELLED": State(S.CANCELLED, captured=True, bundle="queued", refund_requested=True),
    "PAYMENT_ACTION_REQUIRED": State(S.PAYMENT_ACTION_REQUIRED),
    "AUTHORIZED": State(S.AUTHORIZED, held=True),
    "ACTIVATED, live, capture follows": State(S.ACTIVATED, held=True, bundle="active"),
    "ACTIVATED, queued, capture follows": State(S.ACTIVATED, held=True, bundle="queued"),
    "REFUNDING, a hold's release": State(
        S.REFUNDING, held=True, refund_requested=True, activation_failure=True
    ),
    "TIMED_OUT, authorized": State(S.TIMED_OUT, held=True, reason="activation_timed_out"),
}


# ---------------------------------------------------------------------------------------------
# The inputs: each event accounts consumes (some in two variants), and the actions.

RR = "RenewalRequested, same content"
RR_OTHER = "RenewalRequested, other content"
RR_WITHDRAWN = "RenewalRequested, same content, plan withdrawn since"
PS = "PaymentSettled"
PF = "PaymentFailed (declined)"
PF_NA = "PaymentFailed (not_approved)"
PAR = "PaymentActionRequired"
PAU = "PaymentAuthorized"
PA_LIVE = "ProfileActivated (active)"
PA_QUEUED = "ProfileActivated (queued)"
AF = "ActivationFailed"
PR = "PaymentRefunded"
PR_VOID = "PaymentRefunded (via void)"
BC_USER = "BundleCancelled (cancelled_by_user)"
BC_REPLACED = "BundleCancelled (replaced)"
BS = "BundleStarted"
BE = "BundleEnded"
UU = "UsageUpdated (used up)"
DL = "DataLow (100 %)"
SWEEP_EARLY = "deadline sweep, a second before the deadline"
SWEEP_DUE = "deadline sweep, at the deadline"
CANCEL = "the owner's cancel"
RETRY = "operator retry"
COMPENSATE = "operator compensate"

EVENT_INPUTS: tuple[str, ...] = (RR, RR_OTHER, RR_WITHDRAWN, PS, PF, PA_LIVE, PA_QUEUED, AF, PR)
EVENT_INPUTS += (BC_USER, BC_REPLACED, BS, BE, UU, DL, PAR, PAU, PF_NA, PR_VOID)
ACTIONS = (SWEEP_EARLY, SWEEP_DUE, CANCEL, RETRY, COMPENSATE)
INPUTS = EVENT_INPUTS + ACTIONS


@dataclass(frozen=True)
class Outcome:
    """What an input does: the status after it (None: unchanged), what goes to the outbox, or
    a refusal (a dead letter for an event, a 409 for an action; nothing changes)."""

    to: SagaStatus | None = None
    sends: tuple[str, ...] = ()
    refused: bool = False


def go(status: SagaStatus, *sends: str) -> Outcome:
    return Outcome(status, sends)


def stay(*sends: str) -> Outcome:
    return Outcome(None, sends)


KEEP = Outcome()  # ignored: at most a step on the timeline
NO = Outcome(refused=True)  # refused: dead-lettered, or answered 409

# One row per state, one entry per input, written out in full (no defaults): a new state or
# input must be thought through for every pair.
TABLE: dict[str, dict[str, Outcome]] = {
    "no saga": {
        RR: go(S.PAYMENT_PENDING, "PaymentRequested"),
        RR_OTHER: go(S.PAYMENT_PENDING, "PaymentRequested"),  # the first: nothing to clash with
        RR_WITHDRAWN: go(S.REJECTED, "RenewalRejected"),
        PS: NO,
        PF: NO,
        PA_LIVE: NO,
        PA_QUEUED: NO,
        AF: NO,
        PR: NO,
        BC_USER: KEEP,  # carriers' news; the card's plans follow it, no saga to move
        BC_REPLACED: KEEP,
        BS: KEEP,
        BE: KEEP,
        UU: KEEP,
        DL: KEEP,
        SWEEP_EARLY: KEEP,
        SWEEP_DUE: KEEP,
        CANCEL: NO,
        RETRY: NO,
        COMPENSATE: NO,
        PAR: NO,
        PAU: NO,
        PF_NA: NO,
        PR_VOID: NO,
    },
    "REQUESTED": {
        RR: go(S.PAYMENT_PENDING, "PaymentRequested"),
        RR_OTHER: stay("RenewalRejected"),
        RR_WITHDRAWN: go(S.REJECTED, "RenewalRejected"),
        PS: go(S.PAID),  # impossible before PaymentRequested; the capture is kept
        PF: go(S.PAYMENT_FAILED, "AutoRenewDisabled"),
        PA_LIVE: go(S.ACTIVATED),
        PA_QUEUED: go(S.ACTIVATED),
        AF: KEEP,  # remembered, refunded once a capture is known
        PR: NO,  # no refund was asked for
        BC_USER: KEEP,
        BC_REPLACED: KEEP,
        BS: KEEP,
        BE: KEEP,
        UU: KEEP,
        DL: KEEP,
        SWEEP_EARLY: KEEP,
        SWEEP_DUE: KEEP,  # no deadline in REQUESTED (it shows as stuck instead)
        CANCEL: NO,
        RETRY: stay("RenewalRequested"),
        COMPENSATE: go(S.TIMED_OUT),
        PAR: go(S.PAYMENT_ACTION_REQUIRED),
        PAU: go(S.AUTHORIZED),
        PF_NA: go(S.PAYMENT_FAILED),  # a soft failure: auto-renew stays on
        PR_VOID: NO,
    },
    "PAYMENT_PENDING": {
        RR: KEEP,
        RR_OTHER: stay("RenewalRejected"),
        RR_WITHDRAWN: KEEP,  # already priced
        PS: go(S.PAID),
        PF: go(S.PAYMENT_FAILED, "AutoRenewDisabled"),
        PA_LIVE: go(S.ACTIVATED),  # ProfileActivated may overtake PaymentSettled
        PA_QUEUED: go(S.ACTIVATED),
        AF: KEEP,  # remembered until the capture is known
        PR: NO,
        BC_USER: KEEP,
        BC_REPLACED: KEEP,
        BS: KEEP,
        BE: KEEP,
        UU: KEEP,
        DL: KEEP,
        SWEEP_EARLY: KEEP,
        SWEEP_DUE: go(S.TIMED_OUT),
        CANCEL: NO,
        RETRY: stay("PaymentRequested"),
        COMPENSATE: go(S.TIMED_OUT),
        PAR: go(S.PAYMENT_ACTION_REQUIRED),  # the provider needs the buyer
        PAU: go(S.AUTHORIZED),
        PF_NA: go(S.PAYMENT_FAILED),
        PR_VOID: NO,
    },
    "PAYMENT_PENDING, activation failed first": {
        RR: KEEP,
        RR_OTHER: stay("RenewalRejected"),
        RR_WITHDRAWN: KEEP,
        PS: go(S.REFUNDING, "RefundRequested"),
        PF: go(S.PAYMENT_FAILED, "AutoRenewDisabled"),
        PA_LIVE: go(S.ACTIVATED),
        PA_QUEUED: go(S.ACTIVATED),
        AF: KEEP,
        PR: NO,
        BC_USER: KEEP,
        BC_REPLACED: KEEP,
        BS: KEEP,
        BE: KEEP,
        UU: KEEP,
        DL: KEEP,
        SWEEP_EARLY: KEEP,
        SWEEP_DUE: go(S.TIMED_OUT),
        CANCEL: NO,
        RETRY: stay("PaymentRequested"),
        COMPENSATE: go(S.TIMED_OUT),
        PAR: go(S.PAYMENT_ACTION_REQUIRED),
        PAU: go(S.REFUNDING, "RefundRequested"),  # released at once
        PF_NA: go(S.PAYMENT_FAILED),
        PR_VOID: NO,
    },
    "PAID": {
        RR: KEEP,
        RR_OTHER: stay("RenewalRejected"),
        RR_WITHDRAWN: KEEP,
        PS: KEEP,
        PF: KEEP,  # billing answers once: never both
        PA_LIVE: go(S.ACTIVATED),
        PA_QUEUED: go(S.ACTIVATED),
        AF: go(S.REFUNDING, "RefundRequested"),
        PR: NO,
        BC_USER: KEEP,
        BC_REPLACED: KEEP,
        BS: KEEP,
        BE: KEEP,
        UU: KEEP,
        DL: KEEP,
        SWEEP_EARLY: KEEP,
        SWEEP_DUE: go(S.TIMED_OUT),  # no refund: provisioning's answer decides
        CANCEL: NO,
        RETRY: NO,  # it waits on provisioning
        COMPENSATE: go(S.TIMED_OUT, "RefundRequested"),
        PAR: KEEP,  # paid already: a late action changes nothing
        PAU: KEEP,  # captured already: not held again
        PF_NA: KEEP,
        PR_VOID: NO,
    },
    "ACTIVATED, live": {
        RR: KEEP,
        RR_OTHER: stay("RenewalRejected"),
        RR_WITHDRAWN: KEEP,
        PS: KEEP,
        PF: KEEP,
        PA_LIVE: KEEP,
        PA_QUEUED: KEEP,
        AF: KEEP,  # provisioning answered already: the plan stands
        PR: NO,
        BC_USER: KEEP,
        BC_REPLACED: KEEP,  # a start=now plan took its place: nothing to give back
        BS: KEEP,
        BE: KEEP,
        UU: KEEP,
        DL: KEEP,
        SWEEP_EARLY: KEEP,
        SWEEP_DUE: KEEP,
        CANCEL: NO,  # never queued
        RETRY: NO,
        COMPENSATE: NO,
        PAR: KEEP,
        PAU: KEEP,
        PF_NA: KEEP,
        PR_VOID: NO,
    },
    "ACTIVATED, queued": {
        RR: KEEP,
        RR_OTHER: stay("RenewalRejected"),
        RR_WITHDRAWN: KEEP,
        PS: KEEP,
        PF: KEEP,
        PA_LIVE: KEEP,
        PA_QUEUED: KEEP,
        AF: KEEP,
        PR: NO,
        BC_USER: KEEP,  # provisioning cancels only what accounts asked it to
        BC_REPLACED: KEEP,
        BS: KEEP,
        BE: KEEP,
        UU: KEEP,
        DL: KEEP,
        SWEEP_EARLY: KEEP,
        SWEEP_DUE: KEEP,
        CANCEL: go(S.CANCELLING, "BundleCancelRequested"),
        RETRY: NO,
        COMPENSATE: NO,
        PAR: KEEP,
        PAU: KEEP,
        PF_NA: KEEP,
        PR_VOID: NO,
    },
    "ACTIVATED, queued, capture not seen yet": {
        RR: KEEP,
        RR_OTHER: stay("RenewalRejected"),
        RR_WITHDRAWN: KEEP,
        PS: KEEP,  # the capture is recorded; the plan stays
        PF: KEEP,
        PA_LIVE: KEEP,
        PA_QUEUED: KEEP,
        AF: KEEP,
        PR: NO,
        BC_USER: KEEP,
        BC_REPLACED: KEEP,
        BS: KEEP,
        BE: KEEP,
        UU: KEEP,
        DL: KEEP,
        SWEEP_EARLY: KEEP,
        SWEEP_DUE: KEEP,
        CANCEL: NO,  # nothing to refund yet: try again once the capture is known
        RETRY: NO,
        COMPENSATE: NO,
        PAR: KEEP,
        PAU: KEEP,  # the hold is recorded; the plan stays
        PF_NA: KEEP,
        PR_VOID: NO,
    },
    "REJECTED": {
        RR: KEEP,
        RR_OTHER: stay("RenewalRejected"),
        RR_WITHDRAWN: KEEP,
        PS: KEEP,
        PF: KEEP,
        PA_LIVE: KEEP,
        PA_QUEUED: KEEP,
        AF: KEEP,
        PR: NO,
        BC_USER: KEEP,
        BC_REPLACED: KEEP,
        BS: KEEP,
        BE: KEEP,
        UU: KEEP,
        DL: KEEP,
        SWEEP_EARLY: KEEP,
        SWEEP_DUE: KEEP,
        CANCEL: NO,
        RETRY: NO,
        COMPENSATE: NO,
        PAR: KEEP,
        PAU: KEEP,
        PF_NA: KEEP,
        PR_VOID: NO,
    },
    "PAYMENT_FAILED": {
        RR: KEEP,
        RR_OTHER: stay("RenewalRejected"),
        RR_WITHDRAWN: KEEP,
        PS: KEEP,
        PF: KEEP,
        PA_LIVE: KEEP,
        PA_QUEUED: KEEP,
        AF: KEEP,
        PR: NO,
        BC_USER: KEEP,
        BC_REPLACED: KEEP,
        BS: KEEP,
        BE: KEEP,
        UU: KEEP,
        DL: KEEP,
        SWEEP_EARLY: KEEP,
        SWEEP_DUE: KEEP,
        CANCEL: NO,
        RETRY: NO,
        COMPENSATE: NO,
        PAR: KEEP,  # the failure overtook it: the saga has ended
        PAU: KEEP,
        PF_NA: KEEP,
        PR_VOID: NO,
    },
    "REFUNDING": {
        RR: KEEP,
        RR_OTHER: stay("RenewalRejected"),
        RR_WITHDRAWN: KEEP,
        PS: KEEP,
        PF: KEEP,
        PA_LIVE: KEEP,  # compensation began: closed to activation
        PA_QUEUED: KEEP,
        AF: KEEP,
        PR: go(S.REFUNDED),
        BC_USER: KEEP,
        BC_REPLACED: KEEP,
        BS: KEEP,
        BE: KEEP,
        UU: KEEP,
        DL: KEEP,
        SWEEP_EARLY: KEEP,
        SWEEP_DUE: KEEP,
        CANCEL: NO,
        RETRY: stay("RefundRequested"),  # the same command again, under its own id
        COMPENSATE: KEEP,  # already compensating
        PAR: KEEP,
        PAU: KEEP,
        PF_NA: KEEP,
        PR_VOID: go(S.REFUNDED),  # the answer to the refund it asked for
    },
    "REFUNDED": {
        RR: KEEP,
        RR_OTHER: stay("RenewalRejected"),
        RR_WITHDRAWN: KEEP,
        PS: KEEP,
        PF: KEEP,
        PA_LIVE: KEEP,
        PA_QUEUED: KEEP,
        AF: KEEP,
        PR: KEEP,
        BC_USER: KEEP,
        BC_REPLACED: KEEP,
        BS: KEEP,
        BE: KEEP,
        UU: KEEP,
        DL: KEEP,
        SWEEP_EARLY: KEEP,
        SWEEP_DUE: KEEP,
        CANCEL: NO,
        RETRY: NO,
        COMPENSATE: NO,
        PAR: KEEP,
        PAU: KEEP,
        PF_NA: KEEP,
        PR_VOID: KEEP,
    },
    "TIMED_OUT, payment": {
        RR: KEEP,
        RR_OTHER: stay("RenewalRejected"),
        RR_WITHDRAWN: KEEP,
        PS: KEEP,  # a late capture: provisioning's answer decides
        PF: KEEP,
        PA_LIVE: go(S.ACTIVATED),  # a plan that runs, however late
        PA_QUEUED: go(S.ACTIVATED),
        AF: KEEP,  # remembered: refunded once the capture is known
        PR: NO,
        BC_USER: KEEP,
        BC_REPLACED: KEEP,
        BS: KEEP,
        BE: KEEP,
        UU: KEEP,
        DL: KEEP,
        SWEEP_EARLY: KEEP,
        SWEEP_DUE: KEEP,
        CANCEL: NO,
        RETRY: NO,
        COMPENSATE: KEEP,
        PAR: KEEP,
        PAU: KEEP,  # a late hold: provisioning's answer decides
        PF_NA: KEEP,
        PR_VOID: NO,
    },
    "TIMED_OUT, activation": {
        RR: KEEP,
        RR_OTHER: stay("RenewalRejected"),
        RR_WITHDRAWN: KEEP,
        PS: KEEP,
        PF: KEEP,
        PA_LIVE: go(S.ACTIVATED),
        PA_QUEUED: go(S.ACTIVATED),
        AF: stay("RefundRequested"),  # REFUNDED once billing answers
        PR: NO,
        BC_USER: KEEP,
        BC_REPLACED: KEEP,
        BS: KEEP,
        BE: KEEP,
        UU: KEEP,
        DL: KEEP,
        SWEEP_EARLY: KEEP,
        SWEEP_DUE: KEEP,
        CANCEL: NO,
        RETRY: NO,
        COMPENSATE: KEEP,  # refunding now could pay back a live plan
        PAR: KEEP,
        PAU: KEEP,
        PF_NA: KEEP,
        PR_VOID: NO,
    },
    "TIMED_OUT, compensated, nothing captured": {
        RR: KEEP,
        RR_OTHER: stay("RenewalRejected"),
        RR_WITHDRAWN: KEEP,
        PS: stay("RefundRequested"),  # given up on purpose: a capture that still comes goes back
        PF: KEEP,
        PA_LIVE: go(S.ACTIVATED),
        PA_QUEUED: go(S.ACTIVATED),
        AF: KEEP,
        PR: NO,
        BC_USER: KEEP,
        BC_REPLACED: KEEP,
        BS: KEEP,
        BE: KEEP,
        UU: KEEP,
        DL: KEEP,
        SWEEP_EARLY: KEEP,
        SWEEP_DUE: KEEP,
        CANCEL: NO,
        RETRY: NO,
        COMPENSATE: KEEP,
        PAR: KEEP,
        PAU: stay("RefundRequested"),  # given up: a late hold is released
        PF_NA: KEEP,
        PR_VOID: NO,
    },
    "TIMED_OUT, refund requested": {
        RR: KEEP,
        RR_OTHER: stay("RenewalRejected"),
        RR_WITHDRAWN: KEEP,
        PS: KEEP,
        PF: KEEP,
        PA_LIVE: KEEP,  # the refund was asked for: it stands
        PA_QUEUED: KEEP,
        AF: KEEP,
        PR: go(S.REFUNDED),
        BC_USER: KEEP,
        BC_REPLACED: KEEP,
        BS: KEEP,
        BE: KEEP,
        UU: KEEP,
        DL: KEEP,
        SWEEP_EARLY: KEEP,
        SWEEP_DUE: KEEP,
        CANCEL: NO,
        RETRY: stay("RefundRequested"),
        COMPENSATE: KEEP,
        PAR: KEEP,
        PAU: KEEP,
        PF_NA: KEEP,
        PR_VOID: go(S.REFUNDED),
    },
    "CANCELLING": {
        RR: KEEP,
        RR_OTHER: stay("RenewalRejected"),
        RR_WITHDRAWN: KEEP,
        PS: KEEP,
        PF: KEEP,
        PA_LIVE: KEEP,
        PA_QUEUED: KEEP,
        AF: KEEP,  # the plan was announced: only the cancellation decides a refund
        PR: NO,  # no refund before the cancellation is confirmed
        BC_USER: stay("RefundRequested"),
        BC_REPLACED: go(S.ACTIVATED),  # it ran: nothing to give back
        BS: go(S.ACTIVATED),  # it started first: the plan stays
        BE: go(S.ACTIVATED),
        UU: KEEP,
        DL: KEEP,
        SWEEP_EARLY: KEEP,
        SWEEP_DUE: KEEP,
        CANCEL: NO,  # already being cancelled
        RETRY: stay("BundleCancelRequested"),
        COMPENSATE: KEEP,  # provisioning decides whether the plan runs
        PAR: KEEP,
        PAU: KEEP,
        PF_NA: KEEP,
        PR_VOID: NO,
    },
    "CANCELLING, refund requested": {
        RR: KEEP,
        RR_OTHER: stay("RenewalRejected"),
        RR_WITHDRAWN: KEEP,
        PS: KEEP,
        PF: KEEP,
        PA_LIVE: KEEP,
        PA_QUEUED: KEEP,
        AF: KEEP,
        PR: go(S.CANCELLED),
        BC_USER: KEEP,
        BC_REPLACED: KEEP,
        BS: KEEP,  # the cancellation was confirmed first: the refund stands
        BE: KEEP,
        UU: KEEP,
        DL: KEEP,
        SWEEP_EARLY: KEEP,
        SWEEP_DUE: KEEP,
        CANCEL: NO,
        RETRY: stay("RefundRequested"),
        COMPENSATE: KEEP,
        PAR: KEEP,
        PAU: KEEP,
        PF_NA: KEEP,
        PR_VOID: go(S.CANCELLED),
    },
    "CANCELLED": {
        RR: KEEP,
        RR_OTHER: stay("RenewalRejected"),
        RR_WITHDRAWN: KEEP,
        PS: KEEP,
        PF: KEEP,
        PA_LIVE: KEEP,
        PA_QUEUED: KEEP,
        AF: KEEP,
        PR: KEEP,
        BC_USER: KEEP,
        BC_REPLACED: KEEP,
        BS: KEEP,
        BE: KEEP,
        UU: KEEP,
        DL: KEEP,
        SWEEP_EARLY: KEEP,
        SWEEP_DUE: KEEP,
        CANCEL: NO,
        RETRY: NO,
        COMPENSATE: NO,
        PAR: KEEP,
        PAU: KEEP,
        PF_NA: KEEP,
        PR_VOID: KEEP,
    },
    "PAYMENT_ACTION_REQUIRED": {
        RR: KEEP,
        RR_OTHER: stay("RenewalRejected"),
        RR_WITHDRAWN: KEEP,
        PS: go(S.PAID),  # Alipay: settled when the buyer pays
        PF: go(S.PAYMENT_FAILED, "AutoRenewDisabled"),
        PA_LIVE: go(S.ACTIVATED),  # provisioning heard of the payment first
        PA_QUEUED: go(S.ACTIVATED),
        AF: KEEP,
        PR: NO,
        BC_USER: KEEP,
        BC_REPLACED: KEEP,
        BS: KEEP,
        BE: KEEP,
        UU: KEEP,
        DL: KEEP,
        SWEEP_EARLY: KEEP,
        SWEEP_DUE: go(S.TIMED_OUT),  # the action expired and no answer came within the grace
        CANCEL: NO,
        RETRY: NO,  # it waits for the buyer, not on a command
        COMPENSATE: go(S.TIMED_OUT),
        PAR: KEEP,  # a newer action is kept
        PAU: go(S.AUTHORIZED),  # approved
        PF_NA: go(S.PAYMENT_FAILED),  # cancelled or expired
        PR_VOID: NO,
    },
    "AUTHORIZED": {
        RR: KEEP,
        RR_OTHER: stay("RenewalRejected"),
        RR_WITHDRAWN: KEEP,
        PS: go(S.PAID),  # captured after a ProfileActivated accounts has not seen yet
        PF: KEEP,  # billing answers once
        PA_LIVE: go(S.ACTIVATED),
        PA_QUEUED: go(S.ACTIVATED),
        AF: go(S.REFUNDING, "RefundRequested"),  # billing voids the hold
        PR: NO,
        BC_USER: KEEP,
        BC_REPLACED: KEEP,
        BS: KEEP,
        BE: KEEP,
        UU: KEEP,
        DL: KEEP,
        SWEEP_EARLY: KEEP,
        SWEEP_DUE: go(S.TIMED_OUT),  # as PAID: provisioning's answer decides
        CANCEL: NO,
        RETRY: NO,
        COMPENSATE: go(S.TIMED_OUT, "RefundRequested"),  # the hold is released
        PAR: KEEP,
        PAU: KEEP,
        PF_NA: KEEP,
        PR_VOID: NO,
    },
    "ACTIVATED, live, capture follows": {
        RR: KEEP,
        RR_OTHER: stay("RenewalRejected"),
        RR_WITHDRAWN: KEEP,
        PS: KEEP,  # the capture is recorded; it never ends the saga again
        PF: KEEP,
        PA_LIVE: KEEP,
        PA_QUEUED: KEEP,
        AF: KEEP,
        PR: NO,
        BC_USER: KEEP,
        BC_REPLACED: KEEP,
        BS: KEEP,
        BE: KEEP,
        UU: KEEP,
        DL: KEEP,
        SWEEP_EARLY: KEEP,
        SWEEP_DUE: KEEP,
        CANCEL: NO,
        RETRY: NO,
        COMPENSATE: NO,
        PAR: KEEP,
        PAU: KEEP,
        PF_NA: KEEP,
        PR_VOID: NO,
    },
    "ACTIVATED, queued, capture follows": {
        RR: KEEP,
        RR_OTHER: stay("RenewalRejected"),
        RR_WITHDRAWN: KEEP,
        PS: KEEP,
        PF: KEEP,
        PA_LIVE: KEEP,
        PA_QUEUED: KEEP,
        AF: KEEP,
        PR: NO,
        BC_USER: KEEP,
        BC_REPLACED: KEEP,
        BS: KEEP,
        BE: KEEP,
        UU: KEEP,
        DL: KEEP,
        SWEEP_EARLY: KEEP,
        SWEEP_DUE: KEEP,
        CANCEL: NO,  # nothing taken yet to refund: once captured
        RETRY: NO,
        COMPENSATE: NO,
        PAR: KEEP,
        PAU: KEEP,
        PF_NA: KEEP,
        PR_VOID: NO,
    },
    "REFUNDING, a hold's release": {
        RR: KEEP,
        RR_OTHER: stay("RenewalRejected"),
        RR_WITHDRAWN: KEEP,
        PS: KEEP,  # recorded; the release asked for stands (no second one)
        PF: KEEP,
        PA_LIVE: KEEP,
        PA_QUEUED: KEEP,
        AF: KEEP,
        PR: go(S.REFUNDED),
        BC_USER: KEEP,
        BC_REPLACED: KEEP,
        BS: KEEP,
        BE: KEEP,
        UU: KEEP,
        DL: KEEP,
        SWEEP_EARLY: KEEP,
        SWEEP_DUE: KEEP,
        CANCEL: NO,
        RETRY: stay("RefundRequested"),
        COMPENSATE: KEEP,
        PAR: KEEP,
        PAU: KEEP,
        PF_NA: KEEP,
        PR_VOID: go(S.REFUNDED),  # released: nothing was taken
    },
    "TIMED_OUT, authorized": {
        RR: KEEP,
        RR_OTHER: stay("RenewalRejected"),
        RR_WITHDRAWN: KEEP,
        PS: KEEP,
        PF: KEEP,
        PA_LIVE: go(S.ACTIVATED),
        PA_QUEUED: go(S.ACTIVATED),
        AF: stay("RefundRequested"),  # REFUNDED once released
        PR: NO,
        BC_USER: KEEP,
        BC_REPLACED: KEEP,
        BS: KEEP,
        BE: KEEP,
        UU: KEEP,
        DL: KEEP,
        SWEEP_EARLY: KEEP,
        SWEEP_DUE: KEEP,
        CANCEL: NO,
        RETRY: NO,
        COMPENSATE: KEEP,  # releasing now could leave a live plan unpaid
        PAR: KEEP,
        PAU: KEEP,
        PF_NA: KEEP,
        PR_VOID: NO,
    },
}

PAIRS = [(state, given) for state in STATES for given in INPUTS]


# ---------------------------------------------------------------------------------------------
# The table itself: complete, and true to the contract's rules.


def test_the_table_covers_every_state_and_input() -> None:
    assert set(TABLE) == set(STATES)
    for state, row in TABLE.items():
        assert set(row) == set(INPUTS), f"{state}: missing {set(INPUTS) - set(row)}"
    assert {state.status for state in STATES.values()} == {None, *SagaStatus}


def test_the_inputs_are_every_event_accounts_consumes(accounts_wired: Wired) -> None:
    consumed = {model for routes in accounts_wired.consumer.routes.values() for model in routes}
    assert consumed == {type(build_event(given)) for given in EVENT_INPUTS}


def test_the_table_keeps_the_contract() -> None:
    for (state_name, given), outcome in ((p, TABLE[p[0]][p[1]]) for p in PAIRS):
        state = STATES[state_name]
        where = f"{state_name} x {given}"
        if outcome.refused:
            assert not outcome.sends and outcome.to is None, where
        if state.status in TERMINAL and (state.bundle != "queued" or given != CANCEL):
            # Only the owner's cancel reopens one: a queued plan that has not started.
            assert outcome.to is None, f"{where}: a terminal saga moved"
        refunds = outcome.sends.count("RefundRequested")
        if refunds and given != COMPENSATE:
            # A refund gives back a capture; a hold is released (billing voids it).
            paid = state.captured or state.held or given in (PS, PAU)
            assert paid, f"{where}: a refund without a capture or a hold"
        if refunds and given != RETRY:
            assert refunds == 1 and not state.refund_requested, f"{where}: a second refund"
        if outcome.to == S.CANCELLED:
            assert state.status == S.CANCELLING and state.refund_requested, where
        if outcome.to in (S.REFUNDED, S.CANCELLED):
            assert given in (PR, PR_VOID) and state.refund_requested, where
        if given in (PR, PR_VOID) and not state.refund_requested:
            assert outcome.refused, f"{where}: a refund nobody asked for is not an answer"


# ---------------------------------------------------------------------------------------------
# Running each pair on accounts as wired.


@pytest.fixture(scope="module")
async def accounts_wired() -> AsyncIterator[Wired]:
    async with wired_accounts(
        Clock(START),
        payment_deadline_s=PAYMENT_DEADLINE_S,
        activation_deadline_s=ACTIVATION_DEADLINE_S,
    ) as wired:
        yield wired


def request(plan_code: str = PLAN, token: str = TOKEN) -> RenewalRequested:
    return RenewalRequested(
        renewal_id=RENEWAL_ID,
        user_id=USER_ID,
        iccid=ICCID,
        plan_code=plan_code,
        payment={"method": "alipay", "token": token},
        start="after_current",
        requested_at=START,
        channel="auto_renew",
    )


QUEUED_FROM = START + timedelta(days=10)


def build_event(given: str) -> EventData:
    """The event an input stands for, about this saga's renewal and card."""
    plan = {"code": PLAN, "data_mb": 10240, "validity_days": 30}
    price = {"amount": 1980, "currency": "USD"}
    dated = {"valid_from": QUEUED_FROM, "valid_until": QUEUED_FROM + timedelta(days=30)}
    common = {"renewal_id": RENEWAL_ID, "iccid": ICCID}
    builders: dict[str, Callable[[], EventData]] = {
        RR: request,
        RR_OTHER: lambda: request(plan_code="JP-1D-1GB"),
        RR_WITHDRAWN: request,
        PS: lambda: PaymentSettled(
            **common,
            payment_id=PAYMENT_ID,
            plan=plan,
            price=price,
            method="alipay",
            provider_reference="ch_table",
            attempts=1,
            settled_at=START,
            start="after_current",
        ),
        PF: lambda: PaymentFailed(
            **common, payment_id=PAYMENT_ID, reason="declined", attempts=1, failed_at=START
        ),
        PF_NA: lambda: PaymentFailed(
            **common, payment_id=PAYMENT_ID, reason="not_approved", attempts=1, failed_at=START
        ),
        PAR: lambda: PaymentActionRequired(
            **common,
            payment_id=PAYMENT_ID,
            method="alipay",
            action={"type": "redirect", "url": ACTION_URL},
            expires_at=ACTION_EXPIRES,
        ),
        PAU: lambda: PaymentAuthorized(
            **common,
            payment_id=PAYMENT_ID,
            plan=plan,
            price=price,
            method="alipay",
            provider_reference="auth_table",
            authorized_at=START,
            capture_before=START + timedelta(days=7),
            start="after_current",
        ),
        PA_LIVE: lambda: ProfileActivated(
            **common,
            plan_code=PLAN,
            data_mb=10240,
            valid_from=START,
            valid_until=START + timedelta(days=30),
            bundle_state="active",
            platform_reference="ord_table",
            activated_at=START,
        ),
        PA_QUEUED: lambda: ProfileActivated(
            **common,
            plan_code=PLAN,
            data_mb=10240,
            **dated,
            bundle_state="queued",
            platform_reference="ord_table",
            activated_at=START,
        ),
        AF: lambda: ActivationFailed(
            **common, reason="bundle_rejected", attempts=3, failed_at=START
        ),
        PR: lambda: PaymentRefunded(
            **common, payment_id=PAYMENT_ID, refund_id="ref_table", price=price, refunded_at=START
        ),
        PR_VOID: lambda: PaymentRefunded(
            **common,
            payment_id=PAYMENT_ID,
            refund_id="void_table",
            price=price,
            refunded_at=START,
            via="void",
        ),
        BC_USER: lambda: BundleCancelled(
            **common, plan_code=PLAN, reason="cancelled_by_user", cancelled_at=START
        ),
        BC_REPLACED: lambda: BundleCancelled(
            **common, plan_code=PLAN, reason="replaced", cancelled_at=START
        ),
        BS: lambda: BundleStarted(
            **common,
            plan_code=PLAN,
            data_mb=10240,
            **dated,
            platform_reference="ord_table",
            started_at=QUEUED_FROM,
        ),
        BE: lambda: BundleEnded(
            **common,
            plan_code=PLAN,
            reason="depleted",
            **dated,
            platform_reference="ord_table",
            ended_at=QUEUED_FROM + timedelta(days=1),
        ),
        UU: lambda: UsageUpdated(
            **common, data_total_mb=10240, data_used_mb=10240, as_of=START, bundle_status="depleted"
        ),
        DL: lambda: DataLow(**common, threshold=100, data_remaining_mb=0, as_of=START),
    }
    return builders[given]()


async def put_in_state(wired: Wired, state: State) -> None:
    """A clean database with the traveller, their card (auto-renew on) and the saga as `state`."""
    wired.clock.reset()
    wired.dead_letters.sent.clear()
    async with wired.accounts.runtime.database.session() as session:
        for table in (InboxEntry, OutboxMessage, RenewalStep, PlanWatch, CardPlan, Renewal):
            await session.exec(delete(table))
        for table in (Card, User, Plan):
            await session.exec(delete(table))
    await seed_catalogue(wired.accounts.runtime.database)
    async with wired.accounts.runtime.database.session() as session:
        session.add(User(id=USER_ID, email="t@example.com", password_hash="x", locale="en"))
        session.add(
            Card(
                iccid=ICCID,
                activation_code="LPA:1$x$y",
                user_id=USER_ID,
                auto_renew=True,
                auto_renew_plan_code=PLAN,
                auto_renew_method="alipay",
                auto_renew_token=TOKEN,
            )
        )
        if state.status is None:
            return
        asked = request()
        open_ = state.status not in TERMINAL | {S.CANCELLING}
        session.add(
            Renewal(
                renewal_id=str(RENEWAL_ID),
                fingerprint=fingerprint_of(asked),
                user_id=USER_ID,
                iccid=ICCID,
                plan_code=PLAN,
                payment_method="alipay",
                payment_token=TOKEN if open_ else None,
                start="after_current",
                channel="auto_renew",
                status=state.status,
                price_amount=1980 if state.priced else None,
                currency="USD" if state.priced else None,
                data_mb=10240 if state.priced else None,
                validity_days=30 if state.priced else None,
                payment_id=PAYMENT_ID if state.captured or state.held else None,
                payment_held=state.held,
                action_url=ACTION_URL if state.status == S.PAYMENT_ACTION_REQUIRED else None,
                action_expires_at=(
                    ACTION_EXPIRES if state.status == S.PAYMENT_ACTION_REQUIRED else None
                ),
                activation_failure="bundle_rejected" if state.activation_failure else None,
                refund_requested=state.refund_requested,
                reason=state.reason,
                bundle_state=state.bundle,
                valid_from=(START if state.bundle == "active" else QUEUED_FROM)
                if state.bundle
                else None,
                valid_until=(START if state.bundle == "active" else QUEUED_FROM)
                + timedelta(days=30)
                if state.bundle
                else None,
                deadline_at=state.deadline(),
                created_at=START,
                updated_at=START,
            )
        )


async def snapshot(wired: Wired) -> tuple[dict[str, Any] | None, list[tuple[str, str]], int]:
    """The saga row (but its update time), the outbox (type, id) and the timeline's length."""
    async with wired.accounts.runtime.database.session() as session:
        row = await session.get(Renewal, str(RENEWAL_ID))
        saga = None if row is None else row.model_dump(exclude={"updated_at"})
        sent = (await session.exec(select(OutboxMessage).order_by(col(OutboxMessage.id)))).all()
        steps = (await session.exec(select(RenewalStep))).all()
    return saga, [(message.event_type, message.event_id) for message in sent], len(steps)


async def deliver(wired: Wired, given: str, offset: int) -> None:
    data = build_event(given)
    topic = wired.accounts.runtime.topics.for_event(type(data))
    event_id = str(uuid.uuid5(RENEWAL_ID, given))
    body = new_event(data, source="/tests/table", event_id=event_id, time=START).to_json()
    info = MessageInfo(topic=topic, partition=0, offset=offset, key=ICCID.encode())
    await wired.consumer.handle(body, info)


async def act(wired: Wired, given: str, state: State) -> bool:
    """Run an action as its entry point does; returns whether it was refused."""
    saga = wired.accounts.saga
    if given in (SWEEP_EARLY, SWEEP_DUE):
        deadline = state.deadline()
        if given == SWEEP_EARLY:
            wired.clock.now = (deadline or START) - timedelta(seconds=1)
        else:
            wired.clock.now = deadline or START + timedelta(days=60)
        await sweep_deadlines(wired.accounts.runtime.database, saga)
        return False
    async with wired.accounts.runtime.database.session() as session:
        row = await session.get(Renewal, str(RENEWAL_ID), with_for_update=True)
        if row is None:
            return True  # 404: no such renewal
        try:
            if given == CANCEL:
                await saga.request_cancel(session, row, wired.clock())
            elif given == RETRY:
                await saga.retry(session, row, refund_reason="operator retry")
            else:
                await saga.compensate(session, row, "operator compensate")
                await release_if_uncaptured(session, row, wired.clock())
        except (NotCancellableError, SagaActionRefusedError):
            return True
    return False


async def apply(wired: Wired, given: str, state: State, offset: int) -> bool:
    """Deliver an event (returns whether it was dead-lettered) or run an action."""
    if given in EVENT_INPUTS:
        before = len(wired.dead_letters.sent)
        if given == RR_WITHDRAWN:
            async with wired.accounts.runtime.database.session() as session:
                plan = await session.get(Plan, PLAN)
                assert plan is not None
                plan.available = False
                session.add(plan)
        await deliver(wired, given, offset)
        return len(wired.dead_letters.sent) > before
    return await act(wired, given, state)


@pytest.mark.parametrize(("state_name", "given"), PAIRS, ids=[f"{s} x {g}" for s, g in PAIRS])
async def test_each_pair_moves_the_saga_as_the_table_says(
    accounts_wired: Wired, state_name: str, given: str
) -> None:
    wired, state, expected = accounts_wired, STATES[state_name], TABLE[state_name][given]
    await put_in_state(wired, state)
    saga_before, sent_before, _ = await snapshot(wired)

    refused = await apply(wired, given, state, offset=1)

    saga_after, sent_after, steps = await snapshot(wired)
    new = sent_after[len(sent_before) :]
    assert sent_after[: len(sent_before)] == sent_before
    assert refused == expected.refused
    if expected.refused:
        assert saga_after == saga_before and not new
    status_after = saga_after["status"] if saga_after is not None else None
    assert status_after == (expected.to or state.status)
    assert sorted(kind for kind, _ in new) == sorted(
        SENT[name].event_type for name in expected.sends
    )
    if saga_after is not None:
        # A deadline is set exactly while the saga waits for a payment or an activation.
        assert (saga_after["deadline_at"] is not None) == (status_after in WITH_DEADLINE)
        if any(kind == RefundRequested.event_type for kind, _ in new):
            assert saga_after["payment_id"] is not None and saga_after["refund_requested"]

    # The same message again (an action run again) changes nothing; an operator retry sends
    # the same command under the same id, which its consumer's inbox drops.
    refused_again = await apply(wired, given, state, offset=1)
    saga_again, sent_again, steps_again = await snapshot(wired)
    if given == RETRY:
        assert refused_again == refused
        assert sent_again[len(sent_after) :] == new
        assert saga_again == saga_after
        return
    assert (saga_again, sent_again, steps_again) == (saga_after, sent_after, steps)
    if given in EVENT_INPUTS:
        assert refused_again == refused
    elif given == CANCEL:
        assert refused_again  # a second cancel is a 409
    if refused:
        assert all(
            json.loads(value)["data"]["renewal_id"] == str(RENEWAL_ID)
            for _topic, value, _headers in wired.dead_letters.sent
        )
