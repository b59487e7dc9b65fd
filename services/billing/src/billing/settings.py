"""Billing settings, read from `BILLING_*` environment variables."""

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

from esim_core.production import LocalDefault, demo_secret, public_url, sandbox_url
from esim_core.settings import (
    ServiceSettings,
    call_attempts_field,
    call_backoff_max_field,
    call_timeout_field,
    lease_outlasts_a_round,
    round_backoff_field,
    round_backoff_max_field,
    worker_batch_field,
    worker_lease_field,
)
from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

_MAX_DELAY_S = 30 * 86400.0
_URL = r"^https?://[^\s/]+[^\s]*$"
#: The payment sandbox's merchant app id, the default of BILLING_ALIPAY_APP_ID.
SANDBOX_ALIPAY_APP_ID = "2021000000000001"


class BillingSettings(ServiceSettings):
    """What the billing service needs to run: its gateway and its retry rules."""

    model_config = SettingsConfigDict(env_prefix="BILLING_", extra="ignore", frozen=True)
    caps = {"retry_backoff_max_s": "retry_backoff_s"}

    database_url: str = Field(
        "sqlite+aiosqlite:///var/db/billing.sqlite", description="the billing database"
    )
    http_port: int = Field(8001, ge=1, le=65535, description="port of the billing HTTP API")

    stripe_base_url: str = Field(
        "http://127.0.0.1:8010/stripe",
        pattern=_URL,
        description="Stripe's API (card payments): `https://api.stripe.com` in production, "
        "the payment sandbox's `/stripe` in the local run",
    )
    stripe_api_key: SecretStr = Field(
        SecretStr("sk_test_sandbox"), description="Stripe's secret key (`sk_...`); never logged"
    )
    stripe_webhook_secret: SecretStr = Field(
        SecretStr("whsec_sandbox"),
        description="the signing secret of billing's Stripe webhook endpoint (`whsec_...`)",
    )
    paypal_base_url: str = Field(
        "http://127.0.0.1:8010/paypal",
        pattern=_URL,
        description="PayPal's REST API: `https://api-m.paypal.com` in production, the payment "
        "sandbox's `/paypal` in the local run",
    )
    paypal_client_id: str = Field("sandbox-paypal-client", min_length=1, max_length=256)
    paypal_client_secret: SecretStr = Field(
        SecretStr("sandbox-paypal-secret"), description="PayPal's client secret; never logged"
    )
    paypal_webhook_id: str = Field(
        "SANDBOXWEBHOOK0000000001",
        min_length=1,
        max_length=128,
        description="the id PayPal gave billing's webhook (its signature is verified by it)",
    )
    alipay_gateway_url: str = Field(
        "http://127.0.0.1:8010/alipay/gateway.do",
        pattern=_URL,
        description="Alipay's gateway: `https://openapi.alipay.com/gateway.do` in production",
    )
    alipay_app_id: str = Field(
        SANDBOX_ALIPAY_APP_ID, min_length=1, max_length=32, description="the merchant app's id"
    )
    alipay_app_private_key: SecretStr | None = Field(
        None, description="the app's RSA2 private key (PEM); or `alipay_app_private_key_file`"
    )
    alipay_app_private_key_file: Path | None = Field(
        None, description="a file holding the app's RSA2 private key (PEM)"
    )
    alipay_public_key: str | None = Field(
        None, description="Alipay's RSA2 public key (PEM), to verify its answers and notifies"
    )
    alipay_public_key_file: Path | None = Field(
        None, description="a file holding Alipay's RSA2 public key (PEM)"
    )
    public_url: str = Field(
        "http://127.0.0.1:8001",
        pattern=_URL,
        description="billing's address as the providers reach it (Alipay's `notify_url` is "
        "`<public_url>/webhooks/alipay`)",
    )
    return_url: str = Field(
        "http://127.0.0.1:8080/renewals/return",
        pattern=_URL,
        description="where a provider sends the buyer back after an approval step, when the "
        "payment names no `return_url` of its own",
    )
    approval_expiry_s: float = Field(
        1800.0,
        ge=5,
        le=86400,
        description="the longest billing waits for the buyer's approval before it asks the "
        "provider and, still waiting, closes the payment (`not_approved`)",
    )
    unknown_schedule_s: Annotated[tuple[float, ...], NoDecode] = Field(
        (5.0, 30.0, 120.0, 600.0, 1800.0),
        description="seconds between the look-ups of a payment whose call's answer was lost, "
        "comma separated; past it the payment is listed by `esimctl payments unknown` (and "
        "still asked about at the last pause)",
    )
    capture_window_s: float = Field(
        7 * 86400.0,
        gt=0,
        le=30 * 86400,
        description="an authorization's capture window where the provider does not say",
    )
    gateway_timeout_s: float = call_timeout_field(
        10.0, "timeout of one gateway request (a `_slow` charge takes ~2 s)"
    )
    gateway_attempts: int = call_attempts_field(
        4, "tries of one gateway call within a round, on transient errors"
    )
    gateway_backoff_max_s: float = call_backoff_max_field(
        2.0, "longest jittered wait between two tries within a round"
    )
    dunning_schedule_s: Annotated[tuple[float, ...], NoDecode] = Field(
        (30.0, 120.0, 600.0),
        description="seconds to wait before each new charge after a soft decline "
        "(insufficient funds), comma separated, e.g. `30,120,600`; when it is used up the "
        "payment fails",
    )
    max_transient_rounds: int = Field(
        5,
        ge=1,
        le=100,
        description="rounds in a row the gateway may be unavailable before a payment fails "
        "(provider_unavailable) or a refund is parked as failed",
    )
    retry_backoff_s: float = round_backoff_field(
        5.0, "pause after the first unavailable round; doubles each round"
    )
    retry_backoff_max_s: float = round_backoff_max_field(
        300.0, "longest pause between two unavailable rounds"
    )
    worker_batch: int = worker_batch_field(
        50, "payments (or refunds) in flight at once: each a gateway call and a commit"
    )
    webhook_retention_s: float = Field(
        31 * 24 * 3600.0,
        ge=3600,
        description="how long the id of a provider's webhook call (Stripe event, PayPal event, "
        "Alipay notify) is kept, so that the same call sent again is applied once; past it the "
        "id is purged. The providers retry an unanswered call for up to 3 days (Alipay about "
        "25 hours), and Stripe lists and resends the events of the last 30 days on request: "
        "31 days outlasts them all",
    )
    worker_lease_s: float = worker_lease_field(
        60.0,
        "how long a claimed payment or refund is reserved for one replica's round; "
        "longer than a round can take",
    )

    @field_validator("dunning_schedule_s", "unknown_schedule_s", mode="before")
    @classmethod
    def _parse_schedule(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        parts = [part.strip() for part in value.split(",")]
        try:
            delays = tuple(float(part) for part in parts)
        except ValueError:
            raise ValueError(
                f"must be comma-separated seconds such as '30,120,600', got {value!r}"
            ) from None
        return delays

    @field_validator("dunning_schedule_s", "unknown_schedule_s")
    @classmethod
    def _check_schedule(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value:
            raise ValueError("needs at least one delay in seconds, e.g. '30,120,600'")
        for delay in value:
            if not math.isfinite(delay) or delay <= 0 or delay > _MAX_DELAY_S:
                raise ValueError(
                    f"each delay must be a positive number of seconds up to {_MAX_DELAY_S:.0f}, "
                    f"got {delay:g}"
                )
        return value

    @field_validator("worker_lease_s")
    @classmethod
    def _lease_outlasts_a_round(cls, value: float, info: ValidationInfo) -> float:
        return lease_outlasts_a_round(cls, value, info, "gateway", "gateway")

    @model_validator(mode="after")
    def _one_key_source(self) -> "BillingSettings":
        for name in ("alipay_app_private_key", "alipay_public_key"):
            if getattr(self, name) is not None and getattr(self, f"{name}_file") is not None:
                raise ValueError(
                    f"set BILLING_{name.upper()} or BILLING_{name.upper()}_FILE, not both"
                )
        return self

    @field_validator("alipay_app_private_key_file", "alipay_public_key_file")
    @classmethod
    def _a_readable_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no such file {str(value)!r}")
        return value

    def local_defaults(self) -> Iterator[LocalDefault]:
        """The settings that keep a local run's value (refused in production at start)."""
        yield from sandbox_url(
            "BILLING_STRIPE_BASE_URL", self.stripe_base_url, "https://api.stripe.com"
        )
        yield from sandbox_url(
            "BILLING_PAYPAL_BASE_URL", self.paypal_base_url, "https://api-m.paypal.com"
        )
        yield from sandbox_url(
            "BILLING_ALIPAY_GATEWAY_URL",
            self.alipay_gateway_url,
            "https://openapi.alipay.com/gateway.do",
        )
        yield from demo_secret("BILLING_STRIPE_API_KEY", self.stripe_api_key)
        if self.stripe_api_key.get_secret_value().startswith(("sk_test_", "rk_test_")):
            yield LocalDefault(
                "BILLING_STRIPE_API_KEY",
                "is a Stripe test-mode key, which moves no money; give the live key (sk_live_...)",
            )
        yield from demo_secret("BILLING_STRIPE_WEBHOOK_SECRET", self.stripe_webhook_secret)
        yield from demo_secret("BILLING_PAYPAL_CLIENT_ID", self.paypal_client_id)
        yield from demo_secret("BILLING_PAYPAL_CLIENT_SECRET", self.paypal_client_secret)
        yield from demo_secret("BILLING_PAYPAL_WEBHOOK_ID", self.paypal_webhook_id)
        yield from demo_secret("BILLING_ALIPAY_APP_ID", self.alipay_app_id, SANDBOX_ALIPAY_APP_ID)
        yield from public_url(
            "BILLING_PUBLIC_URL", self.public_url, "billing's address as the providers reach it"
        )
        yield from public_url(
            "BILLING_RETURN_URL", self.return_url, "the website's page for a returning buyer"
        )

    def alipay_app_private_key_pem(self) -> str | None:
        """The app's private key, from the setting or its file; None where neither is set."""
        if self.alipay_app_private_key_file is not None:
            return self.alipay_app_private_key_file.read_text()
        if self.alipay_app_private_key is not None:
            return self.alipay_app_private_key.get_secret_value()
        return None

    def alipay_public_key_pem(self) -> str | None:
        """Alipay's public key, from the setting or its file; None where neither is set."""
        if self.alipay_public_key_file is not None:
            return self.alipay_public_key_file.read_text()
        return self.alipay_public_key
