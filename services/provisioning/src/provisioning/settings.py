"""Provisioning settings, read from `PROVISIONING_*` environment variables."""

from collections.abc import Iterator
from typing import Literal

from esim_core.production import LocalDefault, demo_secret, sandbox_url
from esim_core.settings import (
    BaseUrl,
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
from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import SettingsConfigDict

_DAY_S = 86400.0
#: The eSIM sandbox's callback secret, the default of PROVISIONING_CALLBACK_SECRET.
SANDBOX_CALLBACK_SECRET = "sandbox-callback-secret"


class ProvisioningSettings(ServiceSettings):
    """What the provisioning service needs to run: its eSIM platform and its follow-up rules."""

    model_config = SettingsConfigDict(env_prefix="PROVISIONING_", extra="ignore", frozen=True)
    caps = {
        "poll_interval_max_s": "poll_interval_s",
        "retry_backoff_max_s": "retry_backoff_s",
        "usage_poll_interval_max_s": "usage_poll_interval_s",
    }

    database_url: str = Field(
        "sqlite+aiosqlite:///var/db/provisioning.sqlite", description="the provisioning database"
    )
    http_port: int = Field(8002, ge=1, le=65535, description="port of the provisioning HTTP API")

    esim_platform: Literal["http"] = Field(
        "http",
        description="which adapter orders bundles: `http` is the reseller-style HTTP API "
        "(`POST /v1/bundles`, `GET /v1/bundles/{order_id}`) that the sandbox emulates",
    )
    esim_platform_url: BaseUrl = Field(
        "http://127.0.0.1:8011",
        description="base URL of the eSIM platform (the sandbox in the local run)",
    )
    platform_timeout_s: float = call_timeout_field(10.0, "timeout of one eSIM platform request")
    platform_attempts: int = call_attempts_field(
        4, "tries of one platform call within a round, on transient errors only"
    )
    platform_backoff_max_s: float = call_backoff_max_field(
        2.0, "longest jittered wait between two tries within a round"
    )
    activation_deadline_s: float = Field(
        _DAY_S,
        gt=0,
        le=30 * _DAY_S,
        description="seconds from PaymentSettled until a bundle that is not live yet fails "
        "with `activation_timeout` (the 24 h activation SLA)",
    )
    poll_interval_s: float = Field(
        0.5,
        gt=0,
        le=3600,
        description="seconds from the order to the first status check of the bundle",
    )
    poll_interval_max_s: float = Field(
        5.0,
        gt=0,
        le=3600,
        validate_default=True,
        description="longest pause between two status checks of a bundle still processing "
        "(each check waits 1.5 times longer than the one before)",
    )
    retry_backoff_s: float = round_backoff_field(
        1.0,
        "pause after the first round in which the platform did not answer; "
        "doubles each round in a row",
    )
    retry_backoff_max_s: float = round_backoff_max_field(
        120.0, "longest pause between two rounds in which the platform did not answer"
    )
    worker_batch: int = worker_batch_field(
        50, "activations in flight at once: each a platform call and a commit"
    )
    worker_lease_s: float = worker_lease_field(
        60.0,
        "how long a claimed activation is reserved for one replica's round; "
        "longer than a round can take",
    )

    usage_poll_interval_s: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="seconds from a change of a card's usage (or its activation) to the next "
        "usage poll; each poll that sees no change waits 1.5 times longer",
    )
    usage_poll_interval_max_s: float = Field(
        40.0,
        gt=0,
        le=3600,
        validate_default=True,
        description="longest pause between two usage polls of a card with a live bundle (the "
        "contract wants a change on the card status within 60 s)",
    )
    usage_poll_batch: int = Field(
        20, ge=1, le=500, description="cards whose usage is polled at once"
    )
    callback_secret: SecretStr = Field(
        SecretStr(SANDBOX_CALLBACK_SECRET),
        description="shared secret of the eSIM platform's HMAC-SHA256 callback signatures "
        "(the sandbox's default in the local run; set it in production)",
    )
    callback_tolerance_s: float = Field(
        300.0,
        gt=0,
        le=3600,
        description="how far a callback's signed timestamp may be from now; older ones are "
        "refused as replays",
    )
    callback_retention_s: float = Field(
        7 * 24 * 3600.0,
        gt=0,
        validate_default=True,
        description="how long the id of a taken callback is kept, so that the same callback "
        "sent again is answered `duplicate` and changes nothing; past it the id is purged. The "
        "platform sends a callback it got no answer for again under its id, freshly signed "
        "(as the sandbox's redeliver does), and webhook senders retry for up to 3 days: 7 "
        "days outlasts them. Must exceed twice PROVISIONING_CALLBACK_TOLERANCE_S (a signed "
        "timestamp is taken that far either side of now)",
    )

    def local_defaults(self) -> Iterator[LocalDefault]:
        """The settings that keep a local run's value (refused in production at start)."""
        yield from sandbox_url(
            "PROVISIONING_ESIM_PLATFORM_URL", self.esim_platform_url, "the eSIM platform's API"
        )
        yield from demo_secret(
            "PROVISIONING_CALLBACK_SECRET", self.callback_secret, SANDBOX_CALLBACK_SECRET
        )

    @field_validator("callback_retention_s")
    @classmethod
    def _callback_ids_outlast_their_timestamps(cls, value: float, info: ValidationInfo) -> float:
        tolerance = info.data.get("callback_tolerance_s")
        if tolerance is not None and value <= 2 * tolerance:
            raise ValueError(
                f"must exceed twice PROVISIONING_CALLBACK_TOLERANCE_S ({2 * tolerance:g} s): a "
                "replay of a forgotten id would be taken while its timestamp still is"
            )
        return value

    @field_validator("worker_lease_s")
    @classmethod
    def _lease_outlasts_a_round(cls, value: float, info: ValidationInfo) -> float:
        return lease_outlasts_a_round(cls, value, info, "platform", "platform")
