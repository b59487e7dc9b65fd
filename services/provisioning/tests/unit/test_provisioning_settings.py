"""Settings: defaults, and clear errors naming each variable that cannot be used."""

import os
from pathlib import Path

import pytest
from esim_core.production import LocalDefaultsError, refuse_local_defaults
from esim_core.settings import SettingsError, load_settings
from esim_core.web.operator import OperatorAuth
from provisioning import bootstrap
from provisioning.api import http_app
from provisioning.platforms.http import HttpEsimPlatform
from provisioning.settings import ProvisioningSettings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("PROVISIONING_"):
            monkeypatch.delenv(name)


def test_defaults() -> None:
    settings = load_settings(ProvisioningSettings)
    assert settings.http_port == 8002
    assert settings.database_url == "sqlite+aiosqlite:///var/db/provisioning.sqlite"
    assert settings.esim_platform == "http"
    assert settings.esim_platform_url == "http://127.0.0.1:8011"
    assert settings.activation_deadline_s == 86400
    assert settings.poll_interval_s == 0.5
    assert settings.callback_retention_s == 7 * 24 * 3600


def test_values_come_from_prefixed_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROVISIONING_ESIM_PLATFORM_URL", "https://esim.example.com/api")
    monkeypatch.setenv("PROVISIONING_ACTIVATION_DEADLINE_S", "3600")
    monkeypatch.setenv("PROVISIONING_POLL_INTERVAL_S", "0.2")
    settings = load_settings(ProvisioningSettings)
    assert settings.esim_platform_url == "https://esim.example.com/api"
    assert (settings.activation_deadline_s, settings.poll_interval_s) == (3600, 0.2)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("PROVISIONING_ESIM_PLATFORM_URL", "esim.example", "should match pattern"),
        ("PROVISIONING_ESIM_PLATFORM", "smdp", "Input should be 'http'"),
        ("PROVISIONING_ACTIVATION_DEADLINE_S", "0", "greater than 0"),
        ("PROVISIONING_ACTIVATION_DEADLINE_S", "a day", "valid number"),
        ("PROVISIONING_POLL_INTERVAL_S", "-1", "greater than 0"),
        ("PROVISIONING_POLL_INTERVAL_MAX_S", "0.1", "must not be below PROVISIONING_POLL"),
        ("PROVISIONING_RETRY_BACKOFF_MAX_S", "0.5", "must not be below PROVISIONING_RETRY"),
        ("PROVISIONING_USAGE_POLL_INTERVAL_MAX_S", "5", "must not be below PROVISIONING_USAGE"),
        ("PROVISIONING_PLATFORM_ATTEMPTS", "0", "greater than or equal to 1"),
        ("PROVISIONING_WORKER_LEASE_S", "20", "must exceed the longest platform round, 46 s"),
        ("PROVISIONING_HTTP_PORT", "70000", "less than or equal to 65535"),
        ("PROVISIONING_CALLBACK_RETENTION_S", "600", "must exceed twice PROVISIONING_CALLBACK"),
    ],
)
def test_a_bad_value_names_its_variable_and_the_problem(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as raised:
        load_settings(ProvisioningSettings)
    text = str(raised.value)
    assert text.startswith("ProvisioningSettings: invalid settings")
    assert f"{name}: " in text
    assert message in text


def test_a_longer_round_needs_a_longer_lease(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROVISIONING_PLATFORM_TIMEOUT_S", "30")
    with pytest.raises(SettingsError, match=r"PROVISIONING_WORKER_LEASE_S: .*longest platform"):
        load_settings(ProvisioningSettings)
    monkeypatch.setenv("PROVISIONING_WORKER_LEASE_S", "300")
    assert load_settings(ProvisioningSettings).worker_lease_s == 300


async def test_bootstrap_wires_the_http_platform_and_the_consumer(
    tmp_path: Path,
) -> None:
    settings = ProvisioningSettings(database_url=f"sqlite+aiosqlite:///{tmp_path}/p.sqlite")
    built = bootstrap.build(settings)
    try:
        assert isinstance(built.platform, HttpEsimPlatform)
        consumer = built.runtime.subscribe()
        assert consumer is not None
        assert consumer.topics == [
            "esim.payment.settled",
            "esim.payment.authorized",
            "esim.bundle.cancel-requested",
        ]
        assert consumer.name == "provisioning"
        app = http_app(built.runtime, OperatorAuth("operator-token-for-tests"))
        paths = set(app.openapi()["paths"])
        assert {"/v1/activations/{renewal_id}", "/v1/activations"} <= paths
        windows = {each.kind: each.keep_s for each in built.runtime.purger.retentions}
        assert windows["callback"] == settings.callback_retention_s
    finally:
        await built.runtime.stop()
    # The stop closed the platform's pool with the rest.
    assert isinstance(built.platform, HttpEsimPlatform)
    with pytest.raises(RuntimeError, match="closed"):
        await built.platform.call("GET", "/v1/bundles")


def live_provisioning(**changes: str) -> ProvisioningSettings:
    """Provisioning's settings as production has them, none a local run's value."""
    values = {
        "kafka_bootstrap_servers": "kafka.internal:9092",
        "redis_url": "redis://redis.internal:6379/0",
        "database_url": "postgresql+asyncpg://provisioning:pw@db.internal:5432/provisioning",
        "esim_platform_url": "https://api.esim-platform.example.com",
        "callback_secret": "Rk2Wq8Zm4Lx7Vb3Pt9Nc",
        **changes,
    }
    return ProvisioningSettings.model_validate(values)


def test_production_settings_without_local_values_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ESIM_ENV", raising=False)

    refuse_local_defaults(live_provisioning())


def test_production_refuses_the_sandbox_platform_and_its_secret_by_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("ESIM_ENV", raising=False)
    defaults = ProvisioningSettings()
    settings = live_provisioning(
        esim_platform_url=defaults.esim_platform_url,
        callback_secret=defaults.callback_secret.get_secret_value(),
    )

    with pytest.raises(LocalDefaultsError) as caught:
        refuse_local_defaults(settings)

    message = str(caught.value)
    assert "PROVISIONING_ESIM_PLATFORM_URL: points at this machine (http://127.0.0.1:8011)" in (
        message
    )
    assert "PROVISIONING_CALLBACK_SECRET: is a demo or placeholder value" in message
    assert "sandbox-callback-secret" not in message
