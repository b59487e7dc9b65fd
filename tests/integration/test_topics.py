"""The declared topics on the real broker: a service's start reports a topic with fewer partitions
than declared and grows it only where allowed; `esimctl topics check` lists every difference and
`esimctl topics apply` removes them, twice in a row without a change the second time.

This module starts a broker of its own (about 20 s on a loaded 2-core machine), none of the
`platform` fixture's processes; each test uses topic names of its own (a suffix).
"""

import asyncio
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from esim_core.messaging.topics import PARTITIONS, TopicAdmin, declared_topics, prepare_topics
from esim_core.service import ServiceRuntime
from esim_core.settings import KafkaSettings, ServiceSettings, Topics
from esim_schemas import PaymentRequested, PaymentSettled

from tests.support.infra import ROOT, kafka, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A broker of one node, as the local run has (so one copy of each topic)."""
    with kafka(tmp_path_factory.mktemp("topics")) as address:
        yield address


def own_topics() -> Topics:
    """Every contract topic under a name of this test's own."""
    suffix = f".t{uuid.uuid4().hex[:8]}"
    return Topics(**{name: value + suffix for name, value in Topics().model_dump().items()})


def precreate(address: str, name: str, partitions: int, **configs: str) -> None:
    """A topic as a broker that auto-creates would leave it, once the broker lists it."""

    async def create() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=address)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(name, partitions, 1, topic_configs=configs)])
        finally:
            await admin.close()

    asyncio.run(create())
    has_partitions(address, name, partitions)


def has_partitions(address: str, name: str, partitions: int) -> None:
    """Wait until the broker's metadata lists `partitions` partitions of the topic (a change
    is committed by the controller first, and reaches the broker's metadata a moment later)."""

    async def count() -> int:
        async with TopicAdmin(KafkaSettings(kafka_bootstrap_servers=address)) as admin:
            found = await admin.states({name})
        return found[name].partitions if name in found else 0

    wait_until(
        lambda: asyncio.run(count()) == partitions,
        timeout=30,
        what=f"{name} listed with {partitions} partitions",
    )


class BillingLike(ServiceSettings):
    """A service's settings, read as billing's are."""

    http_port: int = 8001


def billing(address: str, topics: Topics, grow: bool) -> ServiceRuntime:
    """A runtime that consumes payment requests and publishes settlements, as billing does."""
    settings = BillingLike(
        kafka_bootstrap_servers=address,
        database_url="sqlite+aiosqlite:///:memory:",
        kafka_topic_replication=1,
        kafka_topic_grow_partitions=grow,
    )
    runtime = ServiceRuntime("billing", settings, [], topics=topics)
    runtime.consume(topics.for_event(PaymentRequested), [])
    runtime.produces(PaymentSettled)
    return runtime


def test_a_service_reports_a_short_topic_and_grows_it_only_where_allowed(
    broker: str, caplog: pytest.LogCaptureFixture
) -> None:
    topics = own_topics()
    short = topics.for_event(PaymentRequested)
    precreate(broker, short, 1)
    caplog.set_level(logging.INFO, logger="esim_core.messaging.topics")

    held = billing(broker, topics, grow=False)
    assert {short, f"{short}.dlq", topics.for_event(PaymentSettled)} == held.used_topics()
    report = asyncio.run(prepare_topics(held.settings, held.settings, topics, held.used_topics()))
    assert report.short == [(short, 1, PARTITIONS)]
    assert report.grown == []
    # Every other declared topic was missing, and is created as declared.
    assert short not in report.created and len(report.created) == len(declared_topics(topics)) - 1
    # What the topics module said: another test's client collected here may log beside it.
    said = [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and r.name == "esim_core.messaging.topics"
    ]
    assert said == [
        f"topic {short} has 1 partitions, {PARTITIONS} declared (esim_core.messaging.topics): "
        "no more than 1 consumers of it can work; grow it with `esimctl topics apply` "
        "(KAFKA_TOPIC_GROW_PARTITIONS is off)"
    ]
    has_partitions(broker, short, 1)

    caplog.clear()
    allowed = billing(broker, topics, grow=True)
    report = asyncio.run(
        prepare_topics(allowed.settings, allowed.settings, topics, allowed.used_topics())
    )
    assert report.created == []
    assert report.grown == [short]
    has_partitions(broker, short, PARTITIONS)
    assert f"grew topic {short} from 1 to {PARTITIONS} partitions" in caplog.text
    # Grown once: the next start finds nothing short.
    again = asyncio.run(
        prepare_topics(allowed.settings, allowed.settings, topics, allowed.used_topics())
    )
    assert (again.created, again.short, again.grown) == ([], [], [])


def esimctl(address: str, topics: Topics, *args: str) -> subprocess.CompletedProcess[str]:
    """`esimctl` as an operator runs it against the one-broker cluster, with these topics."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "KAFKA_BOOTSTRAP_SERVERS": address,
        "KAFKA_TOPIC_REPLICATION": "1",
        **{f"TOPIC_{name.upper()}": value for name, value in topics.model_dump().items()},
    }
    return subprocess.run(
        [sys.executable, "-m", "esimctl", "topics", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_esimctl_topics_check_fails_until_apply_which_changes_nothing_the_second_time(
    broker: str,
) -> None:
    """About 15 s: five `esimctl` processes or more, each a new Python process."""
    topics = own_topics()
    # A topic carriers read, left by an auto-creating broker: one partition, one hour kept.
    activated = topics.profile_activated
    precreate(broker, activated, 1, **{"retention.ms": "3600000"})
    declared = declared_topics(topics, replication=1)

    before = esimctl(broker, topics, "check")
    assert before.returncode == 1, before.stdout + before.stderr
    lines = before.stdout.splitlines()
    assert f"{activated}: partitions 1, declared {PARTITIONS}" in lines
    assert (
        f"{activated}: config retention.ms=3600000, declared retention.ms="
        f"{declared[activated].retention_ms}" in lines
    )
    assert len([line for line in lines if ": missing (" in line]) == len(declared) - 1
    assert f"{len(lines)} difference(s) from the declaration" in before.stderr

    applied = esimctl(broker, topics, "apply")
    assert applied.returncode == 0, applied.stderr
    done = applied.stdout.splitlines()
    assert f"grew {activated} from 1 to {PARTITIONS} partitions" in done
    assert f"set retention.ms={declared[activated].retention_ms} on {activated}" in done
    assert len([line for line in done if line.startswith("created ")]) == len(declared) - 1

    # The controller commits each change before apply ends; the broker shows it a moment later
    # (it makes some 500 partitions' logs first), so `check` is asked until it passes.
    after = wait_until(
        lambda: (checked := esimctl(broker, topics, "check")).returncode == 0 and checked,
        timeout=60,
        what="the broker to show what apply changed",
    )
    assert after.stdout == "the topics are as declared\n", after.stderr
    twice = esimctl(broker, topics, "apply")
    assert (twice.returncode, twice.stdout) == (
        0,
        "nothing to change: the topics are as declared\n",
    ), twice.stderr

    async def configs() -> dict[str, str]:
        async with TopicAdmin(KafkaSettings(kafka_bootstrap_servers=broker)) as admin:
            found = await admin.states({activated}, configs=True)
        return dict(found[activated].configs)

    assert asyncio.run(configs()) == {
        "cleanup.policy": "delete",
        "retention.ms": str(declared[activated].retention_ms),
        "min.insync.replicas": "1",  # the declared 2, at most the one copy
    }
