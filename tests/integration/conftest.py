"""Session fixtures: the whole platform against the real broker, Redis and the sandboxes.

`ESIM_TEST_DATABASE` chooses where the services keep their data: `sqlite` (the default, one file
per service), `postgres` (one PostgreSQL database per service; see `tests.support.infra`), or
`sqlite,postgres`: every integration test once on each, on a platform of its own.

Under pytest-xdist (`--dist loadgroup`, see tests/conftest.py) each platform's tests are one
unit of work: one worker runs them in order on one platform while the others take the rest.
"""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.infra import DATABASE_MODES, Platform, platform_on

pytestmark = pytest.mark.integration


def database_modes() -> list[str]:
    """The databases the services run on in this session, from `ESIM_TEST_DATABASE`."""
    given = os.environ.get("ESIM_TEST_DATABASE", "").strip().lower() or "sqlite"
    modes = list(dict.fromkeys(mode.strip() for mode in given.split(",") if mode.strip()))
    if not modes or any(mode not in DATABASE_MODES for mode in modes):
        raise pytest.UsageError(
            f"ESIM_TEST_DATABASE={given!r}: expected one or more of {', '.join(DATABASE_MODES)}"
        )
    return modes


_MODES = database_modes()


# One mode keeps the test ids as they were; two add [sqlite] / [postgres] to each.
@pytest.fixture(scope="session", params=_MODES if len(_MODES) > 1 else None)
def platform(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    """Kafka, Redis, the sandboxes, the SMTP sink and the four services, for the session."""
    mode: str = getattr(request, "param", _MODES[0])
    workdir: Path = tmp_path_factory.mktemp(f"platform-{mode}")
    with platform_on(workdir, database=mode) as running:
        yield running
