"""Splits the suite for pytest-xdist (`-n 2 --dist loadgroup`): one platform's tests per worker.

pytest-xdist 3.8's own `loadgroup` renames items to group them, which pytest 9 no longer
allows, so `xdist_group` marks are ignored; this scheduler groups by path instead. Each
database's integration tests are one unit of work, run in order by one worker on one platform
(the session's Kafka, Redis and services are not shared between processes, and tests that kill
a service must not run beside others on it); every other module is a unit of its own.
It takes effect where tests/ is among the paths pytest is given (as in `make test`).

The browser tests (tests/browser) drive a browser against the same platform, so they belong
to the same unit of work as the integration tests; the `platform` fixture is defined here,
once, for both directories (defined in each, it would start two platforms in one worker).
"""

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.infra import DATABASE_MODES, Platform, platform_on

INTEGRATION = "tests/integration/"
BROWSER = "tests/browser/"
# Test directories whose tests run on the session's platform (the `platform` fixture).
ON_PLATFORM = (INTEGRATION, BROWSER)


def work_unit(nodeid: str) -> str:
    """The unit of work a test belongs to: its platform's integration tests, or its module."""
    path, _, rest = nodeid.partition("::")
    if not path.startswith(ON_PLATFORM):
        return path
    ids = rest.partition("[")[2].rstrip("]").split("-")
    database = next((name for name in DATABASE_MODES if name in ids), "")
    return f"integration-{database}" if database else "integration"


def database_modes() -> list[str]:
    """The databases the services run on in this session, from `ESIM_TEST_DATABASE`."""
    given = os.environ.get("ESIM_TEST_DATABASE", "").strip().lower() or "sqlite"
    modes = list(dict.fromkeys(mode.strip() for mode in given.split(",") if mode.strip()))
    if not modes or any(mode not in DATABASE_MODES for mode in modes):
        raise pytest.UsageError(
            f"ESIM_TEST_DATABASE={given!r}: expected one or more of {', '.join(DATABASE_MODES)}"
        )
    return modes


MODES = database_modes()


# One mode keeps the test ids as they were; two add [sqlite] / [postgres] to each.
@pytest.fixture(scope="session", params=MODES if len(MODES) > 1 else None)
def platform(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    """Kafka, Redis, the sandboxes, the SMTP sink and the four services, for the session."""
    mode: str = getattr(request, "param", MODES[0])
    workdir: Path = tmp_path_factory.mktemp(f"platform-{mode}")
    with platform_on(workdir, database=mode) as running:
        yield running


def pytest_configure(config: pytest.Config) -> None:
    """Schedule by `work_unit` when xdist runs with `--dist loadgroup`."""
    if not config.pluginmanager.hasplugin("xdist"):
        return
    from xdist.scheduler import LoadScopeScheduling

    class ByPlatform(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    class Scheduler:
        @pytest.hookimpl
        def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> Any:
            return ByPlatform(config, log) if config.getvalue("dist") == "loadgroup" else None

    config.pluginmanager.register(Scheduler(), "esim-xdist-scheduler")
