"""The test platform's processes: a server killed by chaos dies whole (the processes that left
its group die with it), and a service that exits while it starts is started again."""

import os
import signal
import socket
from pathlib import Path

import pytest

from tests.support import infra
from tests.support.infra import (
    SERVICES,
    START_TRIES,
    Platform,
    Process,
    alive,
    descendants,
    free_port,
    postgres_server,
    wait_until,
)

# A parent whose child starts a session of its own, as each PostgreSQL backend does.
SERVER = ["sh", "-c", "setsid sleep 300 & wait"]


def started(tmp_path: Path) -> tuple[Process, int]:
    process = Process("server", SERVER, {}, tmp_path / "server.log", lambda: True).start()
    assert process.popen is not None
    pid = process.popen.pid
    # Found as soon as it is forked, the child is in the group until `setsid` runs in it.
    (child,) = wait_until(
        lambda: [child for child in descendants(pid) if os.getpgid(child) != pid],
        timeout=10,
        what="its child out of the group killpg reaches",
    )
    return process, child


def test_killing_a_server_whole_kills_the_children_that_left_its_group(tmp_path: Path) -> None:
    process, child = started(tmp_path)

    process.kill(every_descendant=True)

    assert not alive(child)


def test_a_plain_kill_leaves_such_a_child_running(tmp_path: Path) -> None:
    # Why `every_descendant` exists: the process group alone misses it.
    process, child = started(tmp_path)
    try:
        process.kill()
        assert alive(child)
    finally:
        os.kill(child, signal.SIGKILL)


class ExitingFirst(Platform):
    """A platform whose services are `sh`: each exits `failures` times, then stays up."""

    failures = 0

    def service_process(self, name: str) -> Process:
        tries = self.workdir / f"{name}.tries"
        script = (
            f'echo x >> "{tries}"; '
            f'if [ "$(wc -l < "{tries}")" -le {self.failures} ]; then exit 3; fi; '
            f'touch "{self.workdir}/{name}.up"; exec sleep 60'
        )
        up = self.workdir / f"{name}.up"
        return Process(name, ["sh", "-c", script], {}, self.workdir / f"{name}.log", up.exists)


def platform_of(tmp_path: Path, failures: int) -> ExitingFirst:
    platform = ExitingFirst(tmp_path, "kafka:9092", "redis://redis")
    platform.failures = failures
    for name in ("payment", "esim", "sms", "smtp"):  # the sandboxes: up at once
        platform.processes[name] = Process(name, ["sleep", "60"], {}, tmp_path / name, lambda: True)
        platform.processes[name].launch()
    return platform


def test_a_service_that_exits_while_it_starts_is_started_again(tmp_path: Path) -> None:
    platform = platform_of(tmp_path, failures=START_TRIES - 1)
    try:
        with pytest.warns(RuntimeWarning, match="exited while starting"):
            platform.start_services()
        tries = {name: len((tmp_path / f"{name}.tries").read_text().split()) for name in SERVICES}
        assert tries == dict.fromkeys(SERVICES, START_TRIES)
    finally:
        for process in platform.processes.values():
            process.kill()


def test_a_service_that_never_starts_fails_the_platform(tmp_path: Path) -> None:
    platform = platform_of(tmp_path, failures=START_TRIES)
    try:
        with pytest.raises(RuntimeError, match="exited with 3"), pytest.warns(RuntimeWarning):
            platform.start_services()
        first = tmp_path / f"{SERVICES[0]}.tries"  # the first waited for: every try spent
        assert len(first.read_text().split()) == START_TRIES
    finally:
        for process in platform.processes.values():
            process.kill()


def test_a_postgres_port_taken_before_the_server_binds_it_is_given_up_for_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Starts a PostgreSQL server (a few seconds)."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    ports = iter([taken.getsockname()[1]])
    monkeypatch.setattr(infra, "free_port", lambda: next(ports, None) or free_port())
    try:
        with postgres_server(tmp_path) as server:
            assert str(taken.getsockname()[1]) not in server.address
            assert infra.port_open(int(server.address.rsplit(":", 1)[1]))
    finally:
        taken.close()
