"""The real parts the integration tests run against: Kafka, Redis, sandboxes and services.

Kafka and Redis come, in this order, from `KAFKA_BOOTSTRAP_SERVERS` / `REDIS_URL`, from
testcontainers where a Docker engine answers, or from local processes started here (the broker
from the Maven-resolved jars of deploy/kafka, `redis-server` from Debian's package).

The services keep their data in one SQLite file each, or, with `postgres()`, in one PostgreSQL
database each: on the server `TEST_DATABASE_URL_BASE` names, in a testcontainer, or in a
throwaway local server run from Debian's `postgresql` binaries.
"""

import asyncio
import concurrent.futures
import fcntl
import functools
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support import forked

ROOT = Path(__file__).resolve().parents[2]


def _share_the_default_ssl_context() -> None:
    """Make httpx build its default SSL context once per process instead of once per call.

    Each `httpx.get`/`httpx.post` opens a client, and each client loaded the CA bundle into a
    new SSL context: some 20 ms of CPU per call, and under py-spy about nine tenths of a test
    process's CPU while it polls the platform (every URL here is plain HTTP on the loopback).
    With a platform's own processes on the same two cores, that CPU was taken from them. The
    default context (verify=True, no client certificate) is built once and shared, as one
    `httpx.Client` would share it; any other choice is built as httpx builds it.
    """
    from httpx._transports import default

    build = httpx.create_ssl_context  # the same function, under its public name
    shared: list[ssl.SSLContext] = []

    def create_ssl_context(
        verify: ssl.SSLContext | str | bool = True, cert: Any = None, trust_env: bool = True
    ) -> ssl.SSLContext:
        if verify is not True or cert is not None:
            return build(verify=verify, cert=cert, trust_env=trust_env)
        if not shared:
            shared.append(build(verify=verify, cert=cert, trust_env=trust_env))
        return shared[0]

    # The transports look the function up in their module's namespace at each client.
    vars(default)["create_ssl_context"] = create_ssl_context


_share_the_default_ssl_context()


#: Where listening ports are picked: below the kernel's ephemeral range, which outgoing
#: connections take their local ports from. A port the kernel handed out by `bind(0)` lies in
#: that range, and between picking it and the service binding it, any client's connection could
#: take it ("address already in use", seen in CI with five platforms at once).
_PORTS_FROM = 10_000
#: Each pytest-xdist worker (and each other process, by its pid) picks in its own slice.
_SLICES = 16
_handed_out: set[int] = set()


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default


def free_port() -> int:
    """A TCP port nothing listens on right now, outside the ephemeral range, and never handed
    out before by this process: in this process's own slice of the ports below that range."""
    end = _ephemeral_start()
    if end - _PORTS_FROM < _SLICES * 64:  # an unusual range: fall back to the kernel's pick
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            picked: int = sock.getsockname()[1]
            return picked
    width = (end - _PORTS_FROM) // _SLICES
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    index = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else os.getpid()
    start = _PORTS_FROM + (index % _SLICES) * width
    for port in range(start, start + width):
        if port in _handed_out:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port left in {start}-{start + width - 1}")


def wait_until(
    check: Callable[[], Any], *, timeout: float = 60.0, interval: float = 0.2, what: str = ""
) -> Any:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as error:  # the thing polled may not be up yet
            last_error = error
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what or check}: {last_error}")


