"""Operator auth: the bearer token every operator endpoint (`/v1/` of billing, provisioning and
notifier, `/v1/operator/` of accounts) requires; health and metrics stay open. Also the operator
endpoint every service has the same way: its outbox's status.

The token is the setting `OPERATOR_TOKEN`. `make run` generates one when it is unset, writes it
to `var/operator.token` and hands it to the processes it starts; anywhere else a service without
it stops at start with a settings error rather than answer anyone who reaches its port.
"""

import hmac
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AliasChoices, BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import func
from sqlmodel import col, select

from esim_core.clock import as_utc, utcnow
from esim_core.messaging.outbox import OutboxMessage
from esim_core.persistence.db import Database
from esim_core.production import LocalDefault, demo_secret
from esim_core.settings import LOCAL_TOKEN_FILE, SettingsError, load_settings
from esim_core.web.problems import PROBLEM_JSON, PROBLEM_SCHEMA_REF, ProblemError, problem_example

CHALLENGE = {"WWW-Authenticate": 'Bearer realm="operator"'}
MIN_TOKEN_LENGTH = 16

_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="OperatorToken",
    description="the operator token (`OPERATOR_TOKEN`; in the local run `var/operator.token`)",
)

#: The 401 answer as OpenAPI documents it, for `responses=` of an operator route.
UNAUTHORIZED: dict[int | str, dict[str, Any]] = {
    401: {
        "description": "No operator token, or a wrong one",
        "headers": {
            "WWW-Authenticate": {
                "description": "the scheme to authenticate with",
                "schema": {"type": "string", "example": CHALLENGE["WWW-Authenticate"]},
            }
        },
        "content": {
            PROBLEM_JSON: {
                "schema": PROBLEM_SCHEMA_REF,
                "example": problem_example(
                    401,
                    "operator-unauthorized",
                    "This endpoint is for operators: send Authorization: Bearer <operator token>.",
                ),
            }
        },
    }
}


class OperatorSettings(BaseSettings):
    """The operator token, read from the unprefixed `OPERATOR_TOKEN` (shared by every service)."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    operator_token: SecretStr = Field(
        validation_alias=AliasChoices("OPERATOR_TOKEN"),
        description="bearer token operators send to the operator endpoints; at least "
        f"{MIN_TOKEN_LENGTH} characters (`make run` generates one into {LOCAL_TOKEN_FILE})",
        min_length=MIN_TOKEN_LENGTH,
    )


class OperatorAuth:
    """A FastAPI dependency that lets a request through only with the operator token."""

    def __init__(self, token: str | SecretStr) -> None:
        secret = token.get_secret_value() if isinstance(token, SecretStr) else token
        if len(secret) < MIN_TOKEN_LENGTH:
            raise ValueError(f"an operator token has at least {MIN_TOKEN_LENGTH} characters")
        self._token = secret.encode()

    def __repr__(self) -> str:
        return "OperatorAuth(token=***)"

    def local_defaults(self) -> Iterator[LocalDefault]:
        """The token as a local default where it is a placeholder (refused in production)."""
        yield from demo_secret("OPERATOR_TOKEN", self._token.decode())

    async def __call__(
        self, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_scheme)]
    ) -> None:
        """Raise a 401 problem unless the request carries the operator token."""
        if credentials is None:
            raise ProblemError(
                401,
                "This endpoint is for operators: send Authorization: Bearer <operator token>.",
                kind="operator-unauthorized",
                headers=CHALLENGE,
            )
        # compare_digest: the time taken does not tell how much of a guess was right.
        if not hmac.compare_digest(credentials.credentials.encode(), self._token):
            raise ProblemError(
                401,
                "The operator token is not valid.",
                kind="operator-unauthorized",
                headers={"WWW-Authenticate": 'Bearer realm="operator", error="invalid_token"'},
            )

    def guard(self, *routers: APIRouter) -> APIRouter:
        """One router that includes `routers`, every route of it requiring the operator token."""
        guarded = APIRouter(dependencies=[Depends(self)], responses=UNAUTHORIZED)
        for router in routers:
            guarded.include_router(router)
        return guarded


def load_operator_auth() -> OperatorAuth:
    """The operator auth of a service process, from `OPERATOR_TOKEN`.

    Raises:
        SettingsError: the token is unset or too short; the message says where one comes from.
    """
    try:
        settings = load_settings(OperatorSettings)
    except SettingsError as error:
        raise SettingsError(
            f"{error}\n  OPERATOR_TOKEN is the bearer token of the operator endpoints (at least "
            f"{MIN_TOKEN_LENGTH} characters, e.g. `openssl rand -hex 32`); `make run` generates "
            f"one into {LOCAL_TOKEN_FILE}. Without it the service does not start."
        ) from None
    return OperatorAuth(settings.operator_token)


class OutboxStatus(BaseModel):
    """How far a service's outbox relay is behind."""

    service: str
    unpublished: int = Field(description="events committed but not yet acknowledged by Kafka")
    oldest_unpublished_at: datetime | None = Field(
        description="when the oldest unpublished event was committed"
    )
    oldest_unpublished_age_s: float | None = Field(description="its age in seconds, now")
    published_kept: int = Field(
        description="published events still kept for inspection (OUTBOX_RETENTION_S)"
    )
    last_published_at: datetime | None


async def outbox_status(database: Database, service: str) -> OutboxStatus:
    """Count a service's unpublished and kept outbox rows, and date the oldest unpublished one."""
    published = col(OutboxMessage.published_at)
    async with database.session() as session:
        pending, oldest = (
            await session.exec(
                select(func.count(), func.min(col(OutboxMessage.created_at))).where(
                    published.is_(None)
                )
            )
        ).one()
        kept, last = (
            await session.exec(
                select(func.count(), func.max(published)).where(published.is_not(None))
            )
        ).one()
    oldest_at = as_utc(oldest)
    return OutboxStatus(
        service=service,
        unpublished=pending,
        oldest_unpublished_at=oldest_at,
        oldest_unpublished_age_s=(
            round((utcnow() - oldest_at).total_seconds(), 3) if oldest_at is not None else None
        ),
        published_kept=kept,
        last_published_at=as_utc(last),
    )


def outbox_router(database: Database, service: str) -> APIRouter:
    """`GET /v1/operator/outbox`: the service's outbox status (guard it with `OperatorAuth`)."""
    router = APIRouter(prefix="/v1/operator", tags=["operator"])

    @router.get("/outbox")
    async def get_outbox_status() -> OutboxStatus:
        """How many events wait to be published, and since when."""
        return await outbox_status(database, service)

    return router
