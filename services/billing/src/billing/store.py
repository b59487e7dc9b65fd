"""Billing tables: payments (which are also the ledger of captures) and refunds.

The hot path (a payment recorded, its rounds, ProfileActivated, the providers' webhooks) reads
and writes payments through the statements at the end of this module: SQLAlchemy Core, built
once at import, executed on the session's connection. A payment row read that way becomes a
transient `Payment` (attached to no session), which the transitions (`flow.PaymentFlow`) change
like any other; `write_payment` then writes the columns they changed.
"""

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from esim_core.clock import utcnow
from esim_core.duework.rows import OutsideCallColumns
from esim_core.observability.tracing import traceparent_field
from esim_core.persistence.db import timestamp
from esim_core.persistence.driver import Statement, Target, fetch, fetch_dicts, run
from esim_core.persistence.rows import transient
from sqlalchemy import Table, bindparam, case, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Field, SQLModel

from billing.domain import FINAL_PAYMENT_STATES, PaymentState, PaymentTerms, RefundState


class Payment(OutsideCallColumns, table=True):
    """One renewal's payment, from the request to its capture or failure.

    It is durable due work (`due_at`, `lease_until`): the payment loop claims it when due (to
    pay, ask, capture, release or close it). The token is kept only while another charge may
    follow, and cleared once the payment is final.
    """

    __tablename__ = "billing_payment"

    id: str = Field(primary_key=True, max_length=64)
    renewal_id: str = Field(unique=True, index=True, max_length=36)
    user_id: str = Field(max_length=64)
    iccid: str = Field(index=True, max_length=20)
    plan_code: str = Field(max_length=64)
    data_mb: int
    validity_days: int
    amount: int
    currency: str = Field(max_length=3)
    discount_amount: int | None = Field(
        default=None, description="what a promotion took off (accounts priced it); for receipts"
    )
    promo_code: str | None = Field(default=None, max_length=32)
    method: str = Field(max_length=16)
    token: str | None = Field(default=None, max_length=256, repr=False)
    start: str = Field(max_length=16)
    state: str = Field(default=PaymentState.PENDING, max_length=16, index=True)
    attempts: int = 0
    soft_declines: int = 0
    provider_reference: str | None = Field(
        default=None,
        max_length=128,
        description="the provider's payment (PaymentIntent, order, trade) once it exists",
    )
    capture_reference: str | None = Field(
        default=None, max_length=128, description="the provider's capture once the money is taken"
    )
    return_url: str | None = Field(default=None, max_length=2048)
    action_url: str | None = Field(default=None, max_length=2048)
    action_expires_at: datetime | None = timestamp(default=None)
    authorized_at: datetime | None = timestamp(default=None)
    capture_before: datetime | None = timestamp(default=None)
    capture_requested_at: datetime | None = timestamp(
        default=None, description="when billing saw ProfileActivated: the capture is due"
    )
    release_requested_at: datetime | None = timestamp(
        default=None, description="when a refund was asked of a payment not yet captured"
    )
    capture_overdue_at: datetime | None = timestamp(
        default=None, description="when billing found it could not capture in time (alerted)"
    )
    unknown_step: str | None = Field(
        default=None, max_length=16, description="the call whose answer was lost (Step)"
    )
    unknown_since: datetime | None = timestamp(default=None)
    failure_reason: str | None = Field(default=None, max_length=32)
    created_at: datetime = timestamp(default_factory=utcnow)
    updated_at: datetime = timestamp(default_factory=utcnow)
    settled_at: datetime | None = timestamp(default=None)
    failed_at: datetime | None = timestamp(default=None)
    voided_at: datetime | None = timestamp(default=None)
    traceparent: str | None = traceparent_field()

    def terms(self) -> PaymentTerms:
        """What was asked, to compare with a later request for the same renewal."""
        return PaymentTerms.of(self)


class Refund(OutsideCallColumns, table=True):
    """One renewal's refund of its captured payment; due work for the refund loop."""

    __tablename__ = "billing_refund"

    id: str = Field(primary_key=True, max_length=64)
    renewal_id: str = Field(unique=True, index=True, max_length=36)
    payment_id: str = Field(index=True, max_length=64)
    iccid: str = Field(max_length=20)
    amount: int
    currency: str = Field(max_length=3)
    reason: str = Field(max_length=256)
    state: str = Field(default=RefundState.PENDING, max_length=16, index=True)
    via: str = Field(
        default="refund",
        max_length=8,
        description="`refund`: money given back; `void`: an authorization released (the "
        "payment loop does it, this row records it)",
    )
    attempts: int = 0
    provider_reference: str | None = Field(default=None, max_length=128)
    unknown_since: datetime | None = timestamp(default=None)
    created_at: datetime = timestamp(default_factory=utcnow)
    updated_at: datetime = timestamp(default_factory=utcnow)
    refunded_at: datetime | None = timestamp(default=None)
    failed_at: datetime | None = timestamp(default=None)
    traceparent: str | None = traceparent_field()


