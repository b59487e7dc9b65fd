"""Provisioning tables: activations and cancellations (due work), bundles, polls, callbacks."""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from esim_core.clock import utcnow
from esim_core.duework.rows import OutsideCallColumns
from esim_core.observability.tracing import current_traceparent, traceparent_field
from esim_core.persistence.db import timestamp
from esim_core.persistence.driver import Statement, Target, fetch, fetch_dicts, run
from esim_core.persistence.rows import transient
from sqlalchemy import bindparam, case, literal, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Field, SQLModel

from provisioning.domain import ENDED_STATUSES, ActivationState, ActivationTerms


class Activation(OutsideCallColumns, table=True):
    """One renewal's bundle, from the settled payment to live at the platform, or failed.

    It is durable due work (`due_at`, `lease_until`): the activation loop claims it when due,
    orders the bundle (`ordering`), then follows the order (`following`) until it is
    `activated` or `failed`.
    """

    __tablename__ = "provisioning_activation"

    id: str = Field(primary_key=True, max_length=64)
    renewal_id: str = Field(unique=True, index=True, max_length=36)
    payment_id: str = Field(max_length=64)
    iccid: str = Field(index=True, max_length=20)
    plan_code: str = Field(max_length=64)
    data_mb: int
    validity_days: int
    start: str = Field(max_length=16)
    state: str = Field(default=ActivationState.ORDERING, max_length=16, index=True)
    order_id: str | None = Field(default=None, max_length=128, index=True)
    bundle_state: str | None = Field(default=None, max_length=16)
    valid_from: datetime | None = timestamp(default=None)
    valid_until: datetime | None = timestamp(default=None)
    attempts: int = Field(default=0, description="platform rounds so far")
    polls: int = Field(default=0, description="status checks that found the bundle pending")
    failure_reason: str | None = Field(default=None, max_length=128)
    created_at: datetime = timestamp(default_factory=utcnow)
    updated_at: datetime = timestamp(default_factory=utcnow)
    deadline_at: datetime = timestamp()
    ordered_at: datetime | None = timestamp(default=None)
    activated_at: datetime | None = timestamp(default=None)
    failed_at: datetime | None = timestamp(default=None)
    traceparent: str | None = traceparent_field()


class Bundle(SQLModel, table=True):
    """A bundle that went live (or was queued) on a card, and what the platform last measured.

    The flags and `alerted_pct` make each transition and threshold publish once per bundle:
    they change in the same transaction as the outbox row of the event they stand for.
    """

    __tablename__ = "provisioning_bundle"

    order_id: str = Field(primary_key=True, max_length=128)
    renewal_id: str = Field(unique=True, max_length=36)
    iccid: str = Field(index=True, max_length=20)
    plan_code: str = Field(max_length=64)
    data_mb: int
    first_state: str = Field(max_length=16, description="queued or active, as activated")
    status: str = Field(max_length=16, description="queued, active, depleted or expired")
    valid_from: datetime = timestamp()
    valid_until: datetime = timestamp()
    data_used_mb: int = 0
    usage_as_of: datetime | None = timestamp(default=None)
    alerted_pct: int = Field(default=0, description="the highest DataLow threshold published")
    started_published: bool = False
    ended_published: bool = False
    cancelled_at: datetime | None = timestamp(default=None)
    cancel_reason: str | None = Field(
        default=None, max_length=32, description="cancelled_by_user or replaced, once published"
    )
    updated_at: datetime = timestamp(default_factory=utcnow)


class UsageWatch(OutsideCallColumns, table=True):
    """Due work of the usage poller: one row per card with a live or queued bundle (`id` = ICCID).

    Polls come quickly after a change and back off while nothing moves; callbacks that report
    a change make the polls rarer; a card whose bundles all ended is no longer polled.
    """

    __tablename__ = "provisioning_usage_watch"

    id: str = Field(primary_key=True, max_length=20)
    idle_polls: int = Field(default=0, description="polls in a row that saw no change")
    polls: int = 0
    last_polled_at: datetime | None = timestamp(default=None)


class PlatformCallback(SQLModel, table=True):
    """A signed callback of the eSIM platform that was taken; its id makes a repeat a no-op."""

    __tablename__ = "provisioning_callback"

    id: str = Field(primary_key=True, max_length=128)
    kind: str = Field(max_length=64)
    iccid: str | None = Field(default=None, max_length=20)
    received_at: datetime = timestamp(default_factory=utcnow, index=True)


