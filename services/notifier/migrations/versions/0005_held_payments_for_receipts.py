"""held payments for receipts

A renewal's payment may be authorized first and captured after the activation: the receipt
says when the money was held and when it was taken.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 05:45:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "notifier_authorization",
        sa.Column("renewal_id", sa.String(length=36), nullable=False),
        sa.Column("iccid", sa.String(length=20), nullable=False),
        sa.Column("event_id", sa.String(length=256), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("renewal_id"),
    )


def downgrade() -> None:
    op.drop_table("notifier_authorization")
