"""scripts/supervise.py on small Procfiles of sleep and python one-liners (no Kafka, no Redis).

Each test runs the supervisor as `make run` does (a separate process reading a Procfile), reads
what it logs, and checks through /proc that the processes it started are gone afterwards.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Protocol

import pytest

from tests.support.infra import alive

ROOT = Path(__file__).resolve().parents[2]
SUPERVISE = ROOT / "scripts" / "supervise.py"
PYTHON = shlex.quote(sys.executable)

# A process that ignores SIGTERM and writes its pid to <argv[1]>.pid (with --own-group, it moves
# to a process group of its own first, as a daemonising child would).
STUBBORN = """\
import os, signal, sys, time
if "--own-group" in sys.argv:
    os.setpgid(0, 0)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
with open(sys.argv[1] + ".pid", "w") as out:
    out.write(str(os.getpid()))
time.sleep(600)
"""

# Under `uv run`: counts the SIGTERMs it gets in <argv[1]>.terms, stops 0.5 s after the first.
COUNTS_TERMS = """\
import os, signal, sys, time
name = sys.argv[1]
terms = []
def on_term(signum, frame):
    terms.append(time.monotonic())
    with open(name + ".terms", "a") as out:
        out.write("TERM\\n")
signal.signal(signal.SIGTERM, on_term)
with open(name + ".pid", "w") as out:
    out.write(str(os.getpid()))
while not terms or time.monotonic() - terms[0] < 0.5:
    time.sleep(0.05)
"""


def load_supervise() -> ModuleType:
    spec = importlib.util.spec_from_file_location("supervise", SUPERVISE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["supervise"] = module
    spec.loader.exec_module(module)
    return module


def pid_in(path: Path, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text().strip() if path.exists() else ""
        if text:
            return int(text.splitlines()[-1])
        time.sleep(0.05)
    raise AssertionError(f"{path} was not written within {timeout} s")


class Supervised:
    """scripts/supervise.py running on a Procfile in a temporary directory."""

    def __init__(self, workdir: Path, procfile: str, *args: str, root: Path | None = None) -> None:
        self.workdir = workdir
        (workdir / "Procfile").write_text(procfile)
        command = [sys.executable, "-u", str(SUPERVISE), "--procfile", str(workdir / "Procfile")]
        command += ["--log-dir", str(workdir / "log"), "--root", str(root or workdir), *args]
        self.popen = subprocess.Popen(
            command,
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def output(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 10.0, count: int = 1) -> list[re.Match[str]]:
        """The first ``count`` log lines that match ``pattern`` (a regular expression)."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [m for m in map(regex.search, self.lines) if m]
                if len(found) >= count:
                    return found[:count]
                left = deadline - time.monotonic()
                if left <= 0 or (self.popen.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(
                        f"no {count} line(s) matching {pattern!r} within {timeout} s:\n"
                        + "\n".join(self.lines)
                    )
                self._changed.wait(min(left, 0.2))

    def index(self, pattern: str) -> int:
        regex = re.compile(pattern)
        with self._changed:
            return next(i for i, line in enumerate(self.lines) if regex.search(line))

    def signal(self, sig: signal.Signals = signal.SIGTERM) -> None:
        self.popen.send_signal(sig)

    def wait(self, timeout: float = 15.0) -> int:
        code = self.popen.wait(timeout)
        self._reader.join(5)
        return code

    def groups(self) -> list[int]:
        """The process groups the supervisor said it started (each process leads its own)."""
        # "started NAME (pid N)" and "restarted NAME (pid N; ...)"
        return [int(m) for m in re.findall(r"started \S+ \(pid (\d+)", self.output)]

    def close(self) -> None:
        """After a failed test: nothing of the run may outlive it."""
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(5)
        for group in self.groups():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)


class Start(Protocol):
    def __call__(self, procfile: str, *args: str, root: Path | None = None) -> Supervised: ...


@pytest.fixture
def supervise(tmp_path: Path) -> Iterator[Start]:
    """Starts the supervisor in tmp_path; whatever a failed test leaves running is killed."""
    runs: list[Supervised] = []

    def start(procfile: str, *args: str, root: Path | None = None) -> Supervised:
        runs.append(Supervised(tmp_path, procfile, *args, root=root))
        return runs[-1]

    yield start
    for run in runs:
        run.close()


def test_the_restart_delay_doubles_up_to_its_cap_and_starts_over_after_a_long_run() -> None:
    backoff = load_supervise().Backoff(initial=1.0, cap=30.0, reset_after=60.0)
    delays: list[float] = []
    previous = None
    for _ in range(7):
        previous = backoff.next_delay(previous, uptime=2.0)
        delays.append(previous)
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert backoff.next_delay(30.0, uptime=61.0) == 1.0


def test_the_summary_tells_where_the_operator_token_is() -> None:
    line = load_supervise().operator_token_line
    generated = line({"OPERATOR_TOKEN": "t" * 43, "RUN_LOCAL_OPERATOR_TOKEN_FILE": "var/x.token"})
    assert "t" * 43 in generated and "var/x.token" in generated
    # A token the operator gave is theirs: the summary does not print it.
    assert "secret-given" not in line({"OPERATOR_TOKEN": "secret-given"})
    assert "refuse to start" in line({})