class Cancellation(OutsideCallColumns, table=True):
    """Accounts asked to cancel a renewal's bundle: due work until the platform has answered.

    One row per renewal (`id` = renewal_id), so a repeated BundleCancelRequested changes
    nothing; the round calls the platform, then commits the outcome and BundleCancelled.
    """

    __tablename__ = "provisioning_cancellation"

    id: str = Field(primary_key=True, max_length=36)
    iccid: str = Field(index=True, max_length=20)
    reason: str = Field(max_length=32)
    replaced_by: str | None = Field(default=None, max_length=36)
    request_event_id: str = Field(max_length=256)
    state: str = Field(max_length=16, index=True)
    order_id: str | None = Field(default=None, max_length=128)
    bundle_status: str | None = Field(
        default=None, max_length=16, description="what the platform said the bundle was"
    )
    attempts: int = 0
    created_at: datetime = timestamp(default_factory=utcnow)
    updated_at: datetime = timestamp(default_factory=utcnow)
    done_at: datetime | None = timestamp(default=None)
    traceparent: str | None = traceparent_field()


TABLES: list[type[SQLModel]] = [Activation, Bundle, UsageWatch, PlatformCallback, Cancellation]


# The hot reads and writes (the consumer's, the activation rounds', the polls'), as statements
# built and compiled once and sent straight to the database driver in the session's transaction
# (esim_core.persistence.driver): no ORM object, no unit of work, no cache key, no SQLAlchemy
# result per call.

_ACTIVATIONS: Any = Activation.__table__  # type: ignore[attr-defined]

_ACTIVATION_OF_RENEWAL = Statement(
    select(
        _ACTIVATIONS.c.id,
        _ACTIVATIONS.c.state,
        _ACTIVATIONS.c.iccid,
        _ACTIVATIONS.c.plan_code,
        _ACTIVATIONS.c.data_mb,
        _ACTIVATIONS.c.validity_days,
        _ACTIVATIONS.c.start,
    ).where(_ACTIVATIONS.c.renewal_id == bindparam("renewal"))
)


def _new_activation(dialect_insert: Any) -> Any:
    # The id is derived from the renewal, and the renewal is unique: a renewal that has an
    # activation inserts nothing, and returns no id.
    return dialect_insert(_ACTIVATIONS).on_conflict_do_nothing().returning(_ACTIVATIONS.c.id)


#: Every column given (`new_activation`); SQLite and PostgreSQL share the syntax.
_NEW_ACTIVATION = Statement(
    {"sqlite": _new_activation(sqlite.insert), "postgresql": _new_activation(postgresql.insert)}
)

#: The state of the activation that placed an order (what a callback about it may change).
_STATE_OF_ORDER = Statement(
    select(_ACTIVATIONS.c.state).where(_ACTIVATIONS.c.order_id == bindparam("order"))
)


@dataclass(frozen=True)
class KnownActivation:
    """An activation as a later delivery for its renewal is compared with it."""

    id: str
    state: str
    terms: ActivationTerms


async def activation_of_renewal(target: Target, renewal_id: str) -> KnownActivation | None:
    """The renewal's activation (its id, state and terms), or None."""
    rows = await fetch_dicts(target, _ACTIVATION_OF_RENEWAL, {"renewal": renewal_id})
    if not rows:
        return None
    row = rows[0]
    terms = ActivationTerms(
        iccid=row["iccid"],
        plan_code=row["plan_code"],
        data_mb=row["data_mb"],
        validity_days=row["validity_days"],
        start=row["start"],
    )
    return KnownActivation(id=row["id"], state=row["state"], terms=terms)


async def add_activation(target: Target, row: dict[str, Any]) -> bool:
    """Insert a new activation unless its renewal has one; tells whether it was new. `row`
    gives every column (`new_activation`)."""
    return bool(await fetch(target, _NEW_ACTIVATION, row))


async def activation_state_of_order(target: Target, order_id: str) -> str | None:
    """The state of the activation that placed this order, or None."""
    rows = await fetch(target, _STATE_OF_ORDER, {"order": order_id})
    return rows[0][0] if rows else None


def new_activation(
    activation_id: str,
    renewal_id: str,
    payment_id: str,
    terms: ActivationTerms,
    now: datetime,
    deadline_at: datetime,
) -> dict[str, Any]:
    """The row of a new activation, due now: every column of `provisioning_activation`."""
    return {
        "id": activation_id,
        "renewal_id": renewal_id,
        "payment_id": payment_id,
        "iccid": terms.iccid,
        "plan_code": terms.plan_code,
        "data_mb": terms.data_mb,
        "validity_days": terms.validity_days,
        "start": terms.start,
        "state": ActivationState.ORDERING.value,
        "order_id": None,
        "bundle_state": None,
        "valid_from": None,
        "valid_until": None,
        "attempts": 0,
        "polls": 0,
        "failure_reason": None,
        "created_at": now,
        "updated_at": now,
        "deadline_at": deadline_at,
        "ordered_at": None,
        "activated_at": None,
        "failed_at": None,
        "traceparent": current_traceparent(),
        "due_at": now,
        "lease_until": None,
        "unavailable_rounds": 0,
        "last_error": None,
    }


