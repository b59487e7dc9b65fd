"""The accounts auth routes: tokens (password and refresh grants), logout, password reset."""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Literal

from esim_core.clock import utcnow
from esim_core.messaging.outbox import Outbox
from esim_core.persistence.db import Database
from esim_core.sealing import Sealer
from esim_core.web.problems import ProblemError
from esim_core.web.problems import problem_responses as problems
from esim_schemas import PasswordChanged, PasswordResetRequested
from fastapi import APIRouter, Form, Request, Response, status
from sqlmodel import select

from accounts.limits import RateLimitedError, RateLimiter, RedisUnavailableError
from accounts.passwords import Passwords
from accounts.resets import ResetCodes
from accounts.schemas import (
    LogoutRequest,
    PasswordResetConfirm,
    PasswordResetRequest,
    ResetAccepted,
    TokenResponse,
)
from accounts.sessions import Sessions, revoke_all
from accounts.settings import AccountsSettings
from accounts.store import User
from accounts.tokens import TokenError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AuthParts:
    """What the auth routes work with, wired in bootstrap."""

    database: Database
    outbox: Outbox
    sessions: Sessions
    passwords: Passwords
    limiter: RateLimiter
    codes: ResetCodes
    sealer: Sealer
    settings: AccountsSettings


def client_address(request: Request) -> str:
    """The client's address: the peer's, or X-Forwarded-For's where uvicorn trusts the peer."""
    return request.client.host if request.client is not None else "unknown"


@asynccontextmanager
async def guarded() -> AsyncIterator[None]:
    """Answer rate limits with 429 and Retry-After, and a Redis outage with 503, never 500."""
    try:
        yield
    except RateLimitedError as error:
        raise ProblemError(
            429,
            str(error),
            kind="rate-limited",
            headers={"Retry-After": str(error.retry_after_s)},
        ) from error
    except RedisUnavailableError as error:
        logger.error("rate limits and reset codes are unavailable: %s", error)
        raise ProblemError(
            503,
            "Sign-in and password reset are unavailable for a moment (their rate limits cannot "
            "be checked); please try again shortly.",
            kind="rate-limiter-unavailable",
            headers={"Retry-After": "5"},
        ) from error


