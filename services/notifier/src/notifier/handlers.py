"""Reactions to consumed events: remember contacts and payments, and queue one notification per
event and channel.

Every handler but CardBound's runs the store's driver statements only (`Route.on_driver`): its
events' transactions run on the driver, with no ORM session.
"""

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from esim_core.clock import as_utc, utcnow
from esim_core.duework.loop import made_due
from esim_core.messaging.consumer import Route
from esim_core.observability.tracing import current_traceparent
from esim_core.persistence.driver import Target, connection_of
from esim_schemas import (
    AutoRenewDisabled,
    BundleCancelled,
    CardBound,
    CloudEvent,
    DataLow,
    EventData,
    PasswordChanged,
    PasswordResetRequested,
    PaymentAuthorized,
    PaymentFailed,
    PaymentRefunded,
    PaymentSettled,
    PlanExpiring,
    ProfileActivated,
    RenewalRejected,
)
from sqlmodel.ext.asyncio.session import AsyncSession

from notifier.domain import (
    HOLD_WAIT,
    PAYMENT_WAIT,
    RECEIPT_FIRST_LOOK_S,
    Channel,
    NotificationKind,
    NotificationStatus,
    notification_id,
    reminder_cause,
)
from notifier.settings import RECEIPT_PAYMENT_WAIT_S
from notifier.store import (
    Contact,
    ContactRow,
    HeldPayment,
    Notification,
    PaymentEvent,
    SettledPayment,
    add_new_notification,
    contact_and_payments_known,
    contact_of,
    keep_new_payment_event,
    wake_waiting_for_card,
    wake_waiting_receipt,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Waiting:
    """A notification queued to wait for something a later event brings, which wakes it:
    looked at first at `due_at` (in case the wake was missed), saying why in `detail`."""

    due_at: datetime
    detail: str


async def on_card_bound(session: AsyncSession, event: CloudEvent[CardBound]) -> None:
    """Remember whom to write to about the card, and wake notifications that waited for it."""
    data = event.data
    now = utcnow()
    contact = await session.get(Contact, data.iccid)
    if contact is None:
        contact = Contact(
            iccid=data.iccid,
            user_id=data.user_id,
            email=str(data.email),
            phone=data.phone,
            locale=data.locale,
            bound_at=event.time,
            updated_at=now,
        )
    elif as_utc(contact.bound_at) > event.time:
        # An older binding delivered late must not overwrite the current one.
        logger.info("ignoring an older CardBound %s for card %s", event.id, data.iccid)
        return
    else:
        contact.user_id = data.user_id
        contact.email = str(data.email)
        contact.phone = data.phone
        contact.locale = data.locale
        contact.bound_at = event.time
        contact.updated_at = now
    session.add(contact)
    # Notifications that arrived before this CardBound wait with a backoff; send them now.
    if await wake_waiting_for_card(await connection_of(session), data.iccid, now):
        made_due(session, Notification)
    logger.info("card %s now notifies user %s at %s", data.iccid, data.user_id, data.email)


async def on_profile_activated(
    transaction: Target, event: CloudEvent[ProfileActivated], *, first_look_s: float = 0.0
) -> None:
    """Queue the receipt: the plan is live or queued, and what was paid for it.

    The payment's part comes from the renewal's PaymentSettled, which may arrive later (a held
    payment is captured only after the activation): the sender waits a bounded time for it
    (`NOTIFIER_RECEIPT_PAYMENT_WAIT_S`). A receipt whose payment is not here yet is queued
    waiting, so that no send round looks at it before the PaymentSettled wakes it; it is looked
    at `first_look_s` after it was queued all the same, should a wake have been missed (on
    PostgreSQL the two transactions may run at once on two replicas, each not seeing the other).
    """
    data = event.data
    contact, settled, held = await contact_and_payments_known(
        transaction, data.iccid, str(data.renewal_id)
    )
    waiting = None
    if not settled:
        waiting = Waiting(
            due_at=utcnow() + timedelta(seconds=first_look_s),
            detail=HOLD_WAIT if held else PAYMENT_WAIT,
        )
    await notify_card(
        transaction,
        event,
        NotificationKind.PROFILE_ACTIVATED,
        contact=contact,
        known=True,
        waiting=waiting,
    )


async def keep_first(
    transaction: Target,
    table: type[PaymentEvent],
    event: CloudEvent[PaymentSettled] | CloudEvent[PaymentAuthorized],
    what: str,
) -> bool:
    """Keep a payment event's data in `table`, once per renewal; False if it was kept already.

    One statement inserts it unless the renewal has one (a second event of the renewal in the
    same batch finds the first).
    """
    renewal_id = str(event.data.renewal_id)
    row = {
        "renewal_id": renewal_id,
        "iccid": event.data.iccid,
        "event_id": event.id,
        "payload": event.data.model_dump(mode="json"),
        "received_at": utcnow(),
    }
    if not await keep_new_payment_event(transaction, table, row):
        logger.info("%s of renewal %s is known; skipping event %s", what, renewal_id, event.id)
        return False
    return True


async def on_payment_settled(transaction: Target, event: CloudEvent[PaymentSettled]) -> None:
    """Keep what the receipt needs of the payment, once per renewal, and wake a receipt that
    waits for it."""
    renewal_id = str(event.data.renewal_id)
    if not await keep_first(transaction, SettledPayment, event, "payment"):
        return
    if await wake_waiting_receipt(transaction, renewal_id, utcnow()):
        made_due(transaction, Notification)


async def on_payment_authorized(transaction: Target, event: CloudEvent[PaymentAuthorized]) -> None:
    """Keep when and what the provider holds of the payment, once per renewal, for the receipt.

    A receipt does not go out on the hold alone while it may still wait: billing captures the
    held money once the plan is live, and the receipt says when it was taken (the PaymentSettled
    that follows wakes it).
    """
    await keep_first(transaction, HeldPayment, event, "hold")


async def on_payment_failed(transaction: Target, event: CloudEvent[PaymentFailed]) -> None:
    """Queue the message that the payment failed and nothing was charged."""
    await notify_card(transaction, event, NotificationKind.PAYMENT_FAILED)


async def on_payment_refunded(transaction: Target, event: CloudEvent[PaymentRefunded]) -> None:
    """Queue the message that the payment was refunded, or its hold released (`via` `void`:
    nothing was taken); why is told at send time."""
    await notify_card(transaction, event, NotificationKind.PAYMENT_REFUNDED)


async def on_renewal_rejected(transaction: Target, event: CloudEvent[RenewalRejected]) -> None:
    """Queue the message that a renewal was not accepted, to the card's known contact only.

    A rejection for a card nobody bound (`unknown_card`), or made by someone other than the
    card's holder (`card_not_owned`), has no one to tell: mailing the holder about a stranger's
    attempt would confuse them, so it is skipped.
    """
    data = event.data
    contact = await contact_of(transaction, data.iccid)
    if contact is None:
        logger.info(
            "renewal %s rejected (%s) for card %s without a known contact; nothing to send",
            data.renewal_id,
            data.reason,
            data.iccid,
        )
        return
    if data.user_id is not None and data.user_id != contact.user_id:
        logger.info(
            "renewal %s rejected (%s) for a user who does not hold card %s; nothing to send",
            data.renewal_id,
            data.reason,
            data.iccid,
        )
        return
    await notify_card(transaction, event, NotificationKind.RENEWAL_REJECTED, contact=contact)


async def on_data_low(transaction: Target, event: CloudEvent[DataLow]) -> None:
    """Queue the message at 90 % used and when used up; 75 % is not worth a message."""
    data = event.data
    kind = {90: NotificationKind.DATA_LOW, 100: NotificationKind.DATA_USED_UP}.get(data.threshold)
    if kind is None:
        logger.info("card %s at %d %%: no message", data.iccid, data.threshold)
        return
    await notify_card(transaction, event, kind)


async def on_plan_expiring(transaction: Target, event: CloudEvent[PlanExpiring]) -> None:
    """Queue the reminder that the card's plan ends soon, once per plan and lead.

    One renewal gets a reminder per lead (3 days, then 1 day), so the reminder is not one per
    renewal: the card, the plan's end and the days left make it one.
    """
    data = event.data
    await notify_card(
        transaction,
        event,
        NotificationKind.PLAN_EXPIRING,
        cause=reminder_cause(data.iccid, data.valid_until, data.days_left),
        per_renewal=False,
    )


async def on_auto_renew_disabled(transaction: Target, event: CloudEvent[AutoRenewDisabled]) -> None:
    """Queue the message that auto-renew was turned off, why, and what to do."""
    await notify_card(transaction, event, NotificationKind.AUTO_RENEW_DISABLED)


async def on_bundle_cancelled(transaction: Target, event: CloudEvent[BundleCancelled]) -> None:
    """Queue the notice that a plan was cancelled by its owner (a refund follows) or replaced.

    A plan replaced by a known renewal (`replaced_by`) is told in that renewal's receipt: its
    ProfileActivated, published with this event, lists the plan under `replaces`; the consumer
    ignores such an event before it reaches this handler (`ignore_told_elsewhere`).
    """
    data = event.data
    if ignore_told_elsewhere(event) is not None:
        logger.info(
            "plan %s of renewal %s on card %s: told in the receipt of renewal %s",
            data.plan_code,
            data.renewal_id,
            data.iccid,
            data.replaced_by,
        )
        return
    await notify_card(transaction, event, NotificationKind.BUNDLE_CANCELLED)


async def notify_card(
    transaction: Target,
    event: CloudEvent[Any],
    kind: NotificationKind,
    *,
    contact: ContactRow | None = None,
    cause: str | None = None,
    per_renewal: bool = True,
    waiting: Waiting | None = None,
    known: bool = False,
) -> None:
    """Queue a card's message by e-mail, and by SMS where the card's contact has a phone.

    The phone is in the contact only for users who chose SMS (CardBound leaves it out else).
    `known`: `contact` was read already (None: the card has none yet).
    """
    iccid = event.data.subject()
    if iccid is None:
        raise ValueError(f"{event.type} carries no ICCID")
    if contact is None and not known:
        contact = await contact_of(transaction, iccid)
    channels = [Channel.EMAIL] + ([Channel.SMS] if contact is not None and contact.phone else [])
    for channel in channels:
        await queue_notification(
            transaction,
            event,
            kind,
            iccid=iccid,
            contact=contact,
            channel=channel,
            cause=cause,
            per_renewal=per_renewal,
            waiting=waiting,
        )


async def queue_notification(
    transaction: Target,
    event: CloudEvent[Any],
    kind: NotificationKind,
    *,
    iccid: str,
    contact: ContactRow | None,
    channel: Channel = Channel.EMAIL,
    cause: str | None = None,
    per_renewal: bool = True,
    waiting: Waiting | None = None,
) -> bool:
    """Add a pending notification about `event` to card `iccid` (by e-mail unless `channel`
    says otherwise), unless one exists for it already; due now, or as `waiting` says.

    `iccid` and `contact` (None: the card has none yet) are as `notify_card` found them once
    for all of a message's channels. The row's id is derived from the renewal and kind (or
    `cause`, or the event id where there is neither), so a redelivery or a re-published
    duplicate with a new event id finds it. With `per_renewal` false the row names no renewal,
    so the one-per-renewal-and-kind constraint does not hold it to one.

    Returns:
        Whether it was new (False: a duplicate).
    """
    data: EventData = event.data
    renewal_id = data.renewal() if per_renewal else None
    key = notification_id(kind, channel, renewal_id=renewal_id, event_id=event.id, cause=cause)
    row = pending(
        key,
        event,
        kind,
        channel,
        iccid=iccid,
        renewal_id=renewal_id,
        locale=contact.locale if contact is not None else None,
        waiting=waiting,
    )
    if not await add_new_notification(transaction, row):
        logger.info(
            "%s %s for renewal %s is already queued; skipping event %s",
            kind,
            channel,
            data.renewal(),
            event.id,
        )
        return False
    if waiting is None:
        made_due(transaction, Notification)
    logger.info("queued %s %s by %s for card %s (event %s)", kind, key, channel, iccid, event.id)
    return True


async def on_password_reset_requested(
    transaction: Target, event: CloudEvent[PasswordResetRequested]
) -> None:
    """Queue the reset code by e-mail, and by SMS where the account has a phone.

    The code stays sealed in the stored payload; it is opened only to write the message.
    """
    await queue_account_notification(transaction, event, NotificationKind.PASSWORD_RESET)


async def on_password_changed(transaction: Target, event: CloudEvent[PasswordChanged]) -> None:
    """Queue the notice that the password was changed, by e-mail and SMS where there is one."""
    await queue_account_notification(transaction, event, NotificationKind.PASSWORD_CHANGED)


async def queue_account_notification(
    transaction: Target, event: CloudEvent[Any], kind: NotificationKind
) -> None:
    """Add a pending notification about the account on each channel it can reach."""
    data = event.data
    channels = [Channel.EMAIL] + ([Channel.SMS] if data.phone else [])
    for channel in channels:
        key = notification_id(kind, channel, renewal_id=None, event_id=event.id)
        row = pending(key, event, kind, channel, iccid=None, locale=data.locale)
        if await add_new_notification(transaction, row):
            made_due(transaction, Notification)
            logger.info("queued %s %s by %s for user %s", kind, key, channel, data.user_id)


def pending(
    key: str,
    event: CloudEvent[Any],
    kind: NotificationKind,
    channel: Channel,
    *,
    iccid: str | None,
    renewal_id: str | None = None,
    locale: str | None,
    waiting: Waiting | None = None,
) -> dict[str, Any]:
    """The row of a new notification about `event`, due now (or as `waiting` says), keeping
    the event's data as it came: every column, for `add_new_notification`."""
    now = utcnow()
    return {
        "id": key,
        "event_id": event.id,
        "event_type": event.type,
        "kind": kind,
        "channel": channel,
        "iccid": iccid,
        "renewal_id": renewal_id,
        "locale": locale,
        "payload": event.data.model_dump(mode="json"),
        "status": NotificationStatus.PENDING,
        "recipient": None,
        "subject": None,
        "detail": waiting.detail if waiting is not None else None,
        "send_rounds": 0,
        "created_at": now,
        "sent_at": None,
        "due_at": waiting.due_at if waiting is not None else now,
        "lease_until": None,
        "traceparent": current_traceparent(),
    }


def ignore_told_elsewhere(event: CloudEvent[BundleCancelled]) -> str | None:
    """A plan replaced by a known renewal is told in that renewal's receipt: its cancellation
    changes nothing here, so the consumer need not even open a transaction for it."""
    data = event.data
    if data.reason == "replaced" and data.replaced_by is not None:
        return f"told in the receipt of renewal {data.replaced_by}"
    return None


def routes(*, receipt_payment_wait_s: float) -> list[Route]:
    """What the notifier reacts to: each event model, consumed on its own topic, and its
    handler; a receipt waits for its payment at most `receipt_payment_wait_s`."""
    first_look_s = min(receipt_payment_wait_s, RECEIPT_FIRST_LOOK_S)
    on_driver = partial(Route, on_driver=True)
    return [
        Route(CardBound, on_card_bound),
        on_driver(ProfileActivated, partial(on_profile_activated, first_look_s=first_look_s)),
        on_driver(PaymentFailed, on_payment_failed),
        on_driver(PaymentRefunded, on_payment_refunded),
        on_driver(RenewalRejected, on_renewal_rejected),
        on_driver(PaymentSettled, on_payment_settled),
        on_driver(PaymentAuthorized, on_payment_authorized),
        on_driver(DataLow, on_data_low),
        on_driver(PlanExpiring, on_plan_expiring),
        on_driver(AutoRenewDisabled, on_auto_renew_disabled),
        on_driver(BundleCancelled, on_bundle_cancelled, ignores=ignore_told_elsewhere),
        on_driver(PasswordResetRequested, on_password_reset_requested),
        on_driver(PasswordChanged, on_password_changed),
    ]


#: The routes with the settings' default receipt wait (the models the notifier consumes).
ROUTES = routes(receipt_payment_wait_s=RECEIPT_PAYMENT_WAIT_S)
