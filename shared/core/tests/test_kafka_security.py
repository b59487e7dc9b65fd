"""Kafka's TLS and SASL settings: what each combination builds for the clients, and what is
refused with the setting named."""

import asyncio
import logging
import ssl
from pathlib import Path

import pytest
from esim_core.messaging.kafka import (
    KafkaAccessRefused,
    broker_security,
    check_access,
    client_options,
    ssl_context,
)
from esim_core.settings import KafkaSettings, ServiceSettings, SettingsError, load_settings
from esim_core.testing_tls import TestCertificates, make_certificates
from faststream.kafka.security import parse_security
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram512

KAFKA_VARIABLES = (
    "KAFKA_BOOTSTRAP_SERVERS",
    "KAFKA_SECURITY_PROTOCOL",
    "KAFKA_SASL_MECHANISM",
    "KAFKA_SASL_USERNAME",
    "KAFKA_SASL_PASSWORD",
    "KAFKA_SASL_PASSWORD_FILE",
    "KAFKA_SSL_CA_FILE",
    "KAFKA_SSL_CERT_FILE",
    "KAFKA_SSL_KEY_FILE",
    "KAFKA_SSL_KEY_PASSWORD",
)
PASSWORD = "s3cret-scram-password"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in KAFKA_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> TestCertificates:
    return make_certificates(tmp_path_factory.mktemp("tls"))


def settings_from(monkeypatch: pytest.MonkeyPatch, **env: str) -> KafkaSettings:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_settings(KafkaSettings)


