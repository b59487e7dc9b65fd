"""Website settings, read from `WEB_*` environment variables."""

import secrets
from collections.abc import Iterator
from typing import Self

from esim_core.production import LocalDefault, demo_secret, local_url, public_url
from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: The Stripe and sandbox test tokens the local run offers as saved-card choices.
SANDBOX_CARD_TOKENS = (
    "pm_card_visa",
    "pm_card_authenticationRequired",
    "pm_card_chargeDeclined",
    "pm_card_chargeDeclinedInsufficientFunds",
    "pm_card_chargeDeclinedExpiredCard",
    "card_ok",
    "card_declined",
    "card_action",
)


class WebSettingsError(ValueError):
    """The settings cannot be used as they are (a secret missing outside the local run)."""


class WebSettings(BaseSettings):
    """What the website needs: where accounts answers, its secrets and how cookies are sent."""

    model_config = SettingsConfigDict(env_prefix="WEB_", extra="ignore", frozen=True)

    http_host: str = Field("127.0.0.1", description="address the website listens on")
    http_port: int = Field(8080, ge=1, le=65535, description="port the website listens on")
    accounts_url: str = Field(
        "http://127.0.0.1:8000", description="base URL of the accounts HTTP API"
    )
    accounts_timeout_s: float = Field(
        10.0, gt=0, le=120, description="timeout of one call to the accounts API"
    )
    public_url: str = Field(
        "http://127.0.0.1:8080",
        pattern=r"^https?://[^\s/]+(:[0-9]+)?$",
        description="the site's public base URL (scheme and host, no path): payment providers "
        "send the buyer back to <public_url>/renewals/<id>, and a form posted from any other "
        "origin is refused",
    )
    cookie_secret: SecretStr | None = Field(
        None,
        description="32+ characters sealing the session cookie (AES-GCM); required unless "
        "secure_cookies is off (the local run), where a random one per process is used",
    )
    csrf_secret: SecretStr | None = Field(
        None,
        description="32+ characters keying the forms' CSRF tokens (HMAC); required unless "
        "secure_cookies is off (the local run)",
    )
    secure_cookies: bool = Field(
        True, description="mark cookies Secure (HTTPS only); off only for the local run on http"
    )
    session_max_age_s: int = Field(
        14 * 24 * 3600, ge=300, description="how long a session cookie is kept by the browser"
    )
    poll_interval_s: int = Field(
        2, ge=1, le=60, description="how often a renewal's page asks for news while it runs"
    )
    test_card_tokens: str = Field(
        ",".join(SANDBOX_CARD_TOKENS),
        description="comma-separated saved-card tokens offered as choices on the payment step "
        "(the sandbox's test cards); empty in production",
    )
    stop_timeout_s: float = Field(10.0, gt=0, le=120, description="bound of a graceful stop")

    @model_validator(mode="after")
    def _secrets_where_cookies_matter(self) -> Self:
        for name in ("cookie_secret", "csrf_secret"):
            value: SecretStr | None = getattr(self, name)
            if value is not None and len(value.get_secret_value()) < 32:
                raise WebSettingsError(f"WEB_{name.upper()} must be at least 32 characters")
            if value is None and self.secure_cookies:
                raise WebSettingsError(
                    f"WEB_{name.upper()} is required (only the local run, with "
                    "WEB_SECURE_COOKIES=false, may go without and use a random one)"
                )
        return self

    def local_defaults(self) -> Iterator[LocalDefault]:
        """The settings that keep a local run's value (refused in production at start)."""
        yield from public_url("WEB_PUBLIC_URL", self.public_url, "the site's public https address")
        yield from local_url(
            "WEB_ACCOUNTS_URL", self.accounts_url, "the accounts API as the website reaches it"
        )
        if not self.secure_cookies:
            yield LocalDefault(
                "WEB_SECURE_COOKIES",
                "is off, so session cookies would travel over plain http; set it to true "
                "(the site is served over https)",
            )
        if self.card_tokens():
            yield LocalDefault(
                "WEB_TEST_CARD_TOKENS",
                "offers the sandbox's test cards as saved cards; set it empty",
            )
        yield from demo_secret("WEB_COOKIE_SECRET", self.cookie_secret)
        yield from demo_secret("WEB_CSRF_SECRET", self.csrf_secret)

    def cookie_key(self) -> str:
        """The session-sealing key: the configured one, or a random one for this process."""
        return _secret_or_random(self.cookie_secret, "cookie")

    def csrf_key(self) -> str:
        """The CSRF key: the configured one, or a random one for this process."""
        return _secret_or_random(self.csrf_secret, "csrf")

    def card_tokens(self) -> list[str]:
        """The saved-card tokens offered as choices."""
        return [token.strip() for token in self.test_card_tokens.split(",") if token.strip()]


_RANDOM: dict[str, str] = {}


def _secret_or_random(value: SecretStr | None, purpose: str) -> str:
    if value is not None:
        return value.get_secret_value()
    # One per process and purpose: sessions survive requests, not restarts (local run only).
    return _RANDOM.setdefault(purpose, secrets.token_urlsafe(48))
