"""Settings: sensible defaults, and bad values stop the service with a message naming them."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from esim_core.production import LocalDefaultsError, refuse_local_defaults
from esim_core.settings import SettingsError, load_settings
from notifier.settings import NotifierSettings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("NOTIFIER_"):
            monkeypatch.delenv(name)


def test_defaults_match_the_local_run() -> None:
    settings = load_settings(NotifierSettings)

    assert settings.http_port == 8003
    assert settings.database_url == "sqlite+aiosqlite:///var/db/notifier.sqlite"
    assert (settings.smtp_host, settings.smtp_port) == ("127.0.0.1", 1025)
    assert settings.mail_from == "eSIM <no-reply@esim.local>"
    assert settings.mail_domain == "esim.local"
    assert settings.contact_wait_s == 600
    assert settings.max_send_rounds == 8
    assert settings.smtp_username is None


def test_a_real_relay_is_configured_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NOTIFIER_SMTP_HOST", "smtp.example.com")
    monkeypatch.setenv("NOTIFIER_SMTP_PORT", "587")
    monkeypatch.setenv("NOTIFIER_SMTP_USERNAME", "mailer")
    monkeypatch.setenv("NOTIFIER_SMTP_PASSWORD", "hunter2-long-secret")
    monkeypatch.setenv("NOTIFIER_SMTP_STARTTLS", "true")
    monkeypatch.setenv("NOTIFIER_MAIL_FROM", "Travel eSIM <noreply@travel.example.com>")
    monkeypatch.setenv("NOTIFIER_CONTACT_WAIT_S", "120")
    monkeypatch.setenv("NOTIFIER_MAX_SEND_ROUNDS", "3")

    settings = load_settings(NotifierSettings)

    assert settings.smtp_starttls is True
    assert settings.mail_domain == "travel.example.com"
    assert (settings.contact_wait_s, settings.max_send_rounds) == (120, 3)
    assert "hunter2" not in repr(settings)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"NOTIFIER_SMTP_PORT": "0"}, "NOTIFIER_SMTP_PORT: Input should be greater than"),
        ({"NOTIFIER_SMTP_PORT": "smtp"}, "NOTIFIER_SMTP_PORT: Input should be a valid integer"),
        ({"NOTIFIER_SMTP_HOST": "smtp host"}, "NOTIFIER_SMTP_HOST"),
        ({"NOTIFIER_MAIL_FROM": "no-reply"}, "NOTIFIER_MAIL_FROM must be an e-mail address"),
        ({"NOTIFIER_CONTACT_WAIT_S": "-1"}, "NOTIFIER_CONTACT_WAIT_S"),
        ({"NOTIFIER_MAX_SEND_ROUNDS": "0"}, "NOTIFIER_MAX_SEND_ROUNDS"),
        (
            {"NOTIFIER_SMTP_USERNAME": "mailer"},
            "NOTIFIER_SMTP_PASSWORD: Value error, NOTIFIER_SMTP_USERNAME and "
            "NOTIFIER_SMTP_PASSWORD must be set together",
        ),
        (
            {"NOTIFIER_SMTP_STARTTLS": "true", "NOTIFIER_SMTP_USE_TLS": "true"},
            "exclude each other",
        ),
        (
            {
                "NOTIFIER_SMTP_HOST": "smtp.example.com",
                "NOTIFIER_SMTP_USERNAME": "mailer",
                "NOTIFIER_SMTP_PASSWORD": "hunter2-long-secret",
            },
            "the password would travel in clear",
        ),
        (
            {"NOTIFIER_SEND_BACKOFF_S": "7200"},
            "NOTIFIER_SEND_BACKOFF_MAX_S: Value error, must not be smaller",
        ),
        (
            {"NOTIFIER_SMTP_TIMEOUT_S": "120"},
            "NOTIFIER_SEND_LEASE_S: Value error, must be at least twice",
        ),
    ],
)
def test_bad_settings_fail_with_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    with pytest.raises(SettingsError) as caught:
        load_settings(NotifierSettings)

    assert message in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_the_service_refuses_to_start_with_bad_settings(tmp_path: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("NOTIFIER_")},
        "NOTIFIER_SMTP_PORT": "70000",
        "NOTIFIER_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/n.sqlite",
    }

    done = subprocess.run(
        [sys.executable, "-m", "notifier"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode != 0
    assert "NOTIFIER_SMTP_PORT: Input should be less than or equal to 65535" in done.stderr
    assert "Traceback" not in done.stderr


#: Everything the notifier needs in production, none of it a local run's value.
PRODUCTION = {
    "KAFKA_BOOTSTRAP_SERVERS": "kafka.invalid:9092",
    "REDIS_URL": "redis://redis.invalid:6379/0",
    "RESET_CODE_KEY": "Xq3v9L2mT7wR8pZ1kB4nC6yH0sD5fG2j",
    "OPERATOR_TOKEN": "Vb7Kp2Qx9Lm4Rt8Zw1Nc",
    "NOTIFIER_DATABASE_URL": "postgresql+asyncpg://notifier:pw@db.invalid:5432/notifier",
    "NOTIFIER_RENEW_URL": "https://www.travel.example.com/cards/{iccid}/renew",
    "NOTIFIER_MAIL_FROM": "Travel eSIM <noreply@travel.example.com>",
    "NOTIFIER_SMTP_HOST": "smtp.travel.example.com",
    "NOTIFIER_SMTP_PORT": "587",
    "NOTIFIER_SMTP_STARTTLS": "true",
    "NOTIFIER_SMTP_USERNAME": "mailer",
    "NOTIFIER_SMTP_PASSWORD": "Hq8Zr2Lx7Vm3Pt9K",
    "NOTIFIER_SMS_GATEWAY_URL": "https://sms.travel.example.com",
    "NOTIFIER_SMS_USERNAME": "AC0001",
    "NOTIFIER_SMS_PASSWORD": "Tk4Wn8Yb2Qs6Jd1F",
}


def production_env(monkeypatch: pytest.MonkeyPatch, **changes: str | None) -> None:
    monkeypatch.delenv("ESIM_ENV", raising=False)
    for name, value in {**PRODUCTION, **changes}.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)


def test_production_settings_without_local_values_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    production_env(monkeypatch)

    refuse_local_defaults(load_settings(NotifierSettings))


def test_production_refuses_each_local_default_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    production_env(
        monkeypatch,
        NOTIFIER_RENEW_URL=None,
        NOTIFIER_MAIL_FROM=None,
        NOTIFIER_SMTP_HOST="127.0.0.1",
        NOTIFIER_SMTP_STARTTLS=None,
        NOTIFIER_SMTP_USERNAME=None,
        NOTIFIER_SMTP_PASSWORD=None,
        NOTIFIER_SMS_GATEWAY_URL=None,
        RESET_CODE_KEY=None,
    )

    with pytest.raises(LocalDefaultsError) as caught:
        refuse_local_defaults(load_settings(NotifierSettings))

    message = str(caught.value)
    for setting in (
        "NOTIFIER_RENEW_URL: points at this machine (http://127.0.0.1:8000/docs#/renewals)",
        "NOTIFIER_MAIL_FROM: sends from the local domain 'esim.local'",
        "NOTIFIER_SMTP_STARTTLS: SMTP without TLS",
        "NOTIFIER_SMTP_USERNAME: SMTP without credentials",
        "NOTIFIER_SMS_GATEWAY_URL: points at this machine",
        "RESET_CODE_KEY: is a demo or placeholder value",
    ):
        assert setting in message
    assert "local-development-only" not in message


def test_a_local_run_keeps_the_local_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESIM_ENV", "local")

    refuse_local_defaults(load_settings(NotifierSettings))


def test_the_service_refuses_to_start_with_a_local_renew_url(tmp_path: Path) -> None:
    """A Python process importing the notifier: a few seconds. Kafka, Redis and PostgreSQL are
    unreachable names: the check stops the process before anything connects."""
    env = {
        **{
            name: value
            for name, value in os.environ.items()
            if not name.startswith("NOTIFIER_") and name != "ESIM_ENV"
        },
        **PRODUCTION,
        "NOTIFIER_RENEW_URL": "http://localhost:8080/renew",
    }

    done = subprocess.run(
        [sys.executable, "-m", "notifier"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 1
    assert "NOTIFIER_RENEW_URL: points at this machine (http://localhost:8080/renew)" in done.stderr
    assert "NOTIFIER_SMTP" not in done.stderr  # the rest is production-ready
    assert "Traceback" not in done.stderr