def refusal(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    with pytest.raises(SettingsError) as raised:
        settings_from(monkeypatch, **env)
    return str(raised.value)


def test_without_settings_the_clients_speak_plaintext_to_the_local_broker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = settings_from(monkeypatch)
    assert client_options(settings) == {
        "bootstrap_servers": ["127.0.0.1:9092"],
        "security_protocol": "PLAINTEXT",
    }
    assert broker_security(settings) is None


def test_sasl_ssl_with_scram_builds_a_verifying_tls_context_and_the_login(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, certificates: TestCertificates
) -> None:
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n")  # as a mounted Secret or `echo` leaves it
    settings = settings_from(
        monkeypatch,
        KAFKA_BOOTSTRAP_SERVERS="kafka-0.kafka:9093,kafka-1.kafka:9093",
        KAFKA_SECURITY_PROTOCOL="sasl_ssl",
        KAFKA_SASL_MECHANISM="scram-sha-512",
        KAFKA_SASL_USERNAME="esim-billing",
        KAFKA_SASL_PASSWORD_FILE=str(password_file),
        KAFKA_SSL_CA_FILE=str(certificates.ca_file),
    )
    options = client_options(settings)
    context = options.pop("ssl_context")
    assert options == {
        "bootstrap_servers": ["kafka-0.kafka:9093", "kafka-1.kafka:9093"],
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "esim-billing",
        "sasl_plain_password": PASSWORD,
    }
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert [cert["subject"] for cert in context.get_ca_certs()] == [
        ((("commonName", "esim test CA"),),)
    ]
    security = broker_security(settings)
    assert isinstance(security, SASLScram512)
    faststream_options = parse_security(security)
    assert faststream_options["security_protocol"] == "SASL_SSL"
    assert faststream_options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert faststream_options["sasl_plain_username"] == "esim-billing"
    assert faststream_options["sasl_plain_password"] == PASSWORD
    assert faststream_options["ssl_context"].verify_mode == ssl.CERT_REQUIRED


def test_sasl_plaintext_with_plain_has_no_tls_context(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_from(
        monkeypatch,
        KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT",
        KAFKA_SASL_MECHANISM="PLAIN",
        KAFKA_SASL_USERNAME="esim",
        KAFKA_SASL_PASSWORD=PASSWORD,
    )
    options = client_options(settings)
    assert "ssl_context" not in options
    assert options["sasl_mechanism"] == "PLAIN"
    assert options["sasl_plain_password"] == PASSWORD
    security = broker_security(settings)
    assert isinstance(security, SASLPlaintext)
    assert parse_security(security)["security_protocol"] == "SASL_PLAINTEXT"


def test_ssl_with_a_client_certificate_loads_the_encrypted_key(
    monkeypatch: pytest.MonkeyPatch, certificates: TestCertificates
) -> None:
    settings = settings_from(
        monkeypatch,
        KAFKA_SECURITY_PROTOCOL="SSL",
        KAFKA_SSL_CA_FILE=str(certificates.ca_file),
        KAFKA_SSL_CERT_FILE=str(certificates.client_cert_file),
        KAFKA_SSL_KEY_FILE=str(certificates.client_key_file),
        KAFKA_SSL_KEY_PASSWORD=certificates.client_key_password,
    )
    options = client_options(settings)
    assert options["security_protocol"] == "SSL"
    assert "sasl_mechanism" not in options
    security = broker_security(settings)
    assert type(security) is BaseSecurity
    assert parse_security(security)["security_protocol"] == "SSL"


def test_a_wrong_key_password_is_refused_naming_the_client_certificate_settings(
    monkeypatch: pytest.MonkeyPatch, certificates: TestCertificates
) -> None:
    settings = settings_from(
        monkeypatch,
        KAFKA_SECURITY_PROTOCOL="SSL",
        KAFKA_SSL_CERT_FILE=str(certificates.client_cert_file),
        KAFKA_SSL_KEY_FILE=str(certificates.client_key_file),
        KAFKA_SSL_KEY_PASSWORD="not-the-password",
    )
    with pytest.raises(SettingsError, match="KAFKA_SSL_CERT_FILE / KAFKA_SSL_KEY_FILE"):
        ssl_context(settings)


def test_a_ca_file_that_holds_no_certificate_is_refused_naming_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("this is not a certificate\n")
    settings = settings_from(
        monkeypatch, KAFKA_SECURITY_PROTOCOL="SSL", KAFKA_SSL_CA_FILE=str(not_pem)
    )
    with pytest.raises(SettingsError, match="KAFKA_SSL_CA_FILE"):
        ssl_context(settings)


def test_a_service_reads_the_same_kafka_settings_beside_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class ExampleSettings(ServiceSettings):
        model_config = {"env_prefix": "EXAMPLE_"}

    monkeypatch.setenv("EXAMPLE_DATABASE_URL", "sqlite+aiosqlite:///example.sqlite")
    monkeypatch.setenv("EXAMPLE_HTTP_PORT", "8123")
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("KAFKA_SASL_MECHANISM", "SCRAM-SHA-256")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "esim-example")
    with pytest.raises(SettingsError) as raised:
        load_settings(ExampleSettings)
    assert "KAFKA_SASL_PASSWORD_FILE" in str(raised.value)
    assert "EXAMPLE_KAFKA" not in str(raised.value)
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", PASSWORD)
    settings = load_settings(ExampleSettings)
    assert client_options(settings)["sasl_plain_username"] == "esim-example"


@pytest.mark.parametrize(
    ("env", "variable", "says"),
    [
        ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, "KAFKA_SECURITY_PROTOCOL", "SASL_SSL"),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_USERNAME": "u"},
            "KAFKA_SASL_MECHANISM",
            "required with KAFKA_SECURITY_PROTOCOL=SASL_SSL",
        ),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "SCRAM-SHA-1"},
            "KAFKA_SASL_MECHANISM",
            "SCRAM-SHA-512",
        ),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "PLAIN"},
            "KAFKA_SASL_USERNAME",
            "required",
        ),
        (
            {
                "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                "KAFKA_SASL_MECHANISM": "PLAIN",
                "KAFKA_SASL_USERNAME": "u",
            },
            "KAFKA_SASL_PASSWORD_FILE",
            "needs the password",
        ),
        ({"KAFKA_SASL_MECHANISM": "PLAIN"}, "KAFKA_SASL_MECHANISM", "uses no SASL"),
        ({"KAFKA_SASL_USERNAME": "u"}, "KAFKA_SASL_USERNAME", "uses no SASL"),
        ({"KAFKA_SASL_PASSWORD": PASSWORD}, "KAFKA_SASL_PASSWORD_FILE", "uses no SASL"),
        (
            {
                "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                "KAFKA_SASL_MECHANISM": "PLAIN",
                "KAFKA_SASL_USERNAME": "u",
                "KAFKA_SASL_PASSWORD": PASSWORD,
                "KAFKA_SASL_PASSWORD_FILE": "{ca}",
            },
            "KAFKA_SASL_PASSWORD_FILE",
            "not both",
        ),
        (
            {
                "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                "KAFKA_SASL_MECHANISM": "PLAIN",
                "KAFKA_SASL_USERNAME": "u",
                "KAFKA_SASL_PASSWORD_FILE": "{empty}",
            },
            "KAFKA_SASL_PASSWORD_FILE",
            "is empty",
        ),
        (
            {
                "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                "KAFKA_SASL_MECHANISM": "PLAIN",
                "KAFKA_SASL_USERNAME": "u",
                "KAFKA_SASL_PASSWORD": PASSWORD,
                "KAFKA_SSL_CA_FILE": "{ca}",
            },
            "KAFKA_SSL_CA_FILE",
            "uses no TLS",
        ),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CA_FILE": "/no/such/ca.pem"},
            "KAFKA_SSL_CA_FILE",
            "no such file",
        ),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CERT_FILE": "{client}"},
            "KAFKA_SSL_KEY_FILE",
            "set KAFKA_SSL_KEY_FILE too",
        ),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_KEY_FILE": "{client_key}"},
            "KAFKA_SSL_KEY_FILE",
            "set KAFKA_SSL_CERT_FILE too",
        ),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_KEY_PASSWORD": "x"},
            "KAFKA_SSL_KEY_PASSWORD",
            "only with KAFKA_SSL_KEY_FILE",
        ),
    ],
)
def test_a_combination_that_cannot_work_is_refused_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    certificates: TestCertificates,
    env: dict[str, str],
    variable: str,
    says: str,
) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    files = {
        "ca": str(certificates.ca_file),
        "client": str(certificates.client_cert_file),
        "client_key": str(certificates.client_key_file),
        "empty": str(empty),
    }
    message = refusal(monkeypatch, **{name: value.format(**files) for name, value in env.items()})
    line = next((line for line in message.splitlines() if line.strip().startswith(variable)), "")
    assert says in line, message
    assert PASSWORD not in message


