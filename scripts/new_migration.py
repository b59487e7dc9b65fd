"""`make migration SERVICE=<name> MESSAGE="..."`: autogenerate a revision of a service's schema.

Compares the service's models with its migrations applied to an empty SQLite database, writes
services/<name>/migrations/versions/<NNNN>_<slug>.py, and leaves it for review.
"""

import re
import sys
import tempfile
from pathlib import Path
from typing import Any

from alembic import command
from alembic.operations.ops import MigrationScript
from esim_core.persistence.migrations import alembic_config, upgrade_to_head_sync

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ("accounts", "billing", "provisioning", "notifier")


def main(service: str, message: str) -> None:
    if service not in SERVICES:
        sys.exit(f"SERVICE must be one of {', '.join(SERVICES)}, not {service!r}")
    if not message.strip():
        sys.exit('MESSAGE="..." is required')
    migrations = ROOT / "services" / service / "migrations"
    versions = migrations / "versions"
    versions.mkdir(parents=True, exist_ok=True)
    numbers = [int(m.group(1)) for p in versions.glob("*.py") if (m := re.match(r"(\d+)_", p.name))]
    revision = f"{max(numbers, default=0) + 1:04d}"
    slug = re.sub(r"[^a-z0-9]+", "_", message.lower()).strip("_")[:40]
    with tempfile.TemporaryDirectory() as scratch:
        url = f"sqlite+aiosqlite:///{scratch}/{service}.sqlite"
        if numbers:
            upgrade_to_head_sync(url, migrations)
        config = alembic_config(url, migrations)
        config.set_main_option("file_template", f"{revision}_{slug}")
        config.attributes["process_revision_directives"] = skip_if_unchanged
        script = command.revision(config, message, autogenerate=True, rev_id=revision)
    written = [s for s in (script if isinstance(script, list) else [script]) if s is not None]
    for each in written:
        print(f"wrote {Path(each.path).relative_to(ROOT)}: review it before committing")
    if not written:
        print(f"the {service} models and migrations agree: no revision written")


def skip_if_unchanged(_context: Any, _revision: Any, directives: list[MigrationScript]) -> None:
    if directives and all(ops.is_empty() for ops in directives[0].upgrade_ops_list):
        directives.clear()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: new_migration.py <service> <message>")
    main(sys.argv[1], sys.argv[2])
