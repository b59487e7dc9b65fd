"""The declaration of the platform's topics and the decisions taken on what a cluster holds."""

import asyncio
import logging
from pathlib import Path
from unittest.mock import AsyncMock

import esim_core.messaging.topics as topics_module
import esim_core.service as service_module
import pytest
import yaml
from esim_core.messaging.topics import (
    CARRIER_RETENTION_MS,
    DAY_MS,
    OPERATION_DESCRIBE,
    OPERATION_READ,
    PARTITIONS,
    PATTERN_LITERAL,
    PATTERN_PREFIXED,
    RESOURCE_GROUP,
    RESOURCE_TOPIC,
    AclBinding,
    CarrierAccessSettings,
    Difference,
    TopicSpec,
    TopicState,
    carrier_acls,
    declared_topics,
    prepare_topics,
    short_of_partitions,
    topic_differences,
)
from esim_core.service import ServiceRuntime
from esim_core.settings import (
    KafkaSettings,
    ServiceSettings,
    SettingsError,
    Topics,
    TopicSettings,
    load_settings,
)
from esim_schemas import PaymentSettled
from pydantic_settings import SettingsConfigDict

ROOT = Path(__file__).resolve().parents[3]


def test_every_contract_topic_and_its_dead_letter_topic_is_declared() -> None:
    declared = declared_topics()
    names = set(Topics().model_dump().values())
    assert set(declared) == names | {f"{name}.dlq" for name in names}
    assert all(declared[f"{name}.dlq"].dead_letter for name in names)


def test_every_contract_topic_has_the_same_partitions_so_a_card_keeps_its_partition_number() -> (
    None
):
    counts = {spec.partitions for spec in declared_topics().values() if not spec.dead_letter}
    assert counts == {PARTITIONS}


def test_partitions_cover_the_most_replicas_of_every_scaled_consumer_in_the_manifests() -> None:
    scaled = 0
    declared = declared_topics()
    for path in sorted((ROOT / "deploy/k8s/base").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "ScaledObject":
                continue
            scaled += 1
            most = doc["spec"]["maxReplicaCount"]
            for trigger in doc["spec"]["triggers"]:
                if trigger["type"] == "kafka":
                    topic = trigger["metadata"]["topic"]
                    assert declared[topic].partitions >= most, (path.name, topic)
    assert scaled == 4


def test_production_keeps_three_copies_and_acknowledges_on_two() -> None:
    spec = declared_topics()["esim.payment.settled"]
    assert (spec.replication, spec.min_insync_replicas) == (3, 2)
    assert spec.configs()["min.insync.replicas"] == "2"


@pytest.mark.parametrize(("copies", "insync"), [(1, 1), (2, 2), (5, 2)])
def test_a_cluster_of_other_size_sets_the_copies_and_never_more_in_sync_than_copies(
    copies: int, insync: int
) -> None:
    spec = declared_topics(replication=copies)["esim.profile.activated"]
    assert (spec.replication, spec.min_insync_replicas) == (copies, insync)


def test_carriers_read_only_the_topics_about_their_network_kept_for_two_weeks() -> None:
    declared = declared_topics()
    read = {name for name, spec in declared.items() if spec.carriers_read}
    assert read == {
        "esim.profile.activated",
        "esim.bundle.started",
        "esim.bundle.ended",
        "esim.bundle.cancelled",
        "esim.usage.updated",
        "esim.data.low",
    }
    assert all(declared[name].retention_ms == CARRIER_RETENTION_MS >= 7 * DAY_MS for name in read)
    # The rest are kept a week, and dead letters long enough for an operator to replay them.
    assert declared["esim.payment.requested"].retention_ms == 7 * DAY_MS
    assert declared["esim.profile.activated.dlq"].retention_ms == 30 * DAY_MS


def test_renamed_topics_are_declared_under_their_configured_names() -> None:
    topics = Topics.model_validate({"profile_activated": "carrier-feed.activated"})
    declared = declared_topics(topics)
    assert declared["carrier-feed.activated"].carriers_read
    assert "carrier-feed.activated.dlq" in declared
    assert "esim.profile.activated" not in declared


def state(name: str, partitions: int, copies: int = 3, **configs: str) -> TopicState:
    spec = declared_topics()[name]
    return TopicState(name, partitions, copies, {**spec.configs(), **configs})


def test_differences_name_what_is_missing_short_of_copies_or_configured_otherwise() -> None:
    declared = {
        name: spec
        for name, spec in declared_topics().items()
        if name in {"esim.data.low", "esim.payment.failed", "esim.card.bound"}
    }
    found = {
        "esim.data.low": state("esim.data.low", 1, copies=1, **{"retention.ms": "3600000"}),
        # More partitions than declared is fine: they cannot be taken away.
        "esim.payment.failed": state("esim.payment.failed", 24),
    }
    assert [str(d) for d in topic_differences(declared, found)] == [
        "esim.card.bound: missing (12 partitions, replication 3)",
        "esim.data.low: partitions 1, declared 12",
        "esim.data.low: replication 1, declared 3",
        f"esim.data.low: config retention.ms=3600000, declared retention.ms={14 * DAY_MS}",
    ]
    assert topic_differences(declared, found, configs=False)[-1] == Difference(
        "esim.data.low", "replication", "1", "3"
    )


def test_a_service_checks_only_the_short_topics_it_uses() -> None:
    declared = declared_topics()
    found = {
        "esim.data.low": state("esim.data.low", 1),
        "esim.payment.failed": state("esim.payment.failed", 3),
        "esim.card.bound": state("esim.card.bound", 12),
    }
    short = short_of_partitions(declared, found, ["esim.payment.failed", "esim.card.bound", "x"])
    assert [(spec.name, have.partitions) for spec, have in short] == [("esim.payment.failed", 3)]


def test_carriers_may_read_and_describe_their_topics_and_read_their_groups_only() -> None:
    acls = carrier_acls(["User:acme"], declared_topics(), "carrier.")
    topics = {(a.resource_name, a.operation) for a in acls if a.resource_type == RESOURCE_TOPIC}
    assert topics == {
        (name, operation)
        for name in (
            "esim.profile.activated",
            "esim.bundle.started",
            "esim.bundle.ended",
            "esim.bundle.cancelled",
            "esim.usage.updated",
            "esim.data.low",
        )
        for operation in (OPERATION_READ, OPERATION_DESCRIBE)
    }
    assert all(a.pattern_type == PATTERN_LITERAL for a in acls if a.resource_type == RESOURCE_TOPIC)
    groups = [a for a in acls if a.resource_type == RESOURCE_GROUP]
    assert groups == [
        AclBinding("User:acme", RESOURCE_GROUP, "carrier.", PATTERN_PREFIXED, OPERATION_READ)
    ]
    assert str(groups[0]) == "User:acme READ on group carrier. (prefix)"
    assert carrier_acls([], declared_topics(), "carrier.") == []


@pytest.mark.parametrize("principal", ["acme", "User:", "User:a,User:b", "User: acme"])
def test_a_principal_not_named_as_kafka_names_it_is_refused(principal: str) -> None:
    with pytest.raises(ValueError, match="is not a Kafka principal: give it as User:<name>"):
        carrier_acls([principal], declared_topics(), "carrier.")


@pytest.mark.parametrize("prefix", ["", "*", "carrier acme"])
def test_a_group_prefix_that_could_match_the_services_groups_is_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match="is not a consumer-group prefix"):
        carrier_acls(["User:acme"], declared_topics(), prefix)