def test_the_password_is_never_shown_by_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_from(
        monkeypatch,
        KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT",
        KAFKA_SASL_MECHANISM="SCRAM-SHA-256",
        KAFKA_SASL_USERNAME="esim",
        KAFKA_SASL_PASSWORD=PASSWORD,
    )
    assert PASSWORD not in repr(settings) and PASSWORD not in str(settings.model_dump())
    assert settings.kafka_password() == PASSWORD


async def test_the_access_check_names_the_ca_when_the_broker_certificate_is_not_trusted(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, certificates: TestCertificates
) -> None:
    """A TLS server with a certificate of another CA stands in for the broker."""
    other = make_certificates(tmp_path / "other")
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_side.load_cert_chain(other.server_cert_file, other.server_key_file)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=server_side)
    port = server.sockets[0].getsockname()[1]
    try:
        settings = settings_from(
            monkeypatch,
            KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{port}",
            KAFKA_SECURITY_PROTOCOL="SASL_SSL",
            KAFKA_SASL_MECHANISM="SCRAM-SHA-256",
            KAFKA_SASL_USERNAME="esim",
            KAFKA_SASL_PASSWORD=PASSWORD,
            KAFKA_SSL_CA_FILE=str(certificates.ca_file),
        )
        with pytest.raises(KafkaAccessRefused, match=r"not trusted.*KAFKA_SSL_CA_FILE"):
            await check_access(settings, timeout_s=5)
    finally:
        server.close()
        await server.wait_closed()


async def test_the_access_check_leaves_a_broker_that_does_not_answer_to_the_clients(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A port just freed: nothing listens there, the connection is refused at once.
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    settings = settings_from(monkeypatch, KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{port}")
    with caplog.at_level(logging.WARNING, logger="esim_core.messaging.kafka"):
        await check_access(settings, timeout_s=2)
    assert f"127.0.0.1:{port}" in caplog.text
    assert "KAFKA_SECURITY_PROTOCOL=PLAINTEXT" in caplog.text


def test_empty_variables_mean_unset_as_compose_passes_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = settings_from(
        monkeypatch,
        KAFKA_SECURITY_PROTOCOL="PLAINTEXT",
        KAFKA_SASL_MECHANISM="",
        KAFKA_SASL_USERNAME="",
        KAFKA_SASL_PASSWORD="",
        KAFKA_SSL_CA_FILE="",
    )
    assert client_options(settings)["security_protocol"] == "PLAINTEXT"
    assert settings.kafka_sasl_password is None and settings.kafka_ssl_ca_file is None
