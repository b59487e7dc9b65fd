"""promotions shown to travellers

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 05:44:20.905136

`accounts_promotion.public`: whether `GET /v1/promotions` lists the promotion while it runs.
Existing promotions stay unlisted (codes given to some travellers only must not be shown to
all); the local run's seed marks `WELCOME10` public when accounts starts.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("accounts_promotion", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("public", sa.Boolean(), server_default=sa.false(), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("accounts_promotion", schema=None) as batch_op:
        batch_op.drop_column("public")
