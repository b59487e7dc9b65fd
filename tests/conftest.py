"""Splits the suite for pytest-xdist (`-n 2 --dist loadgroup`): one platform's tests per worker.

pytest-xdist 3.8's own `loadgroup` renames items to group them, which pytest 9 no longer
allows, so `xdist_group` marks are ignored; this scheduler groups by path instead. Each
database's integration tests are one unit of work, run in order by one worker on one platform
(the session's Kafka, Redis and services are not shared between processes, and tests that kill
a service must not run beside others on it); every other module is a unit of its own.
It takes effect where tests/ is among the paths pytest is given (as in `make test`).
"""

from typing import Any

import pytest

from tests.support.infra import DATABASE_MODES

INTEGRATION = "tests/integration/"


def work_unit(nodeid: str) -> str:
    """The unit of work a test belongs to: its platform's integration tests, or its module."""
    path, _, rest = nodeid.partition("::")
    if not path.startswith(INTEGRATION):
        return path
    ids = rest.partition("[")[2].rstrip("]").split("-")
    database = next((name for name in DATABASE_MODES if name in ids), "")
    return f"integration-{database}" if database else "integration"


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
