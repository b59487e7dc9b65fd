"""Alembic environment of the billing database: its own tables plus the core outbox and inbox.

The URL is the one passed in (`esim_core.persistence.migrations.upgrade_to_head`),
else `BILLING_DATABASE_URL`.
"""

from alembic import context
from billing.settings import BillingSettings
from billing.store import TABLES
from esim_core.persistence.migrations import run_migrations

run_migrations(context, TABLES, default_url=lambda: BillingSettings().database_url)
