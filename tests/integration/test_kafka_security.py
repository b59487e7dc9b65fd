"""A secured Kafka: the local KRaft broker (deploy/kafka) with SASL over TLS only, as a shared
production cluster is, and the platform's clients against it.

The broker listens on SASL_SSL alone, with a certificate from a CA this test makes, authorizes
every request by ACLs (KRaft's StandardAuthorizer: the platform's users are super users, a
carrier's user may do what ACLs grant), and knows its SCRAM users from the format of its data
directory; its controller stays on a loopback plaintext listener. On it: the notifier, started
as a process, creates its topics, consumes and dead-letters (admin, consumer and producer
clients); its metrics read the lag with the admin client; `esimctl dlq` lists and replays (the
dead-letter tool) with SCRAM-SHA-256, SCRAM-SHA-512 and PLAIN; a wrong password stops the
notifier and `esimctl` with a sentence that names the settings to check; and `esimctl topics
apply --carrier` grants a carrier's user exactly read-only access to the topics carriers read,
under its groups' prefix.

This module starts a broker of its own (about 20 s on a loaded 2-core machine) and none of the
`platform` fixture's processes.
"""

import asyncio
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import GroupAuthorizationFailedError, TopicAuthorizationFailedError
from esim_core.messaging.kafka import client_options
from esim_core.settings import KafkaSettings, Topics
from esim_core.testing_tls import TestCertificates, make_certificates

from tests.support.infra import ROOT, Process, free_port, http_ok, port_open, redis, wait_until

pytestmark = pytest.mark.integration

SERVICE_USER = "esim"
PLAIN_USER = "esim_plain"
BROKER_USER = "broker"
CARRIER_USER = "carrier"


@dataclass
class SecuredKafka:
    """The broker's address, its CA, and its users' passwords."""

    address: str
    certificates: TestCertificates
    passwords: dict[str, str]
    workdir: Path
    redis: str

    def env(self, mechanism: str = "SCRAM-SHA-256", **overrides: str) -> dict[str, str]:
        """The `KAFKA_...` settings of a client logging in with `mechanism`."""
        user = PLAIN_USER if mechanism == "PLAIN" else SERVICE_USER
        password_file = self.workdir / f"{user}.password"
        password_file.write_text(self.passwords[user] + "\n")
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.address,
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": mechanism,
            "KAFKA_SASL_USERNAME": user,
            "KAFKA_SASL_PASSWORD_FILE": str(password_file),
            "KAFKA_SSL_CA_FILE": str(self.certificates.ca_file),
            **overrides,
        }

    def settings(self) -> KafkaSettings:
        """The service user's settings, for the test's own clients."""
        return KafkaSettings(**self.env())