def port_open(port: int) -> bool:
    """Tell whether something accepts TCP connections on the loopback port."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def docker_available() -> bool:
    """Tell whether a Docker engine answers (the client alone is not enough)."""
    if shutil.which("docker") is None:
        return False
    try:
        return (
            subprocess.run(
                ["docker", "info"], capture_output=True, timeout=10, check=False
            ).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


@dataclass
class Process:
    """A child process with its log file; started in its own process group.

    A `<this python> -m <module>` process is forked from a warm interpreter where the test run
    asked for it (`tests.support.forked`), else started as a new program.
    """

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    ready: Callable[[], bool]
    popen: "subprocess.Popen[bytes] | forked.Forked | None" = None

    def start(self, timeout: float = 90.0) -> "Process":
        """Start the process and wait until it is ready."""
        return self.launch().wait_ready(timeout)

    def launch(self) -> "Process":
        """Start the process without waiting for it."""
        env = {**os.environ, **self.env}
        if forked.enabled() and forked.module_of(self.argv):
            self.popen = forked.Forked(self.argv, env, ROOT, self.log_path)
            return self
        log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            self.argv,
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        return self

    def wait_ready(self, timeout: float = 90.0) -> "Process":
        """Wait until the process is ready; fail if it exits or takes too long."""

        def up() -> bool:
            assert self.popen is not None
            if self.popen.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.popen.returncode}; see {self.log_path}:\n"
                    + self.log_path.read_text(errors="replace")[-3000:]
                )
            return self.ready()

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if up():
                return self
            time.sleep(0.2)
        raise TimeoutError(f"{self.name} not ready after {timeout}s; see {self.log_path}")

    def kill(self, *, every_descendant: bool = False) -> None:
        """SIGKILL the process (a crash at whatever line it is on).

        Its process group dies with it. A server whose children leave that group (each
        PostgreSQL backend calls setsid) dies whole only `every_descendant`: each process
        below it is killed too, and this returns once all are gone.
        """
        if self.popen is None or self.popen.poll() is not None:
            return
        below = descendants(self.popen.pid) if every_descendant else []
        os.killpg(self.popen.pid, signal.SIGKILL)
        for pid in below:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.popen.wait(10)
        wait_until(lambda: not any(alive(pid) for pid in below), timeout=10, what="its children")

    def stop(self, timeout: float = 20.0, sig: signal.Signals = signal.SIGTERM) -> None:
        """Send `sig` (SIGTERM) to the process and wait; SIGKILL it if it does not stop."""
        if self.popen is None or self.popen.poll() is not None:
            return
        with suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()


def descendants(pid: int) -> list[int]:
    """The processes below `pid` now, children and theirs, from /proc's parent links."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        parent = int(stat.rsplit(")", 1)[1].split()[1])  # the name in () may hold spaces
        children.setdefault(parent, []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    """Whether the process runs: it exists, and is neither a zombie (dead, not yet reaped) nor
    dying (X)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def http_ok(url: str) -> Callable[[], bool]:
    """A readiness probe: the URL answers 200."""

    def probe() -> bool:
        try:
            return httpx.get(url, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    return probe


@dataclass(frozen=True)
class Server:
    """A server the platform uses: its address, and its process where it runs locally.

    `process` is None for a server given from outside or run in a testcontainer; a local one
    can be killed and started again as it was (`Process.start` relaunches the same command on
    the same port and data directory).
    """

    address: str
    process: Process | None = None


@contextmanager
def kafka(workdir: Path) -> Iterator[str]:
    """A Kafka bootstrap address: the given one, the test run's shared broker (`SHARED_RUN`),
    a testcontainer, or a local KRaft broker of its own."""
    shared = os.environ.get(SHARED_RUN)
    if shared and not os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield shared_broker(Path(shared))
        return
    with kafka_server(workdir) as server:
        yield server.address


def kafka_is_shared() -> bool:
    """Whether `kafka()` hands out a broker that other platforms use too (topics need a suffix)."""
    return bool(os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or os.environ.get(SHARED_RUN))


SHARED_RUN = "ESIM_TEST_SHARED_RUN"
"""The variable naming the directory of a test run's shared broker (tests/conftest.py sets it).

A broker costs a platform some 30 s of CPU to start and a share of a core to keep: one serves
every platform of the run, each on topics and consumer groups of its own (a suffix). The first
worker that needs it starts it; `stop_shared_broker` stops it when the run ends.
"""


def shared_broker(directory: Path) -> str:
    """The address of the test run's shared broker; the first caller of the run starts it.

    Workers are separate processes: a file lock makes one of them start it, the others wait and
    read its address. The broker runs in a session of its own, so it outlives the worker.
    """
    with (directory / "kafka.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        address_file = directory / "kafka.address"
        if address_file.exists():
            address = address_file.read_text()
            if port_open(int(address.rpartition(":")[2])):
                return address
            raise RuntimeError(f"the run's shared broker at {address} stopped; see {directory}")
        broker, address = local_broker(directory)
        assert broker.popen is not None
        (directory / "kafka.pid").write_text(str(broker.popen.pid))
        address_file.write_text(address)
        return address


def stop_shared_broker(directory: Path, timeout: float = 30.0) -> None:
    """Stop the run's shared broker, if a worker started one, and remove its directory."""
    pid_file = directory / "kafka.pid"
    if pid_file.exists():
        pid = int(pid_file.read_text())
        with suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                with suppress(ChildProcessError):  # reap it where this process started it
                    os.waitpid(pid, os.WNOHANG)
                os.killpg(pid, 0)  # raises ProcessLookupError once the group is gone
                time.sleep(0.2)
            os.killpg(pid, signal.SIGKILL)
    shutil.rmtree(directory, ignore_errors=True)


@contextmanager
def kafka_server(workdir: Path) -> Iterator[Server]:
    """Like `kafka`, with the broker's process where it is a local one."""
    given = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if given:
        yield Server(given)
        return
    if docker_available():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("apache/kafka:4.1.1").with_kraft() as container:
            yield Server(container.get_bootstrap_server())
        return
    broker, address = local_broker(workdir)
    try:
        yield Server(address, broker)
    finally:
        broker.stop(timeout=30)


def local_broker(workdir: Path) -> tuple[Process, str]:
    """Start a KRaft broker from deploy/kafka's jars on free ports, its data and log in
    `workdir`; return its process (ready) and its bootstrap address."""
    port, controller = free_port(), free_port()
    broker = Process(
        "kafka",
        [str(ROOT / "deploy/kafka/run.sh")],
        {
            "KAFKA_PORT": str(port),
            "KAFKA_CONTROLLER_PORT": str(controller),
            "KAFKA_DATA_DIR": str(workdir / "kafka"),
        },
        workdir / "kafka.log",
        lambda: port_open(port),
    ).start(timeout=180)
    return broker, f"127.0.0.1:{port}"


@contextmanager
def redis(workdir: Path) -> Iterator[str]:
    """A Redis URL: the given one, a testcontainer, or a local `redis-server`."""
    with redis_server(workdir) as server:
        yield server.address


@contextmanager
def redis_server(workdir: Path) -> Iterator[Server]:
    """Like `redis`, with the server's process where it is a local one."""
    given = os.environ.get("REDIS_URL")
    if given:
        yield Server(given)
        return
    if docker_available():
        from testcontainers.redis import RedisContainer

        with RedisContainer("redis:7") as container:
            host = container.get_container_host_ip()
            yield Server(f"redis://{host}:{container.get_exposed_port(6379)}/0")
        return
    subprocess.run([str(ROOT / "deploy/redis/ensure.sh")], check=True)
    port = free_port()
    server = Process(
        "redis",
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        {},
        workdir / "redis.log",
        lambda: port_open(port),
    ).start()
    try:
        yield Server(f"redis://127.0.0.1:{port}/0", server)
    finally:
        server.stop()


SERVICES = ("accounts", "billing", "provisioning", "notifier")


def service_of(process: str) -> str:
    """The service a process runs: `billing` for `billing` and for its replica `billing-2`."""
    base, _, number = process.rpartition("-")
    return base if base in SERVICES and number.isdigit() else process


CALLBACK_SECRET = "integration-callback-secret"
"""What the eSIM sandbox signs its callbacks with and provisioning checks them by."""


DATABASE_MODES = ("sqlite", "postgres")

START_TRIES = 3
"""How often `Platform.start_services` starts a service that exits while it starts."""

SERVICE_READY_TIMEOUT_S = 240.0
"""How long a service may take to be ready. Usually seconds; but on a loaded 2-core machine
several platforms start at once against the run's one shared broker, each creating its own
topics (hundreds of partitions), and a consumer then waited over 90 s for the group
coordinator and its topics' metadata."""


@contextmanager
def postgres(workdir: Path) -> Iterator[dict[str, str]]:
    """One PostgreSQL database per service; yields each service's SQLAlchemy URL.

    The server is chosen as `postgres_databases` says.
    """
    with postgres_databases(workdir) as (urls, _server):
        yield urls


@contextmanager
def postgres_databases(
    workdir: Path, *, durable: bool = False
) -> Iterator[tuple[dict[str, str], Server]]:
    """One PostgreSQL database per service; yields each service's SQLAlchemy URL and the server.

    The server is, in this order, the one `TEST_DATABASE_URL_BASE` names (a URL without a
    database, e.g. `postgresql+asyncpg://user:pw@host:5432`, whose user may create databases;
    this run's databases get a unique prefix and are dropped at the end), a testcontainer where
    a Docker engine answers, or a throwaway local server (deploy/postgres/ensure.sh installs the
    binaries if they are missing).
    """
    given = os.environ.get("TEST_DATABASE_URL_BASE")
    if given:
        base = given.rstrip("/")
        names = {name: f"esim{new_suffix().replace('.', '_')}_{name}" for name in SERVICES}
        create_databases(base, names.values())
        try:
            yield {name: f"{base}/{database}" for name, database in names.items()}, Server(base)
        finally:
            drop_databases(base, names.values())
        return
    if docker_available():
        from testcontainers.community.postgres import PostgresContainer

        with PostgresContainer("postgres:17", driver="asyncpg") as container:
            host = container.get_container_host_ip()
            port = container.get_exposed_port(container.port)
            base = f"postgresql+asyncpg://{container.username}:{container.password}@{host}:{port}"
            create_databases(base, SERVICES)
            yield {name: f"{base}/{name}" for name in SERVICES}, Server(base)
        return
    with postgres_server(workdir, durable=durable) as server:
        create_databases(server.address, SERVICES)
        yield {name: f"{server.address}/{name}" for name in SERVICES}, server


def postgres_binaries() -> Path:
    """The bin directory of the newest PostgreSQL that Debian's packages installed."""
    for _ in range(2):
        found = [
            path.parent
            for path in Path("/usr/lib/postgresql").glob("*/bin/initdb")
            if (path.parent / "postgres").exists() and path.parent.parent.name.isdigit()
        ]
        if found:
            return max(found, key=lambda path: int(path.parent.name))
        subprocess.run([str(ROOT / "deploy/postgres/ensure.sh")], check=True)
    raise RuntimeError("deploy/postgres/ensure.sh ran, but no /usr/lib/postgresql/*/bin/initdb")


@contextmanager
def local_postgres(workdir: Path) -> Iterator[str]:
    """A PostgreSQL server of its own on a free loopback port; yields its base URL."""
    with postgres_server(workdir) as server:
        yield server.address


@contextmanager
def postgres_server(workdir: Path, *, durable: bool = False) -> Iterator[Server]:
    """A PostgreSQL server of its own on a free loopback port, as a `Server` with its process.

    A throwaway server skips what only durability buys. A `durable` one (for a run that kills
    it) keeps every commit it acknowledged through its own crash: its commits wait for their
    WAL to reach the kernel (`synchronous_commit` on). Without fsync a crash of the machine
    could still lose them, which no run here does.

    PostgreSQL refuses to run as root, so under root it runs as the `postgres` OS user, and its
    data directory is then a fresh one under the system temp dir: pytest's base temp dir is
    private to root (0700), and the server could not reach a directory in the workdir.
    """
    binaries = postgres_binaries()
    if os.geteuid() == 0:
        # setpriv execs the command as that user, with no process in between to relay signals.
        as_postgres = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"]
        home = Path(tempfile.mkdtemp(prefix="esim-postgres-"))
        shutil.chown(home, "postgres", "postgres")
        (workdir / "postgres").symlink_to(home)
    else:
        as_postgres = []
        home = workdir / "postgres"
        home.mkdir(mode=0o700)
    data, sockets = home / "data", home / "run"
    try:
        subprocess.run(
            [
                *as_postgres,
                str(binaries / "initdb"),
                f"--pgdata={data}",
                "--username=postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            env={**os.environ, "LC_ALL": "C"},
        )
        subprocess.run([*as_postgres, "mkdir", "-m", "0700", str(sockets)], check=True)
        server, port = _start_postgres(as_postgres, binaries, data, sockets, durable, workdir)
        try:
            yield Server(f"postgresql+asyncpg://postgres@127.0.0.1:{port}", server)
        finally:
            # SIGINT is PostgreSQL's fast shutdown: it does not wait for clients to leave.
            server.stop(timeout=30, sig=signal.SIGINT)
    finally:
        shutil.rmtree(home, ignore_errors=True)


#: Ports a throwaway PostgreSQL server tries: another process may take the free one it was given
#: before the server binds it (workers start brokers, services and servers at once).
POSTGRES_PORT_TRIES = 3


def _start_postgres(
    as_postgres: list[str],
    binaries: Path,
    data: Path,
    sockets: Path,
    durable: bool,
    workdir: Path,
) -> tuple["Process", int]:
    """Start a server on `data` on a free loopback port; the process and its port.

    Ready once its own socket file exists and the port answers: a port that another process
    took in the meantime answers too, while this server exits ("Address already in use"), and
    is then started again on another port.
    """
    for attempt in range(1, POSTGRES_PORT_TRIES + 1):
        port = free_port()
        socket = sockets / f".s.PGSQL.{port}"
        server = Process(
            "postgres",
            [
                *as_postgres,
                str(binaries / "postgres"),
                "-D",
                str(data),
                "-p",
                str(port),
                "-k",
                str(sockets),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "max_connections=200",
                # A throwaway server: durability buys nothing, speed does.
                "-c",
                "fsync=off",
                "-c",
                "full_page_writes=off",
                *([] if durable else ["-c", "synchronous_commit=off"]),
            ],
            {"LC_ALL": "C"},
            workdir / "postgres.log",
            functools.partial(_postgres_answers, socket, port),
        )
        try:
            return server.start(timeout=60), port
        except RuntimeError:
            log = server.log_path.read_text(errors="replace")
            if attempt == POSTGRES_PORT_TRIES or "Address already in use" not in log:
                raise
    raise AssertionError("not reached")


def _postgres_answers(socket: Path, port: int) -> bool:
    # Its own socket file: only the server that bound the port makes it.
    return socket.exists() and port_open(port)


def create_databases(base: str, names: Iterable[str]) -> None:
    """Create these databases on the server at `base` (waiting for it to accept connections)."""

    def answers() -> bool:
        _run_admin(base, ["SELECT 1"])
        return True

    wait_until(answers, timeout=60, what="PostgreSQL")
    _run_admin(base, [f'CREATE DATABASE "{name}"' for name in names])


def drop_databases(base: str, names: Iterable[str]) -> None:
    """Drop these databases, even if a connection was left open."""
    _run_admin(base, [f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)' for name in names])


def _run_admin(base: str, statements: list[str]) -> None:
    """Run statements outside any transaction in the server's `postgres` database."""

    async def run() -> None:
        from sqlalchemy import text
        from sqlalchemy.ext.asyncio import create_async_engine

        engine = create_async_engine(f"{base}/postgres", isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as connection:
                for statement in statements:
                    await connection.execute(text(statement))
        finally:
            await engine.dispose()

    # In a thread of its own: the caller may be inside pytest-asyncio's running event loop.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, run()).result()


@dataclass
class Platform:
    """Every process of the platform, on free ports, for one test session."""

    workdir: Path
    kafka: str
    redis: str
    topic_suffix: str = ""
    databases: dict[str, str] = field(default_factory=dict)
    #: The card inventory that accounts and the eSIM sandbox import.
    cards_csv: Path = ROOT / "deploy/local/cards.csv"
    #: Extra environment for every process started here (e.g. sandbox delays); it wins.
    env: dict[str, str] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    processes: dict[str, Process] = field(default_factory=dict)
    #: Added to (and overriding) every service's environment, e.g. a shorter stop timeout.
    service_env: dict[str, str] = field(default_factory=dict)
    #: The bearer token of the services' operator endpoints (`OPERATOR_TOKEN`), new each run.
    operator_token: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)
    #: Processes of each service: the first is named as the service (`billing`), the others
    #: `billing-2`, ...; each on a port of its own, all on the service's one database, consumer
    #: group and leases (so more than one needs PostgreSQL).
    replicas: int = 1

    @property
    def service_processes(self) -> list[str]:
        """The names of every service process, each service's replicas together."""
        return [
            name if number == 1 else f"{name}-{number}"
            for name in SERVICES
            for number in range(1, self.replicas + 1)
        ]

    @property
    def mail_dir(self) -> Path:
        """Where the SMTP sink keeps what it received."""
        return self.workdir / "mail"

    def url(self, name: str) -> str:
        """The HTTP base URL of a service or sandbox."""
        return f"http://127.0.0.1:{self.ports[name]}"

    @property
    def operator_headers(self) -> dict[str, str]:
        """The authorization header of an operator call (billing, provisioning, notifier)."""
        return {"Authorization": f"Bearer {self.operator_token}"}

    def topic(self, base: str) -> str:
        """The name this run uses for a contract topic."""
        return base + self.topic_suffix

    def group(self, name: str) -> str:
        """The consumer group this run's client called `name` joins (KAFKA_GROUP_PREFIX)."""
        return self.group_prefix + name

    @property
    def group_prefix(self) -> str:
        """On a shared broker, groups of this platform's own: another platform's `accounts` is
        not a replica of this one's."""
        return self.topic_suffix.removeprefix(".") + "." if self.topic_suffix else ""

    def common_env(self) -> dict[str, str]:
        """Environment shared by every service process."""
        env = {
            # A local run: loopback addresses, sandboxes and demo secrets are allowed
            # (esim_core.production refuses them anywhere else).
            "ESIM_ENV": "local",
            "KAFKA_BOOTSTRAP_SERVERS": self.kafka,
            # One broker: one copy of each topic, and short topics grown (a local run).
            "KAFKA_TOPIC_REPLICATION": "1",
            "KAFKA_TOPIC_GROW_PARTITIONS": "true",
            "REDIS_URL": self.redis,
            "OPERATOR_TOKEN": self.operator_token,
            "LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
        }
        if self.topic_suffix:
            from esim_core.settings import Topics

            for name, value in Topics().model_dump().items():
                env[f"TOPIC_{name.upper()}"] = value + self.topic_suffix
            env["KAFKA_GROUP_PREFIX"] = self.group_prefix
        return env

    def start(self) -> None:
        """Start the sandboxes, the SMTP sink and the four services."""
        self.launch_sandboxes()
        self.start_services()

    def launch_sandboxes(self) -> None:
        """Launch the sandboxes and the SMTP sink without waiting for them.

        They need neither the broker, Redis nor a database, so `platform_on` launches them
        first and they import while those start.
        """
        for name in ("payment", "esim", "sms", "smtp", *self.service_processes):
            self.ports[name] = free_port()
        self.mail_dir.mkdir(parents=True, exist_ok=True)
        python = sys.executable
        sandbox_env = {
            "payment": {
                "PAYMENT_SANDBOX_PORT": str(self.ports["payment"]),
                # The providers call billing back (webhooks, notifies), signed.
                "PAYMENT_SANDBOX_WEBHOOK_URL": self.url("billing"),
                **self.alipay_keys(),
            },
            "esim": {
                "ESIM_SANDBOX_PORT": str(self.ports["esim"]),
                "ESIM_SANDBOX_CARDS_CSV": str(self.cards_csv),
                "ESIM_SANDBOX_CALLBACK_URL": f"{self.url('provisioning')}/callbacks/esim",
                "ESIM_SANDBOX_CALLBACK_SECRET": CALLBACK_SECRET,
                "ESIM_SANDBOX_USAGE_POLLS_PER_MIN": "600",
                "ESIM_SANDBOX_TICK_S": "0.2",
            },
            "sms": {"SMS_SANDBOX_PORT": str(self.ports["sms"])},
        }
        ready_path = {
            "payment": "/sandbox/ledger",
            "esim": "/sandbox/ledger",
            "sms": "/sandbox/messages",
        }
        # Launched together, then waited for: each spends its first seconds importing.
        for name in ("payment", "esim", "sms"):
            self.processes[name] = Process(
                f"{name}-sandbox",
                [python, "-m", f"sandboxes.{name}"],
                {**sandbox_env[name], **self.env},
                self.workdir / f"{name}-sandbox.log",
                http_ok(f"{self.url(name)}{ready_path[name]}"),
            ).launch()
        smtp_port = self.ports["smtp"]
        self.processes["smtp"] = Process(
            "smtp",
            [python, "-m", "sandboxes.smtp"],
            {"SMTP_SINK_PORT": str(smtp_port), "SMTP_SINK_DIR": str(self.mail_dir)},
            self.workdir / "smtp.log",
            lambda: port_open(smtp_port),
        ).launch()

    def start_services(self) -> None:
        """Wait for the sandboxes (`launch_sandboxes`), then start the four services.

        A service that exits while it starts is started again, up to `START_TRIES` in all, as
        `make run`'s supervisor and Kubernetes do: on a loaded machine a consumer has been seen
        to give up waiting for topics another service had just created. Each restart is said on
        stderr; a service that never comes up fails the platform with its log.
        """
        for name in ("payment", "esim", "sms", "smtp"):
            self.processes[name].wait_ready()
        for name in self.service_processes:
            self.processes[name] = self.service_process(name).launch()
        for name in self.service_processes:
            for attempt in range(1, START_TRIES + 1):
                try:
                    self.processes[name].wait_ready(SERVICE_READY_TIMEOUT_S)
                    break
                except RuntimeError as exited:
                    if attempt == START_TRIES:
                        raise
                    said = (
                        f"platform: {name} exited while starting (try {attempt} of "
                        f"{START_TRIES}), starting it again: {str(exited).splitlines()[0]}"
                    )
                    print(said, file=sys.stderr)
                    # Also in pytest's warnings summary, which a passing run still shows.
                    warnings.warn(said, RuntimeWarning, stacklevel=2)
                    self.processes[name] = self.service_process(name).launch()

    def alipay_keys(self) -> dict[str, str]:
        """The two RSA2 key pairs Alipay signs with, made once in the work folder, as the
        settings of the payment sandbox and billing (`scripts/alipay_keys.py`)."""
        sys.path.insert(0, str(ROOT / "scripts"))
        try:
            import alipay_keys
        finally:
            sys.path.pop(0)
        folder = self.workdir / "alipay"
        for pair in alipay_keys.PAIRS:
            alipay_keys.ensure_pair(folder, pair)
        settings: dict[str, str] = alipay_keys.settings(folder)
        return settings

    def service_process(self, name: str) -> Process:
        """The process of one service or replica (`billing-2`), configured for this platform
        (not started)."""
        service = service_of(name)
        prefix = service.upper()
        env = {
            **self.common_env(),
            f"{prefix}_HTTP_PORT": str(self.ports[name]),
            f"{prefix}_DATABASE_URL": self.database_url(service),
            # A purge pass every 5 s, not 60: a replica killed by an earlier test can hold the
            # purge lease for its 30 s, and a test that looks for a pass should not wait minutes.
            f"{prefix}_PURGE_INTERVAL_S": "5",
            "ACCOUNTS_CARDS_CSV": str(self.cards_csv),
            "BILLING_STRIPE_BASE_URL": f"{self.url('payment')}/stripe",
            "BILLING_PAYPAL_BASE_URL": f"{self.url('payment')}/paypal",
            "BILLING_ALIPAY_GATEWAY_URL": f"{self.url('payment')}/alipay/gateway.do",
            "BILLING_PUBLIC_URL": self.url("billing"),
            # PayPal says nothing of a buyer's cancel: billing learns it at the expiry.
            "BILLING_APPROVAL_EXPIRY_S": "20",
            **self.alipay_keys(),
            "BILLING_DUNNING_SCHEDULE_S": "0.5,1",
            # Short leases so a killed worker's rows are taken up again within a test's patience:
            # a charge claimed by a killed billing waits out its lease, so the tests that kill
            # billing mid-charge take about that long. The lease must outlast the longest round
            # (3 x 4 s + 2 x 1 s); 4 s is twice a `_slow` charge's 2 s at the sandbox.
            "BILLING_GATEWAY_TIMEOUT_S": "4",
            "BILLING_GATEWAY_ATTEMPTS": "3",
            "BILLING_GATEWAY_BACKOFF_MAX_S": "1",
            "BILLING_WORKER_LEASE_S": "15",
            "PROVISIONING_PLATFORM_TIMEOUT_S": "5",
            "PROVISIONING_PLATFORM_ATTEMPTS": "3",
            "PROVISIONING_PLATFORM_BACKOFF_MAX_S": "1",
            "PROVISIONING_WORKER_LEASE_S": "20",
            "PROVISIONING_ESIM_PLATFORM_URL": self.url("esim"),
            "PROVISIONING_CALLBACK_SECRET": CALLBACK_SECRET,
            # Usage reaches the card status within a few seconds, not the local run's 60.
            "PROVISIONING_USAGE_POLL_INTERVAL_S": "0.5",
            "PROVISIONING_USAGE_POLL_INTERVAL_MAX_S": "2",
            "NOTIFIER_SMTP_HOST": "127.0.0.1",
            "NOTIFIER_SMTP_PORT": str(self.ports["smtp"]),
            "NOTIFIER_SMS_GATEWAY_URL": self.url("sms"),
            # Argon2 at the lowest cost the settings allow: at the defaults each hash is 0.2 s of
            # CPU by design, and a run that registers and signs in hundreds of travellers (and
            # hashes a decoy at each accounts start) is not a measure of password hashing.
            "ACCOUNTS_PASSWORD_TIME_COST": "1",
            "ACCOUNTS_PASSWORD_MEMORY_KIB": "8192",
            # Every traveller of a test session comes from 127.0.0.1: limits per client address
            # would throttle the suite itself. Limits per account stay as configured.
            "ACCOUNTS_LIMIT_REGISTRATIONS_ADDRESS": "1000000/3600",
            "ACCOUNTS_LIMIT_LOGIN_FAILURES_ADDRESS": "1000000/900",
            "ACCOUNTS_LIMIT_RESETS_ADDRESS": "1000000/3600",
            **self.env,
            **self.service_env,
        }
        return Process(
            name,
            [sys.executable, "-m", service],
            env,
            self.workdir / f"{name}.log",
            http_ok(f"{self.url(name)}/health/ready"),
        )

    def database_url(self, name: str) -> str:
        """A service's database: the one given for it, else a SQLite file in the workdir."""
        return self.databases.get(name) or f"sqlite+aiosqlite:///{self.workdir}/{name}.sqlite"

    def restart(self, name: str) -> None:
        """Start a service again after it was stopped or killed."""
        self.processes[name] = self.service_process(name).start(SERVICE_READY_TIMEOUT_S)

    def stop(self) -> None:
        """Stop every process, services first."""
        for name in reversed(list(self.processes)):
            self.processes[name].stop()


@contextmanager
def platform_on(workdir: Path, *, database: str = "sqlite", **options: Any) -> Iterator[Platform]:
    """Kafka, Redis (and PostgreSQL, with `database="postgres"`), then the platform on them.

    The sandboxes are launched first and the servers are started side by side while they import:
    a platform is up in the time of its slowest part, not of all its parts one after another.
    `options` go to `Platform` (e.g. `cards_csv`, `env`). Everything stops when the block ends.
    """
    # The broker and Redis addresses are filled in once those servers are up.
    running = Platform(workdir, "", "", **options)
    if running.replicas > 1 and database != "postgres":
        raise ValueError(
            f"{running.replicas} replicas of each service share its database: that needs "
            "PostgreSQL (database='postgres'), not one SQLite file per service"
        )
    try:
        running.launch_sandboxes()
        with ExitStack() as servers:
            managers: list[Any] = [kafka(workdir), redis(workdir)]
            if database == "postgres":
                managers.append(postgres(workdir))
            bootstrap, redis_url, *databases = enter_together(servers, managers)
            running.kafka, running.redis = bootstrap, redis_url
            running.databases = databases[0] if databases else {}
            if kafka_is_shared():  # a broker other platforms use too
                running.topic_suffix = new_suffix()
            try:
                running.start_services()
                yield running
            finally:
                running.stop()  # before the servers it runs on
    finally:
        running.stop()  # the sandboxes, where a server did not start


def enter_together(stack: ExitStack, managers: Sequence[Any]) -> list[Any]:
    """Enter these context managers at once, each in a thread; `stack` exits those that entered.

    Raises:
        BaseException: the first error of an `__enter__`, once every other one has ended.
    """
    with concurrent.futures.ThreadPoolExecutor(len(managers)) as pool:
        futures = [pool.submit(manager.__enter__) for manager in managers]
    values: list[Any] = []
    failure: BaseException | None = None
    for manager, future in zip(managers, futures, strict=True):
        error = future.exception()
        if error is None:
            stack.push(manager)
            values.append(future.result())
        elif failure is None:
            failure = error
    if failure is not None:
        raise failure
    return values


def new_suffix() -> str:
    """A topic suffix unique to one run, for clusters shared with other runs."""
    return "." + uuid.uuid4().hex[:8]
