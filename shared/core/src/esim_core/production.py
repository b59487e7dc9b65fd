"""The production settings check: a process refuses to start on the local run's defaults.

A local run (`make run`, compose, the test platform) says so with `ESIM_ENV=local`; anything
else is production, where a renewal link to 127.0.0.1, a sender at `esim.local`, SMTP in clear,
the demo promotions, a demo secret or a provider's sandbox would reach customers. Each settings
class names its own local defaults (`local_defaults()`); the ones every service shares (its
database, Kafka and Redis addresses) are named here. `refuse_local_defaults` collects them and
stops the process with one line per setting.
"""

import ipaddress
from collections.abc import Iterable, Iterator
from typing import Literal, NamedTuple, Protocol, runtime_checkable
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from esim_core.settings import ServiceSettings, SettingsError, load_settings

#: Words that mark a value as a placeholder or a demo one (compared without case): the
#: committed examples say CHANGE-ME, compose's say demo-only, the code's local-development-only,
#: the sandboxes' sandbox.
DEMO_MARKERS = ("change-me", "changeme", "demo", "local-development-only", "sandbox", "example")


class RunSettings(BaseSettings):
    """Which run this is: production unless `ESIM_ENV=local` says it is a local one."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    esim_env: Literal["production", "local"] = Field(
        "production",
        validation_alias=AliasChoices("ESIM_ENV"),
        description="`local` for a run on one machine (make run, compose, the tests), where the "
        "local defaults (loopback addresses, sandboxes, demo secrets) are allowed; anything "
        "else runs as production and refuses them at start",
    )


class LocalDefault(NamedTuple):
    """A setting that still holds a local run's value, and what to set instead."""

    setting: str
    problem: str


@runtime_checkable
class NamesLocalDefaults(Protocol):
    """Settings that can name their own values that only a local run may keep."""

    def local_defaults(self) -> Iterable[LocalDefault]:
        """The settings that hold a local run's value."""
        ...


class LocalDefaultsError(SettingsError):
    """Production settings that keep a local run's value; the message names each setting."""


def refuse_local_defaults(*settings: NamesLocalDefaults) -> None:
    """Stop the process when it runs as production with a local run's value anywhere.

    Args:
        settings: the process's settings objects; a `ServiceSettings` also has its database,
            Kafka and Redis addresses checked.

    Raises:
        SettingsError: `ESIM_ENV` is neither `production` nor `local`.
        LocalDefaultsError: `ESIM_ENV` is not `local` and a setting keeps a local value.
    """
    if load_settings(RunSettings).esim_env == "local":
        return
    found: list[LocalDefault] = []
    for each in settings:
        if isinstance(each, ServiceSettings):
            found += shared_local_defaults(each)
        found += each.local_defaults()
    if found:
        lines = "\n".join(f"  {item.setting}: {item.problem}" for item in found)
        raise LocalDefaultsError(
            "production settings keep a local run's values (ESIM_ENV is not `local`):\n"
            f"{lines}\n"
            "Set each for production (deploy/README.md, 'Production settings'), or declare a "
            "local run with ESIM_ENV=local."
        )


def shared_local_defaults(settings: ServiceSettings) -> Iterator[LocalDefault]:
    """The local values of the settings every service has: its database, Kafka and Redis."""
    prefix = str(settings.model_config.get("env_prefix", "")).upper()
    if settings.database_url.startswith("sqlite"):
        yield LocalDefault(
            f"{prefix}DATABASE_URL",
            "is a SQLite file, which only one process on one machine can use; give the "
            "service's PostgreSQL database (postgresql+asyncpg://...)",
        )
    for address in settings.kafka_bootstrap_servers.split(","):
        host = address.rsplit(":", 1)[0]
        if is_local_host(host):
            yield LocalDefault(
                "KAFKA_BOOTSTRAP_SERVERS", f"names this machine ({address}); give the cluster's"
            )
            break
    yield from local_url("REDIS_URL", settings.redis_url, "the Redis server")


def is_local_host(host: str) -> bool:
    """Whether a host name or address means this machine (loopback, `localhost`, 0.0.0.0)."""
    name = host.strip("[]").lower().rstrip(".")
    if name in {"", "localhost"} or name.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def is_private_name(host: str) -> bool:
    """Whether a host is this machine or a `.local` name, which nobody outside can reach.

    (A cluster's own `svc.cluster.local` names are fine between services, not for the public.)
    """
    return is_local_host(host) or host.lower().rstrip(".").endswith(".local")


def local_url(setting: str, url: str, what: str) -> Iterator[LocalDefault]:
    """The URL as a local default where its host is this machine."""
    host = urlsplit(url).hostname or ""
    if is_local_host(host):
        yield LocalDefault(setting, f"points at this machine ({url}); give {what}")


def public_url(setting: str, url: str, what: str) -> Iterator[LocalDefault]:
    """A URL that customers or providers follow, as a local default where they cannot reach it
    (this machine or a `.local` name)."""
    host = urlsplit(url).hostname or ""
    if is_local_host(host):
        yield LocalDefault(setting, f"points at this machine ({url}); give {what}")
    elif is_private_name(host):
        yield LocalDefault(setting, f"is a .local name ({url}) nobody outside reaches; give {what}")


def sandbox_url(setting: str, url: str, what: str) -> Iterator[LocalDefault]:
    """The URL as a local default where it is this machine or a sandbox (no real money moves).

    A provider's own test environment (`api-m.sandbox.paypal.com`, Alipay's `alipaydev.com`)
    counts as a sandbox too.
    """
    host = (urlsplit(url).hostname or "").lower()
    if is_local_host(host):
        yield LocalDefault(setting, f"points at this machine ({url}); give {what}")
    elif "sandbox" in host or host.endswith("alipaydev.com"):
        yield LocalDefault(setting, f"is a sandbox ({url}), where nothing is real; give {what}")


def demo_secret(setting: str, value: SecretStr | str | None, *known: str) -> Iterator[LocalDefault]:
    """The secret as a local default where it is one of `known` or carries a demo marker.

    The value itself is never part of the message.
    """
    if value is None:
        return
    secret = value.get_secret_value() if isinstance(value, SecretStr) else value
    lowered = secret.lower()
    if secret in known or any(marker in lowered for marker in DEMO_MARKERS):
        yield LocalDefault(setting, "is a demo or placeholder value; give the real one")