def broker_template(certificates: TestCertificates, passwords: dict[str, str]) -> str:
    """deploy/kafka's properties with the client listener replaced by SASL_SSL (SCRAM, PLAIN)."""
    base = (ROOT / "deploy/kafka/server.properties.in").read_text().splitlines()
    replaced = ("listeners=", "advertised.listeners=", "listener.security.protocol.map=")
    kept = [line for line in base if not line.startswith((*replaced, "inter.broker."))]
    scram = "org.apache.kafka.common.security.scram.ScramLoginModule required"
    plain = "org.apache.kafka.common.security.plain.PlainLoginModule required"
    return "\n".join(
        [
            *kept,
            "listeners=SASL_SSL://127.0.0.1:@PORT@,CONTROLLER://127.0.0.1:@CONTROLLER_PORT@",
            "advertised.listeners=SASL_SSL://127.0.0.1:@PORT@,"
            "CONTROLLER://127.0.0.1:@CONTROLLER_PORT@",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL",
            "inter.broker.listener.name=SASL_SSL",
            "sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512,PLAIN",
            "sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512",
            f"listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config={scram};",
            # The broker's own connection to itself logs in as BROKER_USER.
            f'listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config={scram} username="'
            f'{BROKER_USER}" password="{passwords[BROKER_USER]}";',
            f'listener.name.sasl_ssl.plain.sasl.jaas.config={plain} user_{PLAIN_USER}="'
            f'{passwords[PLAIN_USER]}";',
            "ssl.keystore.type=PKCS12",
            f"ssl.keystore.location={certificates.server_keystore}",
            f"ssl.keystore.password={certificates.keystore_password}",
            f"ssl.key.password={certificates.keystore_password}",
            "ssl.truststore.type=PEM",
            f"ssl.truststore.location={certificates.ca_file}",
            "ssl.client.auth=none",
            # Every request is authorized by ACLs. The platform's users (and the broker's own)
            # may do anything; ANONYMOUS is the controller's loopback plaintext listener, the
            # only one without a login. A carrier's user may do what `esimctl topics apply`
            # grants it.
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            f"super.users=User:{BROKER_USER};User:{SERVICE_USER};User:{PLAIN_USER};User:ANONYMOUS",
            "",
        ]
    )


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredKafka]:
    """A broker reachable only with SASL over TLS, and Redis for the notifier."""
    workdir = tmp_path_factory.mktemp("secured-kafka")
    certificates = make_certificates(workdir / "tls")
    passwords = {
        user: secrets.token_urlsafe(18) for user in (SERVICE_USER, PLAIN_USER, CARRIER_USER)
    }
    passwords[BROKER_USER] = secrets.token_urlsafe(18)
    template = workdir / "server.properties.in"
    template.write_text(broker_template(certificates, passwords))
    template.chmod(0o600)
    scram = [
        f"SCRAM-SHA-512=[name={BROKER_USER},password={passwords[BROKER_USER]}]",
        f"SCRAM-SHA-256=[name={SERVICE_USER},password={passwords[SERVICE_USER]}]",
        f"SCRAM-SHA-512=[name={SERVICE_USER},password={passwords[SERVICE_USER]}]",
        f"SCRAM-SHA-512=[name={CARRIER_USER},password={passwords[CARRIER_USER]}]",
    ]
    port, controller = free_port(), free_port()
    broker = Process(
        "kafka-secured",
        [str(ROOT / "deploy/kafka/run.sh")],
        {
            "KAFKA_PORT": str(port),
            "KAFKA_CONTROLLER_PORT": str(controller),
            "KAFKA_DATA_DIR": str(workdir / "kafka"),
            "KAFKA_PROPERTIES_TEMPLATE": str(template),
            "KAFKA_FORMAT_ARGS": " ".join(f"--add-scram {item}" for item in scram),
        },
        workdir / "kafka.log",
        lambda: port_open(port),
    ).start(timeout=180)
    try:
        with redis(workdir) as redis_url:
            kafka = SecuredKafka(f"127.0.0.1:{port}", certificates, passwords, workdir, redis_url)
            # The port opens before the broker has loaded its users and elected itself.
            wait_until(
                lambda: asyncio.run(_topics(kafka.settings())) is not None,
                timeout=90,
                what="the secured broker to answer a SCRAM login",
            )
            yield kafka
    finally:
        broker.stop(timeout=30)


async def _topics(settings: KafkaSettings) -> set[str]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**client_options(settings), request_timeout_ms=5000)
    try:
        await admin.start()
        return set(await admin.list_topics())
    finally:
        with suppress(Exception):  # closing what did not start must not hide why
            await admin.close()


async def _send(settings: KafkaSettings, topic: str, value: bytes) -> None:
    producer = AIOKafkaProducer(**client_options(settings), acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=b"8944000000000000001")
    finally:
        await producer.stop()


def notifier(kafka: SecuredKafka, log: str, **overrides: str) -> Process:
    """The notifier as a process, on the secured broker (not started), logging to `log`."""
    port = free_port()
    return Process(
        "notifier",
        [sys.executable, "-m", "notifier"],
        {
            **kafka.env(**overrides),
            # A local run (SQLite, Redis on this machine): the production check stays out of it.
            "ESIM_ENV": "local",
            "KAFKA_TOPIC_REPLICATION": "1",  # one broker
            "REDIS_URL": kafka.redis,
            "OPERATOR_TOKEN": secrets.token_urlsafe(32),
            "NOTIFIER_HTTP_PORT": str(port),
            "NOTIFIER_DATABASE_URL": f"sqlite+aiosqlite:///{kafka.workdir}/notifier.sqlite",
            "LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
        },
        kafka.workdir / log,
        http_ok(f"http://127.0.0.1:{port}/health/ready"),
    )


