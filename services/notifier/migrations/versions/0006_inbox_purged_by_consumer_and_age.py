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
    # time; without this index every chunk would scan the whole inbox.
    if op.get_context().dialect.name == "postgresql":
        # An inbox of tens of millions of rows takes minutes to index: built CONCURRENTLY, the
        # replicas still running go on writing meanwhile. A build that failed halfway leaves an
        # invalid index behind, which the retry drops first.
        with op.get_context().autocommit_block():
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}")
            op.create_index(
                INDEX, "inbox", ["consumer", "processed_at"], postgresql_concurrently=True
            )
        return
    with op.batch_alter_table("inbox", schema=None) as batch_op:
        batch_op.create_index(INDEX, ["consumer", "processed_at"], unique=False)


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        with op.get_context().autocommit_block():
            op.drop_index(INDEX, table_name="inbox", postgresql_concurrently=True)
        return
    with op.batch_alter_table("inbox", schema=None) as batch_op:
        batch_op.drop_index(INDEX)
