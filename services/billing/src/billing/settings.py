"""Billing settings, read from `BILLING_*` environment variables."""

import math
from typing import Annotated, Any, Literal

from esim_core.settings import ServiceSettings, lease_outlasts_a_round, not_below
from pydantic import Field, ValidationInfo, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

_MAX_DELAY_S = 30 * 86400.0


class BillingSettings(ServiceSettings):
    """What the billing service needs to run: its gateway and its retry rules."""

    model_config = SettingsConfigDict(env_prefix="BILLING_", extra="ignore", frozen=True)

    database_url: str = Field(
        "sqlite+aiosqlite:///var/db/billing.sqlite", description="the billing database"
    )
    http_port: int = Field(8001, ge=1, le=65535, description="port of the billing HTTP API")

    payment_gateway: Literal["http"] = Field(
        "http",
        description="which adapter charges and refunds: `http` is the one HTTP gateway adapter "
        "that serves card, PayPal and Alipay (the sandbox's and the provider's API)",
    )
    payment_gateway_url: str = Field(
        "http://127.0.0.1:8010",
        pattern=r"^https?://[^\s/]+",
        description="base URL of the payment gateway (the sandbox in the local run)",
    )
    gateway_timeout_s: float = Field(
        10.0,
        gt=0,
        le=120,
        description="timeout of one gateway request (a `_slow` charge takes ~2 s)",
    )
    gateway_attempts: int = Field(
        4, ge=1, le=10, description="tries of one gateway call within a round, on transient errors"
    )
    gateway_backoff_max_s: float = Field(
        2.0, gt=0, le=60, description="longest jittered wait between two tries within a round"
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
    retry_backoff_s: float = Field(
        5.0,
        gt=0,
        le=3600,
        description="pause after the first unavailable round; doubles each round",
    )
    retry_backoff_max_s: float = Field(
        300.0,
        gt=0,
        le=86400,
        validate_default=True,
        description="longest pause between two unavailable rounds",
    )
    worker_batch: int = Field(
        50,
        ge=1,
        le=500,
        description="payments (or refunds) in flight at once: each a gateway call and a commit",
    )
    worker_lease_s: float = Field(
        60.0,
        gt=0,
        le=3600,
        validate_default=True,
        description="how long a claimed payment or refund is reserved for one replica's round; "
        "longer than a round can take",
    )

    @field_validator("dunning_schedule_s", mode="before")
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

    @field_validator("dunning_schedule_s")
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

    @field_validator("retry_backoff_max_s")
    @classmethod
    def _cap_not_below_base(cls, value: float, info: ValidationInfo) -> float:
        return not_below(cls, value, info, "retry_backoff_s")

    @field_validator("worker_lease_s")
    @classmethod
    def _lease_outlasts_a_round(cls, value: float, info: ValidationInfo) -> float:
        return lease_outlasts_a_round(cls, value, info, "gateway", "gateway")
