"""Accounts settings, read from `ACCOUNTS_*` environment variables."""

from collections.abc import Iterator
from pathlib import Path

from esim_core.production import LocalDefault, demo_secret
from esim_core.sealing import DEV_RESET_CODE_KEY, ResetCodeKeySettings
from esim_core.settings import KeySetting, ServiceSettings
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from accounts.identity.limits import Rate, RateSetting, rate_field
from accounts.lifecycle.rules import DAY_S, DurationSetting, LeadsSetting

DEV_JWT_SECRET = "local-development-only-secret-change-me"
#: The demo card inventory of the local run: its activation codes are in the repository.
DEMO_CARDS_CSV = Path("deploy/local/cards.csv")


class AccountsSettings(ServiceSettings, ResetCodeKeySettings):
    """What the accounts service needs to run."""

    model_config = SettingsConfigDict(env_prefix="ACCOUNTS_", extra="ignore", frozen=True)

    database_url: str = Field(
        "sqlite+aiosqlite:///var/db/accounts.sqlite", description="the accounts database"
    )
    http_port: int = Field(8000, ge=1, le=65535, description="port of the accounts HTTP API")
    jwt_secret: KeySetting = Field(
        SecretStr(DEV_JWT_SECRET), description="HMAC key that signs access tokens"
    )
    jwt_ttl_s: int = Field(900, ge=60, le=86400, description="lifetime of an access token")
    refresh_ttl_s: int = Field(
        30 * 86400, ge=300, le=365 * 86400, description="lifetime of a session's refresh token"
    )
    session_keep_s: float = Field(
        7 * 86400,
        ge=0,
        description="how long an ended (expired or revoked) session is kept before it is purged",
    )
    session_purge_interval_s: float = Field(
        3600, gt=0, description="how often ended sessions are purged"
    )
    jwt_issuer: str = Field(
        "https://accounts.esim.example", min_length=1, description="the tokens' `iss`"
    )
    jwt_audience: str = Field("esim-accounts", min_length=1, description="the tokens' `aud`")
    reset_code_ttl_s: int = Field(900, ge=60, le=86400, description="how long a reset code works")
    reset_code_max_tries: int = Field(
        5, ge=1, le=20, description="wrong codes before the code stops working"
    )
    password_time_cost: int = Field(3, ge=1, le=20, description="Argon2 passes over memory")
    password_memory_kib: int = Field(
        65536, ge=8192, le=1048576, description="Argon2 memory per hash, in KiB"
    )
    password_hashes_at_once: int | None = Field(
        None,
        ge=1,
        le=256,
        description="Argon2 hashes (logins, registrations, password changes) computed at once "
        "by one process; the others wait their turn. Unset: as many as fit the container's "
        "memory limit beside 256 MiB for the rest of the process, at "
        "ACCOUNTS_PASSWORD_MEMORY_KIB each (4 under a 512 MiB limit); 4 without a limit",
    )
    limit_login_failures_account: RateSetting = rate_field(
        Rate(10, 900), "failed logins for one account"
    )
    limit_login_failures_address: RateSetting = rate_field(
        Rate(50, 900), "failed logins from one client address"
    )
    limit_registrations_address: RateSetting = rate_field(
        Rate(20, 3600), "registrations from one client address"
    )
    limit_registrations_account: RateSetting = rate_field(
        Rate(5, 3600), "registration attempts for one e-mail"
    )
    limit_resets_address: RateSetting = rate_field(
        Rate(20, 3600), "reset requests from one client address"
    )
    limit_resets_account: RateSetting = rate_field(Rate(5, 3600), "reset requests for one account")
    limit_reset_confirmations_account: RateSetting = rate_field(
        Rate(10, 900), "reset confirmations for one account"
    )
    payment_deadline_s: float = Field(
        48 * 3600, gt=0, description="how long a saga waits for a payment outcome"
    )
    activation_deadline_s: float = Field(
        25 * 3600, gt=0, description="how long a paid saga waits for activation (24 h SLA)"
    )
    payment_action_grace_s: float = Field(
        15 * 60,
        ge=0,
        description="how long past the buyer's approval expiry a saga still waits for billing's "
        "answer (billing asks the provider at the expiry)",
    )
    deadline_sweep_interval_s: float = Field(
        30, gt=0, description="how often the deadline sweep looks for overdue sagas"
    )
    max_sagas_in_flight: int = Field(
        0,
        ge=0,
        description="new renewal requests wait in Kafka while this many sagas wait on a payment "
        "or an activation, across replicas (0: no limit); about the peak rate times a renewal's "
        "usual duration, twice over",
    )
    in_flight_window_s: float = Field(
        600,
        gt=0,
        description="a saga that has not moved for this long no longer counts as in flight",
    )
    reminder_leads: LeadsSetting = Field(
        (3 * DAY_S, DAY_S),
        description="how long before a card's last plan ends PlanExpiring goes out, as "
        "comma-separated durations (3d,1d; units d, h, m, s); only the shortest due one is sent",
    )
    auto_renew_lead: DurationSetting = Field(
        DAY_S,
        description="how long before a card's last plan ends auto-renew queues the next plan "
        "(1d; units d, h, m, s)",
    )
    seed_promotions: bool = Field(
        True, description="add the promotions of the local run (WELCOME10) at start"
    )
    cards_csv: Path | None = Field(
        DEMO_CARDS_CSV,
        description="card inventory to import at start (iccid,activation_code); empty to skip",
    )

    def local_defaults(self) -> Iterator[LocalDefault]:
        """The settings that keep a local run's value (refused in production at start)."""
        yield from demo_secret("ACCOUNTS_JWT_SECRET", self.jwt_secret, DEV_JWT_SECRET)
        yield from demo_secret("RESET_CODE_KEY", self.reset_code_key, DEV_RESET_CODE_KEY)
        if self.seed_promotions:
            yield LocalDefault(
                "ACCOUNTS_SEED_PROMOTIONS",
                "would add the local run's promotions (WELCOME10) for every customer; set it "
                "to false and create promotions with esimctl",
            )
        if self.cards_csv is not None and self.cards_csv.as_posix().endswith(
            DEMO_CARDS_CSV.as_posix()
        ):
            yield LocalDefault(
                "ACCOUNTS_CARDS_CSV",
                "imports the demo cards, whose activation codes are public; give the "
                "environment's inventory or leave it empty",
            )

    @field_validator("cards_csv", mode="before")
    @classmethod
    def _empty_means_none(cls, value: object) -> object:
        return None if value == "" else value