def test_carriers_principals_are_read_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_CARRIER_PRINCIPALS", "User:acme, User:globex,")
    monkeypatch.setenv("KAFKA_CARRIER_GROUP_PREFIX", "partners.")
    access = load_settings(CarrierAccessSettings)
    assert access.kafka_carrier_principals == ["User:acme", "User:globex"]
    assert access.kafka_carrier_group_prefix == "partners."
    monkeypatch.setenv("KAFKA_CARRIER_PRINCIPALS", "acme")
    with pytest.raises(SettingsError, match=r"KAFKA_CARRIER_PRINCIPALS: .*not a Kafka principal"):
        load_settings(CarrierAccessSettings)


def test_topic_settings_default_to_the_declaration_and_growing_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = load_settings(TopicSettings)
    assert (settings.kafka_topic_replication, settings.kafka_topic_grow_partitions) == (None, False)
    monkeypatch.setenv("KAFKA_TOPIC_REPLICATION", "")
    assert load_settings(TopicSettings).kafka_topic_replication is None
    monkeypatch.setenv("KAFKA_TOPIC_REPLICATION", "1")
    monkeypatch.setenv("KAFKA_TOPIC_GROW_PARTITIONS", "true")
    settings = load_settings(TopicSettings)
    assert (settings.kafka_topic_replication, settings.kafka_topic_grow_partitions) == (1, True)


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        ("KAFKA_TOPIC_REPLICATION", "0", "KAFKA_TOPIC_REPLICATION: Input should be greater"),
        ("KAFKA_TOPIC_REPLICATION", "three", "KAFKA_TOPIC_REPLICATION: Input should be a valid"),
        ("KAFKA_TOPIC_GROW_PARTITIONS", "maybe", "KAFKA_TOPIC_GROW_PARTITIONS: Input should be"),
    ],
)
def test_a_wrong_topic_setting_is_refused_naming_it(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, said: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=said):
        load_settings(TopicSettings)


