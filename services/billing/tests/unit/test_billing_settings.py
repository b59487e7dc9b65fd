"""Settings: defaults, the dunning schedule, and clear errors for what cannot be used."""

from pathlib import Path

import pytest
from billing import bootstrap
from billing.api import http_app
from billing.settings import BillingSettings
from billing_testkit import FakeGateway, router_of
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from esim_core.production import LocalDefaultsError, refuse_local_defaults
from esim_core.settings import SettingsError, load_settings
from esim_core.web.operator import OperatorAuth


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("BILLING_"):
            monkeypatch.delenv(name)


def test_defaults() -> None:
    settings = load_settings(BillingSettings)
    assert settings.http_port == 8001
    assert settings.database_url == "sqlite+aiosqlite:///var/db/billing.sqlite"
    assert settings.stripe_base_url == "http://127.0.0.1:8010/stripe"
    assert settings.paypal_base_url == "http://127.0.0.1:8010/paypal"
    assert settings.alipay_gateway_url == "http://127.0.0.1:8010/alipay/gateway.do"
    assert settings.unknown_schedule_s == (5.0, 30.0, 120.0, 600.0, 1800.0)
    assert settings.dunning_schedule_s == (30.0, 120.0, 600.0)
    assert settings.max_transient_rounds == 5


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [("30,120,600", (30.0, 120.0, 600.0)), (" 0.5, 1 ", (0.5, 1.0)), ("60", (60.0,))],
)
def test_the_dunning_schedule_is_comma_separated_seconds(
    monkeypatch: pytest.MonkeyPatch, raw: str, parsed: tuple[float, ...]
) -> None:
    monkeypatch.setenv("BILLING_DUNNING_SCHEDULE_S", raw)
    assert load_settings(BillingSettings).dunning_schedule_s == parsed


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("a,b", "must be comma-separated seconds such as '30,120,600', got 'a,b'"),
        ("30,,600", "must be comma-separated seconds"),
        ("", "must be comma-separated seconds"),
        ("30,-1", "each delay must be a positive number of seconds"),
        ("30,nan", "each delay must be a positive number of seconds"),
    ],
)
def test_a_bad_dunning_schedule_names_the_variable_and_the_problem(
    monkeypatch: pytest.MonkeyPatch, raw: str, message: str
) -> None:
    monkeypatch.setenv("BILLING_DUNNING_SCHEDULE_S", raw)
    with pytest.raises(SettingsError) as raised:
        load_settings(BillingSettings)
    text = str(raised.value)
    assert "BILLING_DUNNING_SCHEDULE_S" in text
    assert message in text


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("BILLING_MAX_TRANSIENT_ROUNDS", "0"),
        ("BILLING_STRIPE_BASE_URL", "payments.example"),
        ("BILLING_RETURN_URL", "/renewals/return"),
        ("BILLING_APPROVAL_EXPIRY_S", "4"),
        ("BILLING_UNKNOWN_SCHEDULE_S", "5,soon"),
        ("BILLING_ALIPAY_APP_PRIVATE_KEY_FILE", "/nonexistent/app.pem"),
        ("BILLING_WORKER_LEASE_S", "20"),
        ("BILLING_RETRY_BACKOFF_MAX_S", "1"),
    ],
)
def test_other_bad_values_name_their_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=name):
        load_settings(BillingSettings)


