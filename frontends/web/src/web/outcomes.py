"""Where a renewal stands, in the traveller's words: a label per status, a sentence per end.

Statuses the site does not know yet (a newer accounts) read as still in progress.
"""

from dataclasses import dataclass
from typing import Any

from web.i18n import _, format_day


def status_label(status: str | None) -> str:
    """A saga status in a word or two of the traveller's language (unknown ones as they are)."""
    labels = {
        "REQUESTED": _("Asked"),
        "PAYMENT_PENDING": _("Paying"),
        "PAYMENT_ACTION_REQUIRED": _("Waiting for your approval"),
        "AUTHORIZED": _("Money held"),
        "PAID": _("Paid"),
        "ACTIVATED": _("Active"),
        "REJECTED": _("Refused"),
        "PAYMENT_FAILED": _("Payment failed"),
        "REFUNDING": _("Refunding"),
        "REFUNDED": _("Refunded"),
        "TIMED_OUT": _("Timed out"),
        "CANCELLING": _("Cancelling"),
        "CANCELLED": _("Cancelled"),
    }
    return labels.get(str(status), str(status or ""))


def step_label(step: dict[str, Any]) -> str:
    """A timeline step in a word or two: its status's label, but for the steps that leave the
    status as it was (the capture after activation would read "Active" twice)."""
    named = {
        "payment_captured": _("Charged"),
        "payment_settled": _("Charged"),
        "hold_released": _("Hold released"),
    }
    return named.get(str(step.get("step")), status_label(step.get("status")))


@dataclass(frozen=True)
class Outcome:
    """Where a renewal stands, in one sentence, and whether it has ended."""

    tone: str  # "ok", "wait", "bad": how the page marks it
    sentence: str
    ended: bool


def outcome(renewal: dict[str, Any]) -> Outcome:
    """The plain sentence for a renewal's status (unknown statuses are still in progress)."""
    status = str(renewal.get("status", ""))
    reason = str(renewal.get("reason") or "")
    until = format_day(renewal.get("valid_until"))
    since = format_day(renewal.get("valid_from"))
    if status == "ACTIVATED":
        if renewal.get("bundle_state") == "queued":
            return Outcome(
                "ok",
                _(
                    "Paid and queued: the plan starts on {start} when the current one ends, and "
                    "is valid until {end}."
                ).format(start=since, end=until),
                True,
            )
        return Outcome("ok", _("Live now: the plan is active until {end}.").format(end=until), True)
    if status == "PAYMENT_FAILED":
        reasons = {
            "declined": _(
                "The payment was declined by the card's bank or the provider. Nothing was charged."
            ),
            "insufficient_funds": _(
                "Declined for insufficient funds, after several tries. Nothing was charged."
            ),
            "expired_method": _("The saved payment method has expired. Nothing was charged."),
            "invalid_token": _("The saved payment method is not valid. Nothing was charged."),
            "provider_unavailable": _(
                "The payment provider could not be reached. Nothing was charged: try again later."
            ),
            "not_approved": _(
                "The payment was not approved (cancelled or timed out). Nothing was charged."
            ),
        }
        return Outcome(
            "bad", reasons.get(reason, _("The payment failed. Nothing was charged.")), True
        )
    if status == "REJECTED":
        return Outcome(
            "bad",
            _("The renewal was refused before any payment: {why}").format(
                why=renewal.get("detail") or reason or "-"
            ),
            True,
        )
    if status == "REFUNDED":
        if str(renewal.get("via") or renewal.get("refund_via") or "") == "void":
            return Outcome(
                "bad",
                _("Activation failed: the hold on your money is released, nothing was charged."),
                True,
            )
        return Outcome(
            "bad", _("The plan could not be activated, so your payment was refunded in full."), True
        )
    if status == "CANCELLED":
        return Outcome("bad", _("The queued plan was cancelled and your payment refunded."), True)
    if status == "TIMED_OUT":
        return Outcome(
            "bad", _("The renewal took too long and was stopped; any payment is returned."), True
        )
    if status == "PAYMENT_ACTION_REQUIRED":
        return Outcome(
            "wait",
            _("Your payment provider needs your approval: open its page, approve, then come back."),
            False,
        )
    if status == "AUTHORIZED":
        return Outcome(
            "wait", _("The money is held (not yet charged); the plan is being activated."), False
        )
    if status == "PAID":
        return Outcome("wait", _("Paid; the plan is being activated on your card."), False)
    if status in ("REFUNDING", "CANCELLING"):
        return Outcome("wait", _("Your money is being returned."), False)
    return Outcome("wait", _("The payment is being processed."), False)
