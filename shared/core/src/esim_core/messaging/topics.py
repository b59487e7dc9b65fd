"""The platform's topics as code: one declaration of them, and what makes a cluster match it.

`declared_topics` is the one source of every contract topic and its `.dlq`: partitions,
replication, `min.insync.replicas`, retention, and which topics carriers read. Three readers:

- each service at start (`prepare_topics`): creates what is missing, and says in one line when a
  topic it uses has fewer partitions than declared; it grows it where `KAFKA_TOPIC_GROW_PARTITIONS`
  allows (the local run);
- `esimctl topics apply|check`: creates, grows and configures the topics, grants carriers their
  read-only access (ACLs), or lists every difference (`apply_declaration`, `cluster_differences`);
- `scripts/check_deploy.py`: a ScaledObject's `maxReplicaCount` must not exceed the declared
  partitions of the topics its service consumes.

Replication is the one thing a cluster decides: production's three brokers hold three copies
(`REPLICATION`), a local run's one broker holds one (`KAFKA_TOPIC_REPLICATION=1`, a setting).
"""

import asyncio
import logging
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import (
    InvalidPartitionsError,
    KafkaError,
    SecurityDisabled,
    TopicAlreadyExistsError,
    for_code,
)
from aiokafka.protocol.admin import CreateAclsRequest, DescribeAclsRequest
from pydantic import AliasChoices, BeforeValidator, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from esim_core.messaging.kafka import client_options
from esim_core.settings import KafkaSettings, Topics, TopicSettings

logger = logging.getLogger(__name__)

DAY_MS = 24 * 60 * 60 * 1000

# -- the declaration --------------------------------------------------------------------------

#: Partitions of every contract topic. At least the largest `maxReplicaCount` of the
#: ScaledObjects whose service consumes it (billing and provisioning scale to 12;
#: scripts/check_deploy.py fails otherwise), since a group has at most one busy consumer per
#: partition. And the same on every contract topic: a card's events (key = ICCID) then have the
#: same partition number on each topic, which the consumer's batches rely on to handle one card's
#: events in order (messaging/consumer.py).
PARTITIONS = 12
#: Dead letters are rare, read by an operator's `esimctl dlq` and no scaled consumer.
DEAD_LETTER_PARTITIONS = 3
#: Production: a copy on each of three brokers, so one broker can be lost or restarted.
REPLICATION = 3
#: With the producers' acks=all, a write is acknowledged once on two brokers: one broker down
#: loses nothing and stops nothing. Never above the replication (a local run's one broker: 1).
MIN_INSYNC_REPLICAS = 2
#: The services' own topics: their consumers are watched (lag, due-work and absent() alerts) and
#: back within hours, but a consumer stopped over a long weekend must still find its events.
RETENTION_MS = 7 * DAY_MS
#: The topics carriers read: a carrier's system is not ours to watch or restart, and may be down
#: or cut off for days (maintenance over a holiday, a broken integration noticed late). An event
#: deleted before its carrier read it is a plan paid for and never granted on its network, so
#: these are kept twice as long as the services' own.
CARRIER_RETENTION_MS = 14 * DAY_MS
#: Dead letters wait for an operator to look at them and replay them (`esimctl dlq`).
DEAD_LETTER_RETENTION_MS = 30 * DAY_MS

#: The topics carriers read (as `Topics` settings): what a carrier needs to grant, start, end and
#: meter plans on its network (docs/architecture.md, "Services and topics"). Nothing else: the
#: payment topics carry payment tokens, the accounts' ones e-mail addresses.
CARRIER_TOPICS = frozenset(
    {
        "profile_activated",
        "bundle_started",
        "bundle_ended",
        "bundle_cancelled",
        "usage_updated",
        "data_low",
    }
)

#: The topic configs the declaration sets; others set on a topic are kept as they are.
DECLARED_CONFIGS = ("cleanup.policy", "retention.ms", "min.insync.replicas")


