"""The platform the bench measures: one it starts itself, or one already running (`make run`)."""

import importlib.util
import os
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from tests.support.infra import SERVICES, platform_on, service_of
from tests.support.load import DEMO_CARDS, Target

#: Sandboxes answer at once, so what is measured is the platform (payment tokens `card_ok`).
BENCH_ENV = {
    "ESIM_SANDBOX_ACTIVATION_DELAY": "0",
    # Access tokens live 15 minutes by default; a bench's travellers keep theirs for the whole run.
    "ACCOUNTS_JWT_TTL_S": "86400",
    # The integration tests poll usage every 0.5-2 s so that a test sees a change at once; the
    # bench measures the platform as it runs (the services' defaults, as in `make run`).
    "PROVISIONING_USAGE_POLL_INTERVAL_S": "10",
    "PROVISIONING_USAGE_POLL_INTERVAL_MAX_S": "40",
    "ESIM_SANDBOX_TICK_S": "1",
    # The tests purge every 5 s so that one sees a pass; the bench purges as the services do.
    **{f"{name.upper()}_PURGE_INTERVAL_S": "60" for name in SERVICES},
    # The work-in-progress limit of the local run (scripts/run-local.sh); the environment's wins.
    "ACCOUNTS_MAX_SAGAS_IN_FLIGHT": os.environ.get("ACCOUNTS_MAX_SAGAS_IN_FLIGHT", "400"),
}

#: The local run's ports (CONTRACT.md), each overridable as scripts/run-local.sh reads it.
RUNNING_PORTS = {
    "accounts": ("ACCOUNTS_HTTP_PORT", 8000),
    "billing": ("BILLING_HTTP_PORT", 8001),
    "provisioning": ("PROVISIONING_HTTP_PORT", 8002),
    "notifier": ("NOTIFIER_HTTP_PORT", 8003),
    "payment-sandbox": ("PAYMENT_SANDBOX_PORT", 8010),
    "esim-sandbox": ("ESIM_SANDBOX_PORT", 8011),
    "smtp": ("SMTP_SINK_PORT", 1025),
    "kafka": ("KAFKA_PORT", 9092),
    "redis": ("REDIS_PORT", 6379),
}


@dataclass
class Stack:
    """Where the platform is, which processes make it up, and what it was given."""

    target: Target
    mode: str  # "own" or "running"
    db: str
    cards_csv: Path
    #: Process roots to sample, by name (services, sandboxes, broker, ...): a service's
    #: replicas together.
    pids: dict[str, tuple[int, ...]] = field(default_factory=dict)
    #: Ports to find processes by, for the ones whose pid is not known.
    ports: dict[str, int] = field(default_factory=dict)
    #: Each service process's HTTP base URL (its /metrics): `billing`, `billing-2`, ...
    service_urls: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: Each service's database URL, where the bench knows it (its own stack): the soak counts
    #: their rows.
    databases: dict[str, str] = field(default_factory=dict)


def _make_cards() -> ModuleType:
    path = DEMO_CARDS.parent / "make_cards.py"
    spec = importlib.util.spec_from_file_location("make_cards", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_cards(path: Path, count: int) -> Path:
    """An inventory CSV of `count` demo cards: the committed ones first, then more serials.

    deploy/local/make_cards.py makes the committed file, so its first rows are the same cards.
    """
    cards = _make_cards()
    rows = [f"{iccid},{cards.activation_code(iccid)}" for iccid in cards.iccids(count)]
    path.write_text("iccid,activation_code\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


@contextmanager
def own_stack(
    workdir: Path,
    db: str,
    inventory_size: int,
    env: Mapping[str, str] | None = None,
    replicas: int = 1,
) -> Iterator[Stack]:
    """Kafka, Redis, sandboxes and the four services as processes on free ports.

    Args:
        workdir: emptied, then holds logs, SQLite files and the broker's data.
        db: `sqlite` or `postgres` (a throwaway server, see `tests.support.infra.postgres`).
        inventory_size: cards in the inventory given to accounts and the eSIM sandbox.
        env: settings beside `BENCH_ENV` (the soak's short windows), winning over it.
        replicas: processes of each service (more than one on PostgreSQL only).
    """
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    cards_csv = DEMO_CARDS
    if inventory_size > sum(1 for _ in DEMO_CARDS.open()) - 1:
        cards_csv = write_cards(workdir / "cards.csv", inventory_size)
    with platform_on(
        workdir,
        database=db,
        cards_csv=cards_csv,
        env={**BENCH_ENV, **(env or {})},
        replicas=replicas,
    ) as platform:
        pids: dict[str, tuple[int, ...]] = {}
        for name, process in platform.processes.items():
            if process.popen is not None:
                label = {
                    "payment": "payment-sandbox",
                    "esim": "esim-sandbox",
                    "sms": "sms-sandbox",
                }.get(name, service_of(name))
                pids[label] = (*pids.get(label, ()), process.popen.pid)
        ports = {"kafka": int(platform.kafka.rsplit(":", 1)[1])}
        ports["redis"] = int(platform.redis.rsplit(":", 1)[1].split("/")[0])
        if platform.databases:
            ports["postgres"] = int(platform.databases["accounts"].rsplit(":", 1)[1].split("/")[0])
        urls = {name: platform.url(name) for name in platform.service_processes}
        databases = {name: platform.database_url(name) for name in SERVICES}
        yield Stack(Target.of(platform), "own", db, cards_csv, pids, ports, urls, [], databases)


@contextmanager
def running_stack(db: str) -> Iterator[Stack]:
    """The platform `make run` (or anyone) runs, at the addresses the environment names.

    `BENCH_ACCOUNTS_URL` (http://127.0.0.1:8000), `KAFKA_BOOTSTRAP_SERVERS` (127.0.0.1:9092),
    `BENCH_TOPIC_SUFFIX` (none); process ports as scripts/run-local.sh reads them.
    """
    ports = {
        name: int(os.environ.get(var) or default) for name, (var, default) in RUNNING_PORTS.items()
    }
    accounts = os.environ.get("BENCH_ACCOUNTS_URL") or f"http://127.0.0.1:{ports['accounts']}"
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or f"127.0.0.1:{ports['kafka']}"
    target = Target(accounts, bootstrap, os.environ.get("BENCH_TOPIC_SUFFIX", ""))
    notes = [
        "running stack: sandbox delays and settings are whatever it was started with"
        " (the bench's own stack sets ESIM_SANDBOX_ACTIVATION_DELAY=0);"
        f" its database is reported as DB says ({db})",
    ]
    urls = {name: f"http://127.0.0.1:{ports[name]}" for name in SERVICES}
    yield Stack(target, "running", db, DEMO_CARDS, {}, ports, urls, notes)
