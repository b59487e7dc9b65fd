"""a card's plans only in their rows

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 09:00:00.000000
"""

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CARD = sa.table(
    "accounts_card",
    sa.column("iccid", sa.String()),
    sa.column("state", sa.String()),
    sa.column("plan_code", sa.String()),
    sa.column("data_total_mb", sa.Integer()),
    sa.column("data_remaining_mb", sa.Integer()),
    sa.column("valid_from", sa.DateTime(timezone=True)),
    sa.column("valid_until", sa.DateTime(timezone=True)),
    sa.column("last_renewal_id", sa.String()),
    sa.column("queued", sa.JSON()),
)
_PLAN = sa.table(
    "accounts_card_plan",
    sa.column("renewal_id", sa.String()),
    sa.column("iccid", sa.String()),
    sa.column("plan_code", sa.String()),
    sa.column("data_mb", sa.Integer()),
    sa.column("state", sa.String()),
    sa.column("valid_from", sa.DateTime(timezone=True)),
    sa.column("valid_until", sa.DateTime(timezone=True)),
    sa.column("data_used_mb", sa.Integer()),
    sa.column("usage_as_of", sa.DateTime(timezone=True)),
    sa.column("updated_at", sa.DateTime(timezone=True)),
)


def upgrade() -> None:
    _plans_kept_on_the_card()
    with op.batch_alter_table("accounts_card", schema=None) as batch_op:
        batch_op.drop_column("queued")
        batch_op.drop_column("last_renewal_id")
        batch_op.drop_column("valid_until")
        batch_op.drop_column("valid_from")
        batch_op.drop_column("data_remaining_mb")
        batch_op.drop_column("data_total_mb")
        batch_op.drop_column("plan_code")
        batch_op.drop_column("state")


def _plans_kept_on_the_card() -> None:
    """Cards that read from their own columns get the plan rows that read the same.

    Until this revision a card read from its columns whenever none of its plan rows counted
    (a row counts with its start and plan known, and not cancelled): plans activated before
    0002 without an ACTIVATED saga, or whose rows were all cancelled. Such a card's current
    plan and its queue become rows with the columns' terms, a row of the same renewal taking
    them over; the data it had used is kept, and no measurement time, as its columns had none.
    A card with a row that counted read from its rows alone, so its rows stay as they are.

    One difference is left: a queued plan whose start has passed while the plan before it still
    runs (dates that a start=now replacement made stale) now reads as started from that start;
    the old reader held it in the queue until the plan before it ended.
    """
    bind = op.get_bind()
    counted = sa.exists().where(
        _PLAN.c.iccid == _CARD.c.iccid,
        _PLAN.c.valid_from.is_not(None),
        _PLAN.c.plan_code.is_not(None),
        _PLAN.c.plan_code != "",
        sa.or_(_PLAN.c.state.is_(None), _PLAN.c.state != "cancelled"),
    )
    cards = bind.execute(sa.select(_CARD).where(~counted)).all()
    uncounted = sa.select(_CARD.c.iccid).where(~counted)
    existing = set(
        bind.execute(sa.select(_PLAN.c.renewal_id).where(_PLAN.c.iccid.in_(uncounted))).scalars()
    )
    now = datetime.now(UTC)
    rows = [row for card in cards for row in _rows_of(card)]
    for row in rows:
        if row["renewal_id"] in existing:
            bind.execute(
                _PLAN.update()
                .where(_PLAN.c.renewal_id == row["renewal_id"])
                .values(**row, updated_at=now)
            )
        else:
            bind.execute(_PLAN.insert().values(**row, updated_at=now))


def _rows_of(card: Any) -> list[dict[str, Any]]:
    """The plan rows a card's columns stand for: its current plan (if any), then its queue."""
    rows = []
    if card.state == "active":
        used = card.data_total_mb - card.data_remaining_mb
        rows.append(
            {
                "renewal_id": card.last_renewal_id,
                "iccid": card.iccid,
                "plan_code": card.plan_code,
                "data_mb": card.data_total_mb,
                "state": "active",
                "valid_from": card.valid_from,
                "valid_until": card.valid_until,
                "data_used_mb": used if used > 0 else None,
                "usage_as_of": None,
            }
        )
    for item in card.queued or []:
        rows.append(
            {
                "renewal_id": item["renewal_id"],
                "iccid": card.iccid,
                "plan_code": item["plan_code"],
                "data_mb": int(item["data_mb"]),
                "state": "queued",
                # Kept in UTC: SQLite stores a time without its offset.
                "valid_from": datetime.fromisoformat(item["valid_from"]).astimezone(UTC),
                "valid_until": datetime.fromisoformat(item["valid_until"]).astimezone(UTC),
                "data_used_mb": None,
                "usage_as_of": None,
            }
        )
    return rows


def downgrade() -> None:
    # The columns come back empty: every card that had a plan on them now has a row that
    # counts, and the old reader reads a card from its rows first.
    with op.batch_alter_table("accounts_card", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("state", sa.String(length=16), nullable=False, server_default="inactive")
        )
        batch_op.add_column(sa.Column("plan_code", sa.String(length=64), nullable=True))
        batch_op.add_column(
            sa.Column("data_total_mb", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("data_remaining_mb", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(sa.Column("valid_from", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("valid_until", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("last_renewal_id", sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column("queued", sa.JSON(), nullable=True))