@dataclass(frozen=True)
class TopicSpec:
    """One declared topic: what the cluster must hold for it."""

    name: str
    partitions: int
    replication: int
    min_insync_replicas: int
    retention_ms: int
    #: Carriers are granted READ and DESCRIBE on it (`carrier_acls`).
    carriers_read: bool = False
    dead_letter: bool = False

    def configs(self) -> dict[str, str]:
        """The topic configs it is created (and kept) with."""
        return {
            "cleanup.policy": "delete",
            "retention.ms": str(self.retention_ms),
            "min.insync.replicas": str(self.min_insync_replicas),
        }


def declared_topics(
    topics: Topics | None = None, *, replication: int | None = None
) -> dict[str, TopicSpec]:
    """Every contract topic and its `.dlq`, by name, as this cluster must hold them.

    Args:
        topics: the topic names (`TOPIC_<NAME>` settings); the contract's by default.
        replication: the cluster's replication factor (`KAFKA_TOPIC_REPLICATION`); None is the
            declaration's, `REPLICATION`. `min.insync.replicas` is `MIN_INSYNC_REPLICAS`, or the
            replication where that is lower.
    """
    names = topics or Topics()
    copies = replication or REPLICATION
    insync = min(MIN_INSYNC_REPLICAS, copies)
    declared: dict[str, TopicSpec] = {}
    for setting, name in names.model_dump().items():
        carriers = setting in CARRIER_TOPICS
        declared[name] = TopicSpec(
            name=name,
            partitions=PARTITIONS,
            replication=copies,
            min_insync_replicas=insync,
            retention_ms=CARRIER_RETENTION_MS if carriers else RETENTION_MS,
            carriers_read=carriers,
        )
        declared[f"{name}.dlq"] = TopicSpec(
            name=f"{name}.dlq",
            partitions=DEAD_LETTER_PARTITIONS,
            replication=copies,
            min_insync_replicas=insync,
            retention_ms=DEAD_LETTER_RETENTION_MS,
            dead_letter=True,
        )
    return declared


# -- what a cluster holds, and how it differs -------------------------------------------------


@dataclass(frozen=True)
class TopicState:
    """What the cluster holds for one topic."""

    name: str
    partitions: int
    #: The fewest copies any of its partitions has.
    replication: int
    #: The declared configs' current values, and every config set on the topic itself (the
    #: ones an alteration must keep); empty when not read.
    configs: Mapping[str, str] = field(default_factory=dict)
    overrides: Mapping[str, str] = field(default_factory=dict)


Kind = Literal["missing", "partitions", "replication", "config", "acl"]


@dataclass(frozen=True)
class Difference:
    """One way the cluster is not what the declaration says."""

    topic: str
    kind: Kind
    have: str
    want: str

    def __str__(self) -> str:
        if self.kind == "missing":
            return f"{self.topic}: missing ({self.want})"
        if self.kind == "acl":
            return f"{self.topic}: no ACL {self.want}"
        return f"{self.topic}: {self.kind} {self.have}, declared {self.want}"


def topic_differences(
    declared: Mapping[str, TopicSpec], found: Mapping[str, TopicState], *, configs: bool = True
) -> list[Difference]:
    """Every declared topic that is missing, has fewer partitions or copies, or other configs.

    More partitions than declared is no difference: partitions cannot be taken away, and more
    only allow more consumers.
    """
    found_differences: list[Difference] = []
    for name, spec in sorted(declared.items()):
        state = found.get(name)
        if state is None:
            found_differences.append(
                Difference(
                    name,
                    "missing",
                    "-",
                    f"{spec.partitions} partitions, replication {spec.replication}",
                )
            )
            continue
        if state.partitions < spec.partitions:
            found_differences.append(
                Difference(name, "partitions", str(state.partitions), str(spec.partitions))
            )
        if state.replication < spec.replication:
            found_differences.append(
                Difference(name, "replication", str(state.replication), str(spec.replication))
            )
        if configs:
            for key, value in spec.configs().items():
                have = state.configs.get(key)
                if have != value:
                    found_differences.append(
                        Difference(name, "config", f"{key}={have}", f"{key}={value}")
                    )
    return found_differences


