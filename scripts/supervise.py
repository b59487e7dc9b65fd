#!/usr/bin/env python3
"""A small process supervisor for the local run (stdlib only; started by scripts/run-local.sh).

It reads a honcho-format Procfile (``name: command``) and

* refuses to start when a port one of the processes needs is already taken;
* starts every process in its own session and process group, with stdout and stderr going to
  ``<log-dir>/<name>.log`` (the previous run's log is kept as ``<name>.log.1``; a restart
  appends to the same log);
* starts a process only once those it comes ``after`` answer (the services after Kafka and
  Redis, the website after accounts, see ``build_specs``; ``--after NAME=DEP,...`` adds such an
  order, e.g. for a test Procfile);
* with ``--only``, starts just the named processes (e.g. the infrastructure alone);
* waits, bounded by ``--timeout``, until every process answers its readiness check, then
  prints how long that took and where everything is, and stays in the foreground;
* restarts a process that dies, and stops everything on SIGINT, SIGTERM or SIGHUP.

Restarts. When a process that has been ready dies (exits, crashes, is killed), the supervisor
logs its name, exit code or signal, uptime and the end of its log, stops whatever the process
left behind in its process group, and starts it again after a back-off: 1 s, doubling up to
30 s, and 1 s again once it had stayed up for 60 s (``--restart-delay``, ``--restart-delay-max``,
``--restart-reset``). A restart waits until every process it comes after answers its check at
that moment (no service restarts while Kafka or Redis does not answer) and logs "billing is
ready again after N s" when it answers. The other processes are left running, as in a
supervised deployment (systemd ``Restart=``, a Kubernetes restart policy): the services
reconnect to Kafka and Redis by themselves.

A process that dies during its very first start, before it was ever ready, aborts the run
instead (exit status 1, with the end of its log); so does not being ready within ``--timeout``
at start-up. At the first start such a death is nearly always a configuration or environment
problem (a port taken, a bad variable, a missing jar, a failing migration) that a restart loop
would only bury under back-off messages while the run never becomes ready. Once the run is
up, nothing aborts it: a restarted process that is slow to answer is reported and left to run.

Stopping. On SIGINT, SIGTERM or SIGHUP the processes stop in reverse dependency order
(services first, Kafka last; one level at a time, the processes of a level together). Every
process of a group gets SIGTERM once: the supervisor sends it to the top of each group's
process tree (the leader, and any process whose parent has left the group, such as the
children of a shell that died of SIGTERM), and a process under a live parent in the group gets
it from that parent. ``uv run`` (0.13) keeps ``python -m <service>`` as its child in the same
group, forwards SIGTERM to it and waits for it; a SIGTERM to the whole group would reach python
twice, which servers may take as "quit now". When a process's grace period is over
(``Spec.stop_timeout``, ``--grace NAME=SECONDS``), its whole process group gets SIGKILL, as does
any process that moved to a group of its own within the session: a python that hangs or
ignores SIGTERM is killed together with the uv waiting for it. A second signal skips the
grace periods. Each stop is logged with the time it took; afterwards ``/proc`` is checked for
any process left in the groups and sessions, and the supervisor exits 0 only when there is
none (1 when something was left, or when the run was aborted). If the supervisor itself is
killed, the processes it started get SIGTERM (``PR_SET_PDEATHSIG``).

Readiness checks and ports come from the same environment variables the processes read
(``KAFKA_PORT``, ``KAFKA_CONTROLLER_PORT``, ``REDIS_PORT``, ``SMTP_SINK_PORT``,
``PAYMENT_SANDBOX_PORT``, ``ESIM_SANDBOX_PORT``, ``<SERVICE>_HTTP_PORT``). A Procfile entry the
supervisor does not know (as in a test Procfile) has no port and no check: it counts as ready
once it has been running for ``--ready-after`` seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import dataclasses
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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

PROCFILE_LINE = re.compile(r"^([A-Za-z0-9_-]+):\s*(.+)$")
LOCALHOST = "127.0.0.1"
SERVICES = ("accounts", "billing", "provisioning", "notifier")
SERVICE_PORTS = {"accounts": 8000, "billing": 8001, "provisioning": 8002, "notifier": 8003}
#: The travellers' website: what a newcomer opens first, so its address is printed first.
WEBSITE = "web"
WEBSITE_PORT = 8080
POLL_S = 0.1  # how often the supervisor looks at its processes
KILL_WAIT_S = 10.0  # how long a group may take to vanish after SIGKILL before we give up

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


@dataclass(frozen=True)
class Backoff:
    """Delay before a restart: ``initial``, doubling up to ``cap``; ``initial`` again after a
    process stayed up ``reset_after`` seconds."""

    initial: float = 1.0
    cap: float = 30.0
    reset_after: float = 60.0

    def next_delay(self, previous: float | None, uptime: float) -> float:
        if previous is None or uptime >= self.reset_after:
            return self.initial
        return min(previous * 2, self.cap)


@dataclass
class Proc:
    """One Procfile entry and its current incarnation (``popen``), if any."""

    name: str
    command: str
    spec: Spec
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None
    starts: int = 0
    started_at: float = 0.0
    ready_at: float | None = None
    ever_ready: bool = False
    died_at: float | None = None
    delay: float | None = None  # the last restart delay, for the back-off
    restart_at: float | None = None  # set while a restart waits for its delay
    leftovers: Stopping | None = None  # what a dead incarnation left in its group, being stopped
    waiting_for: tuple[str, ...] = ()
    next_check: float = 0.0  # no readiness check before then (they are network round trips)
    slow_reported: bool = False
    groups: list[int] = field(default_factory=list)  # every process group it has had

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None


def log(message: str) -> None:
    stamp = time.strftime("%H:%M:%S")
    print(f"[{stamp}] {message}", flush=True)


def duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


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


def operator_token_line(env: Mapping[str, str]) -> str:
    """Where the operator token of this run is: the one run-local.sh generated, or the given one."""
    token_file = env.get("RUN_LOCAL_OPERATOR_TOKEN_FILE", "")
    if token_file and env.get("OPERATOR_TOKEN"):
        # A throwaway token of this local run, shown once on the terminal as the contract says.
        return (
            f"  operator token: {env['OPERATOR_TOKEN']}   (in {token_file}; "
            "Authorization: Bearer <token> on /v1/ of billing, provisioning, notifier; esimctl)"
        )
    if env.get("OPERATOR_TOKEN"):
        return "  operator token: the one in OPERATOR_TOKEN"
    return "  operator token: none (OPERATOR_TOKEN unset): the services will refuse to start"


def _sandbox(system: str, port: int, path: str, *, shown: str = "") -> Spec:
    """A sandbox of an outside system: ready once `path` answers 200; listed with `shown` added."""
    url = f"http://{LOCALHOST}:{port}{path}"
    return Spec(
        ports=(port,),
        check=http_200(LOCALHOST, port, path),
        check_label=f"GET {url}",
        urls=(f"{system + ' sandbox':<25}{url}{shown}",),
    )


def build_specs(env: Mapping[str, str]) -> dict[str, Spec]:
    kafka_port = _env_port(env, "KAFKA_PORT", 9092)
    controller_port = _env_port(env, "KAFKA_CONTROLLER_PORT", 9093)
    redis_port = _env_port(env, "REDIS_PORT", 6379)
    # The sandboxes listen where their own variables say; the services are pointed at them by
    # BILLING_STRIPE_BASE_URL (and PayPal's, Alipay's), PROVISIONING_ESIM_PLATFORM_URL,
    # NOTIFIER_SMTP_PORT and NOTIFIER_SMS_GATEWAY_URL
    # (scripts/run-local.sh derives those from these).
    smtp_port = _env_port(env, "SMTP_SINK_PORT", 1025)
    pay_port = _env_port(env, "PAYMENT_SANDBOX_PORT", 8010)
    esim_port = _env_port(env, "ESIM_SANDBOX_PORT", 8011)
    sms_port = _env_port(env, "SMS_SANDBOX_PORT", 8012)
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
        "payment-sandbox": _sandbox("payment gateway", pay_port, "/sandbox/ledger"),
        "esim-sandbox": _sandbox("eSIM platform", esim_port, "/sandbox/ledger"),
        "sms-sandbox": _sandbox("SMS gateway", sms_port, "/sandbox/messages", shown="?to="),
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
    web_port = _env_port(env, "WEB_HTTP_PORT", WEBSITE_PORT)
    specs[WEBSITE] = Spec(
        ports=(web_port,),
        check=http_200(LOCALHOST, web_port, "/health/ready"),
        check_label=f"GET http://{LOCALHOST}:{web_port}/health/ready",
        after=("accounts",),
        stop_timeout=15.0,
        urls=(f"{'travellers website':<25}http://{LOCALHOST}:{web_port}",),
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


# --- process groups ---------------------------------------------------------------------------

PROC_DIR = Path("/proc")


@dataclass(frozen=True)
class Member:
    """A live process (not a zombie) as ``/proc/<pid>/stat`` shows it."""

    pid: int
    ppid: int
    pgid: int
    sid: int


def _group_answers(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _threads_running(pid: int) -> bool:
    """Whether a process shown as a zombie still has threads: the main thread of a JVM (or any
    multi-threaded process) may have exited while the others are still shutting it down."""
    try:
        tasks = os.listdir(PROC_DIR / str(pid) / "task")
    except OSError:
        return False
    for task in tasks:
        try:
            raw = (
                (PROC_DIR / str(pid) / "task" / task / "stat").read_bytes().decode(errors="replace")
            )
        except OSError:
            continue
        if raw[raw.rindex(")") + 2 :].split()[0] not in ("Z", "X"):
            return True
    return False


def snapshot(groups: Iterable[int] = ()) -> list[Member]:
    """Every live process on the machine (zombies left out: they are dead, only not reaped;
    but not a "zombie" whose other threads still run).

    Without /proc (not Linux) all one can tell is whether a group has a member: each of
    ``groups`` that does is returned as one member standing for the whole group."""
    if not PROC_DIR.is_dir():
        return [Member(g, 0, g, g) for g in groups if _group_answers(g)]
    table: list[Member] = []
    for entry in os.scandir(PROC_DIR):
        if not entry.name.isdigit():
            continue
        try:
            raw = Path(entry.path, "stat").read_bytes().decode(errors="replace")
            # "pid (comm) state ppid pgrp session ...": comm may hold spaces and parentheses
            state, ppid, pgrp, session = raw[raw.rindex(")") + 2 :].split()[:4]
        except (OSError, ValueError):
            continue  # gone meanwhile
        if state not in ("Z", "X") or _threads_running(int(entry.name)):
            table.append(Member(int(entry.name), int(ppid), int(pgrp), int(session)))
    return table


def in_group(table: Iterable[Member], group: int) -> list[Member]:
    """The members of a process group, and of the session of the same id: every process is
    started as a session leader, so a descendant that moved to a group of its own is found too."""
    return [m for m in table if group in (m.pgid, m.sid)]


def command_of(pid: int) -> str:
    try:
        raw = (PROC_DIR / str(pid) / "cmdline").read_bytes()
    except OSError:
        return "?"
    text = raw.replace(b"\0", b" ").decode(errors="replace").strip()
    return text if len(text) <= 80 else text[:77] + "..."


def send(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


class Stopping:
    """One process group on its way out: SIGTERM once to each process at the top of its tree,
    the grace period, then SIGKILL to all of it."""

    def __init__(
        self, name: str, group: int, grace: float, leader: subprocess.Popen[bytes] | None = None
    ) -> None:
        self.name = name
        self.group = group
        self.leader = leader  # reaped before the group counts as gone, for its exit status
        self.grace = grace
        self.began = time.monotonic()
        self.ended_at: float | None = None
        self.termed: set[int] = set()
        self.killed_at: float | None = None
        self.hurried = False

    @property
    def took(self) -> float:
        return (self.ended_at or time.monotonic()) - self.began

    def step(self, table: Sequence[Member], hurry: bool) -> str:
        """One look at the group: "gone", "stuck" (SIGKILL did not help), or "waiting"."""
        live = in_group(table, self.group)
        now = time.monotonic()
        if not live and (self.leader is None or self.leader.poll() is not None):
            self.ended_at = now
            return "gone"
        if self.killed_at is None and (hurry or now - self.began >= self.grace):
            self.killed_at = now
            self.hurried = hurry and now - self.began < self.grace
            why = (
                "second signal"
                if self.hurried
                else f"still running after its {self.grace:g} s grace period"
            )
            log(f"{self.name}: {why}: SIGKILL to {self._describe(live)}")
        if self.killed_at is not None:
            signal_group(self.group, signal.SIGKILL)
            for member in live:
                if member.pgid != self.group:  # moved to a group of its own
                    send(member.pid, signal.SIGKILL)
            if now - self.killed_at > KILL_WAIT_S:
                log(f"{self.name}: {self._describe(live)} survive SIGKILL; giving up on them")
                return "stuck"
            return "waiting"
        pids = {m.pid for m in live}
        for member in live:
            # A process under a live parent of the group gets SIGTERM from that parent (uv run
            # forwards it to python, exec'd scripts are their parent); the others from us.
            if member.ppid not in pids and member.pid not in self.termed:
                if member.pid != self.group:  # the leader's SIGTERM is announced by the caller
                    log(f"{self.name}: SIGTERM to {self._describe([member])}, left by its parent")
                self.termed.add(member.pid)
                send(member.pid, signal.SIGTERM)
        return "waiting"

    @staticmethod
    def _describe(members: Iterable[Member]) -> str:
        return ", ".join(f"pid {m.pid} ({command_of(m.pid)})" for m in members)


def signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


# --- starting ---------------------------------------------------------------------------------


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
    restart = proc.starts > 0
    if not restart:
        rotate(proc.log_path)
    with proc.log_path.open("ab") as out:
        what = f"restart {proc.starts}" if restart else "starts"
        banner = f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} run-local {what}: {proc.command}\n"
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
            start_new_session=True,  # own session and group: the terminal's Ctrl-C is ours to relay
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
    proc.starts += 1
    proc.started_at = time.monotonic()
    proc.ready_at = None
    proc.slow_reported = False
    proc.groups.append(proc.popen.pid)
    if restart:
        assert proc.died_at is not None
        log(
            f"restarted {proc.name} (pid {proc.popen.pid}; restart {proc.starts - 1},"
            f" {duration(proc.started_at - proc.died_at)} after it died)"
        )
    else:
        log(f"started {proc.name} (pid {proc.popen.pid}), log: {proc.log_path}")


def describe_exit(code: int | None) -> str:
    def signal_name(number: int) -> str:
        try:
            return signal.Signals(number).name
        except ValueError:
            return f"signal {number}"

    if code is None:
        return "exit status unknown"
    if code < 0:
        return f"killed by {signal_name(-code)}"
    if 128 < code < 128 + 65:
        # the shell's, uv run's and the JVM's way of saying "ended by a signal", e.g. 137 when
        # the python under uv run was killed with SIGKILL, 143 after SIGTERM
        return f"exit code {code}: {signal_name(code - 128)}"
    return f"exit code {code}"


def tail(path: Path, lines: int = 15) -> str:
    try:
        content = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join("    " + line for line in content[-lines:])


# --- the supervisor ---------------------------------------------------------------------------


class Supervisor:
    CHECK_EVERY_S = 0.5

    def __init__(
        self,
        procs: list[Proc],
        env: Mapping[str, str],
        cwd: Path,
        *,
        timeout: float = 180.0,
        backoff: Backoff | None = None,
        ready_after: float = 1.0,
    ) -> None:
        self.procs = procs
        self.by_name = {proc.name: proc for proc in procs}
        self.env = env
        self.cwd = cwd
        self.timeout = timeout
        self.backoff = backoff or Backoff()
        self.ready_after = ready_after
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
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))

    # dependency order -------------------------------------------------------------------------

    def level(self, proc: Proc, seen: frozenset[str] = frozenset()) -> int:
        if proc.name in seen:
            raise SystemExit(f"run-local: dependency cycle through {proc.name}")
        deps = [self.by_name[d] for d in proc.spec.after if d in self.by_name]
        if not deps:
            return 0
        return 1 + max(self.level(d, seen | {proc.name}) for d in deps)

    def answers(self, proc: Proc) -> bool:
        """The process runs and answers its readiness check now."""
        if not proc.running:
            return False
        if proc.spec.check is None:
            return time.monotonic() - proc.started_at >= self.ready_after
        try:
            return proc.spec.check()
        except (OSError, ValueError, struct.error, http.client.HTTPException):
            return False

    def waits_for(self, proc: Proc) -> tuple[str, ...]:
        """The processes ``proc`` comes after that are not ready: at the first start, not yet
        ready; at a restart, not ready or not answering at this moment."""
        deps = [self.by_name[d] for d in proc.spec.after if d in self.by_name]
        if proc.starts == 0:
            return tuple(d.name for d in deps if d.ready_at is None)
        return tuple(d.name for d in deps if d.ready_at is None or not self.answers(d))

    # running ----------------------------------------------------------------------------------

    def run(self, t0: float) -> bool:
        """Starts, watches and restarts the processes until a stop signal (True) or until the
        start-up fails (False)."""
        deadline = t0 + self.timeout
        up = False
        while self.stop_requested is None:
            leftovers = [p for p in self.procs if p.leftovers is not None]
            table = snapshot(p.groups[-1] for p in leftovers) if leftovers else []
            for proc in self.procs:
                if not self.tend(proc, t0, table):
                    return False
            if not up:
                if all(proc.ready_at is not None for proc in self.procs):
                    self.print_summary(t0)
                    up = True
                elif time.monotonic() > deadline:
                    self.report_not_ready()
                    return False
            self.sleep(POLL_S)
        return True

    def tend(self, proc: Proc, t0: float, table: Sequence[Member]) -> bool:
        """One look at one process; False when the run must be given up."""
        now = time.monotonic()
        if proc.popen is not None:
            code = proc.popen.poll()
            if code is None:
                self.check_ready(proc, t0, now)
                return True
            return self.on_death(proc, code, now)
        if proc.leftovers is not None:
            if proc.leftovers.step(table, self.hurry) in ("gone", "stuck"):
                if proc.leftovers.termed or proc.leftovers.killed_at is not None:
                    took = duration(proc.leftovers.took)
                    log(f"{proc.name}: what it left in its process group is gone ({took})")
                proc.leftovers = None
            return True
        if (proc.restart_at is not None and now < proc.restart_at) or now < proc.next_check:
            return True
        if any(self.by_name[d].spec.check for d in proc.spec.after if d in self.by_name):
            proc.next_check = now + self.CHECK_EVERY_S
        waiting = self.waits_for(proc)
        if waiting:
            if proc.starts and waiting != proc.waiting_for:
                log(f"{proc.name}: restart waits for {', '.join(waiting)} to answer")
            proc.waiting_for = waiting
            return True
        proc.waiting_for = ()
        proc.restart_at = None
        start(proc, self.env, self.cwd)
        return True

    def check_ready(self, proc: Proc, t0: float, now: float) -> None:
        if proc.ready_at is not None or now < proc.next_check:
            return
        if proc.spec.check is not None:
            proc.next_check = now + self.CHECK_EVERY_S
        if self.answers(proc):
            proc.ready_at = time.monotonic()
            if proc.ever_ready:
                assert proc.died_at is not None
                log(
                    f"{proc.name} is ready again after {duration(proc.ready_at - proc.started_at)}"
                    f" (restart {proc.starts - 1}; {duration(proc.ready_at - proc.died_at)}"
                    " after it died)"
                )
            else:
                log(f"{proc.name} is ready ({proc.ready_at - t0:.1f} s)")
            proc.ever_ready = True
        elif proc.ever_ready and not proc.slow_reported and now - proc.started_at > self.timeout:
            proc.slow_reported = True
            log(
                f"{proc.name} has not answered {proc.spec.check_label or 'its check'} within"
                f" {self.timeout:.0f} s of its restart; it keeps running (see {proc.log_path})"
            )

    def on_death(self, proc: Proc, code: int, now: float) -> bool:
        uptime = now - proc.started_at
        was_ready = proc.ready_at is not None
        proc.popen = None
        proc.ready_at = None
        proc.died_at = now
        # whatever it left in its group (a python under a uv that was killed) goes first
        proc.leftovers = Stopping(proc.name, proc.groups[-1], proc.spec.stop_timeout)
        if not proc.ever_ready:
            log(
                f"{proc.name} exited during its first start, before it was ever ready"
                f" ({describe_exit(code)}, after {duration(uptime)}): that is a configuration or"
                f" environment problem, not a crash to restart; giving up. End of {proc.log_path}:"
            )
            print(tail(proc.log_path), flush=True)
            return False
        proc.delay = self.backoff.next_delay(proc.delay, uptime)
        proc.restart_at = now + proc.delay
        state = "" if was_ready else " (before it was ready again)"
        log(
            f"{proc.name} died: {describe_exit(code)} after {duration(uptime)} up{state};"
            f" end of {proc.log_path}:"
        )
        print(tail(proc.log_path), flush=True)
        log(f"{proc.name}: restart {proc.starts} in {duration(proc.delay)}")
        return True

    def report_not_ready(self) -> None:
        log(f"not everything became ready within {self.timeout:.0f} s:")
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

    def print_summary(self, t0: float) -> None:
        elapsed = time.monotonic() - t0
        lines = [
            "",
            f"Everything is up: {len(self.procs)} processes ready in {elapsed:.1f} s.",
            "",
        ]
        # The website first: it is where a newcomer begins (sign up, bind a card, renew).
        for proc in sorted(self.procs, key=lambda proc: proc.name != WEBSITE):
            lines.extend(f"  {url}" for url in proc.spec.urls)
        log_dir = self.procs[0].log_path.parent
        lines += [
            "",
            f"  logs: {log_dir}/<process>.log   (tail -f {log_dir}/*.log)",
        ]
        if "smtp" in self.by_name:
            lines.append(f"  mail: {self.env.get('SMTP_SINK_DIR', 'var/mail')}/*.eml")
        if any(name in self.by_name for name in SERVICES):
            lines.append(operator_token_line(self.env))
        lines += [
            "",
            "A process that dies is restarted; Ctrl-C stops everything.",
            "",
        ]
        print("\n".join(lines), flush=True)

    # shutting down ----------------------------------------------------------------------------

    def stop_all(self) -> bool:
        """Stops every process group, highest dependency level first, then checks /proc that
        none of them has a process left; True if none has."""
        began = time.monotonic()
        killed: list[str] = []
        for lvl in sorted({self.level(p) for p in self.procs}, reverse=True):
            self._stop_batch([p for p in self.procs if self.level(p) == lvl], killed)
        groups = {group: proc.name for proc in self.procs for group in proc.groups}
        left = [m for m in snapshot(groups) if m.pgid in groups or m.sid in groups]
        for member in left:
            owner = groups.get(member.pgid) or groups.get(member.sid)
            log(f"left behind: pid {member.pid} ({command_of(member.pid)}) of {owner}")
        if left:
            return False
        note = f"; {', '.join(killed)} had to be killed" if killed else ""
        log(
            f"all processes stopped in {duration(time.monotonic() - began)}{note};"
            f" no process is left in their {len(groups)} process groups"
        )
        return True

    def _stop_batch(self, batch: list[Proc], killed: list[str]) -> None:
        stopping: dict[str, Stopping] = {}
        for proc in batch:
            if proc.leftovers is not None:
                # a dead incarnation's leftovers: already on their way out, with their grace
                stopping[proc.name] = proc.leftovers
                log(f"stopping what {proc.name} left in its process group")
            elif proc.popen is not None:
                grace = proc.spec.stop_timeout
                stopping[proc.name] = Stopping(proc.name, proc.groups[-1], grace, proc.popen)
                log(f"stopping {proc.name} (SIGTERM, up to {grace:g} s)")
            elif proc.restart_at is not None:
                log(f"{proc.name} was waiting to be restarted; it stays stopped")
        while stopping:
            table = snapshot(s.group for s in stopping.values())
            for name, stop in list(stopping.items()):
                proc = self.by_name[name]
                status = stop.step(table, self.hurry)
                if status == "waiting":
                    continue
                del stopping[name]
                proc.leftovers = None
                if stop.killed_at is not None:
                    killed.append(name)
                    how = "SIGKILL on the second signal" if stop.hurried else "SIGKILL"
                    how += f" after {duration(stop.killed_at - stop.began)}"
                elif proc.popen is not None:
                    how = describe_exit(proc.popen.returncode)
                else:
                    how = "what a dead incarnation left"
                if status == "gone":
                    log(f"{name} stopped in {duration(stop.took)} ({how})")
                proc.popen = None
            time.sleep(POLL_S / 2)


# --- command line -----------------------------------------------------------------------------


def _pairs(values: Iterable[str], option: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep or not name.strip():
            raise SystemExit(f"run-local: {option} {value!r}: expected NAME=VALUE")
        pairs[name.strip()] = rest.strip()
    return pairs


def apply_overrides(
    specs: Mapping[str, Spec], names: Iterable[str], after: Iterable[str], grace: Iterable[str]
) -> dict[str, Spec]:
    """The specs with ``--after NAME=DEP,DEP`` and ``--grace NAME=SECONDS`` applied."""
    known = set(names)
    result = {name: specs.get(name, Spec()) for name in known}
    for name, deps in _pairs(after, "--after").items():
        listed = tuple(d for d in re.split(r"[\s,]+", deps) if d)
        if unknown := ({name, *listed} - known):
            raise SystemExit(f"run-local: --after: no process {', '.join(sorted(unknown))}")
        result[name] = dataclasses.replace(result[name], after=listed)
    for name, seconds in _pairs(grace, "--grace").items():
        if name not in known:
            raise SystemExit(f"run-local: --grace: no process {name}")
        try:
            value = float(seconds)
        except ValueError:
            raise SystemExit(f"run-local: --grace {name}={seconds!r}: not a number") from None
        result[name] = dataclasses.replace(result[name], stop_timeout=value)
    return result


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
    parser.add_argument(
        "--after",
        action="append",
        default=[],
        metavar="NAME=DEP,...",
        help="start (and restart) NAME only once DEP answers; replaces NAME's built-in order",
    )
    parser.add_argument(
        "--grace",
        action="append",
        default=[],
        metavar="NAME=SECONDS",
        help="how long NAME may take to stop after SIGTERM before SIGKILL",
    )
    parser.add_argument("--restart-delay", type=float, default=1.0, help="first restart delay")
    parser.add_argument(
        "--restart-delay-max", type=float, default=30.0, help="cap of the doubling delay"
    )
    parser.add_argument(
        "--restart-reset",
        type=float,
        default=60.0,
        help="seconds up after which the restart delay starts over",
    )
    parser.add_argument(
        "--ready-after",
        type=float,
        default=1.0,
        help="seconds a process without a readiness check must run to count as ready",
    )
    args = parser.parse_args()

    cwd = (args.root or args.procfile.resolve().parent).resolve()
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    log_dir = args.log_dir.resolve()
    entries = parse_procfile(args.procfile)
    specs = apply_overrides(build_specs(env), (name for name, _ in entries), args.after, args.grace)
    only = set(re.split(r"[\s,]+", args.only.strip())) - {""}
    if unknown := only - {name for name, _ in entries}:
        raise SystemExit(f"run-local: {args.procfile} has no process {', '.join(sorted(unknown))}")
    procs = [
        Proc(name, command, specs[name], log_dir / f"{name}.log")
        for name, command in entries
        if not only or name in only
    ]
    if not check_ports(procs):
        return 2
    if args.check_ports:
        return 0
    log_dir.mkdir(parents=True, exist_ok=True)

    supervisor = Supervisor(
        procs,
        env,
        cwd,
        timeout=args.timeout,
        backoff=Backoff(args.restart_delay, args.restart_delay_max, args.restart_reset),
        ready_after=args.ready_after,
    )
    for proc in procs:
        supervisor.level(proc)  # fail early on a cycle
    supervisor.install_signal_handlers()
    t0 = time.monotonic()
    stopped_on_request = False
    try:
        stopped_on_request = supervisor.run(t0)
    finally:
        supervisor.announce_stop()
        clean = supervisor.stop_all()
    # A stop on request (Ctrl-C, SIGTERM) that leaves nothing behind is a normal end.
    return 0 if stopped_on_request and clean else 1


if __name__ == "__main__":
    sys.exit(main())
