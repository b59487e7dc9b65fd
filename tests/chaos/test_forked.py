"""The test platform's `python -m` processes, forked from a warm interpreter
(`tests.support.forked`), behave as the same command started cold: module run as `__main__`,
environment, working directory, argv, log, session, exit status, atexit, a SIGTERM's end."""

import json
import multiprocessing.forkserver
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import forked
from tests.support.infra import alive, wait_until

# A module that reports what it was given, then does what its first argument says.
PROBE = """
import atexit, json, os, sys, threading, time
from pathlib import Path

here = Path(os.environ["PROBE_OUT"])
seen = [__name__, sys.argv[1:], os.getcwd(), sorted(os.environ), os.getpgid(0) == os.getpid(),
        os.getppid()]
here.joinpath("seen").write_text(json.dumps(seen))
print("to the log", flush=True)
atexit.register(lambda: here.joinpath("atexit").write_text("ran"))

def last():
    time.sleep(0.3)
    here.joinpath("thread").write_text("ended")

threading.Thread(target=last).start()
if sys.argv[1] == "exit":
    sys.exit(int(sys.argv[2]))
if sys.argv[1] == "serve":
    here.joinpath("serving").write_text("")
    time.sleep(300)
"""


@pytest.fixture(autouse=True)
def enabled() -> None:
    forked.enable()  # as tests/conftest.py does for the whole run


def probe(tmp_path: Path, *args: str) -> forked.Forked:
    (tmp_path / "esim_probe.py").write_text(PROBE)
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    return forked.Forked(
        [sys.executable, "-m", "esim_probe", *args],
        {"PROBE_OUT": str(out), "PATH": os.environ["PATH"]},
        tmp_path,
        tmp_path / "probe.log",
    )


def test_a_forked_module_runs_as_main_with_its_own_argv_env_cwd_log_and_session(
    tmp_path: Path,
) -> None:
    """A few seconds where it is the first: it starts the fork server, which imports."""
    process = probe(tmp_path, "exit", "3")

    assert process.wait(30) == 3
    name, args, cwd, env, leads_its_group, parent = json.loads((tmp_path / "out/seen").read_text())
    assert (name, args, cwd) == ("__main__", ["exit", "3"], str(tmp_path))
    assert env == ["PATH", "PROBE_OUT"]  # what it was given, and nothing of the fork server's
    assert leads_its_group and parent != os.getpid()  # the fork server's child, not ours
    assert "to the log" in (tmp_path / "probe.log").read_text()
    # The interpreter's own end: the thread waited for, then the atexit handlers.
    assert (tmp_path / "out/thread").read_text() == "ended"
    assert (tmp_path / "out/atexit").read_text() == "ran"


def test_a_signal_ends_it_with_minus_that_signal_and_poll_and_wait_say_so(tmp_path: Path) -> None:
    process = probe(tmp_path, "serve")
    wait_until((tmp_path / "out/serving").exists, timeout=30, what="the probe to serve")
    assert process.poll() is None
    with pytest.raises(subprocess.TimeoutExpired):
        process.wait(0.1)

    os.killpg(process.pid, signal.SIGTERM)  # as Process.stop sends it

    assert process.wait(30) == -signal.SIGTERM
    assert process.poll() == process.returncode == -signal.SIGTERM


def test_a_sigterm_to_the_run_leaves_the_fork_server_to_report_its_processes(
    tmp_path: Path,
) -> None:
    process = probe(tmp_path, "serve")
    wait_until((tmp_path / "out/serving").exists, timeout=30, what="the probe to serve")
    server = multiprocessing.forkserver._forkserver._forkserver_pid  # type: ignore[attr-defined]

    os.kill(server, signal.SIGTERM)  # as `timeout make test` sends it to the run's group

    time.sleep(0.5)
    assert alive(server)
    assert process.poll() is None  # still known to run, so pytest's teardown still stops it
    process.send_signal(signal.SIGKILL)
    assert process.wait(30) == -signal.SIGKILL


def test_only_a_python_dash_m_command_is_forked() -> None:
    assert forked.module_of([sys.executable, "-m", "accounts"]) == "accounts"
    assert forked.module_of(["python3", "-m", "accounts"]) is None  # another interpreter
    assert forked.module_of([sys.executable, "script.py"]) is None
    assert forked.module_of(["sh", "-c", "exit 3"]) is None