def short_of_partitions(
    declared: Mapping[str, TopicSpec], found: Mapping[str, TopicState], used: Iterable[str]
) -> list[tuple[TopicSpec, TopicState]]:
    """The topics among `used` that exist with fewer partitions than declared."""
    short = []
    for name in sorted(set(used)):
        spec, state = declared.get(name), found.get(name)
        if spec is not None and state is not None and state.partitions < spec.partitions:
            short.append((spec, state))
    return short


# -- carriers' read-only access ---------------------------------------------------------------

#: Kafka's codes (the AdminClient's AclOperation, ResourceType, PatternType, AclPermissionType).
RESOURCE_ANY, RESOURCE_TOPIC, RESOURCE_GROUP = 1, 2, 3
PATTERN_ANY, PATTERN_LITERAL, PATTERN_PREFIXED = 1, 3, 4
OPERATION_ANY, OPERATION_READ, OPERATION_DESCRIBE = 1, 3, 8
PERMISSION_ANY, PERMISSION_ALLOW = 1, 3
ANY_HOST = "*"
_RESOURCE_NAMES = {RESOURCE_TOPIC: "topic", RESOURCE_GROUP: "group"}
_OPERATION_NAMES = {OPERATION_READ: "READ", OPERATION_DESCRIBE: "DESCRIBE"}

_PRINCIPAL = re.compile(r"^[A-Za-z][A-Za-z0-9]*:[^\s,]+$")
_GROUP_PREFIX = re.compile(r"^[A-Za-z0-9._-]+$")


