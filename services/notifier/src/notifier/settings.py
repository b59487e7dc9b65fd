"""Notifier settings, read from `NOTIFIER_*` environment variables."""

from collections.abc import Iterator
from email.utils import parseaddr

from esim_core.production import LocalDefault, demo_secret, is_private_name, local_url, public_url
from esim_core.sealing import DEV_RESET_CODE_KEY, ResetCodeKeySettings
from esim_core.settings import BaseUrl, ServiceSettings, call_attempts_field, call_timeout_field
from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import SettingsConfigDict

_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


RECEIPT_PAYMENT_WAIT_S = 120.0
"""The default of `receipt_payment_wait_s`: what a receipt waits for its payment at most."""


class NotifierSettings(ServiceSettings, ResetCodeKeySettings):
    """What the notifier needs to run: its database, the SMTP relay and the send schedule."""

    model_config = SettingsConfigDict(env_prefix="NOTIFIER_", extra="ignore", frozen=True)

    database_url: str = Field(
        "sqlite+aiosqlite:///var/db/notifier.sqlite", description="the notifier database"
    )
    http_port: int = Field(8003, ge=1, le=65535, description="port of the notifier HTTP API")

    smtp_host: str = Field("127.0.0.1", min_length=1, description="SMTP relay host")
    smtp_port: int = Field(1025, ge=1, le=65535, description="SMTP relay port")
    smtp_username: str | None = Field(
        None, min_length=1, description="SMTP AUTH user name; unset for a relay without AUTH"
    )
    smtp_password: SecretStr | None = Field(
        None,
        validate_default=True,
        description="SMTP AUTH password; required with NOTIFIER_SMTP_USERNAME",
    )
    smtp_starttls: bool = Field(
        False, description="upgrade the connection with STARTTLS (required when true)"
    )
    smtp_use_tls: bool = Field(
        False,
        validate_default=True,
        description="connect with implicit TLS (SMTPS, usually port 465)",
    )
    smtp_timeout_s: float = Field(10.0, gt=0, le=300, description="timeout of each SMTP operation")
    smtp_connections: int = Field(
        8,
        ge=1,
        le=100,
        description="SMTP connections to the relay kept open and reused, at most; sends beyond "
        "wait for one",
    )
    smtp_attempts: int = call_attempts_field(
        3, "SMTP tries within one send round before it is rescheduled"
    )
    smtp_retry_wait_s: float = Field(
        0.5, gt=0, le=30, description="base of the jittered wait between tries within a round"
    )
    mail_from: str = Field(
        "eSIM <no-reply@esim.local>", description="the From header of every e-mail"
    )

    renew_url: str = Field(
        "http://127.0.0.1:8000/docs#/renewals",
        pattern=r"^https?://",
        description="the renewal link in the messages about a card (low data, expiry "
        "reminders, auto-renew turned off, ...); `{iccid}` is replaced by the card's ICCID (the "
        "local run points at the accounts API docs)",
    )
    receipt_payment_wait_s: float = Field(
        RECEIPT_PAYMENT_WAIT_S,
        ge=0,
        description="how long a confirmation waits for its renewal's PaymentSettled (amount, "
        "method, reference) before it goes out without the payment's part",
    )
    sms_gateway_url: BaseUrl = Field(
        "http://127.0.0.1:8012",
        description="base URL of the SMS provider's HTTP API",
    )
    sms_sender: str = Field(
        "eSIM", min_length=1, max_length=16, description="the From of every text message"
    )
    sms_username: str | None = Field(
        None, min_length=1, description="the SMS provider's account id (HTTP basic auth)"
    )
    sms_password: SecretStr | None = Field(
        None, description="the SMS provider's auth token (HTTP basic auth)"
    )
    sms_timeout_s: float = call_timeout_field(10.0, "timeout of one SMS request")

    contact_wait_s: float = Field(
        600.0,
        ge=0,
        description="how long a notification waits for its card's contact (CardBound) "
        "before it is marked undeliverable",
    )
    contact_recheck_max_s: float = Field(
        30.0, gt=0, description="longest pause between two looks for a missing contact"
    )
    max_send_rounds: int = Field(
        8, ge=1, le=50, description="send rounds that failed transiently before giving up"
    )
    send_backoff_s: float = Field(
        30.0, gt=0, description="pause after the first failed send round; doubles each round"
    )
    send_backoff_max_s: float = Field(
        3600.0, gt=0, validate_default=True, description="longest pause between two send rounds"
    )
    send_batch: int = Field(
        50, ge=1, le=200, description="notifications being sent at once, each over SMTP"
    )
    send_lease_s: float = Field(
        120.0,
        gt=0,
        validate_default=True,
        description="how long a claimed notification is reserved for one replica's send round",
    )

    @field_validator("mail_from")
    @classmethod
    def _an_address(cls, value: str) -> str:
        _, address = parseaddr(value)
        local, _, domain = address.rpartition("@")
        if not local or ("." not in domain and domain != "localhost"):
            raise ValueError(
                f"NOTIFIER_MAIL_FROM must be an e-mail address such as "
                f"'eSIM <no-reply@example.com>', got {value!r}"
            )
        return value

    @field_validator("smtp_host")
    @classmethod
    def _a_host(cls, value: str) -> str:
        if any(char.isspace() for char in value) or "/" in value:
            raise ValueError(f"NOTIFIER_SMTP_HOST must be a host name or address, got {value!r}")
        return value

    # Checks that involve two settings sit on the later one, so the error names it.
    @field_validator("smtp_password")
    @classmethod
    def _password_with_username(
        cls, value: SecretStr | None, info: ValidationInfo
    ) -> SecretStr | None:
        if "smtp_username" in info.data and (info.data["smtp_username"] is None) != (value is None):
            raise ValueError(
                "NOTIFIER_SMTP_USERNAME and NOTIFIER_SMTP_PASSWORD must be set together"
            )
        return value

    @field_validator("smtp_use_tls")
    @classmethod
    def _one_tls_mode(cls, value: bool, info: ValidationInfo) -> bool:
        starttls = info.data.get("smtp_starttls", False)
        if value and starttls:
            raise ValueError(
                "NOTIFIER_SMTP_STARTTLS and NOTIFIER_SMTP_USE_TLS exclude each other: "
                "STARTTLS upgrades a plain connection, USE_TLS starts with TLS"
            )
        host = info.data.get("smtp_host", "")
        if info.data.get("smtp_username") and not (value or starttls) and host not in _LOOPBACK:
            raise ValueError(
                f"NOTIFIER_SMTP_USERNAME is set for the remote relay {host!r} without "
                "NOTIFIER_SMTP_STARTTLS or NOTIFIER_SMTP_USE_TLS: the password would travel "
                "in clear"
            )
        return value

    @field_validator("send_backoff_max_s")
    @classmethod
    def _cap_above_base(cls, value: float, info: ValidationInfo) -> float:
        if value < info.data.get("send_backoff_s", 0):
            raise ValueError("must not be smaller than NOTIFIER_SEND_BACKOFF_S")
        return value

    @field_validator("send_lease_s")
    @classmethod
    def _lease_outlasts_a_round(cls, value: float, info: ValidationInfo) -> float:
        attempts = info.data.get("smtp_attempts", 1)
        timeout = info.data.get("smtp_timeout_s", 0)
        if value < attempts * timeout * 2:
            raise ValueError(
                f"must be at least twice NOTIFIER_SMTP_ATTEMPTS x NOTIFIER_SMTP_TIMEOUT_S "
                f"({attempts} x {timeout:g} s), or a slow send round could outlive its lease "
                "and another replica would send the same mail again"
            )
        return value

    def local_defaults(self) -> Iterator[LocalDefault]:
        """The settings that keep a local run's value (refused in production at start)."""
        yield from public_url(
            "NOTIFIER_RENEW_URL", self.renew_url, "the website's renewal page that mails link to"
        )
        if is_private_name(self.mail_domain):
            yield LocalDefault(
                "NOTIFIER_MAIL_FROM",
                f"sends from the local domain {self.mail_domain!r}; give an address of a domain "
                "that travellers' mail servers accept",
            )
        if not (self.smtp_starttls or self.smtp_use_tls):
            yield LocalDefault(
                "NOTIFIER_SMTP_STARTTLS",
                "SMTP without TLS: set NOTIFIER_SMTP_STARTTLS=true (port 587) or "
                "NOTIFIER_SMTP_USE_TLS=true (port 465)",
            )
        if self.smtp_username is None:
            yield LocalDefault(
                "NOTIFIER_SMTP_USERNAME",
                "SMTP without credentials: give NOTIFIER_SMTP_USERNAME and "
                "NOTIFIER_SMTP_PASSWORD of the relay",
            )
        yield from demo_secret("NOTIFIER_SMTP_PASSWORD", self.smtp_password)
        yield from local_url(
            "NOTIFIER_SMS_GATEWAY_URL", self.sms_gateway_url, "the SMS provider's API"
        )
        if self.sms_username is None or self.sms_password is None:
            yield LocalDefault(
                "NOTIFIER_SMS_USERNAME",
                "the SMS provider's account is not set: give NOTIFIER_SMS_USERNAME and "
                "NOTIFIER_SMS_PASSWORD",
            )
        yield from demo_secret("NOTIFIER_SMS_PASSWORD", self.sms_password)
        yield from demo_secret("RESET_CODE_KEY", self.reset_code_key, DEV_RESET_CODE_KEY)

    @property
    def mail_domain(self) -> str:
        """The domain of the From address, used on the right of every Message-ID."""
        return parseaddr(self.mail_from)[1].rpartition("@")[2]
