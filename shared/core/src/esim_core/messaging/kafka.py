"""The Kafka side: how every client connects (TLS, SASL), the broker every service consumes
with, and the producer it publishes with.

Every Kafka client of the platform (the services' consumers, producers and admin clients, the
dead-letter tools, `esimctl`) is built from `client_options`, so one set of `KAFKA_...`
settings (`esim_core.settings.KafkaSettings`) reaches a plaintext local broker and a cluster
that asks for SASL over TLS alike.
"""

import asyncio
import logging
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaProducer
from aiokafka.conn import create_conn
from aiokafka.errors import KafkaError, SaslAuthenticationFailed, UnsupportedSaslMechanismError

from esim_core.messaging import broken_writes
from esim_core.settings import KafkaSettings, ServiceSettings, SettingsError

# FastStream is imported where a broker is made, not here: the clients that need no broker
# (`esimctl`, the dead-letter tools) start in half the time without it.
if TYPE_CHECKING:
    from faststream.kafka import KafkaBroker
    from faststream.security import BaseSecurity

logger = logging.getLogger(__name__)

# Every Kafka client is built here: under uvloop, a write to a connection the broker closed
# must reach aiokafka as the broken connection it is, or a consumer stops for good.
broken_writes.install()


def ssl_context(settings: KafkaSettings) -> ssl.SSLContext | None:
    """The TLS context of the clients (None without TLS): the brokers' certificates checked
    against `KAFKA_SSL_CA_FILE` (else the system's trust store), host names checked too, and
    the client certificate where one is set.

    Raises:
        SettingsError: a file is not what its setting says (not PEM, a key that does not match
            its certificate, a wrong key password); the message names the setting.
    """
    if not settings.kafka_uses_tls:
        return None
    try:
        # The same defaults as aiokafka's `create_ssl_context`: verify the peer and its name.
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH,
            cafile=str(settings.kafka_ssl_ca_file) if settings.kafka_ssl_ca_file else None,
        )
    except ssl.SSLError as error:
        raise SettingsError(
            f"KAFKA_SSL_CA_FILE: {settings.kafka_ssl_ca_file} holds no usable PEM certificate "
            f"({error.reason or error})"
        ) from None
    if settings.kafka_ssl_cert_file is not None:
        password = settings.kafka_ssl_key_password
        try:
            context.load_cert_chain(
                str(settings.kafka_ssl_cert_file),
                str(settings.kafka_ssl_key_file),
                # A callable, so OpenSSL never prompts on a terminal for a missing password.
                lambda: password.get_secret_value() if password is not None else "",
            )
        except ssl.SSLError as error:
            raise SettingsError(
                "KAFKA_SSL_CERT_FILE / KAFKA_SSL_KEY_FILE: the client certificate and key "
                f"cannot be used together ({error.reason or error}); an encrypted key needs "
                "KAFKA_SSL_KEY_PASSWORD"
            ) from None
    return context


def client_options(settings: KafkaSettings) -> dict[str, Any]:
    """The keyword arguments every aiokafka client (consumer, producer, admin) is built with:
    the bootstrap servers, the security protocol, the TLS context and the SASL login."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers.split(","),
        "security_protocol": settings.kafka_security_protocol,
    }
    context = ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    if settings.kafka_uses_sasl:
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = settings.kafka_password()
    return options


def broker_security(settings: KafkaSettings) -> "BaseSecurity | None":
    """The same connection settings in FastStream's terms, for its `KafkaBroker`."""
    from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

    context = ssl_context(settings)
    if not settings.kafka_uses_sasl:
        return BaseSecurity(ssl_context=context) if context is not None else None
    kinds: dict[str, type[SASLPlaintext | SASLScram256 | SASLScram512]] = {
        "PLAIN": SASLPlaintext,
        "SCRAM-SHA-256": SASLScram256,
        "SCRAM-SHA-512": SASLScram512,
    }
    kind = kinds[str(settings.kafka_sasl_mechanism)]
    return kind(
        username=str(settings.kafka_sasl_username),
        password=settings.kafka_password() or "",
        ssl_context=context,
        use_ssl=settings.kafka_uses_tls,
    )


class KafkaAccessRefused(Exception):
    """The brokers answered but refused these settings: a wrong login, mechanism or trust.

    Its message names the settings to fix and holds no secret.
    """


