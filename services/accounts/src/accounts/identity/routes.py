"""The identity routes: `/v1/auth` (tokens, logout, password reset) and `/v1/users`."""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Literal
from uuid import uuid4

from esim_core.clock import utcnow
from esim_core.persistence.db import Database
from esim_core.web.problems import ProblemError
from esim_core.web.problems import problem_responses as problems
from esim_schemas import PasswordChanged, PasswordResetRequested
from fastapi import APIRouter, Form, Request, Response, status
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from accounts.cards.binding import card_bound
from accounts.deps import CurrentUser, DatabaseDep, IdentityDep, OutboxDep, SettingsDep
from accounts.identity.limits import RateLimitedError, RedisUnavailableError
from accounts.identity.models import (
    LogoutRequest,
    PasswordResetConfirm,
    PasswordResetRequest,
    ResetAccepted,
    TokenResponse,
    UserCreate,
    UserPublic,
    UserUpdate,
    user_public,
)
from accounts.identity.sessions import revoke_all
from accounts.identity.tokens import TokenError
from accounts.store import Card, User

logger = logging.getLogger(__name__)


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


auth_router = APIRouter(prefix="/v1/auth", tags=["auth"])
users_router = APIRouter(prefix="/v1/users", tags=["users"])


async def find_user(database: Database, email: str) -> User | None:
    """The user registered under an e-mail (lower case), if one."""
    async with database.session() as unit:
        return (await unit.exec(select(User).where(User.email == email))).first()


