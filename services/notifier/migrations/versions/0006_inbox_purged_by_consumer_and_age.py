"""inbox rows are purged past their consumer's window: an index the cutoff query reads

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 11:30:00.000000
"""

from collections.abc import Sequence

from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_inbox_consumer_processed_at"


def upgrade() -> None:
    # esim_core.duework.purge deletes a consumer's rows older than its window a chunk at a
    # time; without this index every chunk would scan the whole inbox. It is built in the
    # migration's transaction, as a service's start runs its migrations under a lock held in
    # a transaction, which CREATE INDEX CONCURRENTLY would wait on for ever. Building it on a
    # large inbox blocks the inbox's writes meanwhile: an operator may build it beforehand
    # (CREATE INDEX CONCURRENTLY ix_inbox_consumer_processed_at ON inbox (consumer,
    # processed_at)), and this then leaves it as it is.
    with op.batch_alter_table("inbox", schema=None) as batch_op:
        batch_op.create_index(INDEX, ["consumer", "processed_at"], if_not_exists=True)


def downgrade() -> None:
    with op.batch_alter_table("inbox", schema=None) as batch_op:
        batch_op.drop_index(INDEX)
