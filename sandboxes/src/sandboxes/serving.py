"""Environment settings, health routes and the uvicorn runner shared by the HTTP sandboxes."""

import logging
import os

import uvicorn
from fastapi import APIRouter, FastAPI

health_router = APIRouter(prefix="/health", tags=["health"])


@health_router.get("/live")
async def live() -> dict[str, str]:
    """Answer while the process is up."""
    return {"status": "ok"}


@health_router.get("/ready")
async def ready() -> dict[str, str]:
    """Answer once the app serves requests; a sandbox has nothing else to wait for."""
    return {"status": "ok"}


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


def configure_logging() -> None:
    """Send the sandboxes' own log lines to stderr at INFO."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def serve(app: FastAPI, host: str, port: int) -> None:
    """Run an app until SIGINT or SIGTERM, which uvicorn turns into a graceful shutdown.

    Args:
        app: The application.
        host: The address to listen on.
        port: The TCP port to listen on.
    """
    uvicorn.run(app, host=host, port=port, log_level="info")
