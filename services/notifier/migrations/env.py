"""Alembic environment of the notifier database: its own tables plus the core outbox and inbox.

The URL is the one passed in (`esim_core.persistence.migrations.upgrade_to_head`),
else `NOTIFIER_DATABASE_URL`.
"""

from alembic import context
from esim_core.persistence.migrations import run_migrations
from notifier.settings import NotifierSettings
from notifier.store import TABLES

run_migrations(context, TABLES, default_url=lambda: NotifierSettings().database_url)
