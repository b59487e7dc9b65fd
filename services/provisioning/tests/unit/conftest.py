"""Fixtures: provisioning wired to a FakePlatform and a SQLite file, with tries that never wait."""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from esim_core.persistence.db import Database
from esim_core.testing import with_tables
from provisioning import bootstrap
from provisioning.bootstrap import Provisioning
from provisioning_testkit import NO_WAIT, FakePlatform, settings_for


@pytest.fixture
def platform() -> FakePlatform:
    return FakePlatform()


@pytest.fixture
async def provisioning(tmp_path: Path, platform: FakePlatform) -> AsyncIterator[Provisioning]:
    built = bootstrap.build(settings_for(tmp_path), platform=platform, tries=NO_WAIT)
    async with with_tables(built.runtime):
        yield built


@pytest.fixture
def database(provisioning: Provisioning) -> Database:
    return provisioning.runtime.database
