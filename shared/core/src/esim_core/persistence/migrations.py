"""Schema migrations with Alembic: each service keeps its revisions in its own `migrations/`.

A service's `migrations/env.py` is three lines that call `run_migrations` with the service's
tables and its database URL setting; `upgrade_to_head` applies every revision at start, and
`alembic_config` serves `make migration` (autogenerate) and the contract test.
"""

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate.api import AutogenContext
from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from sqlalchemy import MetaData, pool
from sqlalchemy.engine import Connection
from sqlalchemy.engine.url import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import SQLModel
from sqlmodel.sql.sqltypes import AutoString, UTCDateTime

from esim_core.messaging.inbox import InboxEntry
from esim_core.messaging.outbox import OutboxMessage


def service_metadata(tables: Sequence[type[SQLModel]]) -> MetaData:
    """A MetaData of the core outbox and inbox tables plus the service's own.

    Every service's models share `SQLModel.metadata`; a service's migrations must see only the
    tables in its own database.
    """
    metadata = MetaData()
    for model in [OutboxMessage, InboxEntry, *tables]:
        model.__table__.to_metadata(metadata)  # type: ignore[attr-defined]
    return metadata


def alembic_config(database_url: str | None, migrations_dir: Path) -> Config:
    """An Alembic configuration in code: the service's scripts and, if given, its database."""
    config = Config()
    config.set_main_option("script_location", str(migrations_dir))
    config.set_main_option("version_locations", str(migrations_dir / "versions"))
    config.set_main_option("path_separator", "os")
    # Passed as an attribute, not as `sqlalchemy.url`: the config parser would treat a `%`
    # in a password as interpolation.
    config.attributes["database_url"] = database_url
    return config


def upgrade_to_head_sync(database_url: str, migrations_dir: Path) -> None:
    """`alembic upgrade head`; runs its own event loop, so call it where none is running."""
    command.upgrade(alembic_config(database_url, migrations_dir), "head")


async def upgrade_to_head(database_url: str, migrations_dir: Path) -> None:
    """Apply every revision of `migrations_dir` to the database, in a thread of its own."""
    await asyncio.to_thread(upgrade_to_head_sync, database_url, migrations_dir)


def render_item(type_: str, obj: Any, _context: AutogenContext) -> str | bool:
    """Render SQLModel's column types as the plain SQLAlchemy types they store as.

    Revisions then import no sqlmodel, and stay valid if SQLModel's own types change.
    """
    if type_ == "type" and isinstance(obj, AutoString):
        return f"sa.String(length={obj.length})" if obj.length else "sa.String()"
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def run_migrations(
    context: EnvironmentContext,
    tables: Sequence[type[SQLModel]],
    default_url: Callable[[], str],
) -> None:
    """The body of a service's `env.py`.

    The URL is the one `alembic_config` was given, else `default_url()` (the service's
    `<NAME>_DATABASE_URL` setting). Online it connects with the service's async driver and
    runs the migrations through `run_sync`, in an event loop of its own.
    """
    url = context.config.attributes.get("database_url") or default_url()
    metadata = service_metadata(tables)
    is_sqlite = make_url(url).get_backend_name() == "sqlite"
    options: dict[str, Any] = {
        "target_metadata": metadata,
        "render_as_batch": is_sqlite,
        "render_item": render_item,
        "compare_type": True,
        # `make migration` passes one that writes nothing when the models did not change.
        "process_revision_directives": context.config.attributes.get("process_revision_directives"),
    }

    if context.is_offline_mode():
        context.configure(url=url, literal_binds=True, **options)
        with context.begin_transaction():
            context.run_migrations()
        return

    def run(connection: Connection) -> None:
        context.configure(connection=connection, **options)
        with context.begin_transaction():
            context.run_migrations()

    async def run_async() -> None:
        parsed = make_url(url)
        connect_args: dict[str, Any] = {}
        if is_sqlite:
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            connect_args["timeout"] = 30
        engine = create_async_engine(url, poolclass=pool.NullPool, connect_args=connect_args)
        try:
            async with engine.connect() as connection:
                await connection.run_sync(run)
        finally:
            await engine.dispose()

    asyncio.run(run_async())


def service_migrations(package_file: str) -> Path:
    """The `migrations/` of the service whose package holds `package_file` (its bootstrap.py).

    From the source tree (`services/<name>/src/<name>/bootstrap.py`) that is
    `services/<name>/migrations`; an installed wheel carries it inside the package instead
    (`<name>/migrations`, see the service's pyproject.toml).
    """
    here = Path(package_file).resolve()
    candidates = [here.parents[2] / "migrations", here.parent / "migrations"]
    for candidate in candidates:
        if (candidate / "env.py").is_file():
            return candidate
    raise FileNotFoundError(f"no migrations/env.py at {' or '.join(map(str, candidates))}")