def test_a_process_that_dies_is_restarted_with_backoff_and_the_others_keep_running(
    supervise: Start, tmp_path: Path
) -> None:
    run = supervise(
        "steady: echo $$ >> steady.pids; exec sleep 600\n"
        "flaky: echo $$ >> flaky.pids; sleep 0.7; echo 'flaky: giving up' >&2; exit 3\n",
        "--restart-delay=0.3",
        "--ready-after=0.2",
    )
    delays = run.wait_for(r"flaky: restart (\d) in ([\d.]+) s", timeout=12, count=3)
    assert [float(m.group(2)) for m in delays] == [0.3, 0.6, 1.2]
    died = run.wait_for(r"flaky died: exit code 3 after ([\d.]+) s up; end of .*flaky\.log")[0]
    assert 0.6 <= float(died.group(1)) < 3.0
    assert "    flaky: giving up" in run.output  # the end of its log
    run.wait_for(r"flaky is ready again after [\d.]+ s \(restart 1;")

    steady = (tmp_path / "steady.pids").read_text().split()
    assert len(steady) == 1 and alive(int(steady[0]))
    assert "steady died" not in run.output and "restarted steady" not in run.output
    assert len((tmp_path / "flaky.pids").read_text().split()) >= 3

    run.signal(signal.SIGTERM)
    assert run.wait() == 0
    assert not alive(int(steady[0]))
    assert not any(alive(int(p)) for p in (tmp_path / "flaky.pids").read_text().split())


def test_a_restart_waits_until_the_processes_it_comes_after_answer(
    supervise: Start, tmp_path: Path
) -> None:
    run = supervise(
        "dep: echo $$ > dep.pid; exec sleep 600\nsvc: echo $$ > svc.pid; exec sleep 600\n",
        "--after=svc=dep",
        "--restart-delay=0.1",
        "--ready-after=0.6",
    )
    run.wait_for("Everything is up")
    assert run.index(r"dep is ready") < run.index(r"started svc")
    os.kill(pid_in(tmp_path / "dep.pid"), signal.SIGKILL)
    os.kill(pid_in(tmp_path / "svc.pid"), signal.SIGKILL)
    run.wait_for(r"svc is ready again after")
    run.wait_for(r"dep died: killed by SIGKILL after")
    run.wait_for(r"svc died: killed by SIGKILL after")
    # svc's delay (0.1 s) is over long before dep counts as ready again (0.6 s after its restart)
    assert run.index(r"svc: restart waits for dep to answer") < run.index(r"dep is ready again")
    assert run.index(r"dep is ready again") < run.index(r"restarted svc")
    run.signal(signal.SIGTERM)
    assert run.wait() == 0


def test_sigterm_stops_everything_in_reverse_order_and_leaves_no_process(
    supervise: Start, tmp_path: Path
) -> None:
    (tmp_path / "stubborn.py").write_text(STUBBORN)
    tree = (
        "sh -c 'sleep 600 & echo $! > grandchild.pid;"
        f" {PYTHON} stubborn.py escaped --own-group & wait' & echo $! > child.pid; wait"
    )
    run = supervise(
        "base: echo $$ > base.pid; exec sleep 600\n"
        f"deaf: exec {PYTHON} stubborn.py deaf\n"  # the leader itself ignores SIGTERM
        f"tree: {tree}\n",  # a child, a grandchild, and one that ignores SIGTERM in its own group
        "--after=deaf=base",
        "--grace=deaf=0.5",
        "--grace=tree=0.5",
        "--ready-after=0.3",
    )
    run.wait_for("Everything is up")
    pids = {name: pid_in(tmp_path / f"{name}.pid") for name in ("base", "deaf", "escaped")}
    pids |= {name: pid_in(tmp_path / f"{name}.pid") for name in ("child", "grandchild")}
    assert all(alive(pid) for pid in pids.values())

    began = time.monotonic()
    run.signal(signal.SIGTERM)
    assert run.wait() == 0
    took = time.monotonic() - began

    assert not [name for name, pid in pids.items() if alive(pid)]
    for group in run.groups():
        assert not [p for p in os.listdir("/proc") if p.isdigit() and _in_group(int(p), group)]
    run.wait_for(r"SIGTERM received: stopping everything")
    run.wait_for(r"deaf: still running after its 0.5 s grace period: SIGKILL to pid \d+ \(.*deaf")
    run.wait_for(
        r"tree: still running after its 0.5 s grace period: SIGKILL to pid \d+ \(.*escaped"
    )
    stopped = run.wait_for(r"deaf stopped in ([\d.]+) s \(SIGKILL after 0\.\d s\)")[0]
    assert 0.5 <= float(stopped.group(1)) < 5.0
    # reverse dependency order: deaf (after base) is gone before base gets its SIGTERM
    assert run.index(r"deaf stopped in") < run.index(r"stopping base")
    run.wait_for(r"base stopped in [\d.]+ s \(killed by SIGTERM\)")
    run.wait_for(r"tree stopped in [\d.]+ s \(SIGKILL after")
    run.wait_for(
        r"all processes stopped in [\d.]+ s; deaf, tree had to be killed;"
        r" no process is left in their 3 process groups"
    )
    assert took < 10  # two levels, each at most its 0.5 s grace plus the SIGKILL


