"""Accounts settings, read from `ACCOUNTS_*` environment variables."""

from pathlib import Path

from esim_core.settings import ServiceSettings
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

DEV_JWT_SECRET = "local-development-only-secret-change-me"


class AccountsSettings(ServiceSettings):
    """What the accounts service needs to run."""

    model_config = SettingsConfigDict(env_prefix="ACCOUNTS_", extra="ignore", frozen=True)

    database_url: str = Field(
        "sqlite+aiosqlite:///var/db/accounts.sqlite", description="the accounts database"
    )
    http_port: int = Field(8000, ge=1, le=65535, description="port of the accounts HTTP API")
    jwt_secret: SecretStr = Field(
        SecretStr(DEV_JWT_SECRET), description="HMAC key that signs access tokens"
    )
    jwt_ttl_s: int = Field(3600, ge=60, le=86400, description="lifetime of an access token")
    payment_deadline_s: float = Field(
        48 * 3600, gt=0, description="how long a saga waits for a payment outcome"
    )
    activation_deadline_s: float = Field(
        25 * 3600, gt=0, description="how long a paid saga waits for activation (24 h SLA)"
    )
    deadline_sweep_interval_s: float = Field(
        30, gt=0, description="how often the deadline sweep looks for overdue sagas"
    )
    cards_csv: Path | None = Field(
        Path("deploy/local/cards.csv"),
        description="card inventory to import at start (iccid,activation_code); empty to skip",
    )

    @field_validator("cards_csv", mode="before")
    @classmethod
    def _empty_means_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("jwt_secret")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < 32:
            raise ValueError("ACCOUNTS_JWT_SECRET must be at least 32 characters long")
        return value