class FakeAdmin:
    """A cluster that holds `found` and records what it is asked to change."""

    def __init__(self, found: dict[str, TopicState]) -> None:
        self.found = found
        self.created: list[str] = []
        self.grown: list[tuple[str, int]] = []

    def __call__(self, kafka: object) -> "FakeAdmin":
        return self

    async def __aenter__(self) -> "FakeAdmin":
        return self

    async def __aexit__(self, *_: object) -> None:
        return None

    async def states(self, names: set[str], *, configs: bool = False) -> dict[str, TopicState]:
        return {name: state for name, state in self.found.items() if name in names}

    async def create(self, specs: list[TopicSpec]) -> list[str]:
        self.created += [spec.name for spec in specs]
        return [spec.name for spec in specs]

    async def grow(self, name: str, partitions: int) -> bool:
        self.grown.append((name, partitions))
        return True


def everything_but(short: str, partitions: int) -> dict[str, TopicState]:
    """A cluster with every declared topic as declared, but `short` with fewer partitions."""
    found = {name: state(name, spec.partitions) for name, spec in declared_topics().items()}
    found[short] = state(short, partitions)
    return found


@pytest.mark.parametrize("grow", [False, True])
def test_a_service_says_which_topic_is_short_and_grows_it_only_where_allowed(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, grow: bool
) -> None:
    admin = FakeAdmin(everything_but("esim.payment.requested", 1))
    monkeypatch.setattr(topics_module, "TopicAdmin", admin)
    settings = TopicSettings(kafka_topic_grow_partitions=grow)
    used = {"esim.payment.requested", "esim.payment.requested.dlq", "esim.payment.settled"}
    with caplog.at_level(logging.WARNING, logger="esim_core.messaging.topics"):
        report = asyncio.run(prepare_topics(KafkaSettings(), settings, Topics(), used))
    assert report.short == [("esim.payment.requested", 1, PARTITIONS)]
    assert admin.created == []
    first = caplog.records[0].getMessage()
    assert first.startswith(f"topic esim.payment.requested has 1 partitions, {PARTITIONS} declared")
    if grow:
        assert admin.grown == [("esim.payment.requested", PARTITIONS)]
        assert report.grown == ["esim.payment.requested"]
        assert "growing it (KAFKA_TOPIC_GROW_PARTITIONS is on)" in first
        assert caplog.records[1].getMessage() == (
            f"grew topic esim.payment.requested from 1 to {PARTITIONS} partitions"
        )
    else:
        assert (admin.grown, report.grown) == ([], [])
        assert "grow it with `esimctl topics apply`" in first
        assert len(caplog.records) == 1


def test_a_service_creates_what_is_missing_and_leaves_short_topics_it_does_not_use_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    found = everything_but("esim.data.low", 1)
    del found["esim.card.bound"]
    admin = FakeAdmin(found)
    monkeypatch.setattr(topics_module, "TopicAdmin", admin)
    settings = TopicSettings(kafka_topic_grow_partitions=True)
    report = asyncio.run(
        prepare_topics(KafkaSettings(), settings, Topics(), {"esim.payment.requested"})
    )
    assert (admin.created, report.short, admin.grown) == (["esim.card.bound"], [], [])


def test_a_runtime_uses_what_it_consumes_their_dead_letters_and_what_it_publishes() -> None:
    settings = ServiceSettings(database_url="sqlite+aiosqlite:///:memory:", http_port=8001)
    runtime = ServiceRuntime("billing", settings, [])
    runtime.consume(runtime.topics.payment_requested, [])
    runtime.produces(PaymentSettled)
    assert runtime.used_topics() == {
        "esim.payment.requested",
        "esim.payment.requested.dlq",
        "esim.payment.settled",
    }


def test_a_service_names_a_per_service_topic_setting_it_no_longer_reads(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    class Billing(ServiceSettings):
        model_config = SettingsConfigDict(env_prefix="BILLING_")

    monkeypatch.setenv("BILLING_TOPIC_PARTITIONS", "24")
    monkeypatch.setattr(service_module, "prepare_topics", AsyncMock())
    settings = Billing(database_url="sqlite+aiosqlite:///:memory:", http_port=8001)
    runtime = ServiceRuntime("billing", settings, [])
    with caplog.at_level(logging.WARNING, logger="esim_core.service"):
        asyncio.run(runtime._create_topics())
    assert caplog.messages == [
        "BILLING_TOPIC_PARTITIONS is no longer read: partitions are declared in "
        "esim_core/messaging/topics.py, copies set by KAFKA_TOPIC_REPLICATION; remove it"
    ]
