"""What a notification is, its states, its id, and the event each kind is about."""

from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from esim_core.ids import derived_id, namespace
from esim_schemas import (
    AutoRenewDisabled,
    BundleCancelled,
    DataLow,
    EventData,
    PasswordChanged,
    PasswordResetRequested,
    PaymentFailed,
    PaymentRefunded,
    PlanExpiring,
    ProfileActivated,
    RenewalRejected,
)


class NotificationKind(StrEnum):
    """What happened that a person hears about."""

    PROFILE_ACTIVATED = "profile_activated"
    PAYMENT_FAILED = "payment_failed"
    PAYMENT_REFUNDED = "payment_refunded"
    RENEWAL_REJECTED = "renewal_rejected"
    DATA_LOW = "data_low"
    DATA_USED_UP = "data_used_up"
    PASSWORD_RESET = "password_reset"
    PASSWORD_CHANGED = "password_changed"
    PLAN_EXPIRING = "plan_expiring"
    AUTO_RENEW_DISABLED = "auto_renew_disabled"
    BUNDLE_CANCELLED = "bundle_cancelled"


# Kinds about the account, not a card: the recipient comes with the event, not from a contact.
ACCOUNT_KINDS = frozenset({NotificationKind.PASSWORD_RESET, NotificationKind.PASSWORD_CHANGED})


class NotificationStatus(StrEnum):
    """Where a notification stands; all but `pending` are final."""

    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"
    UNDELIVERABLE = "undeliverable"


class Channel(StrEnum):
    """How a notification travels."""

    EMAIL = "email"
    SMS = "sms"


_IDS = namespace("notifier/notifications")


def notification_id(
    kind: NotificationKind,
    channel: Channel,
    *,
    renewal_id: str | None,
    event_id: str,
    cause: str | None = None,
) -> str:
    """A stable id for one notification, so a duplicate event maps onto the same row.

    Within a renewal there is one notification per kind and channel, whatever the event id of
    the (possibly re-published) event; `cause` names what else makes one notification (a
    reminder's plan and lead); without either the event id decides.
    """
    if cause is None:
        cause = f"renewal:{renewal_id}" if renewal_id is not None else f"event:{event_id}"
    return derived_id(_IDS, f"{kind}:{channel}:{cause}")


def reminder_cause(iccid: str, valid_until: datetime, days_left: int) -> str:
    """What makes one expiry reminder: the card, the end of its plan, and the lead."""
    return f"reminder:{iccid}:{valid_until.astimezone(UTC).isoformat()}:{days_left}"


def message_id(notification: str, domain: str) -> str:
    """The e-mail's Message-ID; the same for every resend of one notification."""
    return f"<{notification}@{domain}>"


EVENT_OF_KIND: dict[str, type[EventData]] = {
    NotificationKind.PROFILE_ACTIVATED: ProfileActivated,
    NotificationKind.PAYMENT_FAILED: PaymentFailed,
    NotificationKind.PAYMENT_REFUNDED: PaymentRefunded,
    NotificationKind.RENEWAL_REJECTED: RenewalRejected,
    NotificationKind.DATA_LOW: DataLow,
    NotificationKind.DATA_USED_UP: DataLow,
    NotificationKind.PASSWORD_RESET: PasswordResetRequested,
    NotificationKind.PASSWORD_CHANGED: PasswordChanged,
    NotificationKind.PLAN_EXPIRING: PlanExpiring,
    NotificationKind.AUTO_RENEW_DISABLED: AutoRenewDisabled,
    NotificationKind.BUNDLE_CANCELLED: BundleCancelled,
}
"""The event each kind of notification is about; its stored data is read back with it."""


def event_of(kind: str, payload: Mapping[str, Any]) -> EventData:
    """The event a notification was made from, validated again from its stored data.

    Raises:
        KeyError: an unknown kind.
        pydantic.ValidationError: the stored data is not that event's.
    """
    return EVENT_OF_KIND[kind].model_validate(dict(payload))


class RefundCause(StrEnum):
    """Why a refund was made, as far as the notifier can tell from what it heard."""

    CANCELLED = "cancelled"  # the owner cancelled the queued plan (BundleCancelled)
    AFTER_ACTIVATION = "after_activation"  # the plan was confirmed, then refunded
    NOT_ACTIVATED = "not_activated"  # the plan never went live


def refund_cause(*, cancelled_by_user: bool, confirmed: bool) -> RefundCause:
    """The cause a refund message gives, from the renewal's other notifications."""
    if cancelled_by_user:
        return RefundCause.CANCELLED
    return RefundCause.AFTER_ACTIVATION if confirmed else RefundCause.NOT_ACTIVATED


def contact_recheck_s(waited_s: float, max_s: float) -> float:
    """The pause before looking for a missing contact again: half the time waited so far.

    Early looks are frequent, because the CardBound is usually a moment behind; a CardBound
    also wakes waiting notifications at once, so the cap only bounds a missed wake-up.
    """
    return min(max_s, max(1.0, waited_s / 2))


RECEIPT_FIRST_LOOK_S = 5.0
"""When a receipt queued before its payment is first looked at, unless its PaymentSettled wakes
it sooner (it nearly always does): only a missed wake waits this long."""

PAYMENT_WAIT = "waiting for the renewal's payment (PaymentSettled)"
"""Why a receipt waits, while nothing is known of its payment."""

HOLD_WAIT = "waiting for the capture of the held payment (PaymentSettled)"
"""Why a receipt waits, while its payment is held (billing captures it after the activation)."""