@auth_router.post(
    "/token",
    responses=problems(400, 401, 422, 429, 503),
    summary="Sign in (password grant) or renew tokens (refresh_token grant)",
)
async def token(
    request: Request,
    identity: IdentityDep,
    database: DatabaseDep,
    settings: SettingsDep,
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
            access, refresh = await identity.sessions.rotate(refresh_token)
        except TokenError as error:
            raise ProblemError(401, str(error), kind="invalid-grant") from error
        return TokenResponse(
            access_token=access,
            refresh_token=refresh,
            expires_in=identity.sessions.tokens.access_ttl_s,
        )
    if not username or not password:
        raise ProblemError(400, "username and password are required", kind="invalid-request")
    email, address = username.strip().lower(), client_address(request)
    async with guarded():
        await identity.limiter.check("failed logins", settings.limit_login_failures_account, email)
        await identity.limiter.check(
            "failed logins from this address", settings.limit_login_failures_address, address
        )
        user = await find_user(database, email)
        matches, new_hash = await identity.passwords.verify(
            password, user.password_hash if user is not None else None
        )
        if user is None or not matches:
            await identity.limiter.hit(
                "failed logins", settings.limit_login_failures_account, email
            )
            await identity.limiter.hit(
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
    access, refresh = await identity.sessions.open(user.id)
    return TokenResponse(
        access_token=access,
        refresh_token=refresh,
        expires_in=identity.sessions.tokens.access_ttl_s,
    )


@auth_router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problems(401, 422),
    response_class=Response,
)
async def logout(body: LogoutRequest, identity: IdentityDep) -> None:
    """End the session of a refresh token: it and its access tokens stop working."""
    try:
        await identity.sessions.close(body.refresh_token)
    except TokenError as error:
        raise ProblemError(401, str(error), kind="invalid-grant") from error


@auth_router.post(
    "/password-reset",
    status_code=status.HTTP_202_ACCEPTED,
    responses=problems(422, 429, 503),
)
async def password_reset(
    body: PasswordResetRequest,
    request: Request,
    identity: IdentityDep,
    database: DatabaseDep,
    outbox: OutboxDep,
    settings: SettingsDep,
) -> ResetAccepted:
    """Send a 6-digit code by e-mail (and SMS where there is a phone); 202 for any address."""
    email = body.email.lower()
    async with guarded():
        await identity.limiter.hit(
            "reset requests from this address",
            settings.limit_resets_address,
            client_address(request),
        )
        await identity.limiter.hit("reset requests", settings.limit_resets_account, email)
        user = await find_user(database, email)
        if user is None:
            return ResetAccepted()
        code, expires_at = await identity.codes.issue(user.id)
    async with database.session() as unit:
        outbox.add(
            unit,
            PasswordResetRequested(
                user_id=user.id,
                email=user.email,
                code_expires_at=expires_at,
                phone=user.phone if user.notify_sms else None,
                locale=user.locale,
                code_sealed=identity.sealer.seal(code, user.id),
            ),
        )
    logger.info("user %s: password reset code issued", user.id)
    return ResetAccepted()


@auth_router.post(
    "/password-reset/confirm",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problems(400, 422, 429, 503),
    response_class=Response,
)
async def password_reset_confirm(
    body: PasswordResetConfirm,
    identity: IdentityDep,
    database: DatabaseDep,
    outbox: OutboxDep,
    settings: SettingsDep,
) -> None:
    """Set a new password with the code; every earlier session ends."""
    email = body.email.lower()
    invalid = ProblemError(
        400, "the code is wrong, used or expired; ask for a new one", kind="invalid-code"
    )
    async with guarded():
        await identity.limiter.hit(
            "reset confirmations", settings.limit_reset_confirmations_account, email
        )
        user = await find_user(database, email)
        if user is None or not await identity.codes.redeem(user.id, body.code):
            raise invalid
    new_hash = await identity.passwords.hash(body.new_password)
    async with database.session() as unit:
        stored = await unit.get(User, user.id)
        if stored is None:
            raise invalid
        stored.password_hash = new_hash
        stored.password_changed_at = utcnow()
        unit.add(stored)
        await revoke_all(unit, stored.id, "password-reset")
        outbox.add(
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


@users_router.post("", status_code=status.HTTP_201_CREATED, responses=problems(409, 422, 429, 503))
async def register(
    body: UserCreate,
    request: Request,
    identity: IdentityDep,
    database: DatabaseDep,
    settings: SettingsDep,
) -> UserPublic:
    """Register a traveller."""
    email = body.email.lower()
    async with guarded():
        await identity.limiter.hit(
            "registrations from this address",
            settings.limit_registrations_address,
            client_address(request),
        )
        await identity.limiter.hit("registrations", settings.limit_registrations_account, email)
    user = User(
        id=str(uuid4()),
        email=email,
        password_hash=await identity.passwords.hash(body.password),
        name=body.name,
        phone=body.phone,
        locale=body.locale,
    )
    try:
        async with database.session() as unit:
            if (await unit.exec(select(User).where(User.email == email))).first():
                raise ProblemError(409, f"{email} is already registered", kind="email-taken")
            unit.add(user)
    except IntegrityError as error:
        raise ProblemError(409, f"{email} is already registered", kind="email-taken") from error
    return user_public(user)


@users_router.get("/me", responses=problems(401))
async def me(caller: CurrentUser) -> UserPublic:
    """The caller's account."""
    return user_public(caller)


@users_router.patch("/me", responses=problems(401, 422))
async def update_me(
    caller: CurrentUser, body: UserUpdate, database: DatabaseDep, outbox: OutboxDep
) -> UserPublic:
    """Change the caller's name, phone (E.164; null removes it), locale or channels."""
    given = body.model_fields_set
    async with database.session() as unit:
        user = await unit.get(User, caller.id)
        if user is None:
            raise ProblemError(401, "the caller no longer exists", kind="unauthorized")
        if "name" in given:
            user.name = body.name
        if "phone" in given:
            user.phone = body.phone
        if "locale" in given and body.locale is not None:
            user.locale = body.locale
        if "notify" in given and body.notify is not None:
            user.notify_email = body.notify.email
            user.notify_sms = body.notify.sms
        unit.add(user)
        # The notifier addresses people per card from CardBound: tell it again for each
        # card, so its messages follow the new phone, language and SMS choice.
        cards = (await unit.exec(select(Card).where(Card.user_id == user.id))).all()
        for card in cards:
            outbox.add(unit, card_bound(user, card.iccid))
    return user_public(user)
