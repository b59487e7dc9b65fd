"""Alembic environment of the accounts database: its own tables plus the core outbox and inbox.

The URL is the one passed in (`esim_core.persistence.migrations.upgrade_to_head`),
else `ACCOUNTS_DATABASE_URL`.
"""

from accounts.settings import AccountsSettings
from accounts.store import TABLES
from alembic import context
from esim_core.persistence.migrations import run_migrations

run_migrations(context, TABLES, default_url=lambda: AccountsSettings().database_url)