# An activation round's write: the claim returned the row whole, so a round writes every column
# it may change in one statement compiled once, where the row is still in the state and under
# the lease the claim left.

#: The columns of an activation that a round may change.
ROUND_COLUMNS = (
    "state",
    "order_id",
    "bundle_state",
    "valid_from",
    "valid_until",
    "attempts",
    "polls",
    "failure_reason",
    "updated_at",
    "ordered_at",
    "activated_at",
    "failed_at",
    "due_at",
    "lease_until",
    "unavailable_rounds",
    "last_error",
)

_WRITE_ACTIVATION = Statement(
    update(_ACTIVATIONS).where(
        _ACTIVATIONS.c.id == bindparam("key"),
        _ACTIVATIONS.c.state == bindparam("was"),
        _ACTIVATIONS.c.lease_until == bindparam("lease"),
    ),
    keys=[*ROUND_COLUMNS, "key", "was", "lease"],
)


async def write_activation_round(
    target: Target, activation: Activation, *, was: str, lease: datetime | None
) -> bool:
    """Write what a round decided of an activation (every column in `ROUND_COLUMNS`), if it is
    still in state `was` under the round's `lease`; tells whether it was.

    The row stays locked until the transaction ends (PostgreSQL; SQLite serializes writers).
    """
    values = {name: getattr(activation, name) for name in ROUND_COLUMNS}
    params = {"key": activation.id, "was": was, "lease": lease, **values}
    return bool(await run(target, _WRITE_ACTIVATION, params))


_WATCHES: Any = UsageWatch.__table__  # type: ignore[attr-defined]


def _watch_card(dialect_insert: Any) -> Any:
    statement = dialect_insert(_WATCHES)
    sooner = statement.excluded.due_at
    return statement.on_conflict_do_update(
        index_elements=[_WATCHES.c.id],
        set_={
            "due_at": case(
                (or_(_WATCHES.c.due_at.is_(None), _WATCHES.c.due_at > sooner), sooner),
                else_=_WATCHES.c.due_at,
            ),
            "idle_polls": 0,
        },
    )


#: Insert a card's usage watch, or bring its due time forward and reset its idle polls: one
#: statement per dialect (SQLite and PostgreSQL share the syntax), built once.
_WATCH_CARD = Statement(
    {"sqlite": _watch_card(sqlite.insert), "postgresql": _watch_card(postgresql.insert)}
)


async def upsert_usage_watch(target: Target, iccid: str, due_at: datetime) -> None:
    """Make sure the card's usage is polled by `due_at` at the latest, in one statement (the
    watch's row locked, as a read for update would)."""
    row = {
        "id": iccid,
        "idle_polls": 0,
        "polls": 0,
        "last_polled_at": None,
        "due_at": due_at,
        "lease_until": None,
        "unavailable_rounds": 0,
        "last_error": None,
    }
    await run(target, _WATCH_CARD, row)


def new_bundle(activation: Activation, data_mb: int, now: datetime) -> dict[str, Any]:
    """The row of a bundle that an activation made live or queued: every column."""
    assert activation.order_id is not None
    state = activation.bundle_state or "active"
    return {
        "order_id": activation.order_id,
        "renewal_id": activation.renewal_id,
        "iccid": activation.iccid,
        "plan_code": activation.plan_code,
        "data_mb": data_mb,
        "first_state": state,
        "status": state,
        "valid_from": activation.valid_from,
        "valid_until": activation.valid_until,
        "data_used_mb": 0,
        "usage_as_of": None,
        "alerted_pct": 0,
        "started_published": False,
        "ended_published": False,
        "cancelled_at": None,
        "cancel_reason": None,
        "updated_at": now,
    }


_BUNDLES: Any = Bundle.__table__  # type: ignore[attr-defined]


class LiveBundleRow(NamedTuple):
    """A bundle as `live_bundle_rows` reads it: what replacing it needs."""

    order_id: str
    renewal_id: str
    iccid: str
    plan_code: str
    valid_from: datetime
    valid_until: datetime
    cancelled_at: datetime | None


