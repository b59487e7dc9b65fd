#!/usr/bin/env python3
"""A small process supervisor for the local run (stdlib only; started by scripts/run-local.sh).

It reads a honcho-format Procfile (``name: command``) and

* refuses to start when a port one of the processes needs is already taken;
* starts every process in its own process group, with stdout and stderr going to
  ``<log-dir>/<name>.log`` (the previous run's log is kept as ``<name>.log.1``);
* starts the services only once Kafka and Redis answer (see ``build_specs``);
* with ``--only``, starts just the named processes (e.g. the infrastructure alone);
* waits, bounded by ``--timeout``, until every process answers its readiness check, then
  prints how long that took and where everything is, and stays in the foreground;
* on SIGINT, SIGTERM or SIGHUP stops the processes in reverse dependency order (services
  first, Kafka last), each with SIGTERM and its own grace period, then SIGKILL for whatever is
  left; a second signal skips the grace periods;
* stops everything and exits non-zero when a process dies on its own.

Readiness checks and ports come from the same environment variables the processes read
(``KAFKA_PORT``, ``KAFKA_CONTROLLER_PORT``, ``REDIS_PORT``, ``SMTP_SINK_PORT``,
``PAYMENT_SANDBOX_PORT``, ``ESIM_SANDBOX_PORT``, ``<SERVICE>_HTTP_PORT``).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import errno
import http.client
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

PROCFILE_LINE = re.compile(r"^([A-Za-z0-9_-]+):\s*(.+)$")
LOCALHOST = "127.0.0.1"
SERVICES = ("accounts", "billing", "provisioning", "notifier")
SERVICE_PORTS = {"accounts": 8000, "billing": 8001, "provisioning": 8002, "notifier": 8003}

Check = Callable[[], bool]


@dataclass(frozen=True)
class Spec:
    """What the supervisor knows about one Procfile entry beyond its command."""

    ports: tuple[int, ...] = ()
    check: Check | None = None
    check_label: str = ""
    after: tuple[str, ...] = ()
    stop_timeout: float = 10.0
    urls: tuple[str, ...] = ()


@dataclass
class Proc:
    name: str
    command: str
    spec: Spec
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    ready_at: float | None = None
    exit_code: int | None = None
    killed: bool = False


def log(message: str) -> None:
    stamp = time.strftime("%H:%M:%S")
    print(f"[{stamp}] {message}", flush=True)


# --- readiness checks -------------------------------------------------------------------------


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise ConnectionError("connection closed")
        chunks.extend(chunk)
    return bytes(chunks)


def kafka_answers(host: str, port: int) -> Check:
    """The broker answers an ApiVersions request (not merely: the port is open)."""

    def check() -> bool:
        client_id = b"run-local"
        correlation_id = 7
        # request header v1: api_key=18 (ApiVersions), api_version=0, correlation_id, client_id
        body = struct.pack(">hhih", 18, 0, correlation_id, len(client_id)) + client_id
        with socket.create_connection((host, port), timeout=2) as sock:
            sock.settimeout(2)
            sock.sendall(struct.pack(">i", len(body)) + body)
            (size,) = struct.unpack(">i", _recv_exact(sock, 4))
            payload = _recv_exact(sock, size)
        answered_id, error_code = struct.unpack(">ih", payload[:6])
        # 0: fine; 35 (UNSUPPORTED_VERSION) still proves a live broker answering requests
        return answered_id == correlation_id and error_code in (0, 35)

    return check


def redis_answers(host: str, port: int) -> Check:
    def check() -> bool:
        with socket.create_connection((host, port), timeout=2) as sock:
            sock.settimeout(2)
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")

    return check


def smtp_answers(host: str, port: int) -> Check:
    def check() -> bool:
        with socket.create_connection((host, port), timeout=2) as sock:
            sock.settimeout(2)
            greeting = sock.recv(512)
            with contextlib.suppress(OSError):
                sock.sendall(b"QUIT\r\n")
            return greeting.startswith(b"220")

    return check


def http_200(host: str, port: int, path: str) -> Check:
    def check() -> bool:
        # http.client rather than urllib: no proxy from the environment gets in the way.
        connection = http.client.HTTPConnection(host, port, timeout=2)
        try:
            connection.request("GET", path, headers={"Accept": "application/json"})
            response = connection.getresponse()
            response.read()
            return response.status == 200
        finally:
            connection.close()

    return check


# --- what each Procfile entry is --------------------------------------------------------------


def _env_port(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise SystemExit(f"run-local: {name}={raw!r} is not a port number")
    return int(raw)


def build_specs(env: Mapping[str, str]) -> dict[str, Spec]:
    kafka_port = _env_port(env, "KAFKA_PORT", 9092)
    controller_port = _env_port(env, "KAFKA_CONTROLLER_PORT", 9093)
    redis_port = _env_port(env, "REDIS_PORT", 6379)
    # The sandboxes listen where their own variables say; the services are pointed at them by
    # BILLING_PAYMENT_GATEWAY_URL, PROVISIONING_ESIM_PLATFORM_URL and NOTIFIER_SMTP_PORT
    # (scripts/run-local.sh derives those from these).
    smtp_port = _env_port(env, "SMTP_SINK_PORT", 1025)
    pay_port = _env_port(env, "PAYMENT_SANDBOX_PORT", 8010)
    esim_port = _env_port(env, "ESIM_SANDBOX_PORT", 8011)
    mail_dir = env.get("SMTP_SINK_DIR", "var/mail")

    specs = {
        "kafka": Spec(
            ports=(kafka_port, controller_port),
            check=kafka_answers(LOCALHOST, kafka_port),
            check_label=f"ApiVersions on {LOCALHOST}:{kafka_port}",
            stop_timeout=60.0,
            urls=(f"Kafka (KRaft)            {LOCALHOST}:{kafka_port}",),
        ),
        "redis": Spec(
            ports=(redis_port,),
            check=redis_answers(LOCALHOST, redis_port),
            check_label=f"PING on {LOCALHOST}:{redis_port}",
            urls=(f"Redis                    redis://{LOCALHOST}:{redis_port}/0",),
        ),
        "smtp": Spec(
            ports=(smtp_port,),
            check=smtp_answers(LOCALHOST, smtp_port),
            check_label=f"SMTP greeting on {LOCALHOST}:{smtp_port}",
            urls=(f"SMTP sink                {LOCALHOST}:{smtp_port}  (mails in {mail_dir}/)",),
        ),
        "payment-sandbox": Spec(
            ports=(pay_port,),
            check=http_200(LOCALHOST, pay_port, "/sandbox/ledger"),
            check_label=f"GET http://{LOCALHOST}:{pay_port}/sandbox/ledger",
            urls=(f"payment gateway sandbox  http://{LOCALHOST}:{pay_port}/sandbox/ledger",),
        ),
        "esim-sandbox": Spec(
            ports=(esim_port,),
            check=http_200(LOCALHOST, esim_port, "/sandbox/ledger"),
            check_label=f"GET http://{LOCALHOST}:{esim_port}/sandbox/ledger",
            urls=(f"eSIM platform sandbox    http://{LOCALHOST}:{esim_port}/sandbox/ledger",),
        ),
    }
    for service in SERVICES:
        port = _env_port(env, f"{service.upper()}_HTTP_PORT", SERVICE_PORTS[service])
        base = f"http://{LOCALHOST}:{port}"
        extra = "   (GET /v1/notifications?iccid=...)" if service == "notifier" else ""
        specs[service] = Spec(
            ports=(port,),
            check=http_200(LOCALHOST, port, "/health/ready"),
            check_label=f"GET {base}/health/ready",
            after=("kafka", "redis"),
            stop_timeout=20.0,
            urls=(f"{service + ' API':<25}{base}/docs{extra}",),
        )
    return specs


# --- Procfile and ports ----------------------------------------------------------------------


def parse_procfile(path: Path) -> list[tuple[str, str]]:
    entries: list[tuple[str, str]] = []
    seen: set[str] = set()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = PROCFILE_LINE.match(line)
        if not match:
            raise SystemExit(f"run-local: {path}:{number}: not a 'name: command' line: {line!r}")
        name, command = match.group(1), match.group(2).strip()
        if name in seen:
            raise SystemExit(f"run-local: {path}:{number}: process {name!r} is defined twice")
        seen.add(name)
        entries.append((name, command))
    if not entries:
        raise SystemExit(f"run-local: {path} defines no processes")
    return entries


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR: a socket left in TIME_WAIT by the previous run does not count as taken.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOCALHOST, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise
    return False


def who_listens(port: int) -> str:
    if not shutil.which("ss"):
        return ""
    try:
        result = subprocess.run(  # noqa: S603 - fixed argv
            ["ss", "-Hltnp", f"sport = :{port}"],  # noqa: S607
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    users = re.findall(r'users:\(\("([^"]+)",pid=(\d+)', result.stdout)
    return ", ".join(f"{name} (pid {pid})" for name, pid in users)


def check_ports(procs: Iterable[Proc]) -> bool:
    taken: list[str] = []
    for proc in procs:
        for port in proc.spec.ports:
            if port_in_use(port):
                holder = who_listens(port)
                taken.append(
                    f"  port {port} (needed by {proc.name}) is already in use"
                    + (f" by {holder}" if holder else "")
                )
    if taken:
        print("run-local: cannot start, ports are taken:", file=sys.stderr)
        print("\n".join(taken), file=sys.stderr)
        print(
            "Stop whatever holds them (another `make run`? `pgrep -af kafka.Kafka`,"
            " `pgrep -a redis-server`) or move the process with its *_PORT variable.",
            file=sys.stderr,
        )
        return False
    return True


# --- starting and stopping --------------------------------------------------------------------


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if the supervisor itself is killed (Linux)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def rotate(path: Path) -> None:
    if path.exists() and path.stat().st_size > 0:
        path.replace(path.with_name(path.name + ".1"))


def start(proc: Proc, env: Mapping[str, str], cwd: Path) -> None:
    rotate(proc.log_path)
    with proc.log_path.open("ab") as out:
        banner = f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} run-local starts: {proc.command}\n"
        out.write(banner.encode())
        out.flush()
        proc.popen = subprocess.Popen(  # noqa: S602 - Procfile commands are shell lines
            proc.command,
            shell=True,
            executable="/bin/sh",
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: the terminal's Ctrl-C is ours to relay
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
    proc.started_at = time.monotonic()
    log(f"started {proc.name} (pid {proc.popen.pid}), log: {proc.log_path}")


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def poll(proc: Proc) -> int | None:
    if proc.popen is None:
        return None
    if proc.exit_code is None:
        proc.exit_code = proc.popen.poll()
    return proc.exit_code


def describe_exit(code: int) -> str:
    def signal_name(number: int) -> str:
        try:
            return signal.Signals(number).name
        except ValueError:
            return f"signal {number}"

    if code < 0:
        return f"killed by {signal_name(-code)}"
    if 128 < code < 128 + 65:
        # the shell's and the JVM's way of saying "ended by a signal", e.g. 143 after SIGTERM
        return f"exit code {code}: {signal_name(code - 128)}"
    return f"exit code {code}"


def tail(path: Path, lines: int = 15) -> str:
    try:
        content = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join("    " + line for line in content[-lines:])


class Supervisor:
    def __init__(self, procs: list[Proc], env: Mapping[str, str], cwd: Path) -> None:
        self.procs = procs
        self.by_name = {proc.name: proc for proc in procs}
        self.env = env
        self.cwd = cwd
        self.stop_requested: str | None = None
        self.hurry = False

    # signals ----------------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        # Only flags here: printing from a signal handler can clash with a print in progress.
        if self.stop_requested is None:
            self.stop_requested = signal.Signals(signum).name
        else:
            self.hurry = True

    def announce_stop(self) -> None:
        if self.stop_requested is not None:
            print(file=sys.stderr, flush=True)
            log(
                f"{self.stop_requested} received: stopping everything"
                " (send it again to skip the grace periods)"
            )

    def sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while self.stop_requested is None and time.monotonic() < deadline:
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))

    # dependency order ---------------------------------------------------------------------------

    def level(self, proc: Proc, seen: frozenset[str] = frozenset()) -> int:
        if proc.name in seen:
            raise SystemExit(f"run-local: dependency cycle through {proc.name}")
        deps = [self.by_name[d] for d in proc.spec.after if d in self.by_name]
        if not deps:
            return 0
        return 1 + max(self.level(d, seen | {proc.name}) for d in deps)

    def deps_ready(self, proc: Proc) -> bool:
        return all(
            self.by_name[d].ready_at is not None for d in proc.spec.after if d in self.by_name
        )

    # bringing it up -------------------------------------------------------------------------

    def check(self, proc: Proc) -> bool:
        if proc.spec.check is None:
            return time.monotonic() - proc.started_at > 1.0
        try:
            return proc.spec.check()
        except (OSError, ValueError, struct.error, http.client.HTTPException):
            return False

    def first_dead(self) -> Proc | None:
        for proc in self.procs:
            if proc.popen is not None and poll(proc) is not None:
                return proc
        return None

    def report_death(self, proc: Proc) -> None:
        code = proc.exit_code if proc.exit_code is not None else -1
        log(f"{proc.name} stopped on its own ({describe_exit(code)}); end of {proc.log_path}:")
        print(tail(proc.log_path), flush=True)

    def bring_up(self, timeout: float, t0: float) -> bool:
        deadline = t0 + timeout
        while self.stop_requested is None:
            for proc in self.procs:
                if proc.popen is None and self.deps_ready(proc):
                    start(proc, self.env, self.cwd)
            dead = self.first_dead()
            if dead is not None:
                self.report_death(dead)
                return False
            for proc in self.procs:
                if proc.popen is not None and proc.ready_at is None and self.check(proc):
                    proc.ready_at = time.monotonic()
                    log(f"{proc.name} is ready ({proc.ready_at - t0:.1f} s)")
            if all(proc.ready_at is not None for proc in self.procs):
                return True
            if time.monotonic() > deadline:
                log(f"not everything became ready within {timeout:.0f} s:")
                for proc in self.procs:
                    if proc.ready_at is not None:
                        continue
                    if proc.popen is None:
                        waiting = [
                            d
                            for d in proc.spec.after
                            if d in self.by_name and self.by_name[d].ready_at is None
                        ]
                        log(f"  {proc.name}: not started, waits for {', '.join(waiting)}")
                        continue
                    log(f"  {proc.name}: no answer to {proc.spec.check_label}; {proc.log_path}:")
                    print(tail(proc.log_path), flush=True)
                return False
            self.sleep(0.5)
        return False

    def print_summary(self, t0: float) -> None:
        elapsed = time.monotonic() - t0
        lines = [
            "",
            f"Everything is up: {len(self.procs)} processes ready in {elapsed:.1f} s.",
            "",
        ]
        for proc in self.procs:
            lines.extend(f"  {url}" for url in proc.spec.urls)
        log_dir = self.procs[0].log_path.parent
        lines += [
            "",
            f"  logs: {log_dir}/<process>.log   (tail -f {log_dir}/*.log)",
            f"  mail: {self.env.get('SMTP_SINK_DIR', 'var/mail')}/*.eml",
            "",
            "Ctrl-C stops everything.",
            "",
        ]
        print("\n".join(lines), flush=True)

    def watch(self) -> bool:
        while self.stop_requested is None:
            dead = self.first_dead()
            if dead is not None:
                self.report_death(dead)
                return False
            self.sleep(0.5)
        return True

    # shutting down --------------------------------------------------------------------------

    def stop_all(self) -> bool:
        """Stops every started process, highest dependency level first; True if all went quietly."""
        quiet = True
        levels = sorted({self.level(p) for p in self.procs}, reverse=True)
        for lvl in levels:
            batch = [p for p in self.procs if self.level(p) == lvl and p.popen is not None]
            quiet = self._stop_batch(batch) and quiet
        return quiet

    def _stop_batch(self, batch: list[Proc]) -> bool:
        deadlines: dict[str, float] = {}
        for proc in batch:
            assert proc.popen is not None
            if poll(proc) is None:
                log(f"stopping {proc.name} (SIGTERM, up to {proc.spec.stop_timeout:.0f} s)")
                with contextlib.suppress(ProcessLookupError):
                    # The leader only: it relays to its own children (uv run, exec'd scripts);
                    # signalling the whole group would hand some of them a second SIGTERM.
                    proc.popen.send_signal(signal.SIGTERM)
            deadlines[proc.name] = time.monotonic() + proc.spec.stop_timeout
        quiet = True
        leftovers_asked: set[str] = set()
        hurry_announced = False
        while deadlines:
            if self.hurry and not hurry_announced:
                log("second signal: killing what is left")
                hurry_announced = True
            for name, deadline in list(deadlines.items()):
                proc = self.by_name[name]
                assert proc.popen is not None
                pgid = proc.popen.pid
                leader_done = poll(proc) is not None
                if leader_done and not group_alive(pgid):
                    del deadlines[name]
                    code = proc.exit_code if proc.exit_code is not None else 0
                    how = "killed" if proc.killed else describe_exit(code)
                    log(f"{name} stopped ({how})")
                    continue
                if leader_done and name not in leftovers_asked:
                    # something the leader started outlived it: ask it to stop too
                    signal_group(pgid, signal.SIGTERM)
                    leftovers_asked.add(name)
                if not proc.killed and (self.hurry or time.monotonic() > deadline):
                    log(f"{name} did not stop in time: SIGKILL to its process group")
                    signal_group(pgid, signal.SIGKILL)
                    proc.killed = True
                    quiet = False
                    deadlines[name] = time.monotonic() + 10
                elif proc.killed and time.monotonic() > deadline:
                    log(f"{name} (process group {pgid}) survives SIGKILL; giving up on it")
                    del deadlines[name]
            time.sleep(0.1)
        return quiet


def main() -> int:
    parser = argparse.ArgumentParser(description="Runs the Procfile's processes for the local run.")
    parser.add_argument("--procfile", type=Path, default=Path("Procfile.local"))
    parser.add_argument("--log-dir", type=Path, default=Path("var/log"))
    parser.add_argument(
        "--root", type=Path, default=None, help="working directory (default: the Procfile's)"
    )
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to become ready")
    parser.add_argument(
        "--only",
        default="",
        help="start only these processes (names separated by commas or spaces)",
    )
    parser.add_argument(
        "--check-ports", action="store_true", help="only check that the ports are free"
    )
    args = parser.parse_args()

    cwd = (args.root or args.procfile.resolve().parent).resolve()
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    specs = build_specs(env)
    log_dir = args.log_dir.resolve()
    entries = parse_procfile(args.procfile)
    only = set(re.split(r"[\s,]+", args.only.strip())) - {""}
    if unknown := only - {name for name, _ in entries}:
        raise SystemExit(f"run-local: {args.procfile} has no process {', '.join(sorted(unknown))}")
    procs = [
        Proc(name, command, specs.get(name, Spec()), log_dir / f"{name}.log")
        for name, command in entries
        if not only or name in only
    ]
    if not check_ports(procs):
        return 2
    if args.check_ports:
        return 0
    log_dir.mkdir(parents=True, exist_ok=True)

    supervisor = Supervisor(procs, env, cwd)
    for proc in procs:
        supervisor.level(proc)  # fail early on a cycle
    supervisor.install_signal_handlers()
    t0 = time.monotonic()
    ok = False
    try:
        if supervisor.bring_up(args.timeout, t0):
            supervisor.print_summary(t0)
            ok = supervisor.watch()
    finally:
        supervisor.announce_stop()
        quiet = supervisor.stop_all()
        log("all processes stopped" + ("" if quiet else " (some had to be killed)"))
    # A stop on request (Ctrl-C, SIGTERM) is a normal end; anything else is a failure.
    return 0 if supervisor.stop_requested is not None or ok else 1


if __name__ == "__main__":
    sys.exit(main())