TABLES: list[type[SQLModel]] = [Payment, Refund]


# The hot path's statements on payments (see the module's docstring).

PAYMENTS: Table = Payment.__table__  # type: ignore[attr-defined]
_COLUMNS = tuple(PAYMENTS.columns)
PAYMENT_COLUMNS: tuple[str, ...] = tuple(column.name for column in _COLUMNS)
"""Every column of `billing_payment`, in table order."""

_BY_ID = select(*_COLUMNS).where(PAYMENTS.c.id == bindparam("id"))
_BY_RENEWAL = select(*_COLUMNS).where(PAYMENTS.c.renewal_id == bindparam("renewal_id"))
_BY_PROVIDER_REFERENCE = (
    select(*_COLUMNS)
    .where(PAYMENTS.c.provider_reference == bindparam("provider_reference"))
    .limit(1)
)
# FOR UPDATE on PostgreSQL; SQLite renders none (its transactions begin IMMEDIATE, holding the
# database's write lock from the start: esim_core.persistence.db).
_READ = {
    (statement, lock): Statement(statement.with_for_update() if lock else statement)
    for statement in (_BY_ID, _BY_RENEWAL)
    for lock in (False, True)
}
_LOCK_BY_PROVIDER_REFERENCE = Statement(_BY_PROVIDER_REFERENCE.with_for_update())

# The SET clause is the columns a transition changed: `writing` compiles each shape once.
_WRITE = Statement(update(PAYMENTS).where(PAYMENTS.c.id == bindparam("_id")))
_WRITE_IF_UNCHANGED = Statement(
    update(PAYMENTS).where(
        PAYMENTS.c.id == bindparam("_id"),
        PAYMENTS.c.lease_until == bindparam("_lease"),
        PAYMENTS.c.updated_at == bindparam("_version"),
    )
)

# ProfileActivated: the capture becomes due, once, and due now where the money is held (a
# payment not yet authorized becomes due at its authorization, `flow.PaymentFlow.authorize`).
_REQUEST_CAPTURE = Statement(
    update(PAYMENTS)
    .where(
        PAYMENTS.c.renewal_id == bindparam("of_renewal"),
        *(PAYMENTS.c.state != final for final in sorted(FINAL_PAYMENT_STATES)),
        PAYMENTS.c.capture_requested_at.is_(None),
    )
    .values(
        capture_requested_at=bindparam("now"),
        updated_at=bindparam("now"),
        due_at=case(
            (PAYMENTS.c.state == PaymentState.AUTHORIZED.value, bindparam("now")),
            else_=PAYMENTS.c.due_at,
        ),
    )
    .returning(PAYMENTS.c.id, PAYMENTS.c.state)
)


def _insert_new(dialect_insert: Any) -> Any:
    return dialect_insert(PAYMENTS).on_conflict_do_nothing().returning(PAYMENTS.c.id)


#: A payment recorded unless its renewal (or id, derived from it) has one: one statement.
_INSERT_NEW = Statement(
    {"sqlite": _insert_new(sqlite.insert), "postgresql": _insert_new(postgresql.insert)},
    keys=PAYMENT_COLUMNS,
)


def payment_of(row: Mapping[str, Any]) -> Payment:
    """A transient `Payment` (in no session) of a row (column name: value) read by these
    statements or a claim."""
    return transient(Payment, row)


def snapshot(payment: Payment) -> dict[str, Any]:
    """The payment's column values now, to find what a transition changed (`write_payment`)."""
    values = payment.__dict__
    return {name: values.get(name) for name in PAYMENT_COLUMNS}


def changes(payment: Payment, before: Mapping[str, Any]) -> dict[str, Any]:
    """The columns whose values differ from `before` (a `snapshot`)."""
    values = payment.__dict__
    return {
        name: values.get(name)
        for name in PAYMENT_COLUMNS
        if values.get(name) != before[name] and name != "id"
    }