def esimctl(kafka: SecuredKafka, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`esimctl` as an operator runs it, with the secured broker's settings."""
    return subprocess.run(
        [sys.executable, "-m", "esimctl", *args],
        cwd=ROOT,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def dead_letters(kafka: SecuredKafka, topic: str, mechanism: str) -> list[dict[str, Any]]:
    done = esimctl(kafka, "dlq", "list", topic, "--json", **kafka.env(mechanism))
    assert done.returncode == 0, done.stderr
    found: list[dict[str, Any]] = json.loads(done.stdout)
    return found


def test_the_notifier_esimctl_and_the_dead_letter_tool_work_over_sasl_ssl(
    secured: SecuredKafka,
) -> None:
    """About 30 s: a service process starts and consumes, then six `esimctl` runs, each a new
    Python process, log in with each SASL mechanism."""
    from notifier.handlers import ROUTES

    topic = Topics().for_event(ROUTES[0].model)
    service = notifier(secured, "notifier.log").start(timeout=120)
    try:
        # Its admin client created the topics; its consumer and producer dead-letter a message
        # that is not an event.
        assert {topic, f"{topic}.dlq"} <= asyncio.run(_topics(secured.settings()))
        asyncio.run(_send(secured.settings(), topic, b"not an event"))
        found = wait_until(
            lambda: dead_letters(secured, topic, "SCRAM-SHA-256"),
            timeout=60,
            what=f"a dead letter on {topic}.dlq",
        )
        assert [item["key"] for item in found] == ["8944000000000000001"]
        # The metrics read the brokers with the admin client, logged in too.
        waiting = f'esim_dead_letters_waiting{{service="notifier",topic="{topic}"}} 1.0'
        # A scrape opens two clients, each logging in over TLS: seconds on a loaded machine.
        wait_until(
            lambda: waiting in httpx.get(f"{service_url(service)}/metrics", timeout=30).text,
            timeout=90,
            what="the dead letter in the notifier's metrics",
        )
        for mechanism in ("SCRAM-SHA-512", "PLAIN"):
            assert len(dead_letters(secured, topic, mechanism)) == 1, mechanism
        shown = esimctl(
            secured,
            "dlq",
            "show",
            topic,
            f"{found[0]['partition']}:{found[0]['offset']}",
            **secured.env(),
        )
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["value"] == "not an event"
        replayed = esimctl(secured, "dlq", "replay", topic, **secured.env())
        assert replayed.returncode == 0, replayed.stderr
        assert "replayed 1 dead letter(s)" in replayed.stdout
        # The notifier consumes the replayed message and dead-letters it again.
        wait_until(
            lambda: len(dead_letters(secured, topic, "SCRAM-SHA-256")) == 2,
            timeout=60,
            what="the replayed message dead-lettered again",
        )
    finally:
        service.stop()
    assert "Traceback" not in service.log_path.read_text(errors="replace")


def service_url(service: Process) -> str:
    return f"http://127.0.0.1:{service.env['NOTIFIER_HTTP_PORT']}"


def test_a_wrong_password_stops_the_notifier_and_esimctl_naming_the_settings(
    secured: SecuredKafka,
) -> None:
    """About 10 s: two processes start and stop at once."""
    wrong = secrets.token_urlsafe(18)
    service = notifier(
        secured, "refused.log", KAFKA_SASL_PASSWORD=wrong, KAFKA_SASL_PASSWORD_FILE=""
    ).launch()
    assert service.popen is not None
    assert service.popen.wait(timeout=90) != 0
    said = service.log_path.read_text(errors="replace")
    assert "refusing to start" in said
    assert f"refused the login of KAFKA_SASL_USERNAME='{SERVICE_USER}'" in said
    assert "check KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD" in said
    assert wrong not in said
    assert "notifier started" not in said

    from notifier.handlers import ROUTES

    done = esimctl(
        secured,
        "dlq",
        "list",
        Topics().for_event(ROUTES[0].model),
        **secured.env(KAFKA_SASL_PASSWORD=wrong, KAFKA_SASL_PASSWORD_FILE=""),
    )
    assert done.returncode == 1
    assert done.stderr.startswith("esimctl: Kafka at 127.0.0.1:")
    assert "refused the login" in done.stderr and "KAFKA_SASL_PASSWORD" in done.stderr
    assert wrong not in done.stderr and "Traceback" not in done.stderr


def carrier_settings(kafka: SecuredKafka) -> KafkaSettings:
    """A carrier's login: its own SCRAM user."""
    password_file = kafka.workdir / f"{CARRIER_USER}.password"
    password_file.write_text(kafka.passwords[CARRIER_USER])
    return KafkaSettings.model_validate(
        kafka.env(
            "SCRAM-SHA-512",
            KAFKA_SASL_USERNAME=CARRIER_USER,
            KAFKA_SASL_PASSWORD_FILE=str(password_file),
        )
    )


async def carrier_reads(kafka: SecuredKafka, topic: str, group: str) -> bytes:
    """The first message of `topic`, read as a carrier in `group` (or the broker's refusal)."""
    consumer = AIOKafkaConsumer(
        topic,
        **client_options(carrier_settings(kafka)),
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        async with asyncio.timeout(60):
            message = await consumer.getone()
        await consumer.commit()
        value: bytes = message.value
        return value
    finally:
        await consumer.stop()


def test_esimctl_grants_a_carrier_read_only_access_to_the_topics_carriers_read(
    secured: SecuredKafka,
) -> None:
    """About 20 s: three `esimctl` processes, then a carrier's consumers and producer, each
    refused or served by the broker's authorizer."""
    topics = Topics()
    env = secured.env(KAFKA_TOPIC_REPLICATION="1")
    principal = f"User:{CARRIER_USER}"
    before = esimctl(secured, "topics", "check", "--carrier", principal, **env)
    assert before.returncode == 1, before.stderr
    assert f"esim.profile.activated: no ACL {principal} READ on topic esim.profile.activated" in (
        before.stdout.splitlines()
    )
    applied = esimctl(secured, "topics", "apply", "--carrier", principal, **env)
    assert applied.returncode == 0, applied.stderr
    added = [line for line in applied.stdout.splitlines() if line.startswith("added ACL ")]
    # READ and DESCRIBE on each of the six topics carriers read, READ on their groups' prefix.
    assert len(added) == 13, added
    assert f"added ACL {principal} READ on group carrier. (prefix)" in added
    after = esimctl(secured, "topics", "check", "--carrier", principal, **env)
    assert (after.returncode, after.stdout) == (
        0,
        "the topics are as declared, and the ACLs of 1 carrier(s)\n",
    ), after.stdout + after.stderr

    activated = topics.profile_activated
    asyncio.run(_send(secured.settings(), activated, b"granted"))
    assert asyncio.run(carrier_reads(secured, activated, "carrier.acme.activations")) == b"granted"
    # Not a topic carriers read: payment requests carry payment tokens.
    asyncio.run(_send(secured.settings(), topics.payment_requested, b"secret"))
    with pytest.raises(TopicAuthorizationFailedError):
        asyncio.run(carrier_reads(secured, topics.payment_requested, "carrier.acme.payments"))
    # A group outside the carriers' prefix: a service's own, whose offsets a carrier must not move.
    with pytest.raises(GroupAuthorizationFailedError):
        asyncio.run(carrier_reads(secured, activated, "notifier"))
    # Read-only: no writing, not even on the topics it reads.
    with pytest.raises(TopicAuthorizationFailedError):
        asyncio.run(_send(carrier_settings(secured), activated, b"forged"))
