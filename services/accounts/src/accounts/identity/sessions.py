"""Sign-in sessions: open one per password login, rotate its refresh token, revoke it."""

import logging
import uuid
from datetime import datetime, timedelta
from typing import Any

from esim_core.clock import as_utc, utcnow
from esim_core.persistence.db import Database
from sqlalchemy import Select, bindparam, delete, or_, select, update
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from accounts.identity.tokens import TokenError, TokenIssuer
from accounts.store import USERS, User, UserSession

logger = logging.getLogger(__name__)

# The session of an access token and its user, in one statement built once: it runs on every
# request with a token.
_CALLER: Select[*tuple[Any, ...]] = (
    select(
        col(UserSession.user_id).label("session_user_id"),
        col(UserSession.revoked_at).label("session_revoked_at"),
        col(UserSession.expires_at).label("session_expires_at"),
        *User.__table__.columns,  # type: ignore[attr-defined]
    )
    .select_from(UserSession)
    .outerjoin(User, col(User.id) == col(UserSession.user_id))
    .where(col(UserSession.id) == bindparam("session_id"))
)


class SessionEndedError(TokenError):
    """The token's session was logged out, revoked by a password reset, or expired."""


class RefreshReusedError(TokenError):
    """A refresh token that was already rotated came back: the whole session is revoked."""


class Sessions:
    """Sessions in the accounts database, and the tokens that name them."""

    def __init__(self, database: Database, tokens: TokenIssuer) -> None:
        self.database = database
        self.tokens = tokens

    async def open(self, user_id: str) -> tuple[str, str]:
        """A new session for the user: its access token and its first refresh token."""
        session_id = str(uuid.uuid4())
        refresh = self.tokens.issue("refresh", user_id, session_id)
        async with self.database.session() as unit:
            unit.add(
                UserSession(
                    id=session_id,
                    user_id=user_id,
                    refresh_jti=refresh.claims.jti,
                    expires_at=refresh.claims.expires_at,
                )
            )
        return self.tokens.issue("access", user_id, session_id).token, refresh.token

    async def rotate(self, refresh_token: str) -> tuple[str, str]:
        """Trade a refresh token for a new access token and a new refresh token.

        Raises:
            TokenError: the token is not valid.
            SessionEndedError: its session no longer exists or was revoked.
            RefreshReusedError: the token was already used; the session is now revoked.
        """
        claims = self.tokens.read("refresh", refresh_token)
        async with self.database.session() as unit:
            # Locked, so two refreshes with one token cannot both succeed on PostgreSQL.
            row = await unit.get(UserSession, claims.session_id, with_for_update=True)
            self._check_live(row, claims.user_id)
            assert row is not None
            if row.refresh_jti != claims.jti:
                _revoke(row, "refresh-reused")
                unit.add(row)
                reused = True
            else:
                reused = False
                refresh = self.tokens.issue("refresh", row.user_id, row.id)
                row.refresh_jti = refresh.claims.jti
                row.refreshed_at = utcnow()
                row.expires_at = refresh.claims.expires_at
                unit.add(row)
        if reused:
            # Committed first: the revocation must stand although the request fails.
            logger.warning("session %s: a rotated refresh token was reused; revoked", row.id)
            raise RefreshReusedError("this refresh token was already used; the session is ended")
        return self.tokens.issue("access", row.user_id, row.id).token, refresh.token

    async def close(self, refresh_token: str) -> None:
        """Log out: revoke the session the refresh token belongs to.

        Raises:
            TokenError: the token is not valid, or its session has already ended.
        """
        claims = self.tokens.read("refresh", refresh_token)
        async with self.database.session() as unit:
            row = await unit.get(UserSession, claims.session_id, with_for_update=True)
            self._check_live(row, claims.user_id)
            assert row is not None
            _revoke(row, "logout")
            unit.add(row)

    async def caller(self, access_token: str) -> User:
        """The user an access token speaks for, while its session lives.

        Raises:
            TokenError: the token is not valid, its session ended, or its user is gone.
        """
        claims = self.tokens.read("access", access_token)
        async with self.database.session() as unit:
            connection = await unit.connection()
            found = (await connection.execute(_CALLER, {"session_id": claims.session_id})).first()
        if found is None or found.session_user_id != claims.user_id:
            raise SessionEndedError("the token's session does not exist")
        _check_open(found.session_revoked_at, found.session_expires_at)
        if found.id is None:
            raise TokenError("the access token's user no longer exists")
        return USERS.of(found._mapping)

    @staticmethod
    def _check_live(row: UserSession | None, user_id: str) -> None:
        if row is None or row.user_id != user_id:
            raise SessionEndedError("the token's session does not exist")
        _check_open(row.revoked_at, row.expires_at)


def _check_open(revoked_at: datetime | None, expires_at: datetime) -> None:
    if revoked_at is not None:
        raise SessionEndedError("the token's session has ended; sign in again")
    if as_utc(expires_at) <= utcnow():
        raise SessionEndedError("the session has expired; sign in again")


async def purge_sessions(database: Database, *, keep_s: float) -> int:
    """Delete sessions that ended (expired or revoked) more than `keep_s` seconds ago.

    An ended session only has to outlive its refresh token's reuse being told apart from a
    forgery; past `keep_s`, its tokens are refused by their own `exp` anyway.

    Returns:
        How many sessions were deleted.
    """
    before = utcnow() - timedelta(seconds=keep_s)
    async with database.session() as unit:
        result = await unit.exec(
            delete(UserSession).where(
                or_(
                    col(UserSession.expires_at) < before,
                    col(UserSession.revoked_at) < before,
                )
            )
        )
    deleted = int(result.rowcount or 0)
    if deleted:
        logger.info("purged %d ended sessions", deleted)
    return deleted


async def revoke_all(unit: AsyncSession, user_id: str, reason: str) -> None:
    """Revoke every live session of a user, in the caller's transaction."""
    await unit.exec(
        update(UserSession)
        .where(col(UserSession.user_id) == user_id, col(UserSession.revoked_at).is_(None))
        .values(revoked_at=utcnow(), revoked_reason=reason)
    )


def _revoke(row: UserSession, reason: str) -> None:
    row.revoked_at = utcnow()
    row.revoked_reason = reason
