"""`python -m esim_core.persistence.migrate <service>`: migrate a service's database and exit.

Kubernetes runs it as a Job (deploy/k8s/base/migrations.yaml) with a database role that owns
the service's tables, so the service itself can run with a role that only reads and writes
rows: at start the service finds its database at the newest revision and changes nothing. The
migration takes the lock the service takes at start (`<service>:startup`, a PostgreSQL advisory
lock), so a replica starting meanwhile waits instead of migrating beside it.

The URL is the service's `<SERVICE>_DATABASE_URL`; it is never printed (it holds a password).
"""

import asyncio
import importlib
import logging
import os
import sys
from pathlib import Path

from esim_core.persistence.db import Database
from esim_core.persistence.migrations import upgrade_to_head

#: The services with a database and migrations of their own.
SERVICES = ("accounts", "billing", "provisioning", "notifier")

logger = logging.getLogger("esim_core.migrate")


async def migrate(service: str, database_url: str, migrations: Path) -> None:
    """Apply every revision of `migrations`, holding the service's startup lock."""
    database = Database(database_url, pool_size=1)
    try:
        async with database.exclusive(f"{service}:startup"):
            await upgrade_to_head(database_url, migrations)
    finally:
        await database.engine.dispose()


def main(argv: list[str]) -> int:
    """Migrate the database of the service named in `argv`; 2 on a wrong call."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if len(argv) != 1 or argv[0] not in SERVICES:
        print(
            f"usage: python -m esim_core.persistence.migrate {{{'|'.join(SERVICES)}}}",
            file=sys.stderr,
        )
        return 2
    service = argv[0]
    variable = f"{service.upper()}_DATABASE_URL"
    database_url = os.environ.get(variable, "")
    if not database_url:
        print(f"{variable} is not set: the database to migrate", file=sys.stderr)
        return 2
    migrations: Path = importlib.import_module(f"{service}.bootstrap").MIGRATIONS
    asyncio.run(migrate(service, database_url, migrations))
    logger.info("%s: database at the newest revision", service)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
