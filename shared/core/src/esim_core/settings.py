"""Settings every service reads the same way: Kafka, Redis, topics, its database and HTTP port."""

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, TypeVar

from esim_schemas import events
from pydantic import (
    AfterValidator,
    AliasChoices,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

#: The local run's operator token file, relative to the repository root (`make run` writes
#: it). Here, not beside the operator auth, so that `esimctl` finds it without importing the
#: web stack (half a second of every run of it).
LOCAL_TOKEN_FILE = "var/operator.token"


class _TopicSettings(BaseSettings):
    """What every `Topics` has besides its fields: the topic of an event model."""

    model_config = SettingsConfigDict(env_prefix="TOPIC_", frozen=True)

    def for_event(self, model: type[events.EventData]) -> str:
        """The configured topic of an event model."""
        topic: str = getattr(self, model.topic_setting())
        return topic


def _topic_fields() -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for model in events.EVENT_MODELS:
        name = model.topic_setting()
        if name in fields:
            raise RuntimeError(f"{model.__name__} and another event share the setting {name}")
        fields[name] = (str, Field(model.topic, description=model.__name__))
    return fields


if TYPE_CHECKING:

    class Topics(_TopicSettings):
        """Kafka topic names: one field per event model, named by `EventData.topic_setting`."""

        def __getattr__(self, name: str) -> str: ...

else:
    # Derived from the event models, so a new event needs no edit here.
    Topics = create_model(
        "Topics",
        __base__=_TopicSettings,
        __doc__="Kafka topic names; each defaults to the contract's name and may be set by "
        "`TOPIC_<NAME>` (one field per event model, named by `EventData.topic_setting`).",
        __module__=__name__,
        **_topic_fields(),
    )


BaseUrl = Annotated[str, Field(pattern=r"^https?://[^\s/]+")]
"""A setting naming the root of an outside system's HTTP API: `http(s)://` and a host."""


def _long_enough(value: SecretStr) -> SecretStr:
    if len(value.get_secret_value()) < 32:
        raise ValueError("must be at least 32 characters long")
    return value


KeySetting = Annotated[SecretStr, AfterValidator(_long_enough)]
"""A setting holding a key (signing, sealing): at least 32 characters, never shown."""


def _upper(value: Any) -> Any:
    if isinstance(value, str):
        return value.strip().upper() or None
    return value


def _unset_if_empty(value: Any) -> Any:
    # A variable set to "" (a manifest's empty placeholder) means "not set".
    return None if isinstance(value, str) and not value.strip() else value


SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
OptionalFile = Annotated[Path | None, BeforeValidator(_unset_if_empty)]


def _env(name: str) -> AliasChoices:
    return AliasChoices(name.upper())


def _checked_when_unset(name: str, description: str) -> Any:
    # An optional Kafka setting whose validator checks it against the protocol (required with
    # SASL, refused without TLS, ...) when it is unset too.
    return Field(None, validation_alias=_env(name), validate_default=True, description=description)


class KafkaSettings(BaseSettings):
    """How every Kafka client of the platform reaches the brokers: address, TLS and SASL.

    Read from unprefixed variables (`KAFKA_...`), the same for each service, the dead-letter
    tools and `esimctl`. PLAINTEXT is the local run's default; a cluster shared with carriers
    is reached with `SASL_SSL` (deploy/README.md says what each must be in production).
    A combination that cannot work is refused when the settings are read, naming the setting.
    """

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:9092",
        validation_alias=_env("kafka_bootstrap_servers"),
        description="Kafka bootstrap servers, comma separated host:port",
        pattern=r"^[^\s,]+:\d+(,[^\s,]+:\d+)*$",
    )
    kafka_group_prefix: str = Field(
        "",
        validation_alias=_env("kafka_group_prefix"),
        description="put before every consumer group's name (a service's own name, "
        "`dlq-replay`), so that two deployments can share one cluster, each with topics of its "
        "own (TOPIC_*); empty (the default): the groups are the services' names",
        pattern=r"^[A-Za-z0-9._-]{0,64}$",
    )
    kafka_security_protocol: Annotated[SecurityProtocol, BeforeValidator(_upper)] = Field(
        "PLAINTEXT",
        validation_alias=_env("kafka_security_protocol"),
        description="PLAINTEXT (local run only), SSL (TLS, optionally a client certificate), "
        "SASL_PLAINTEXT (SASL without TLS: never across a network) or SASL_SSL (production)",
    )
    kafka_sasl_mechanism: Annotated[SaslMechanism | None, BeforeValidator(_upper)] = (
        _checked_when_unset(
            "kafka_sasl_mechanism",
            "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; required with SASL_*, refused without",
        )
    )
    kafka_sasl_username: Annotated[str | None, BeforeValidator(_unset_if_empty)] = Field(
        None,
        validation_alias=_env("kafka_sasl_username"),
        validate_default=True,
        max_length=256,
        description="the SASL user; required with SASL_*",
    )
    kafka_sasl_password: Annotated[SecretStr | None, BeforeValidator(_unset_if_empty)] = Field(
        None,
        validation_alias=_env("kafka_sasl_password"),
        description="the SASL user's password; never logged. Or KAFKA_SASL_PASSWORD_FILE",
    )
    kafka_sasl_password_file: OptionalFile = _checked_when_unset(
        "kafka_sasl_password_file",
        "a file holding the SASL password (e.g. a mounted Secret); its trailing "
        "newline is not part of it",
    )
    kafka_ssl_ca_file: OptionalFile = _checked_when_unset(
        "kafka_ssl_ca_file",
        "PEM file of the CA(s) the brokers' certificates are checked against; "
        "unset: the system's trust store. Only with SSL or SASL_SSL",
    )
    kafka_ssl_cert_file: OptionalFile = _checked_when_unset(
        "kafka_ssl_cert_file",
        "PEM client certificate (chain) for brokers that require one (mutual TLS); "
        "with KAFKA_SSL_KEY_FILE",
    )
    kafka_ssl_key_file: OptionalFile = _checked_when_unset(
        "kafka_ssl_key_file",
        "PEM private key of the client certificate; with KAFKA_SSL_CERT_FILE",
    )
    kafka_ssl_key_password: Annotated[SecretStr | None, BeforeValidator(_unset_if_empty)] = (
        _checked_when_unset(
            "kafka_ssl_key_password",
            "the password of an encrypted KAFKA_SSL_KEY_FILE; never logged",
        )
    )

    def consumer_group(self, name: str) -> str:
        """The consumer group a client called `name` joins: its name after KAFKA_GROUP_PREFIX."""
        return self.kafka_group_prefix + name

    @property
    def kafka_uses_tls(self) -> bool:
        """Whether the clients speak TLS to the brokers."""
        return self.kafka_security_protocol in ("SSL", "SASL_SSL")

    @property
    def kafka_uses_sasl(self) -> bool:
        """Whether the clients authenticate with SASL."""
        return self.kafka_security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    def kafka_password(self) -> str | None:
        """The SASL password, from the setting or its file; None without SASL."""
        if self.kafka_sasl_password_file is not None:
            return self.kafka_sasl_password_file.read_text(encoding="utf-8").rstrip("\r\n")
        if self.kafka_sasl_password is not None:
            return self.kafka_sasl_password.get_secret_value()
        return None

    @staticmethod
    def _protocol(info: ValidationInfo) -> str | None:
        protocol: str | None = info.data.get("kafka_security_protocol")
        return protocol  # None: the protocol itself is invalid and reported on its own

    @field_validator("kafka_sasl_mechanism", "kafka_sasl_username")
    @classmethod
    def _sasl_setting(cls, value: str | None, info: ValidationInfo) -> str | None:
        protocol = cls._protocol(info)
        if protocol is None:
            return value
        sasl = protocol.startswith("SASL_")
        if sasl and value is None:
            raise ValueError(f"required with KAFKA_SECURITY_PROTOCOL={protocol}")
        if not sasl and value is not None:
            raise ValueError(
                f"KAFKA_SECURITY_PROTOCOL={protocol} uses no SASL: set it to SASL_SSL "
                "(or SASL_PLAINTEXT) or unset this"
            )
        return value

    @field_validator("kafka_sasl_password_file")
    @classmethod
    def _one_password(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        protocol = cls._protocol(info)
        password = info.data.get("kafka_sasl_password")
        if value is not None and password is not None:
            raise ValueError("set KAFKA_SASL_PASSWORD or KAFKA_SASL_PASSWORD_FILE, not both")
        if protocol is None:
            return value
        given = value is not None or password is not None
        if protocol.startswith("SASL_") and not given:
            raise ValueError(
                f"KAFKA_SECURITY_PROTOCOL={protocol} needs the password: set "
                "KAFKA_SASL_PASSWORD_FILE (or KAFKA_SASL_PASSWORD)"
            )
        if not protocol.startswith("SASL_") and given:
            raise ValueError(
                f"a SASL password is set, but KAFKA_SECURITY_PROTOCOL={protocol} uses no SASL"
            )
        if value is not None:
            _readable(value)
            if not value.read_text(encoding="utf-8").rstrip("\r\n"):
                raise ValueError(f"the file {str(value)!r} is empty")
        return value

    @field_validator("kafka_ssl_ca_file", "kafka_ssl_cert_file", "kafka_ssl_key_file")
    @classmethod
    def _tls_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        protocol = cls._protocol(info)
        if value is None:
            return value
        if protocol is not None and protocol not in ("SSL", "SASL_SSL"):
            raise ValueError(
                f"KAFKA_SECURITY_PROTOCOL={protocol} uses no TLS: set it to SSL or SASL_SSL "
                "or unset this"
            )
        return _readable(value)

    @field_validator("kafka_ssl_key_file")
    @classmethod
    def _key_with_cert(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        cert = info.data.get("kafka_ssl_cert_file")
        if (value is None) != (cert is None) and "kafka_ssl_cert_file" in info.data:
            missing = "KAFKA_SSL_KEY_FILE" if value is None else "KAFKA_SSL_CERT_FILE"
            raise ValueError(f"a client certificate needs both files: set {missing} too")
        return value

    @field_validator("kafka_ssl_key_password")
    @classmethod
    def _password_with_key(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if value is not None and info.data.get("kafka_ssl_key_file") is None:
            raise ValueError("only with KAFKA_SSL_KEY_FILE (the key it unlocks)")
        return value


def _readable(path: Path) -> Path:
    if not path.is_file():
        raise ValueError(f"no such file {str(path)!r}")
    try:
        with path.open("rb"):
            pass
    except OSError as error:
        raise ValueError(f"cannot read {str(path)!r}: {error.strerror}") from None
    return path


INBOX_RETENTION_S = 38 * 24 * 3600.0
"""The inbox window's default: the longest retention.ms declared (`esim_core.messaging.topics`:
dead letters, 30 days), plus a segment.ms (7 days), plus a day."""


class TopicSettings(BaseSettings):
    """How the declared topics (`esim_core.messaging.topics`) are made on this cluster.

    Read from unprefixed variables, the same for each service and `esimctl`. Partitions,
    retention and `min.insync.replicas` are the declaration's; only what depends on the cluster
    is a setting.
    """

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    kafka_topic_replication: Annotated[int | None, BeforeValidator(_unset_if_empty)] = Field(
        None,
        ge=1,
        le=10,
        validation_alias=_env("kafka_topic_replication"),
        description="copies of each topic the platform creates; unset: the declaration's 3 "
        "(production, three brokers at least). A local run of one broker sets 1. "
        "min.insync.replicas is 2, or this where it is lower",
    )
    kafka_topic_grow_partitions: bool = Field(
        False,
        validation_alias=_env("kafka_topic_grow_partitions"),
        description="at start, a service adds partitions to a topic it uses that has fewer than "
        "declared (off: it only says so, and `esimctl topics apply` grows it). Off in "
        "production, where an operator decides when keys move; on for the local run",
    )


class ServiceSettings(KafkaSettings, TopicSettings):
    """Base of each service's settings; subclasses set `env_prefix` (e.g. `BILLING_`).

    Kafka and Redis addresses are shared by every service, so they are read from unprefixed
    variables (`KAFKA_BOOTSTRAP_SERVERS`, `KAFKA_SECURITY_PROTOCOL`, ..., `REDIS_URL`).
    """

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    caps: ClassVar[Mapping[str, str]] = {}
    """The settings that cap another (a longest pause over the first one), each with the
    setting it caps, declared before it; a cap below its base is refused (`not_below`). A cap's
    field sets `validate_default`, so that a base set above the cap's default is refused too."""

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        """Refuse a `caps` entry that would check nothing: a name that is no setting, or a
        base declared after its cap (not yet read when the cap is checked)."""
        super().__pydantic_init_subclass__(**kwargs)
        order = list(cls.model_fields)
        for cap, base in cls.caps.items():
            if cap not in order or base not in order or order.index(base) > order.index(cap):
                raise TypeError(f"{cls.__name__}.caps: {cap} must be a setting after {base}")

    @field_validator("*")
    @classmethod
    def _cap_not_below_base(cls, value: Any, info: ValidationInfo) -> Any:
        base = cls.caps.get(info.field_name or "")
        return value if base is None else not_below(cls, value, info, base)

    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        validation_alias=AliasChoices("REDIS_URL"),
        description="Redis URL for locks, rate limits and caches",
        pattern=r"^rediss?://",
    )
    database_url: str = Field(description="SQLAlchemy async URL of the service's own database")
    database_pool_size: int = Field(
        20,
        ge=1,
        le=200,
        description="PostgreSQL connections per process, kept open, none beyond; a transaction "
        "waits for a free one (SQLite always uses one); the replica relaying the outbox keeps one "
        "listening for the others' events (from 2). Every replica holds as many: the most "
        "replicas times this, summed over the services, must fit the server's max_connections "
        "(deploy/README.md, 'Database connections')",
    )
    database_pre_ping: bool = Field(
        False,
        description="check a pooled PostgreSQL connection with a round trip before each "
        "transaction (off: a connection broken by a restart fails one transaction, retried)",
    )
    http_host: str = Field("127.0.0.1", description="address the HTTP surface listens on")
    http_port: int = Field(description="port the HTTP surface listens on", ge=1, le=65535)
    consumer_retries: int = Field(
        3, ge=1, le=20, description="attempts at handling one message before it is dead-lettered"
    )
    relay_interval_s: float = Field(
        0.5,
        gt=0,
        description="how often the outbox relay looks for unpublished events when no commit "
        "announced any (on PostgreSQL, other replicas announce theirs too)",
    )
    relay_idle_max_s: float = Field(
        2.0,
        gt=0,
        le=5,
        description="longest wait between the relay's looks while none finds anything and no "
        "commit announces events: the wait doubles from the relay interval up to this. At "
        "most 5 s, so that the relaying replica renews its 10 s lease in time",
    )
    worker_interval_s: float = Field(
        0.25,
        gt=0,
        description="how often due work (charges, follow-ups, sends) is looked for when no "
        "commit announced any; new work is taken at once",
    )
    worker_idle_max_s: float = Field(
        2.0,
        gt=0,
        le=60,
        description="longest wait between looks for due work while none is found: the wait "
        "doubles from the worker interval up to this, and a commit or a find resets it",
    )
    consumer_batch: int = Field(
        100, ge=1, le=10_000, description="most messages handled per fetch of the consumer"
    )
    relay_batch: int = Field(
        500, ge=1, le=10_000, description="most outbox rows the relay sends in one round"
    )
    outbox_retention_s: float = Field(
        24 * 3600.0,
        ge=0,
        description="how long published outbox rows are kept (for inspection: the operator's "
        "outbox and saga views show them) before they are purged; nothing deduplicates by "
        "them, so the window is for people, not for redeliveries",
    )
    inbox_retention_s: float = Field(
        INBOX_RETENTION_S,
        ge=60,
        description="how long the id of a consumed Kafka event is kept, so that a redelivery "
        "is dropped; past it the id is purged. The window must outlast the oldest event that "
        "can come again: a consumer group reset to the earliest offset re-reads what its "
        "topics hold (retention.ms: 7 days, 14 for the topics carriers read), and `esimctl "
        "dlq replay` puts a dead letter (kept 30 days) back on its topic, where every group "
        "reads it again, those that handled it too. Kafka deletes a log segment whole once its "
        "newest record is past retention.ms, and rolls a segment every segment.ms (7 days by "
        "default), so a record can outlive its retention by that much: 30 + 7 days, and a day: "
        "38 days. Shorten it only with the topics' retention.ms and segment.ms",
    )
    purge_interval_s: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="how often the rows past their window (inbox, outbox, callback log) are "
        "purged, by one replica at a time",
    )
    purge_chunk: int = Field(
        500,
        ge=1,
        le=10_000,
        description="most rows one purge statement deletes, each in a short transaction of "
        "its own, so a purge never holds a lock that the consumer waits on for long",
    )
    sqlite_inline: bool = Field(
        True,
        description="run SQLite calls on the event loop's thread instead of aiosqlite's "
        "(each takes microseconds; the hand-off to a thread costs more than the call)",
    )
    stop_timeout_s: float = Field(
        15.0,
        gt=0,
        le=600,
        description="seconds a stop (SIGTERM) may take: stop consuming, finish or abandon the "
        "rounds in flight, flush the outbox; past it the process exits anyway",
    )


SettingsT = TypeVar("SettingsT", bound=BaseSettings)


class SettingsError(SystemExit):
    """Settings that cannot be used; the message names each variable and what is wrong."""


def load_settings(model: type[SettingsT]) -> SettingsT:
    """Read settings from the environment, or stop with a message naming each bad variable.

    Raises:
        SettingsError: a variable is missing or malformed.
    """
    try:
        return model()
    except ValidationError as error:
        prefix = str(model.model_config.get("env_prefix", ""))
        aliases = {
            str(choice)
            for info in model.model_fields.values()
            if isinstance(info.validation_alias, AliasChoices)
            for choice in info.validation_alias.choices
        }
        # A validator's error on an aliased field is located by the field's name instead.
        aliased = {
            field: str(info.validation_alias.choices[0])
            for field, info in model.model_fields.items()
            if isinstance(info.validation_alias, AliasChoices)
        }
        lines = []
        for item in error.errors(include_input=False, include_url=False):
            field = str(item["loc"][0]) if item["loc"] else "?"
            field = aliased.get(field, field)
            # An aliased field's error is located by the alias: the variable's own name.
            name = (field if field in aliases else prefix + field).upper()
            lines.append(f"  {name}: {item['msg']}")
        raise SettingsError(f"{model.__name__}: invalid settings\n" + "\n".join(lines)) from None


def not_below(
    model: type[BaseSettings], value: float, info: ValidationInfo, base_field: str
) -> float:
    """Validate that a cap is not below the base it caps (both settings of one model).

    Raises:
        ValueError: the cap is lower than the base; the message names the base's variable.
    """
    base = info.data.get(base_field)
    if base is not None and value < base:
        prefix = str(model.model_config.get("env_prefix", ""))
        raise ValueError(f"must not be below {(prefix + base_field).upper()} ({base:g})")
    return value


def lease_outlasts_a_round(
    model: type[BaseSettings], value: float, info: ValidationInfo, call: str, system: str
) -> float:
    """Validate that a worker's lease outlasts its longest round of tries at an outside system.

    `call` names the settings `<call>_attempts`, `<call>_timeout_s` and `<call>_backoff_max_s`.
    A round that outlives its lease may be claimed by another replica meanwhile; the idempotency
    key keeps the outside effect single, but the work would be done twice.

    Raises:
        ValueError: the lease is too short; the message names the variables involved.
    """
    attempts = info.data.get(f"{call}_attempts")
    timeout = info.data.get(f"{call}_timeout_s")
    backoff = info.data.get(f"{call}_backoff_max_s")
    if attempts is None or timeout is None or backoff is None:
        return value  # those fields are invalid and reported on their own
    longest_round = attempts * timeout + (attempts - 1) * backoff
    if value <= longest_round:
        prefix = str(model.model_config.get("env_prefix", "")).upper()
        raise ValueError(
            f"must exceed the longest {system} round, {longest_round:g} s "
            f"({prefix}{call.upper()}_ATTEMPTS x {prefix}{call.upper()}_TIMEOUT_S plus the "
            "waits between tries)"
        )
    return value


# The bounds of the settings that describe calls to an outside system and the due work around
# them: one policy for billing's gateway, provisioning's platform and the notifier's relays, so
# a service's settings name a call and its description, not the numbers again. Each returns the
# field (pydantic's `Field` is typed `Any` too), e.g.
# `gateway_attempts: int = call_attempts_field(4, "tries of one gateway call ...")`.


def call_timeout_field(default: float, description: str) -> Any:
    """A setting for the timeout of one request to an outside system: at most two minutes."""
    return Field(default, gt=0, le=120, description=description)


def call_attempts_field(default: int, description: str) -> Any:
    """A setting for the tries of one outside call within a round: 1 to 10."""
    return Field(default, ge=1, le=10, description=description)


def call_backoff_max_field(default: float, description: str) -> Any:
    """A setting for the longest wait between two tries within a round: at most a minute."""
    return Field(default, gt=0, le=60, description=description)


def round_backoff_field(default: float, description: str) -> Any:
    """A setting for the pause after the first round that failed transiently: at most an hour."""
    return Field(default, gt=0, le=3600, description=description)


def round_backoff_max_field(default: float, description: str) -> Any:
    """A setting for the longest pause between two failed rounds: at most a day.

    It caps `round_backoff_field`'s setting (`ServiceSettings.caps`), so its default is
    validated too: a base set above the cap's default is refused.
    """
    return Field(default, gt=0, le=86400, validate_default=True, description=description)


def worker_batch_field(default: int, description: str) -> Any:
    """A setting for the pieces of due work one replica has in flight at once: 1 to 500."""
    return Field(default, ge=1, le=500, description=description)


def worker_lease_field(default: float, description: str) -> Any:
    """A setting for how long claimed due work is reserved for one replica: at most an hour.

    Its default is validated too, so that `lease_outlasts_a_round` refuses a call's settings
    whose longest round would outlive the default lease.
    """
    return Field(default, gt=0, le=3600, validate_default=True, description=description)