def test_a_second_signal_skips_the_grace_periods(supervise: Start, tmp_path: Path) -> None:
    (tmp_path / "stubborn.py").write_text(STUBBORN)
    run = supervise(f"deaf: exec {PYTHON} stubborn.py deaf\n", "--grace=deaf=60")
    run.wait_for("Everything is up")
    deaf = pid_in(tmp_path / "deaf.pid")
    run.signal(signal.SIGINT)
    run.wait_for(r"stopping deaf \(SIGTERM, up to 60 s\)")
    run.signal(signal.SIGINT)
    assert run.wait(timeout=5) == 0
    assert not alive(deaf)
    run.wait_for(r"deaf: second signal: SIGKILL to pid")
    run.wait_for(r"deaf stopped in [\d.]+ s \(SIGKILL on the second signal after")


def test_a_death_during_the_first_start_ends_the_run_with_status_1(
    supervise: Start, tmp_path: Path
) -> None:
    run = supervise(
        "fine: echo $$ > fine.pid; exec sleep 600\n"
        "broken: echo 'broken: FOO_URL is not set' >&2; exit 2\n",
        "--ready-after=2",
    )
    assert run.wait() == 1
    run.wait_for(
        r"broken exited during its first start, before it was ever ready \(exit code 2,"
        r" after [\d.]+ s\): that is a configuration or environment problem"
    )
    assert "    broken: FOO_URL is not set" in run.output
    assert "restart" not in run.output.replace("not a crash to restart", "")
    run.wait_for(r"fine stopped in [\d.]+ s \(killed by SIGTERM\)")
    assert not alive(pid_in(tmp_path / "fine.pid"))


def test_not_being_ready_in_time_at_the_start_ends_the_run_with_status_1(
    supervise: Start,
) -> None:
    run = supervise("slow: exec sleep 600\n", "--ready-after=30", "--timeout=0.5")
    assert run.wait() == 1
    run.wait_for(r"not everything became ready within 0 s")
    run.wait_for(r"no process is left in their 1 process groups")


def _uv() -> str:
    try:
        found = subprocess.run(
            [str(ROOT / "scripts" / "ensure-uv.sh")],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        found = ""
    if not found:
        pytest.skip("uv is not available (scripts/ensure-uv.sh)")
    return found


def test_python_under_uv_run_is_restarted_when_killed_gets_sigterm_once_or_sigkill_if_stuck(
    supervise: Start, tmp_path: Path
) -> None:
    """The Procfile's own pattern: `exec uv run --frozen python ...` from the repository."""
    (tmp_path / "counts_terms.py").write_text(COUNTS_TERMS)
    (tmp_path / "stubborn.py").write_text(STUBBORN)
    uv = shlex.quote(_uv())
    svc, stuck, counts_terms, stubborn = (
        shlex.quote(str(tmp_path / name))
        for name in ("svc", "stuck", "counts_terms.py", "stubborn.py")
    )
    run = supervise(
        f"svc: exec {uv} run --frozen python {counts_terms} {svc}\n"
        f"stuck: exec {uv} run --frozen python {stubborn} {stuck}\n",
        "--restart-delay=0.2",
        "--ready-after=0.5",
        "--grace=stuck=0.5",
        root=ROOT,
    )
    run.wait_for("Everything is up", timeout=30)
    first = pid_in(tmp_path / "svc.pid", timeout=30)
    (tmp_path / "svc.pid").unlink()
    os.kill(first, signal.SIGKILL)  # python, not uv: uv reports it as exit code 137
    run.wait_for(r"svc died: exit code 137: SIGKILL after")
    run.wait_for(r"svc is ready again after", timeout=30)
    second = pid_in(tmp_path / "svc.pid", timeout=30)
    assert second != first and alive(second)
    stuck_python = pid_in(tmp_path / "stuck.pid", timeout=30)

    run.signal(signal.SIGTERM)
    assert run.wait() == 0
    assert (tmp_path / "svc.terms").read_text() == "TERM\n"  # from uv; none from the supervisor
    assert not alive(second)
    run.wait_for(r"svc stopped in [\d.]+ s \(exit code 0\)")
    # uv passed SIGTERM on and waits for its python, which ignores it: both get SIGKILL
    run.wait_for(r"stuck: still running after its 0.5 s grace period: SIGKILL to pid \d+ \(.*uv")
    run.wait_for(r"stuck stopped in [\d.]+ s \(SIGKILL after")
    assert not alive(stuck_python)


def _in_group(pid: int, group: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state, _ppid, pgrp, session = stat[stat.rindex(")") + 2 :].split()[:4]
    return state not in "ZX" and group in (int(pgrp), int(session))