def build_auth_router(parts: AuthParts) -> APIRouter:
    """`/v1/auth/*`, bound to the service's parts."""
    router = APIRouter(prefix="/v1/auth", tags=["auth"])
    database, settings, limiter = parts.database, parts.settings, parts.limiter

    async def find_user(email: str) -> User | None:
        async with database.session() as unit:
            return (await unit.exec(select(User).where(User.email == email))).first()

    @router.post(
        "/token",
        responses=problems(400, 401, 422, 429, 503),
        summary="Sign in (password grant) or renew tokens (refresh_token grant)",
    )
    async def token(
        request: Request,
        grant_type: Annotated[
            Literal["password", "refresh_token"], Form(description="the OAuth2 grant")
        ] = "password",
        username: Annotated[
            str | None, Form(max_length=320, description="the e-mail (password grant)")
        ] = None,
        password: Annotated[
            str | None, Form(max_length=128, description="the password (password grant)")
        ] = None,
        refresh_token: Annotated[
            str | None, Form(max_length=4096, description="the refresh token (refresh grant)")
        ] = None,
        scope: Annotated[str, Form(max_length=256, description="ignored")] = "",
    ) -> TokenResponse:
        """OAuth2 token endpoint: the e-mail as username; a refresh token is used once."""
        if grant_type == "refresh_token":
            if not refresh_token:
                raise ProblemError(400, "refresh_token is required", kind="invalid-request")
            try:
                access, refresh = await parts.sessions.rotate(refresh_token)
            except TokenError as error:
                raise ProblemError(401, str(error), kind="invalid-grant") from error
            return TokenResponse(
                access_token=access,
                refresh_token=refresh,
                expires_in=parts.sessions.tokens.access_ttl_s,
            )
        if not username or not password:
            raise ProblemError(400, "username and password are required", kind="invalid-request")
        email, address = username.strip().lower(), client_address(request)
        async with guarded():
            await limiter.check("failed logins", settings.limit_login_failures_account, email)
            await limiter.check(
                "failed logins from this address", settings.limit_login_failures_address, address
            )
            user = await find_user(email)
            matches, new_hash = await parts.passwords.verify(
                password, user.password_hash if user is not None else None
            )
            if user is None or not matches:
                await limiter.hit("failed logins", settings.limit_login_failures_account, email)
                await limiter.hit(
                    "failed logins from this address",
                    settings.limit_login_failures_address,
                    address,
                )
                raise ProblemError(401, "wrong e-mail or password", kind="invalid-credentials")
        if new_hash is not None:
            async with database.session() as unit:
                stored = await unit.get(User, user.id)
                if stored is not None and stored.password_hash == user.password_hash:
                    stored.password_hash = new_hash
                    unit.add(stored)
            logger.info("user %s: password hash upgraded", user.id)
        access, refresh = await parts.sessions.open(user.id)
        return TokenResponse(
            access_token=access,
            refresh_token=refresh,
            expires_in=parts.sessions.tokens.access_ttl_s,
        )

    @router.post(
        "/logout",
        status_code=status.HTTP_204_NO_CONTENT,
        responses=problems(401, 422),
        response_class=Response,
    )
    async def logout(body: LogoutRequest) -> None:
        """End the session of a refresh token: it and its access tokens stop working."""
        try:
            await parts.sessions.close(body.refresh_token)
        except TokenError as error:
            raise ProblemError(401, str(error), kind="invalid-grant") from error

    @router.post(
        "/password-reset",
        status_code=status.HTTP_202_ACCEPTED,
        responses=problems(422, 429, 503),
    )
    async def password_reset(body: PasswordResetRequest, request: Request) -> ResetAccepted:
        """Send a 6-digit code by e-mail (and SMS where there is a phone); 202 for any address."""
        email = body.email.lower()
        async with guarded():
            await limiter.hit(
                "reset requests from this address",
                settings.limit_resets_address,
                client_address(request),
            )
            await limiter.hit("reset requests", settings.limit_resets_account, email)
            user = await find_user(email)
            if user is None:
                return ResetAccepted()
            code, expires_at = await parts.codes.issue(user.id)
        async with database.session() as unit:
            parts.outbox.add(
                unit,
                PasswordResetRequested(
                    user_id=user.id,
                    email=user.email,
                    code_expires_at=expires_at,
                    phone=user.phone if user.notify_sms else None,
                    locale=user.locale,
                    code_sealed=parts.sealer.seal(code, user.id),
                ),
            )
        logger.info("user %s: password reset code issued", user.id)
        return ResetAccepted()

    @router.post(
        "/password-reset/confirm",
        status_code=status.HTTP_204_NO_CONTENT,
        responses=problems(400, 422, 429, 503),
        response_class=Response,
    )
    async def password_reset_confirm(body: PasswordResetConfirm) -> None:
        """Set a new password with the code; every earlier session ends."""
        email = body.email.lower()
        invalid = ProblemError(
            400, "the code is wrong, used or expired; ask for a new one", kind="invalid-code"
        )
        async with guarded():
            await limiter.hit(
                "reset confirmations", settings.limit_reset_confirmations_account, email
            )
            user = await find_user(email)
            if user is None or not await parts.codes.redeem(user.id, body.code):
                raise invalid
        new_hash = await parts.passwords.hash(body.new_password)
        async with database.session() as unit:
            stored = await unit.get(User, user.id)
            if stored is None:
                raise invalid
            stored.password_hash = new_hash
            stored.password_changed_at = utcnow()
            unit.add(stored)
            await revoke_all(unit, stored.id, "password-reset")
            parts.outbox.add(
                unit,
                PasswordChanged(
                    user_id=stored.id,
                    email=stored.email,
                    phone=stored.phone if stored.notify_sms else None,
                    locale=stored.locale,
                    changed_at=stored.password_changed_at,
                ),
            )
        logger.info("user %s: password reset; every session revoked", user.id)

    return router
