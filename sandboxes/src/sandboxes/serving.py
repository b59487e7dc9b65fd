"""Environment settings, health routes and the uvicorn runner shared by the HTTP sandboxes."""

import dataclasses
import logging
import os
import typing
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self, TypeVar

import uvicorn
from fastapi import APIRouter, Depends, FastAPI, Request

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

SettingsT = TypeVar("SettingsT", bound="DataclassInstance")

ENV_NAME = "env_name"
"""A settings field's metadata key for its variable's name after the prefix, where that is not
the field's own name in capitals (`field(default="", metadata={ENV_NAME: "WEBHOOK_URL"})`)."""

health_router = APIRouter(prefix="/health", tags=["health"])


@health_router.get("/live")
async def live() -> dict[str, str]:
    """Answer while the process is up."""
    return {"status": "ok"}


@health_router.get("/ready")
async def ready() -> dict[str, str]:
    """Answer once the app serves requests; a sandbox has nothing else to wait for."""
    return {"status": "ok"}


def app_state(name: str) -> Any:
    """A route dependency on what a sandbox app keeps as `app.state.<name>`.

    Name its type in an alias: `PlatformDep = Annotated[EsimPlatform, app_state("platform")]`.
    """

    def kept(request: Request) -> Any:
        return getattr(request.app.state, name)

    return Depends(kept)


def env_str(name: str, default: str) -> str:
    """Read a string setting from the environment.

    Args:
        name: The variable name.
        default: The value when the variable is unset or empty.
    """
    return os.environ.get(name) or default


def env_int(name: str, default: int) -> int:
    """Read an integer setting from the environment.

    Args:
        name: The variable name.
        default: The value when the variable is unset or empty.

    Raises:
        ValueError: The variable is set but is not an integer.
    """
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None


def env_float(name: str, default: float) -> float:
    """Read a non-negative number setting from the environment.

    Args:
        name: The variable name.
        default: The value when the variable is unset or empty.

    Raises:
        ValueError: The variable is set but is not a non-negative number.
    """
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None
    if value < 0:
        raise ValueError(f"{name} must not be negative, got {raw!r}")
    return value


_READERS: dict[Any, Callable[[str, Any], Any]] = {
    str: env_str,
    int: env_int,
    float: env_float,
    Path: lambda name, default: Path(env_str(name, str(default))),
}


def env_settings(cls: type[SettingsT], prefix: str) -> SettingsT:
    """A sandbox's settings dataclass read from `<prefix><FIELD>` variables (`ESIM_SANDBOX_PORT`).

    Each field is read by its type (str, int, non-negative float, Path) and keeps its default
    where its variable is unset or empty. A field whose variable has another name says so in
    its `ENV_NAME` metadata.

    Raises:
        ValueError: a variable is set but not of its field's type.
        TypeError: a field has a type no variable can give.
    """
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        reader = _READERS.get(hints[field.name])
        if reader is None:
            raise TypeError(f"{cls.__name__}.{field.name}: no environment reader for its type")
        name = field.metadata.get(ENV_NAME, field.name.upper())
        values[field.name] = reader(prefix + name, field.default)
    return cls(**values)


class EnvSettings:
    """A sandbox's settings dataclass that `from_env()` reads from `<env_prefix><FIELD>` variables.

    A subclass is a dataclass and names its prefix: `env_prefix: ClassVar[str] = "SMS_SANDBOX_"`.
    """

    env_prefix: ClassVar[str]
    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]

    @classmethod
    def from_env(cls) -> Self:
        """Read every field from its variable (see `env_settings`).

        Raises:
            ValueError: a variable is set but not of its field's type.
        """
        return env_settings(cls, cls.env_prefix)


#: Seconds an idle connection stays open, as a provider's API keeps it: longer than billing's and
#: provisioning's pools keep one (15 s), so a reused connection is never closed under a request.
KEEP_ALIVE_S = 75


def configure_logging() -> None:
    """Send the sandboxes' own log lines to stderr at INFO."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def serve(app: FastAPI, host: str, port: int) -> None:
    """Run an app until SIGINT or SIGTERM, which uvicorn turns into a graceful shutdown.

    The sandbox's own log lines go to stderr (`configure_logging`).

    Args:
        app: The application.
        host: The address to listen on.
        port: The TCP port to listen on.
    """
    configure_logging()
    uvicorn.run(app, host=host, port=port, log_level="info", timeout_keep_alive=KEEP_ALIVE_S)
