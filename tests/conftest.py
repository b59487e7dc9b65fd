"""Splits the suite for pytest-xdist (`-n N --dist loadgroup`): integration groups first.

pytest-xdist 3.8's own `loadgroup` renames items to group them, which pytest 9 no longer
allows, so `xdist_group` marks are ignored; this scheduler groups by path instead. The
integration tests of each database are cut into a few groups of files (`PLATFORM_GROUPS`);
each group is one unit of work, run in order by one worker on that worker's platform (the
session's Kafka, Redis and services are not shared between processes, and tests that kill a
service must not run beside others on it). Two groups on two workers run on two platforms side
by side: most of an integration test's time is spent waiting (on a renewal's round trip, a
restart, a sweep), so the waits overlap. Groups given to one worker share its platform. Every
other module is a unit of its own.

The integration groups are handed out first, longest first, since they are the longest units:
a worker that took them last would finish alone. It takes effect where tests/ is among the
paths pytest is given (as in `make test`).

The browser tests (tests/browser) drive a browser against the same platform, so they belong
to the platform groups like the integration tests (in `browser`, unless `PLATFORM_GROUPS`
names them); the `platform` fixture is defined here, once, for both directories (defined in each, it
would start two platforms in one worker).
"""

import os
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from tests.support import forked
from tests.support.infra import (
    DATABASE_MODES,
    SHARED_RUN,
    Platform,
    platform_on,
    stop_shared_broker,
)

INTEGRATION = "tests/integration/"
BROWSER = "tests/browser/"
# Test directories whose tests run on the session's platform (the `platform` fixture).
ON_PLATFORM = (INTEGRATION, BROWSER)

#: Integration files that run on a platform of their own when a worker is free for them: the ones
#: that kill services (`crashes`), or restart them and wait on a plan's leads (`restarts`, with the
#: operator's tool for the balance); the renewals' and payments' flows from the outside (`flows`);
#: the browser tests have one too (`browser`, tests/browser); the rest (`main`, and any new file)
#: share one. A platform costs little beside the run's shared broker, and more platforms side by
#: side overlap more of the tests' waiting (on a renewal's round trip, a restart, a sweep): the
#: groups are cut to take about as long each (`pytest --durations`), so that none of them is the
#: run's long pole (one `main` of 410 s was, in a run of 440 s).
PLATFORM_GROUPS = {
    "test_crash_recovery.py": "crashes",
    "test_payment_crashes.py": "crashes",
    "test_scaling.py": "crashes",
    "test_graceful_stop.py": "restarts",
    "test_lifecycle.py": "restarts",
    "test_reminders.py": "restarts",
    "test_payments.py": "flows",
    "test_payment_outcomes.py": "flows",
    "test_renewal_flow.py": "flows",
    "test_intake.py": "flows",
    "test_esimctl.py": "restarts",
}
#: Integration files that use no platform (a broker of their own, or topics of their own on
#: the run's): each is a unit of its own, handed out with the platform groups.
STANDALONE = frozenset(
    {
        "test_topics.py",
        "test_kafka_security.py",
        "test_relay_wakeups.py",
        "test_driver_statements.py",
    }
)
GROUP_ORDER = ("main", "flows", "crashes", "browser", "restarts")
#: JVM options of the test run's Kafka brokers (`pytest_configure`).
TEST_BROKER_JAVA_OPTS = "-XX:TieredStopAtLevel=1"


def work_unit(nodeid: str) -> str:
    """The unit of work a test belongs to: its platform group's integration tests, or its module."""
    path, _, rest = nodeid.partition("::")
    if not path.startswith(ON_PLATFORM):
        return path
    name = PurePosixPath(path).name
    if name in STANDALONE:
        return f"integration-standalone-{name}"
    default = "browser" if path.startswith(BROWSER) else "main"
    group = PLATFORM_GROUPS.get(name, default)
    ids = rest.partition("[")[2].rstrip("]").split("-")
    database = next((name for name in DATABASE_MODES if name in ids), "")
    return f"integration-{group}-{database}" if database else f"integration-{group}"


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

#: Where the process that named the run's shared broker directory keeps its path.
_SHARED_RUN_KEY = pytest.StashKey[Path]()


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


def unit_rank(unit: str, size: int) -> tuple[int, int, int]:
    """Where a unit goes in the work queue: integration groups first, then the largest units."""
    if not unit.startswith("integration-"):
        return (1, 0, -size)
    group = unit.removeprefix("integration-").split("-")[0]
    order = GROUP_ORDER.index(group) if group in GROUP_ORDER else len(GROUP_ORDER)
    return (0, order, 0)


