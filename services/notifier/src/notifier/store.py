"""Notifier tables: whom to write to about a card, what a receipt needs of a payment, and the
log of notifications to send."""

import json
from datetime import datetime
from typing import Any, NamedTuple

from esim_core.clock import utcnow
from esim_core.duework.rows import DueColumns
from esim_core.observability.tracing import traceparent_field
from esim_core.persistence.db import timestamp
from esim_core.persistence.driver import Statement, Target, fetch, run
from sqlalchemy import JSON, Column, UniqueConstraint, bindparam, exists, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Field, SQLModel

from notifier.domain import NotificationKind, NotificationStatus


class Contact(SQLModel, table=True):
    """Who hears about a card, from the latest CardBound for its ICCID."""

    __tablename__ = "notifier_contact"

    iccid: str = Field(primary_key=True, max_length=20)
    user_id: str = Field(index=True, max_length=64)
    email: str = Field(max_length=320)
    phone: str | None = Field(default=None, max_length=32)
    locale: str = Field(default="en", max_length=8)
    bound_at: datetime = timestamp(description="the CloudEvents time of the CardBound it came from")
    updated_at: datetime = timestamp(default_factory=utcnow)


class Notification(DueColumns, table=True):
    """One message to one person about one event, on one channel, and how sending it went.

    It is also due work: the send loop claims rows whose `due_at` has come.
    """

    __tablename__ = "notifier_notification"
    __table_args__ = (
        UniqueConstraint("event_id", "channel", name="uq_notifier_notification_event"),
        # Several NULL renewal ids never clash, so events without a renewal are not limited.
        UniqueConstraint("renewal_id", "kind", "channel", name="uq_notifier_notification_renewal"),
    )

    id: str = Field(primary_key=True, max_length=36)
    event_id: str = Field(max_length=256)
    event_type: str = Field(max_length=256)
    kind: str = Field(max_length=32)
    channel: str = Field(max_length=16)
    iccid: str | None = Field(default=None, index=True, max_length=20)
    renewal_id: str | None = Field(default=None, index=True, max_length=36)
    locale: str | None = Field(default=None, max_length=8)
    payload: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    status: str = Field(max_length=16, index=True)
    recipient: str | None = Field(default=None, max_length=320)
    subject: str | None = Field(default=None, max_length=512)
    detail: str | None = Field(default=None, max_length=512)
    send_rounds: int = 0
    created_at: datetime = timestamp(default_factory=utcnow)
    sent_at: datetime | None = timestamp(default=None)
    traceparent: str | None = traceparent_field()


class PaymentEvent(SQLModel):
    """The first event of one kind about a renewal's payment, kept as it came for the receipt.

    Each table of this shape keeps one event type (its docstring says which), one row per
    renewal: `notifier.handlers.keep_first` writes it.
    """

    renewal_id: str = Field(primary_key=True, max_length=36)
    iccid: str = Field(max_length=20)
    event_id: str = Field(max_length=256)
    payload: dict[str, Any] = Field(
        sa_type=JSON,
        nullable=False,
        description="the event's data as it came (no payment token travels in it)",
    )
    received_at: datetime = timestamp(default_factory=utcnow)


class SettledPayment(PaymentEvent, table=True):
    """What the receipt of a renewal needs of its payment, from the first PaymentSettled.

    The confirmation (ProfileActivated) and the payment travel on different topics, in either
    order; the receipt is written from both once both are here (`notifier.sender`).
    """

    __tablename__ = "notifier_payment"


class HeldPayment(PaymentEvent, table=True):
    """A renewal's payment held at the provider (the first PaymentAuthorized), for its receipt.

    Card and PayPal payments are authorized first and captured after the activation: the
    receipt says when the money was held and, once the PaymentSettled came, when it was taken.
    """

    __tablename__ = "notifier_authorization"


TABLES: list[type[SQLModel]] = [Contact, Notification, SettledPayment, HeldPayment]


# The hot path's reads and writes, as statements built and compiled once (per dialect) and sent
# straight to the driver on the transaction's connection (esim_core.persistence.driver): no ORM
# object per row, no unit of work, no SQLAlchemy execution per call. Handlers and the sender say
# what they do through these names.