def _principals(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def check_principal(principal: str) -> str:
    """A Kafka principal as ACLs name it, `User:<name>`.

    Raises:
        ValueError: it is not `<Type>:<name>`; the message shows the form.
    """
    if not _PRINCIPAL.match(principal):
        raise ValueError(
            f"{principal!r} is not a Kafka principal: give it as User:<name> (the SASL user or "
            "the client certificate's name the carrier logs in with)"
        )
    return principal


def check_group_prefix(prefix: str) -> str:
    """The prefix of the consumer groups carriers may use.

    Raises:
        ValueError: it is empty or holds characters a group id should not.
    """
    if not _GROUP_PREFIX.match(prefix):
        raise ValueError(
            f"{prefix!r} is not a consumer-group prefix: letters, digits, '.', '_' and '-' "
            "only, at least one (an empty prefix would be every group, the services' too)"
        )
    return prefix


class CarrierAccessSettings(BaseSettings):
    """Whom `esimctl topics apply` grants carriers' read-only access, and on which groups."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    kafka_carrier_principals: Annotated[list[str], NoDecode, BeforeValidator(_principals)] = Field(
        default_factory=list,
        validation_alias=AliasChoices("KAFKA_CARRIER_PRINCIPALS"),
        description="the carriers' Kafka principals, comma separated (User:<name>); each gets "
        "READ and DESCRIBE on the topics carriers read and READ on the groups of "
        "KAFKA_CARRIER_GROUP_PREFIX. `esimctl topics apply --carrier` adds more",
    )
    kafka_carrier_group_prefix: str = Field(
        "carrier.",
        validation_alias=AliasChoices("KAFKA_CARRIER_GROUP_PREFIX"),
        description="the prefix of the consumer groups carriers may commit offsets in (e.g. "
        "carrier.acme.activations)",
    )

    @field_validator("kafka_carrier_principals")
    @classmethod
    def _principals_named(cls, value: list[str]) -> list[str]:
        return [check_principal(principal) for principal in value]

    @field_validator("kafka_carrier_group_prefix")
    @classmethod
    def _prefix_named(cls, value: str) -> str:
        return check_group_prefix(value)


@dataclass(frozen=True, order=True)
class AclBinding:
    """One ALLOW rule: `principal` may do `operation` on a topic or a group (prefix)."""

    principal: str
    resource_type: int
    resource_name: str
    pattern_type: int
    operation: int

    def __str__(self) -> str:
        kind = _RESOURCE_NAMES.get(self.resource_type, str(self.resource_type))
        pattern = " (prefix)" if self.pattern_type == PATTERN_PREFIXED else ""
        operation = _OPERATION_NAMES.get(self.operation, str(self.operation))
        return f"{self.principal} {operation} on {kind} {self.resource_name}{pattern}"


def carrier_acls(
    principals: Iterable[str], declared: Mapping[str, TopicSpec], group_prefix: str
) -> list[AclBinding]:
    """Each carrier's read-only access: READ and DESCRIBE on every topic carriers read, READ on
    the consumer groups that start with `group_prefix` (to commit its offsets). No WRITE, no
    other topic, no other group."""
    check_group_prefix(group_prefix)
    wanted: set[AclBinding] = set()
    for principal in principals:
        check_principal(principal)
        for spec in declared.values():
            if not spec.carriers_read:
                continue
            for operation in (OPERATION_READ, OPERATION_DESCRIBE):
                wanted.add(
                    AclBinding(principal, RESOURCE_TOPIC, spec.name, PATTERN_LITERAL, operation)
                )
        wanted.add(
            AclBinding(principal, RESOURCE_GROUP, group_prefix, PATTERN_PREFIXED, OPERATION_READ)
        )
    return sorted(wanted)


# -- talking to the cluster -------------------------------------------------------------------


class TopicsError(Exception):
    """The cluster refused to make a topic as declared; the message says what to change."""


def _raise_for(code: int, message: str | None, what: str) -> None:
    if not code:
        return
    error = for_code(code)
    said = message or error.__name__
    if error is SecurityDisabled:
        raise TopicsError(
            f"{what}: the cluster has no authorizer (authorizer.class.name), so it keeps no ACLs"
        )
    raise TopicsError(f"{what}: {error.__name__} ({said})")


class TopicAdmin:
    """An admin client, logged in as every client is (`client_options`), for the topics' work."""

    def __init__(self, kafka: KafkaSettings, *, request_timeout_ms: int = 30_000) -> None:
        self._admin = AIOKafkaAdminClient(
            **client_options(kafka), request_timeout_ms=request_timeout_ms
        )

    async def __aenter__(self) -> "TopicAdmin":
        await self._admin.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._admin.close()

    async def brokers(self) -> int:
        """How many brokers the cluster has."""
        cluster = await self._admin.describe_cluster()
        return len(cluster["brokers"])

    async def states(
        self, names: Collection[str], *, configs: bool = False
    ) -> dict[str, TopicState]:
        """What the cluster holds for each of `names` that exists (read without creating any:
        a metadata request naming topics would have a broker that auto-creates make them)."""
        found: dict[str, TopicState] = {}
        for topic in await self._admin.describe_topics(None):
            name = topic["topic"]
            # A topic just made may answer LEADER_NOT_AVAILABLE for a moment: it exists all the
            # same, with the partitions listed.
            if name not in names or not topic["partitions"]:
                continue
            found[name] = TopicState(
                name=name,
                partitions=len(topic["partitions"]),
                replication=min(len(p["replicas"]) for p in topic["partitions"]),
            )
        if configs and found:
            resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in sorted(found)]
            for response in await self._admin.describe_configs(resources):
                for resource in response.to_object()["resources"]:
                    name = resource["resource_name"]
                    _raise_for(resource["error_code"], resource["error_message"], f"reading {name}")
                    values, overrides = {}, {}
                    for entry in resource["config_entries"]:
                        key, value = entry["config_names"], entry["config_value"]
                        if key in DECLARED_CONFIGS:
                            values[key] = value
                        # 1: DYNAMIC_TOPIC_CONFIG, a config set on the topic itself.
                        if entry["config_source"] == 1 and not entry["is_sensitive"]:
                            overrides[key] = value
                    state = found[name]
                    found[name] = TopicState(
                        name, state.partitions, state.replication, values, overrides
                    )
        return found

    async def create(self, specs: Sequence[TopicSpec]) -> list[str]:
        """Create the topics as declared; the names created (one another client created at the
        same moment is not among them).

        Raises:
            TopicsError: the cluster refused one (too few brokers for the replication, no
                right to create topics, a config it rejects).
        """
        if not specs:
            return []
        response = await self._admin.create_topics(
            [
                NewTopic(spec.name, spec.partitions, spec.replication, topic_configs=spec.configs())
                for spec in specs
            ]
        )
        created, refused = [], []
        for item in response.topic_errors:
            name, code = item[0], item[1]
            message = item[2] if len(item) > 2 else None
            if not code:
                created.append(name)
            elif for_code(code) is not TopicAlreadyExistsError:
                refused.append(f"{name}: {for_code(code).__name__} ({message or '-'})")
        if refused:
            replication = specs[0].replication
            brokers = await self.brokers()
            hint = (
                f"KAFKA_TOPIC_REPLICATION asks for {replication} copies, but the cluster has "
                f"{brokers} broker(s): set it to at most {brokers} (1 for a local run)"
                if brokers < replication
                else "see each reason"
            )
            raise TopicsError(
                f"the cluster refused to create topics ({hint}): " + "; ".join(refused)
            )
        return sorted(created)

    async def grow(self, name: str, partitions: int) -> bool:
        """Give the topic `partitions` partitions; False when it already had as many (another
        client grew it meanwhile)."""
        try:
            await self._admin.create_partitions({name: NewPartitions(partitions)})
        except InvalidPartitionsError:
            # Grown by another client: the broker's metadata shows it a moment after the
            # controller committed it.
            for _ in range(20):
                current = await self.states({name})
                if name in current and current[name].partitions >= partitions:
                    return False
                await asyncio.sleep(0.25)
            raise
        return True

    async def set_configs(self, state: TopicState, wanted: Mapping[str, str]) -> None:
        """Set the declared configs on a topic, keeping every other config set on it (a
        non-incremental alteration replaces them all)."""
        configs = {**state.overrides, **wanted}
        resource = ConfigResource(ConfigResourceType.TOPIC, state.name, configs)
        for response in await self._admin.alter_configs([resource]):
            for item in response.to_object()["resources"]:
                _raise_for(
                    item["error_code"],
                    item["error_message"],
                    f"setting {', '.join(sorted(wanted))} on {state.name}",
                )

    async def acls_of(self, principal: str) -> set[AclBinding]:
        """The ALLOW rules the cluster holds for a principal (any host).

        Raises:
            TopicsError: the cluster keeps no ACLs, or refuses to show them.
        """
        # aiokafka 0.14 speaks DescribeAcls/CreateAcls (its protocol module) but its admin client
        # has no method for them: the requests go through the client it is built on.
        request = DescribeAclsRequest(
            RESOURCE_ANY,
            None,  # a null name matches any name (a filter)
            PATTERN_ANY,
            principal,
            None,  # a null host matches any host
            OPERATION_ANY,
            PERMISSION_ANY,
        )
        response = await self._admin._send_request(request)
        _raise_for(response.error_code, response.error_message, f"reading the ACLs of {principal}")
        found: set[AclBinding] = set()
        for resource in response.to_object()["resources"]:
            for acl in resource["acls"]:
                if acl["permission_type"] == PERMISSION_ALLOW and acl["host"] == ANY_HOST:
                    found.add(
                        AclBinding(
                            acl["principal"],
                            resource["resource_type"],
                            resource["resource_name"],
                            resource["resource_pattern_type"],
                            acl["operation"],
                        )
                    )
        return found

    async def create_acl(self, binding: AclBinding) -> None:
        """Add one ALLOW rule (adding one the cluster holds already changes nothing).

        Raises:
            TopicsError: the cluster keeps no ACLs, or refused it.
        """
        request = CreateAclsRequest(
            binding.resource_type,
            binding.resource_name,
            binding.pattern_type,
            binding.principal,
            ANY_HOST,
            binding.operation,
            PERMISSION_ALLOW,
        )
        response = await self._admin._send_request(request)
        for code, message in response.creation_responses:
            _raise_for(code, message, f"adding the ACL {binding}")


