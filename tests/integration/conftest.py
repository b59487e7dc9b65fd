"""Session fixtures: the whole platform against the real broker, Redis and the sandboxes.

`ESIM_TEST_DATABASE` chooses where the services keep their data: `sqlite` (the default, one file
per service) or `postgres` (one PostgreSQL database per service; see `tests.support.infra`).
"""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.infra import DATABASE_MODES, Platform, platform_on

pytestmark = pytest.mark.integration


def database_mode() -> str:
    """The database the services run on in this session, from `ESIM_TEST_DATABASE`."""
    mode = os.environ.get("ESIM_TEST_DATABASE", "").strip().lower() or "sqlite"
    if mode not in DATABASE_MODES:
        raise pytest.UsageError(
            f"ESIM_TEST_DATABASE={mode!r}: expected one of {', '.join(DATABASE_MODES)}"
        )
    return mode


@pytest.fixture(scope="session")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """Kafka, Redis, the sandboxes, the SMTP sink and the four services, for the session."""
    workdir: Path = tmp_path_factory.mktemp("platform")
    with platform_on(workdir, database=database_mode()) as running:
        yield running