def _interrupted(signum: int, _: object) -> None:
    # A run stopped from outside (`timeout make test`, CI's limit) sends SIGTERM to the whole
    # process group. By default that ends pytest at once, and every platform it started (services,
    # sandboxes, brokers: each in a session of its own) runs on as an orphan, skewing every later
    # run on the machine. As an interrupt, pytest tears its fixtures down first, as on Ctrl-C.
    # The signal often comes twice (to the process, then to its group): a second one must not
    # cut that teardown short. SIGKILL still ends the process at once.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt(f"stopped by signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    """Give the run one shared broker; schedule by `work_unit` when xdist runs `--dist loadgroup`.

    SIGTERM becomes an interrupt (`_interrupted`), in the main process and in each worker.

    The run's directory is named in the environment here, in the process that starts the
    workers and before it starts them, so every worker inherits it; the first platform started
    starts the broker in it (`tests.support.infra.shared_broker`), `pytest_unconfigure` stops it.
    """
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupted)
    # The run's brokers (deploy/kafka/run.sh) compile with C1 only: a broker's C2 compiler
    # threads were most of its CPU for the first minutes of its life (an idle platform's broker
    # 1.3 to 1.6 s of CPU in 20 s, 0.5 with C1), and a test run is those first minutes. Set
    # here, in the process that starts the workers, so every broker of the run inherits it.
    os.environ.setdefault("KAFKA_JAVA_OPTS", TEST_BROKER_JAVA_OPTS)
    # The platforms' Python processes (services, sandboxes, the website) are forked from a
    # warm interpreter: each would spend its first 2.5 s of CPU importing the same libraries.
    forked.enable()
    if not hasattr(config, "workerinput") and SHARED_RUN not in os.environ:
        directory = tempfile.mkdtemp(prefix="esim-test-run-")
        os.environ[SHARED_RUN] = directory
        config.stash[_SHARED_RUN_KEY] = Path(directory)
    if not config.pluginmanager.hasplugin("xdist"):
        return
    from xdist.scheduler import LoadScopeScheduling

    class ByPlatform(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    class Scheduler:
        @pytest.hookimpl
        def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> Any:
            if config.getvalue("dist") != "loadgroup":
                return None
            # The queue follows the workers' collection, which `pytest_collection_modifyitems`
            # puts in `unit_rank` order, instead of xdist's ordering by test count.
            config.option.loadscopereorder = False
            return ByPlatform(config, log)

    config.pluginmanager.register(Scheduler(), "esim-xdist-scheduler")


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stop the run's shared broker, in the process that named its directory."""
    directory = config.stash.get(_SHARED_RUN_KEY, None)
    if directory is not None:
        stop_shared_broker(directory)
        os.environ.pop(SHARED_RUN, None)


@pytest.hookimpl(trylast=True)  # after pytest's own ordering by parametrized fixtures
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On an xdist worker, order the tests by `unit_rank`, each unit's own order kept."""
    if not hasattr(config, "workerinput"):
        return
    units = [work_unit(item.nodeid) for item in items]
    sizes: dict[str, int] = {}
    for unit in units:
        sizes[unit] = sizes.get(unit, 0) + 1
    first_seen = {unit: index for index, unit in reversed(list(enumerate(units)))}
    ranked = sorted(
        range(len(items)),
        key=lambda i: (*unit_rank(units[i], sizes[units[i]]), first_seen[units[i]], i),
    )
    items[:] = [items[i] for i in ranked]


@pytest.hookimpl(trylast=True)  # after pytest's own teardown of the item's other fixtures
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Stop the session's platform once the worker's next test does not run on it.

    A worker's platform otherwise idles on to the end of the run while the worker takes unit
    tests (four services polling take a tenth of a core); a later group on this worker starts
    it again, as pytest does for the next database's platform.
    """
    if not isinstance(item, pytest.Function) or "platform" not in item.fixturenames:
        return
    if isinstance(nextitem, pytest.Function) and "platform" in nextitem.fixturenames:
        return
    # What pytest does between two databases' platforms: finish the fixture (its dependants
    # first); it is set up again if a later test asks for it.
    for fixturedef in item._fixtureinfo.name2fixturedefs.get("platform", ()):
        fixturedef.finish(item._request)  # type: ignore[arg-type]  # only its node is read
