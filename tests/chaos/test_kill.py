"""A server killed by chaos dies whole: the processes that left its group die with it."""

import os
import signal
from pathlib import Path

from tests.support.infra import Process, alive, descendants, wait_until

# A parent whose child starts a session of its own, as each PostgreSQL backend does.
SERVER = ["sh", "-c", "setsid sleep 300 & wait"]


def started(tmp_path: Path) -> tuple[Process, int]:
    process = Process("server", SERVER, {}, tmp_path / "server.log", lambda: True).start()
    assert process.popen is not None
    pid = process.popen.pid
    (child,) = wait_until(lambda: descendants(pid), timeout=10, what="its child")
    assert os.getpgid(child) != pid  # out of the group killpg reaches
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
