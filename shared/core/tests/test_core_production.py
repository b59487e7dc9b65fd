"""The production settings check: local values refused unless the run says it is local."""

from collections.abc import Iterator

import pytest
from esim_core.production import (
    LocalDefault,
    LocalDefaultsError,
    demo_secret,
    is_local_host,
    public_url,
    refuse_local_defaults,
    sandbox_url,
)
from esim_core.settings import ServiceSettings, SettingsError
from esim_core.web.operator import OperatorAuth
from pydantic import SecretStr
from pydantic_settings import SettingsConfigDict

POSTGRES = "postgresql+asyncpg://svc:pw@db.internal:5432/svc"


class _Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="SVC_", extra="ignore", frozen=True)

    http_port: int = 8999
    database_url: str = POSTGRES
    page_url: str = "https://www.example.com/renew"

    def local_defaults(self) -> Iterator[LocalDefault]:
        if "127.0.0.1" in self.page_url:
            yield LocalDefault("SVC_PAGE_URL", "points at this machine")


def production_settings(page_url: str = "https://www.example.com/renew") -> _Settings:
    return _Settings(
        kafka_bootstrap_servers="kafka-0.kafka:9092,kafka-1.kafka:9092",
        redis_url="redis://redis.internal:6379/0",
        page_url=page_url,
    )


@pytest.fixture(autouse=True)
def production(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ESIM_ENV", raising=False)


def test_production_settings_without_local_values_start() -> None:
    refuse_local_defaults(production_settings())


def test_production_is_the_default_and_names_each_local_setting() -> None:
    settings = production_settings(page_url="http://127.0.0.1:8000/renew")

    with pytest.raises(LocalDefaultsError) as caught:
        refuse_local_defaults(settings)

    message = str(caught.value)
    assert "SVC_PAGE_URL: points at this machine" in message
    assert "ESIM_ENV=local" in message


def test_a_declared_local_run_keeps_its_local_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESIM_ENV", "local")

    refuse_local_defaults(_Settings(page_url="http://127.0.0.1:8000/renew"))


def test_an_unknown_run_environment_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESIM_ENV", "staging")

    with pytest.raises(SettingsError, match="ESIM_ENV"):
        refuse_local_defaults(production_settings())


def test_every_service_shares_the_database_kafka_and_redis_checks() -> None:
    with pytest.raises(LocalDefaultsError) as caught:
        refuse_local_defaults(_Settings(database_url="sqlite+aiosqlite:///var/db/svc.sqlite"))

    message = str(caught.value)
    assert "SVC_DATABASE_URL: is a SQLite file" in message
    assert "KAFKA_BOOTSTRAP_SERVERS: names this machine (127.0.0.1:9092)" in message
    assert "REDIS_URL: points at this machine" in message


def test_a_placeholder_operator_token_is_refused_without_showing_it() -> None:
    operator = OperatorAuth("CHANGE-ME-at-least-16-characters")

    with pytest.raises(LocalDefaultsError) as caught:
        refuse_local_defaults(production_settings(), operator)

    assert "OPERATOR_TOKEN: is a demo or placeholder value" in str(caught.value)
    assert "at-least-16" not in str(caught.value)


@pytest.mark.parametrize(
    ("host", "local"),
    [
        ("127.0.0.1", True),
        ("localhost", True),
        ("[::1]", True),
        ("0.0.0.0", True),
        ("esim.local", False),
        ("accounts.esim.svc.cluster.local", False),
        ("127.0.0.53", True),
        ("smtp.example.com", False),
        ("10.0.0.7", False),
        ("localhost.example.com", False),
    ],
)
def test_local_hosts_are_this_machine_or_dot_local(host: str, local: bool) -> None:
    assert is_local_host(host) is local


def test_public_addresses_refuse_dot_local_names() -> None:
    assert list(public_url("X", "https://www.esim.local/renew", "the site"))
    assert list(public_url("X", "http://[::1]:8080/", "the site"))
    assert not list(public_url("X", "https://www.travel.example.com/renew", "the site"))


def test_provider_sandboxes_are_refused_and_live_addresses_kept() -> None:
    assert list(sandbox_url("X", "https://api-m.sandbox.paypal.com", "live"))
    assert list(sandbox_url("X", "https://openapi-sandbox.dl.alipaydev.com/gateway.do", "live"))
    assert list(sandbox_url("X", "http://127.0.0.1:8010/stripe", "live"))
    assert not list(sandbox_url("X", "https://api-m.paypal.com", "live"))


def test_demo_secrets_are_known_values_or_marked() -> None:
    assert list(demo_secret("S", SecretStr("compose-demo-only-jwt-secret"), "other"))
    assert list(demo_secret("S", "exactly-the-default", "exactly-the-default"))
    assert not list(demo_secret("S", SecretStr("q8Vt0m3JxZ1r4nD0m-Bytes-aF9"), "other"))
    assert not list(demo_secret("S", None))
