"""`python -m <module>` for the test platform's Python processes, forked from a warm interpreter.

A service spends its first 2.5 s of CPU importing the same libraries as every other (SQLAlchemy,
FastAPI, FastStream, pydantic, OpenTelemetry, Alembic, the project's core), and a test run starts
some sixty such processes: a platform for each group of integration tests, and the restarts and
kills those tests are about. So each test process keeps one `multiprocessing` fork server that
has imported those libraries once (`PRELOADED`), and a platform's Python process is forked from
it instead of started cold. What runs is what `python -m <module>` runs: the module as
`__main__`, in a session of its own, with its own environment, working directory, argv and log;
its exit status is its `sys.exit` code, or minus the signal that ended it. Only the libraries
are preloaded, never a service's own modules, which read their settings as they are imported.

`make run`, the chaos run and the bench start every process cold (they do not call `enable`).
"""

import atexit
import io
import multiprocessing
import os
import runpy
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: What the fork server imports once: its own set-up (`fork_server`), the libraries every
#: service and sandbox imports (about 2.5 s of a service's CPU), and the project's core, none of
#: which reads a setting on import.
PRELOADED = (
    "tests.support.fork_server",
    "aiohttp",
    "aiokafka",
    "aiosqlite",
    "alembic.context",
    "asyncpg",
    "cryptography.hazmat.primitives.asymmetric.rsa",
    "fastapi",
    "faststream.kafka",
    "httpx",
    "jinja2",
    "opentelemetry.sdk.trace",
    "pydantic_settings",
    "redis.asyncio",
    "sqlalchemy.ext.asyncio",
    "structlog",
    "uvicorn",
    "esim_schemas",
    "esim_core.duework.leases",
    "esim_core.duework.loop",
    "esim_core.messaging.consumer",
    "esim_core.messaging.kafka",
    "esim_core.messaging.outbox",
    "esim_core.observability.logs",
    "esim_core.observability.tracing",
    "esim_core.persistence.migrations",
    "esim_core.production",
    "esim_core.service",
    "esim_core.settings",
    "esim_core.web.operator",
    "esim_core.web.server",
)

_context: Any = None


def enable() -> None:
    """Fork this process's `python -m` children from a warm fork server from now on."""
    global _context
    if _context is None:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(list(PRELOADED))
        _context = context


def enabled() -> bool:
    """Whether `enable` was called in this process."""
    return _context is not None


def module_of(argv: Sequence[str]) -> str | None:
    """The module of a `<this python> -m <module> ...` command line, else None."""
    if len(argv) >= 3 and argv[0] == sys.executable and argv[1] == "-m":
        return argv[2]
    return None


class Forked:
    """A forked `python -m` process, answering as `subprocess.Popen` does where the tests ask:
    `pid`, `poll`, `wait`, `returncode`, `send_signal`."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], cwd: Path, log: Path) -> None:
        module = module_of(argv)
        if module is None or _context is None:
            raise ValueError(f"not a `python -m` command, or forking not enabled: {argv}")
        self.args = list(argv)
        self._process = _context.Process(
            target=_run_module,
            args=(module, list(argv[3:]), dict(env), str(cwd), str(log)),
            name=f"python -m {module}",
            daemon=True,  # ended with the test process that started it, if still running then
        )
        self._process.start()
        self.pid: int = self._process.pid
        # As `start_new_session=True` promises, the process leads its own group once this
        # returns, so that `os.killpg(pid, ...)` reaches it from the first moment.
        while self.poll() is None:
            try:
                if os.getpgid(self.pid) == self.pid:
                    break
            except ProcessLookupError:
                pass  # gone: `poll` says so next
            time.sleep(0.001)

    @property
    def returncode(self) -> int | None:
        code: int | None = self._process.exitcode
        return code

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        code = self.returncode
        if code is None:
            raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
        return code

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)


def _run_module(module: str, args: list[str], env: dict[str, str], cwd: str, log: str) -> None:
    """In the forked child: become `python -m <module> <args>` and run it to its end."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # `fork_server` ignores it
    os.setsid()
    # Its command line stays the fork server's: `ps -o comm` and /proc/<pid>/comm name it.
    Path("/proc/self/comm").write_text(module[:15])
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    out = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(out)
    # New text streams on the log: the inherited ones buffered for the fork server's own use.
    sys.stdout = _stream(1)
    sys.stderr = _stream(2)
    sys.argv = [module, *args]
    sys.path.insert(0, cwd)  # as `python -m` puts the working directory first
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    finally:
        # What the interpreter does at its end, which `multiprocessing` (ending the child with
        # `os._exit`) would skip: wait for the threads that are not daemons, then run `atexit`.
        threading._shutdown()  # type: ignore[attr-defined]
        atexit._run_exitfuncs()


def _stream(fd: int) -> io.TextIOWrapper:
    return io.TextIOWrapper(
        io.FileIO(fd, "w", closefd=False),
        encoding="utf-8",
        errors="backslashreplace",
        line_buffering=True,
        write_through=True,
    )