#: A card's bundles live at `starts` (not cancelled, not used up), locked: what a plan started
#: then at once ends.
_LIVE_BUNDLES = Statement(
    select(*(_BUNDLES.c[name] for name in LiveBundleRow._fields))
    .where(
        _BUNDLES.c.iccid == bindparam("card"),
        _BUNDLES.c.cancelled_at.is_(None),
        _BUNDLES.c.status != "depleted",
        _BUNDLES.c.valid_from <= bindparam("starts"),
        _BUNDLES.c.valid_until > bindparam("starts"),
    )
    .with_for_update()
)
_CANCEL_BUNDLE = Statement(
    update(_BUNDLES).where(
        _BUNDLES.c.order_id == bindparam("key"), _BUNDLES.c.cancelled_at.is_(None)
    ),
    keys=["cancelled_at", "cancel_reason", "ended_published", "updated_at", "key"],
)


async def live_bundle_rows(target: Target, iccid: str, starts: datetime) -> list[LiveBundleRow]:
    """The card's bundles live at `starts`, locked until the transaction ends."""
    rows = await fetch(target, _LIVE_BUNDLES, {"card": iccid, "starts": starts})
    return [LiveBundleRow._make(row) for row in rows]


async def cancel_bundle(target: Target, order_id: str, reason: str, now: datetime) -> None:
    """Record that a bundle will not run (further): cancelled or replaced, no end to announce."""
    await run(
        target,
        _CANCEL_BUNDLE,
        {
            "key": order_id,
            "cancelled_at": now,
            "cancel_reason": reason,
            "ended_published": True,
            "updated_at": now,
        },
    )


# A poll's rows: the card's watch and its followed bundles, read locked as transient model
# objects (in no ORM session) with the values read, and written back as the ORM's flush would
# write them: one UPDATE of the columns that changed, by the row's key, none when none did.

_LOCKED_WATCH = Statement(
    select(*_WATCHES.c).where(_WATCHES.c.id == bindparam("key")).with_for_update()
)

# The ended statuses as values the statement fixes itself, `NOT IN (?, ?)` as SQLAlchemy rendered
# the list: an IN list expanded per call cannot go to the driver.
_FOLLOWED = (
    _BUNDLES.c.iccid == bindparam("card"),
    _BUNDLES.c.status.not_in([literal(status) for status in sorted(ENDED_STATUSES)]),
    _BUNDLES.c.cancelled_at.is_(None),
)
#: The orders of a card's bundles still followed (not ended, not cancelled).
_FOLLOWED_ORDERS = Statement(select(_BUNDLES.c.order_id).where(*_FOLLOWED))
#: A card's bundles still followed, whole, oldest first, locked.
_LOCKED_FOLLOWED_BUNDLES = Statement(
    select(*_BUNDLES.c).where(*_FOLLOWED).order_by(_BUNDLES.c.valid_from).with_for_update()
)

# The SET clause is the columns that changed: `writing` compiles each set once.
_WRITES: dict[type[SQLModel], tuple[Statement, str]] = {
    UsageWatch: (Statement(update(_WATCHES).where(_WATCHES.c.id == bindparam("_key"))), "id"),
    Bundle: (
        Statement(update(_BUNDLES).where(_BUNDLES.c.order_id == bindparam("_key"))),
        "order_id",
    ),
}


async def locked_watch(target: Target, iccid: str) -> tuple[UsageWatch, dict[str, Any]] | None:
    """The card's usage watch and its values as read, locked until the transaction ends."""
    rows = await fetch_dicts(target, _LOCKED_WATCH, {"key": iccid})
    return (transient(UsageWatch, rows[0]), rows[0]) if rows else None


async def followed_orders(target: Target, iccid: str) -> list[str]:
    """The orders of the card's bundles still followed (not ended, not cancelled)."""
    return [row[0] for row in await fetch(target, _FOLLOWED_ORDERS, {"card": iccid})]


async def locked_followed_bundles(
    target: Target, iccid: str
) -> list[tuple[Bundle, dict[str, Any]]]:
    """The card's bundles still followed, oldest first, each with its values as read, locked
    until the transaction ends."""
    rows = await fetch_dicts(target, _LOCKED_FOLLOWED_BUNDLES, {"card": iccid})
    return [(transient(Bundle, row), row) for row in rows]


async def write_changes(target: Target, row: UsageWatch | Bundle, read: Mapping[str, Any]) -> None:
    """Write the columns of `row` whose values differ from `read` (every column's, as read)."""
    statement, key = _WRITES[type(row)]
    changed = {name: value for name in read if (value := getattr(row, name)) != read[name]}
    if changed:
        await run(target, statement.writing([*changed, "_key"]), {**changed, "_key": read[key]})
