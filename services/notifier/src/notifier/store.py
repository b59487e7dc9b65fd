"""Notifier tables: whom to write to about a card, what a receipt needs of a payment, and the
log of notifications to send."""

from datetime import datetime
from typing import Any

from esim_core.clock import utcnow
from esim_core.duework.rows import DueColumns
from esim_core.observability.tracing import traceparent_field
from esim_core.persistence.db import timestamp
from sqlalchemy import JSON, Column, UniqueConstraint
from sqlmodel import Field, SQLModel


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
