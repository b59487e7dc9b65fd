"""Alembic environment of the provisioning database: its own tables plus the core outbox and inbox.

The URL is the one passed in (`esim_core.persistence.migrations.upgrade_to_head`),
else `PROVISIONING_DATABASE_URL`.
"""

from alembic import context
from esim_core.persistence.migrations import run_migrations
from provisioning.settings import ProvisioningSettings
from provisioning.store import TABLES

run_migrations(context, TABLES, default_url=lambda: ProvisioningSettings().database_url)