# -- at a service's start ---------------------------------------------------------------------


@dataclass
class StartReport:
    """What a service's start found and did about its topics."""

    created: list[str] = field(default_factory=list)
    #: (topic, partitions it has, partitions declared) of the topics it uses.
    short: list[tuple[str, int, int]] = field(default_factory=list)
    grown: list[str] = field(default_factory=list)


async def prepare_topics(
    kafka: KafkaSettings, settings: TopicSettings, topics: Topics, used: Collection[str]
) -> StartReport:
    """Create the declared topics that are missing, and check the partitions of those `used`.

    A topic `used` with fewer partitions than declared caps its consumers' replicas at what it
    has: each is said in one warning, and grown where `KAFKA_TOPIC_GROW_PARTITIONS` allows
    (more partitions send some cards' new events to new partitions; their order across that one
    moment is what the handlers already tolerate between topics).

    Raises:
        TopicsError: the cluster refused to create or grow a topic.
        KafkaError: the cluster did not answer.
    """
    declared = declared_topics(topics, replication=settings.kafka_topic_replication)
    report = StartReport()
    async with TopicAdmin(kafka) as admin:
        found = await admin.states(set(declared))
        missing = [spec for name, spec in sorted(declared.items()) if name not in found]
        if missing:
            report.created = await admin.create(missing)
            if report.created:
                logger.info("created topics %s", ", ".join(report.created))
        for spec, state in short_of_partitions(declared, found, used):
            report.short.append((spec.name, state.partitions, spec.partitions))
            if not settings.kafka_topic_grow_partitions:
                logger.warning(
                    "topic %s has %d partitions, %d declared (esim_core.messaging.topics): no "
                    "more than %d consumers of it can work; grow it with `esimctl topics apply` "
                    "(KAFKA_TOPIC_GROW_PARTITIONS is off)",
                    spec.name,
                    state.partitions,
                    spec.partitions,
                    state.partitions,
                )
                continue
            logger.warning(
                "topic %s has %d partitions, %d declared (esim_core.messaging.topics): growing "
                "it (KAFKA_TOPIC_GROW_PARTITIONS is on)",
                spec.name,
                state.partitions,
                spec.partitions,
            )
            if await admin.grow(spec.name, spec.partitions):
                report.grown.append(spec.name)
                logger.warning(
                    "grew topic %s from %d to %d partitions",
                    spec.name,
                    state.partitions,
                    spec.partitions,
                )
    return report


