"""Settings: sensible defaults, and bad values stop the service with a message naming them."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
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