async def insert_payment(connection: Target, row: dict[str, Any]) -> bool:
    """Insert a new payment (every column given); False when its renewal has one already."""
    return bool(await fetch(connection, _INSERT_NEW, row))


async def payment_by_renewal(
    connection: Target, renewal_id: str, *, lock: bool = False
) -> Payment | None:
    """The renewal's payment as a transient `Payment`, locked until the transaction ends."""
    rows = await fetch_dicts(connection, _READ[_BY_RENEWAL, lock], {"renewal_id": renewal_id})
    return payment_of(rows[0]) if rows else None


async def payment_by_id(
    connection: Target, payment_id: str, *, lock: bool = False
) -> Payment | None:
    """The payment of this id as a transient `Payment`, locked until the transaction ends."""
    rows = await fetch_dicts(connection, _READ[_BY_ID, lock], {"id": payment_id})
    return payment_of(rows[0]) if rows else None


async def locked_payment_by_provider_reference(
    connection: Target, reference: str
) -> Payment | None:
    """The payment the provider knows by `reference`, locked until the transaction ends."""
    rows = await fetch_dicts(
        connection, _LOCK_BY_PROVIDER_REFERENCE, {"provider_reference": reference}
    )
    return payment_of(rows[0]) if rows else None


async def write_payment(connection: Target, payment: Payment, before: Mapping[str, Any]) -> None:
    """Write what changed since `before` of a payment this transaction holds locked."""
    changed = changes(payment, before)
    if changed:
        await run(connection, _WRITE.writing([*changed, "_id"]), {"_id": payment.id, **changed})


async def write_payment_if_unchanged(
    connection: Target, payment: Payment, before: Mapping[str, Any]
) -> bool:
    """Write what changed since `before`, if nobody wrote the row since it was read then.

    `before` is the row as a claim leased it: the lease it carries and its `updated_at`, which
    every other writer of a payment moves on (the handlers, a webhook that moves it, a round's
    commit), or it clears or renews the lease. False: someone did, and nothing was written.
    """
    changed = changes(payment, before)
    params = {"_id": payment.id, "_lease": before["lease_until"], "_version": before["updated_at"]}
    if not changed:
        changed = {"updated_at": before["updated_at"]}  # nothing to write but the check
    statement = _WRITE_IF_UNCHANGED.writing([*changed, *params])
    return bool(await run(connection, statement, {**params, **changed}))


async def request_capture(
    connection: Target, renewal_id: str, now: datetime
) -> tuple[str, str] | None:
    """Mark the renewal's payment activated, its capture due; None when there was nothing to
    mark (no payment, a final one, or one marked before). Returns the payment's id and state."""
    rows = await fetch(connection, _REQUEST_CAPTURE, {"of_renewal": renewal_id, "now": now})
    return (rows[0][0], rows[0][1]) if rows else None


# A renewal's refund, as the payment's transitions read and write it (`flow.py`): a refund asked
# during a capture, and the void that releases an authorization.

REFUNDS: Table = Refund.__table__  # type: ignore[attr-defined]
REFUND_COLUMNS: tuple[str, ...] = tuple(column.name for column in REFUNDS.columns)
_REFUND_BY_RENEWAL = Statement(
    select(*REFUNDS.columns).where(REFUNDS.c.renewal_id == bindparam("renewal_id"))
)
_WRITE_REFUND = Statement(update(REFUNDS).where(REFUNDS.c.id == bindparam("_id")))


async def refund_by_renewal(connection: Target, renewal_id: str) -> Refund | None:
    """The renewal's refund as a transient `Refund`, or None where none was asked."""
    rows = await fetch_dicts(connection, _REFUND_BY_RENEWAL, {"renewal_id": renewal_id})
    return transient(Refund, rows[0]) if rows else None


def refund_snapshot(refund: Refund) -> dict[str, Any]:
    """The refund's column values now, to find what a transition changed (`write_refund`)."""
    values = refund.__dict__
    return {name: values.get(name) for name in REFUND_COLUMNS}


async def write_refund(connection: Target, refund: Refund, before: Mapping[str, Any]) -> None:
    """Write what changed since `before` (a `refund_snapshot`) of a refund."""
    values = refund.__dict__
    changed = {
        name: values.get(name)
        for name in REFUND_COLUMNS
        if values.get(name) != before[name] and name != "id"
    }
    if changed:
        await run(
            connection, _WRITE_REFUND.writing([*changed, "_id"]), {"_id": refund.id, **changed}
        )