async def check_access(settings: KafkaSettings, *, timeout_s: float = 10.0) -> None:
    """Connect once to a bootstrap server as every client will, and say clearly what refused.

    A wrong password, a mechanism the brokers do not offer or a certificate that is not trusted
    would otherwise surface as aiokafka's "Unable to bootstrap" after retries; this names the
    settings to fix. A broker that does not answer at all is only logged: the clients retry it
    as they always do.

    Raises:
        KafkaAccessRefused: the brokers refused the login or the TLS handshake failed.
    """
    options = client_options(settings)
    servers: list[str] = options.pop("bootstrap_servers")
    options.pop("security_protocol")
    protocol = settings.kafka_security_protocol
    unreachable: list[str] = []
    for server in servers:
        host, _, port = server.rpartition(":")
        try:
            async with asyncio.timeout(timeout_s):
                connection = await create_conn(
                    host,
                    int(port),
                    client_id="esim-access-check",
                    request_timeout_ms=int(timeout_s * 1000),
                    security_protocol=protocol,
                    **options,
                )
        except SaslAuthenticationFailed as error:
            raise KafkaAccessRefused(
                f"Kafka at {server} refused the login of KAFKA_SASL_USERNAME="
                f"{settings.kafka_sasl_username!r} with {settings.kafka_sasl_mechanism} "
                f"({_said(error)}): check KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD "
                "(or its _FILE)"
            ) from None
        except UnsupportedSaslMechanismError as error:
            raise KafkaAccessRefused(
                f"Kafka at {server} does not offer KAFKA_SASL_MECHANISM="
                f"{settings.kafka_sasl_mechanism} ({_said(error)})"
            ) from None
        except ssl.SSLCertVerificationError as error:
            raise KafkaAccessRefused(
                f"the certificate of Kafka at {server} is not trusted "
                f"({error.verify_message or error.reason}): check KAFKA_SSL_CA_FILE and that "
                "KAFKA_BOOTSTRAP_SERVERS names the hosts the certificate is for"
            ) from None
        except ssl.SSLError as error:
            raise KafkaAccessRefused(
                f"the TLS handshake with Kafka at {server} failed ({error.reason or error}): "
                f"is KAFKA_SECURITY_PROTOCOL={protocol} what that listener speaks?"
            ) from None
        except (TimeoutError, OSError, KafkaError) as error:
            unreachable.append(f"{server} ({type(error).__name__}: {error})")
            continue
        connection.close()
        return
    logger.warning(
        "Kafka did not answer with KAFKA_SECURITY_PROTOCOL=%s at %s; the clients keep trying "
        "(a listener that speaks another protocol does not answer either)",
        protocol,
        ", ".join(unreachable),
    )


def _said(error: KafkaError) -> str:
    # The broker's own sentence, where it gave one, else the error's name.
    said = " ".join(str(arg) for arg in error.args if arg)
    return said or type(error).__name__


def make_broker(settings: ServiceSettings, client_id: str) -> "KafkaBroker":
    """The FastStream broker whose subscribers consume the service's topics.

    Publishing goes through `EventPublisher`'s producer instead, so the relay can keep a whole
    batch in flight; the broker's own producer only answers readiness pings.
    """
    from faststream.kafka import KafkaBroker

    return KafkaBroker(
        settings.kafka_bootstrap_servers.split(","),
        # Its "Received" and "Processed" for every batch, at INFO, are routine chatter (the
        # consumer logs what matters); given no logger, FastStream makes its own access logger
        # and sets it to INFO when it connects, over `configure_logging`'s WARNING. Given this
        # one, it keeps the level set here and still logs its errors through it.
        logger=logging.getLogger("faststream.access.kafka"),  # logs.FASTSTREAM_LOGGERS
        security=broker_security(settings),
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        request_timeout_ms=30_000,
        # Stopping waits this long for the batch in hand, then cancels it (its transaction
        # rolls back and its offsets stay uncommitted, so it is redelivered) and leaves the
        # group; well inside the stop's own budget (ServiceRuntime.stop).
        graceful_timeout=settings.stop_timeout_s * 0.4,
    )


@dataclass(frozen=True)
class OutgoingMessage:
    """One already-serialized message to publish, keyed by ICCID."""

    value: bytes
    topic: str
    key: str | None
    headers: dict[str, str] = field(default_factory=dict)


class EventPublisher:
    """Publishes serialized messages with an idempotent producer that waits for all replicas.

    The idempotent producer keeps one partition's messages in the order they were sent, also
    across its own retries, so a batch can be sent at once and its acks awaited together.
    """

    def __init__(self, settings: KafkaSettings, *, client_id: str) -> None:
        self._settings = settings
        self._client_id = client_id
        self._producer: AIOKafkaProducer | None = None
        self._starting = asyncio.Lock()

    async def start(self) -> None:
        """Connect the producer (again after `stop`); publishing also connects on first use."""
        async with self._starting:
            if self._producer is not None:
                return
            producer = AIOKafkaProducer(
                **client_options(self._settings),
                client_id=f"{self._client_id}-publisher",
                acks="all",
                enable_idempotence=True,
                request_timeout_ms=30_000,
                # No linger: the relay sends a whole round before it awaits the first ack, so
                # the round is one batch anyway, and a linger only held every quiet event back
                # (2 ms linger: a send acknowledged in 5.0-5.7 ms at the median, 2.7-3.4 without).
                linger_ms=0,
                max_batch_size=256 * 1024,
            )
            await producer.start()
            self._producer = producer

    async def stop(self) -> None:
        """Flush what is in flight and disconnect."""
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def publish_raw(
        self, value: bytes, *, topic: str, key: str | None, headers: dict[str, str]
    ) -> None:
        """Send one message and wait until the broker has acknowledged it."""
        (outcome,) = await self.publish_many([OutgoingMessage(value, topic, key, headers)])
        if outcome is not None:
            raise outcome

    async def publish_many(self, messages: Sequence[OutgoingMessage]) -> list[Exception | None]:
        """Send every message, then wait for all their acks; one outcome per message, in order.

        `None` means acknowledged by all in-sync replicas; an exception means that message may
        not have been written and must be sent again.
        """
        if self._producer is None:
            await self.start()
        producer = self._producer
        assert producer is not None
        sent: list[asyncio.Future[object] | Exception] = []
        for message in messages:
            try:
                sent.append(
                    await producer.send(
                        message.topic,
                        message.value,
                        key=message.key.encode() if message.key is not None else None,
                        headers=[(name, value.encode()) for name, value in message.headers.items()],
                    )
                )
            except Exception as error:
                sent.append(error)
        outcomes: list[Exception | None] = []
        for item in sent:
            if isinstance(item, Exception):
                outcomes.append(item)
                continue
            try:
                await item
            except Exception as error:
                outcomes.append(error)
            else:
                outcomes.append(None)
        return outcomes
