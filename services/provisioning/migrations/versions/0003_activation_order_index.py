"""activations are found by their order id: an index, not a scan per platform callback

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 19:45:00.000000
"""

from collections.abc import Sequence

from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("provisioning_activation", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_provisioning_activation_order_id"), ["order_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("provisioning_activation", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_provisioning_activation_order_id"))
