"""Each service's Alembic migrations build exactly the schema its models define.

A model change without a revision (`make migration SERVICE=<name> MESSAGE="..."`) fails here.
"""

import importlib
from collections.abc import Sequence
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from esim_core.persistence.migrations import alembic_config, service_metadata, upgrade_to_head_sync
from sqlmodel import SQLModel

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("accounts", "billing", "provisioning", "notifier")


def tables_of(service: str) -> Sequence[type[SQLModel]]:
    tables: Sequence[type[SQLModel]] = importlib.import_module(f"{service}.store").TABLES
    return tables


def migrations_of(service: str) -> Path:
    migrations: Path = importlib.import_module(f"{service}.bootstrap").MIGRATIONS
    return migrations


def differences(database: Path, metadata: sa.MetaData) -> list[object]:
    engine = sa.create_engine(f"sqlite:///{database}")
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return list(compare_metadata(context, metadata))
    finally:
        engine.dispose()


@pytest.mark.parametrize("service", SERVICES)
def test_bootstrap_uses_the_service_migrations(service: str) -> None:
    assert migrations_of(service) == ROOT / "services" / service / "migrations"


@pytest.mark.parametrize("service", SERVICES)
def test_migrations_have_one_head(service: str) -> None:
    config: Config = alembic_config(None, migrations_of(service))
    assert len(ScriptDirectory.from_config(config).get_heads()) == 1


@pytest.mark.parametrize("service", SERVICES)
def test_upgrade_to_head_matches_the_models(service: str, tmp_path: Path) -> None:
    database = tmp_path / f"{service}.sqlite"
    upgrade_to_head_sync(f"sqlite+aiosqlite:///{database}", migrations_of(service))
    metadata = service_metadata(tables_of(service))
    assert differences(database, metadata) == [], (
        f"the {service} models and migrations differ: run `make migration SERVICE={service} "
        f'MESSAGE="..."` and review the revision'
    )
    # Idempotent: a second start finds the database at head and changes nothing.
    upgrade_to_head_sync(f"sqlite+aiosqlite:///{database}", migrations_of(service))
    engine = sa.create_engine(f"sqlite:///{database}")
    try:
        assert set(sa.inspect(engine).get_table_names()) == {*metadata.tables, "alembic_version"}
    finally:
        engine.dispose()


def test_a_model_change_without_a_migration_is_caught(tmp_path: Path) -> None:
    database = tmp_path / "billing.sqlite"
    upgrade_to_head_sync(f"sqlite+aiosqlite:///{database}", migrations_of("billing"))
    metadata = service_metadata(tables_of("billing"))
    metadata.tables["billing_refund"].append_column(sa.Column("note", sa.String(64)))
    assert [diff[0] for diff in differences(database, metadata)] == ["add_column"]  # type: ignore[index]
