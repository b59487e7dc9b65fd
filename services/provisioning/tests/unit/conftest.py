"""Fixtures: provisioning wired to a FakePlatform and a SQLite file, with tries that never wait."""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from esim_core.db import Database
from esim_core.retry import TryPolicy
from provisioning import bootstrap
from provisioning.bootstrap import Provisioning
from provisioning.settings import ProvisioningSettings
from provisioning_testkit import FakePlatform

NO_WAIT = TryPolicy(attempts=4, wait_multiplier_s=0, wait_max_s=0)


def settings_for(tmp_path: Path, **overrides: object) -> ProvisioningSettings:
    values: dict[str, object] = {
        "database_url": f"sqlite+aiosqlite:///{tmp_path}/provisioning.sqlite",
        "activation_deadline_s": 86400.0,
        "poll_interval_s": 0.5,
        "poll_interval_max_s": 5.0,
        "retry_backoff_s": 1.0,
        "retry_backoff_max_s": 120.0,
    }
    return ProvisioningSettings(**(values | overrides))  # type: ignore[arg-type]


@pytest.fixture
def platform() -> FakePlatform:
    return FakePlatform()


@pytest.fixture
async def provisioning(tmp_path: Path, platform: FakePlatform) -> AsyncIterator[Provisioning]:
    built = bootstrap.build(settings_for(tmp_path), platform=platform, tries=NO_WAIT)
    await built.runtime.database.create_tables(built.runtime.tables)
    yield built
    await built.runtime.database.close()
    await built.runtime.redis.aclose()


@pytest.fixture
def database(provisioning: Provisioning) -> Database:
    return provisioning.runtime.database