# -- esimctl topics apply | check -------------------------------------------------------------


@dataclass(frozen=True)
class Declaration:
    """What the cluster must hold: every declared topic by name, and the carriers' ACLs."""

    topics: dict[str, TopicSpec]
    acls: list[AclBinding]


def declaration(
    settings: TopicSettings,
    topics: Topics,
    principals: Iterable[str] = (),
    group_prefix: str = "carrier.",
) -> Declaration:
    """The declaration as these settings and topic names make it, with the ACLs of carriers
    `principals` reading in consumer groups that start with `group_prefix`."""
    declared = declared_topics(topics, replication=settings.kafka_topic_replication)
    return Declaration(declared, carrier_acls(principals, declared, group_prefix))


async def cluster_differences(kafka: KafkaSettings, wanted: Declaration) -> list[Difference]:
    """Every difference between the cluster and the declaration, carriers' ACLs included."""
    async with TopicAdmin(kafka) as admin:
        found = await admin.states(set(wanted.topics), configs=True)
        differences = topic_differences(wanted.topics, found)
        differences += await _missing_acls(admin, wanted.acls)
    return differences


async def _missing_acls(admin: TopicAdmin, wanted: Sequence[AclBinding]) -> list[Difference]:
    missing: list[Difference] = []
    held: dict[str, set[AclBinding]] = {}
    for binding in wanted:
        if binding.principal not in held:
            held[binding.principal] = await admin.acls_of(binding.principal)
        if binding not in held[binding.principal]:
            missing.append(Difference(binding.resource_name, "acl", "-", str(binding)))
    return missing


@dataclass
class ApplyReport:
    """What `apply_declaration` did, and what it cannot do."""

    done: list[str] = field(default_factory=list)
    #: Differences no admin request fixes (a topic's replication needs a reassignment).
    left: list[Difference] = field(default_factory=list)