_CONTACTS: Any = Contact.__table__  # type: ignore[attr-defined]
_NOTIFICATIONS: Any = Notification.__table__  # type: ignore[attr-defined]
_SETTLED: Any = SettledPayment.__table__  # type: ignore[attr-defined]
_HELD: Any = HeldPayment.__table__  # type: ignore[attr-defined]

_CONTACT_OF_CARD = select(
    _CONTACTS.c.user_id, _CONTACTS.c.email, _CONTACTS.c.phone, _CONTACTS.c.locale
).where(_CONTACTS.c.iccid == bindparam("iccid"))
_CONTACT = Statement(_CONTACT_OF_CARD)

_SETTLED_KEPT = exists().where(_SETTLED.c.renewal_id == bindparam("renewal_id")).label("settled")
_HELD_KEPT = exists().where(_HELD.c.renewal_id == bindparam("renewal_id")).label("held")

#: A card's contact, and whether a renewal's PaymentSettled and PaymentAuthorized are kept: no
#: row before the card's first CardBound.
_CONTACT_AND_PAYMENTS_KNOWN = Statement(_CONTACT_OF_CARD.add_columns(_SETTLED_KEPT, _HELD_KEPT))

#: A card's contact, and the data of a renewal's PaymentSettled and PaymentAuthorized as kept:
#: no row before the card's first CardBound.
_CONTACT_AND_PAYMENTS = Statement(
    _CONTACT_OF_CARD.add_columns(
        select(_SETTLED.c.payload)
        .where(_SETTLED.c.renewal_id == bindparam("renewal_id"))
        .scalar_subquery()
        .label("settled"),
        select(_HELD.c.payload)
        .where(_HELD.c.renewal_id == bindparam("renewal_id"))
        .scalar_subquery()
        .label("held"),
    )
)

_PAYMENT_EVENTS_KNOWN = Statement(select(_SETTLED_KEPT, _HELD_KEPT))

_KINDS_OF_RENEWAL = Statement(
    select(_NOTIFICATIONS.c.kind, _NOTIFICATIONS.c.payload).where(
        _NOTIFICATIONS.c.renewal_id == bindparam("renewal_id")
    )
)

# A notification that waits (no send round yet) for what a later event brings: made due now.
# (Its constants are parameters with values of their own: the driver sends them, no call does.)
_WAITING = (
    _NOTIFICATIONS.c.status == NotificationStatus.PENDING.value,
    _NOTIFICATIONS.c.send_rounds == 0,
    _NOTIFICATIONS.c.due_at.is_not(None),
)
_WAKE_CARD = Statement(
    update(_NOTIFICATIONS)
    .where(_NOTIFICATIONS.c.iccid == bindparam("card"), *_WAITING)
    .values(due_at=bindparam("now"))
)
_WAKE_RECEIPT = Statement(
    update(_NOTIFICATIONS)
    .where(
        _NOTIFICATIONS.c.renewal_id == bindparam("renewal"),
        _NOTIFICATIONS.c.kind == NotificationKind.PROFILE_ACTIVATED.value,
        *_WAITING,
    )
    .values(due_at=bindparam("now"))
)


def _insert_new(dialect_insert: Any, table: Any) -> Any:
    # ON CONFLICT DO NOTHING without a target: any unique key (the id, one per event and
    # channel, one per renewal, kind and channel) makes a second row of the same thing a no-op.
    key = next(iter(table.primary_key.columns))
    return dialect_insert(table).on_conflict_do_nothing().returning(key)


def _per_dialect(table: Any) -> Statement:
    # Each call gives every column (the row is written whole).
    return Statement(
        {
            "sqlite": _insert_new(sqlite.insert, table),
            "postgresql": _insert_new(postgresql.insert, table),
        },
        keys=[column.name for column in table.columns],
    )


_NEW_NOTIFICATION = _per_dialect(_NOTIFICATIONS)
_NEW_PAYMENT_EVENT = {SettledPayment: _per_dialect(_SETTLED), HeldPayment: _per_dialect(_HELD)}


class ContactRow(NamedTuple):
    """Whom a card's messages go to, as `contact_of` reads it."""

    user_id: str
    email: str
    phone: str | None
    locale: str


