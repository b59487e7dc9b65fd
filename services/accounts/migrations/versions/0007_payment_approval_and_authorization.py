"""payment approval and authorization

The saga keeps the buyer's approval step (its url and expiry), whether its payment is an
authorization not yet captured, and where the provider sends the buyer back; auto-renew keeps
its return url too.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 05:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("accounts_card", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("auto_renew_return_url", sa.String(length=2048), nullable=True)
        )
    with op.batch_alter_table("accounts_renewal", schema=None) as batch_op:
        batch_op.add_column(sa.Column("payment_return_url", sa.String(length=2048), nullable=True))
        batch_op.add_column(
            sa.Column("payment_held", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.add_column(sa.Column("action_url", sa.String(length=2048), nullable=True))
        batch_op.add_column(
            sa.Column("action_expires_at", sa.DateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("accounts_renewal", schema=None) as batch_op:
        batch_op.drop_column("action_expires_at")
        batch_op.drop_column("action_url")
        batch_op.drop_column("payment_held")
        batch_op.drop_column("payment_return_url")
    with op.batch_alter_table("accounts_card", schema=None) as batch_op:
        batch_op.drop_column("auto_renew_return_url")
