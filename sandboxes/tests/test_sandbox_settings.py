"""A sandbox's settings come from `<PREFIX><FIELD>` variables, each read by its field's type."""

from pathlib import Path

import pytest
from sandboxes.esim import EsimSandboxSettings
from sandboxes.payment import PaymentSandboxSettings
from sandboxes.providers.paypal import PayPalSandboxSettings
from sandboxes.providers.stripe import StripeSettings
from sandboxes.sms import SmsSandboxSettings


def test_every_esim_setting_is_read_from_its_variable_by_its_type(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in {
        "HOST": "0.0.0.0",
        "PORT": "9011",
        "CARDS_CSV": "/tmp/cards.csv",
        "ACTIVATION_DELAY": "1.5",
        "SLOW_DELAY": "7",
        "USAGE_MB_PER_MIN": "2.5",
        "USAGE_POLLS_PER_MIN": "30",
        "CALLBACK_URL": "http://127.0.0.1:8002/v1/callbacks",
        "CALLBACK_SECRET": "another-secret",
        "CALLBACK_ATTEMPTS": "5",
        "TICK_S": "0.5",
    }.items():
        monkeypatch.setenv(f"ESIM_SANDBOX_{name}", value)
    assert EsimSandboxSettings.from_env() == EsimSandboxSettings(
        host="0.0.0.0",
        port=9011,
        cards_csv=Path("/tmp/cards.csv"),
        activation_delay=1.5,
        slow_delay=7.0,
        usage_mb_per_min=2.5,
        usage_polls_per_min=30,
        callback_url="http://127.0.0.1:8002/v1/callbacks",
        callback_secret="another-secret",
        callback_attempts=5,
        tick_s=0.5,
    )


def test_unset_or_empty_variables_and_a_zero_tick_keep_the_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SMS_SANDBOX_HOST", raising=False)
    monkeypatch.setenv("SMS_SANDBOX_PORT", "")
    monkeypatch.setenv("ESIM_SANDBOX_TICK_S", "0")
    assert SmsSandboxSettings.from_env() == SmsSandboxSettings()
    assert EsimSandboxSettings.from_env().tick_s == EsimSandboxSettings.tick_s


def test_a_malformed_variable_is_refused_by_its_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMS_SANDBOX_PORT", "eighty")
    with pytest.raises(ValueError, match="SMS_SANDBOX_PORT must be an integer, got 'eighty'"):
        SmsSandboxSettings.from_env()
    monkeypatch.setenv("ESIM_SANDBOX_SLOW_DELAY", "-1")
    with pytest.raises(ValueError, match="ESIM_SANDBOX_SLOW_DELAY must not be negative"):
        EsimSandboxSettings.from_env()


def test_the_payment_sandbox_and_its_providers_read_their_variables_by_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PAYMENT_SANDBOX_PORT", "9010")
    monkeypatch.setenv("PAYMENT_SANDBOX_WEBHOOK_URL", "http://127.0.0.1:8001")
    monkeypatch.setenv("PAYMENT_SANDBOX_PAYPAL_REDELIVERY_SCALE", "0.5")
    monkeypatch.setenv("PAYMENT_SANDBOX_STRIPE_WEBHOOK_SECRET", "whsec_other")
    payment = PaymentSandboxSettings.from_env()
    assert (payment.port, payment.webhook_base_url) == (9010, "http://127.0.0.1:8001")
    assert PayPalSandboxSettings.from_env().redelivery_scale == 0.5
    assert StripeSettings.from_env().webhook_secret == "whsec_other"