def test_the_lease_must_outlast_a_round(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BILLING_GATEWAY_ATTEMPTS", "10")
    with pytest.raises(SettingsError, match=r"BILLING_WORKER_LEASE_S: .*longest gateway round"):
        load_settings(BillingSettings)


async def test_bootstrap_wires_the_consumers_the_webhooks_and_the_operator_routes(
    tmp_path: object,
) -> None:
    settings = BillingSettings(database_url=f"sqlite+aiosqlite:///{tmp_path}/b.sqlite")
    billing = bootstrap.build(settings, gateway=router_of(FakeGateway()))
    try:
        consumer = billing.runtime.subscribe()
        assert consumer is not None
        assert sorted(consumer.topics) == [
            "esim.payment.requested",
            "esim.profile.activated",
            "esim.refund.requested",
        ]
        app = http_app(billing.runtime, OperatorAuth("operator-token-for-tests"))
        paths = set(app.openapi()["paths"])
        assert {
            "/v1/payments/{renewal_id}",
            "/v1/refunds/{renewal_id}",
            "/v1/payments/unknown",
            "/v1/payments/overdue",
            "/v1/payments/reconciliation",
            "/webhooks/stripe",
            "/webhooks/paypal",
            "/webhooks/alipay",
        } <= paths
        windows = {each.kind: each for each in billing.runtime.purger.retentions}
        assert windows["webhook inbox"].keep_s == settings.webhook_retention_s == 31 * 86400
        assert windows["webhook inbox"].only == {
            "consumer": ["webhook:stripe", "webhook:paypal", "webhook:alipay"]
        }
    finally:
        await billing.runtime.stop()


def _key_pair(folder: Path, name: str) -> tuple[Path, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private, public = folder / f"{name}_private.pem", folder / f"{name}_public.pem"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


async def test_each_method_goes_to_its_providers_adapter_alipay_only_with_its_keys(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app_private, _ = _key_pair(tmp_path, "app")
    _, alipay_public = _key_pair(tmp_path, "alipay")
    full = bootstrap.build_gateway(
        BillingSettings(
            alipay_app_private_key_file=app_private, alipay_public_key_file=alipay_public
        )
    )
    without_keys = bootstrap.build_gateway(BillingSettings())
    try:
        assert {m: type(a).__name__ for m, a in full.adapters.items()} == {
            "card": "StripeGateway",
            "paypal": "PayPalGateway",
            "alipay": "AlipayGateway",
        }
        assert set(without_keys.adapters) == {"card", "paypal"}
        assert "Alipay is not configured" in caplog.text
        assert app_private.read_text() not in caplog.text
    finally:
        await full.aclose()
        await without_keys.aclose()


def live_billing(**changes: str) -> BillingSettings:
    """Billing's settings as production has them, none a local run's value, with `changes`."""
    values = {
        "kafka_bootstrap_servers": "kafka.internal:9092",
        "redis_url": "redis://redis.internal:6379/0",
        "database_url": "postgresql+asyncpg://billing:pw@db.internal:5432/billing",
        "stripe_base_url": "https://api.stripe.com",
        "stripe_api_key": "sk_live_51Hx7Qm2Vb9Lp4Rt8Zw1Nc",
        "stripe_webhook_secret": "whsec_Kq8Zr2Lx7Vm3Pt9Ka",
        "paypal_base_url": "https://api-m.paypal.com",
        "paypal_client_id": "AbX7Qm2Vb9Lp4Rt8",
        "paypal_client_secret": "EJq8Zr2Lx7Vm3Pt9",
        "paypal_webhook_id": "8PT597110X687430LKGECATA",
        "alipay_gateway_url": "https://openapi.alipay.com/gateway.do",
        "alipay_app_id": "2021004112345678",
        "public_url": "https://billing.travel.example.com",
        "return_url": "https://www.travel.example.com/renewals/return",
        **changes,
    }
    return BillingSettings.model_validate(values)


def test_production_settings_without_local_values_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ESIM_ENV", raising=False)

    refuse_local_defaults(live_billing())


def test_production_refuses_the_sandboxes_and_their_keys_by_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("ESIM_ENV", raising=False)
    # The local run's values (the settings' defaults), and the providers' own test systems.
    settings = live_billing(
        stripe_base_url="http://127.0.0.1:8010/stripe",
        stripe_api_key="sk_test_sandbox",
        stripe_webhook_secret="whsec_sandbox",
        paypal_base_url="https://api-m.sandbox.paypal.com",
        paypal_client_id="sandbox-paypal-client",
        paypal_client_secret="sandbox-paypal-secret",
        paypal_webhook_id="SANDBOXWEBHOOK0000000001",
        alipay_gateway_url="https://openapi-sandbox.dl.alipaydev.com/gateway.do",
        alipay_app_id="2021000000000001",
        public_url="http://127.0.0.1:8001",
        return_url="http://localhost:8080/renewals/return",
    )

    with pytest.raises(LocalDefaultsError) as caught:
        refuse_local_defaults(settings)

    message = str(caught.value)
    for setting in (
        "BILLING_STRIPE_BASE_URL: points at this machine",
        "BILLING_STRIPE_API_KEY: is a demo or placeholder value",
        "BILLING_STRIPE_API_KEY: is a Stripe test-mode key",
        "BILLING_STRIPE_WEBHOOK_SECRET: is a demo",
        "BILLING_PAYPAL_BASE_URL: is a sandbox (https://api-m.sandbox.paypal.com)",
        "BILLING_PAYPAL_CLIENT_ID: is a demo",
        "BILLING_PAYPAL_CLIENT_SECRET: is a demo",
        "BILLING_PAYPAL_WEBHOOK_ID: is a demo",
        "BILLING_ALIPAY_GATEWAY_URL: is a sandbox",
        "BILLING_ALIPAY_APP_ID: is a demo",
        "BILLING_PUBLIC_URL: points at this machine",
        "BILLING_RETURN_URL: points at this machine",
    ):
        assert setting in message
    assert "sk_test_sandbox" not in message and "whsec_sandbox" not in message
