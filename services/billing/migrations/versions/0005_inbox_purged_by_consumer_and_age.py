"""inbox rows are purged past their consumer's window: an index the cutoff query reads

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 11:30:00.000000
"""

from collections.abc import Sequence

from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # esim_core.duework.purge deletes a consumer's rows older than its window a chunk at a
    # time; without this index every chunk would scan the whole inbox.
    with op.batch_alter_table("inbox", schema=None) as batch_op:
        batch_op.create_index(
            "ix_inbox_consumer_processed_at", ["consumer", "processed_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("inbox", schema=None) as batch_op:
        batch_op.drop_index("ix_inbox_consumer_processed_at")