async def contact_of(connection: Target, iccid: str) -> ContactRow | None:
    """The card's contact, or None before its first CardBound."""
    rows = await fetch(connection, _CONTACT, {"iccid": iccid})
    return ContactRow._make(rows[0]) if rows else None


async def contact_and_payments_known(
    connection: Target, iccid: str, renewal_id: str
) -> tuple[ContactRow | None, bool, bool]:
    """The card's contact (None before its first CardBound), and whether the renewal's
    PaymentSettled and PaymentAuthorized are kept: one read where the contact is known."""
    rows = await fetch(
        connection, _CONTACT_AND_PAYMENTS_KNOWN, {"iccid": iccid, "renewal_id": renewal_id}
    )
    if not rows:
        return None, *await payment_events_known(connection, renewal_id)
    *contact, settled, held = rows[0]
    return ContactRow._make(contact), bool(settled), bool(held)


async def contact_and_payments(
    connection: Target, iccid: str, renewal_id: str | None
) -> tuple[ContactRow | None, dict[str, Any] | None, dict[str, Any] | None]:
    """The card's contact (None before its first CardBound), and the data of the renewal's
    PaymentSettled and PaymentAuthorized as kept, each where there is one: one read."""
    if renewal_id is None:
        return await contact_of(connection, iccid), None, None
    rows = await fetch(
        connection, _CONTACT_AND_PAYMENTS, {"iccid": iccid, "renewal_id": renewal_id}
    )
    if not rows:
        return None, None, None
    *contact, settled, held = rows[0]
    return ContactRow._make(contact), _json(settled), _json(held)


async def add_new_notification(connection: Target, row: dict[str, Any]) -> bool:
    """Insert a notification unless one of it exists (same id, event and channel, or renewal,
    kind and channel); tells whether it was new. `row` gives every column."""
    return bool(await fetch(connection, _NEW_NOTIFICATION, row))


async def keep_new_payment_event(
    connection: Target, table: type[PaymentEvent], row: dict[str, Any]
) -> bool:
    """Keep a renewal's payment event in `table` unless one is kept; tells whether it was new.
    `row` gives every column."""
    return bool(await fetch(connection, _NEW_PAYMENT_EVENT[table], row))


async def payment_events_known(connection: Target, renewal_id: str) -> tuple[bool, bool]:
    """Whether the renewal's PaymentSettled and its PaymentAuthorized are kept, in one read."""
    ((settled, held),) = await fetch(connection, _PAYMENT_EVENTS_KNOWN, {"renewal_id": renewal_id})
    return bool(settled), bool(held)


def _json(value: Any) -> dict[str, Any] | None:
    # The scalar subqueries keep the column's JSON type; text is decoded should a driver not.
    if value is None or isinstance(value, dict):
        return value
    decoded: dict[str, Any] = json.loads(value)
    return decoded


async def kinds_told_of(connection: Target, renewal_id: str) -> list[tuple[str, Any]]:
    """(kind, payload) of every notification queued about a renewal."""
    rows = await fetch(connection, _KINDS_OF_RENEWAL, {"renewal_id": renewal_id})
    return [(kind, payload) for kind, payload in rows]


async def wake_waiting_for_card(connection: Target, iccid: str, now: datetime) -> int:
    """Make the card's notifications that wait for its contact due now; returns how many."""
    return await run(connection, _WAKE_CARD, {"card": iccid, "now": now})


async def wake_waiting_receipt(connection: Target, renewal_id: str, now: datetime) -> int:
    """Make the renewal's receipt that waits for its payment due now; returns how many rows
    (one per channel)."""
    return await run(connection, _WAKE_RECEIPT, {"renewal": renewal_id, "now": now})


# The SET clause is the columns given: `writing` compiles each set of them once.
_WRITE_NOTIFICATION = Statement(
    update(_NOTIFICATIONS).where(_NOTIFICATIONS.c.id == bindparam("key"))
)


async def write_notification(connection: Target, key: str, values: dict[str, Any]) -> None:
    """Write what a send round decided about a notification (`values`: columns to set)."""
    await run(connection, _WRITE_NOTIFICATION.writing([*values, "key"]), {"key": key, **values})