async def apply_declaration(kafka: KafkaSettings, wanted: Declaration) -> ApplyReport:
    """Make the cluster match the declaration: create the missing topics, grow the short ones,
    set the declared configs, add the carriers' ACLs. Running it again does nothing.

    Raises:
        TopicsError: the cluster refused a change; what was done before it stays done.
    """
    declared, wanted_acls = wanted.topics, wanted.acls
    report = ApplyReport()
    async with TopicAdmin(kafka) as admin:
        found = await admin.states(set(declared), configs=True)
        missing = [spec for name, spec in sorted(declared.items()) if name not in found]
        for name in await admin.create(missing):
            spec = declared[name]
            report.done.append(
                f"created {name} ({spec.partitions} partitions, replication {spec.replication})"
            )
        for difference in topic_differences(declared, found):
            spec = declared[difference.topic]
            state = found.get(difference.topic)
            if state is None:
                continue  # created above
            if difference.kind == "partitions":
                if await admin.grow(spec.name, spec.partitions):
                    report.done.append(
                        f"grew {spec.name} from {state.partitions} to {spec.partitions} partitions"
                    )
            elif difference.kind == "replication":
                report.left.append(difference)
        for name, state in sorted(found.items()):
            spec = declared[name]
            changed = {
                key: value
                for key, value in spec.configs().items()
                if state.configs.get(key) != value
            }
            if changed:
                await admin.set_configs(state, spec.configs())
                report.done.append(
                    f"set {', '.join(f'{k}={v}' for k, v in sorted(changed.items()))} on {name}"
                )
        for difference in await _missing_acls(admin, wanted_acls):
            binding = next(b for b in wanted_acls if str(b) == difference.want)
            await admin.create_acl(binding)
            report.done.append(f"added ACL {binding}")
    return report


def describe_declaration(declared: Mapping[str, TopicSpec]) -> list[str]:
    """One line per declared topic, for `esimctl topics list`-like output and the docs."""
    lines = []
    for name, spec in sorted(declared.items()):
        days = spec.retention_ms / DAY_MS
        carriers = "  carriers read" if spec.carriers_read else ""
        lines.append(
            f"{name}  partitions {spec.partitions}  replication {spec.replication}  "
            f"min.insync.replicas {spec.min_insync_replicas}  retention {days:g} d{carriers}"
        )
    return lines


# -- python -m esim_core.messaging.topics apply | check ---------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """What `esimctl topics apply|check` does, from a service's image (which has no `esimctl`):
    the Job esim-topics (deploy/k8s/base/topics.yaml) runs `apply` before the services start.

    Returns:
        0 when the cluster is (now) as declared; 1 with the reason on stderr otherwise; 2 for a
        wrong argument.
    """
    import sys

    from esim_core.messaging.kafka import KafkaAccessRefused, check_access
    from esim_core.settings import SettingsError, load_settings

    args = list(sys.argv[1:] if argv is None else argv)
    if args not in (["apply"], ["check"]):
        print("usage: python -m esim_core.messaging.topics apply|check", file=sys.stderr)
        return 2
    try:
        kafka = load_settings(KafkaSettings)
        settings = load_settings(TopicSettings)
        access = load_settings(CarrierAccessSettings)
    except SettingsError as error:
        print(error, file=sys.stderr)
        return 1
    wanted = declaration(
        settings, Topics(), access.kafka_carrier_principals, access.kafka_carrier_group_prefix
    )

    async def run() -> int:
        await check_access(kafka)
        if args == ["check"]:
            differences = await cluster_differences(kafka, wanted)
            for difference in differences:
                print(difference)
            return 1 if differences else 0
        report = await apply_declaration(kafka, wanted)
        for line in report.done or ["nothing to change: the topics are as declared"]:
            print(line)
        for difference in report.left:
            print(f"cannot change: {difference}", file=sys.stderr)
        return 1 if report.left else 0

    try:
        return asyncio.run(run())
    except (KafkaAccessRefused, TopicsError, KafkaError, OSError) as error:
        print(f"topics: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
