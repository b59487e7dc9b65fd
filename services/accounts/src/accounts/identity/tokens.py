"""Bearer tokens: short-lived access JWTs and rotating refresh JWTs, both naming a session."""

import uuid
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

import jwt
from esim_core.clock import utcnow

TokenKind = Literal["access", "refresh"]
_REQUIRED = ["iss", "aud", "sub", "exp", "iat", "jti", "sid", "typ"]


class TokenError(Exception):
    """A token that is missing, malformed, expired, of the wrong kind, or not ours."""


@dataclass(frozen=True)
class TokenClaims:
    """What a valid token says: whose it is, the session it belongs to, and its own id."""

    user_id: str
    session_id: str
    jti: str
    expires_at: datetime


@dataclass(frozen=True)
class IssuedToken:
    """A signed token and the claims it carries."""

    token: str
    claims: TokenClaims


@dataclass(frozen=True)
class TokenIssuer:
    """Signs and checks the service's tokens (HS256), with issuer and audience pinned."""

    secret: str = field(repr=False)
    _: KW_ONLY
    access_ttl_s: int
    refresh_ttl_s: int
    issuer: str = "https://accounts.esim.example"
    audience: str = "esim-accounts"
    clock: Callable[[], datetime] = utcnow

    def issue(self, kind: TokenKind, user_id: str, session_id: str) -> IssuedToken:
        """A new token of `kind` for the user's session, with a fresh `jti`."""
        now = self.clock().replace(microsecond=0)
        ttl = self.access_ttl_s if kind == "access" else self.refresh_ttl_s
        claims = TokenClaims(
            user_id=user_id,
            session_id=session_id,
            jti=str(uuid.uuid4()),
            expires_at=now + timedelta(seconds=ttl),
        )
        payload = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": user_id,
            "sid": session_id,
            "jti": claims.jti,
            "typ": kind,
            "iat": now,
            "exp": claims.expires_at,
        }
        return IssuedToken(jwt.encode(payload, self.secret, algorithm="HS256"), claims)

    def read(self, kind: TokenKind, token: str) -> TokenClaims:
        """The claims of a valid token of `kind`.

        Raises:
            TokenError: the signature, issuer, audience, times or kind are not right.
        """
        try:
            claims = jwt.decode(
                token,
                self.secret,
                algorithms=["HS256"],
                issuer=self.issuer,
                audience=self.audience,
                options={"require": _REQUIRED},
            )
        except jwt.ExpiredSignatureError as error:
            raise TokenError(f"the {kind} token has expired") from error
        except jwt.InvalidTokenError as error:
            raise TokenError(f"the {kind} token is not valid") from error
        if claims.get("typ") != kind:
            raise TokenError(f"this is not an {kind} token, it cannot be used here")
        fields = (claims.get("sub"), claims.get("sid"), claims.get("jti"))
        if not all(isinstance(value, str) and value for value in fields):
            raise TokenError(f"the {kind} token is not valid")
        return TokenClaims(
            user_id=claims["sub"],
            session_id=claims["sid"],
            jti=claims["jti"],
            expires_at=datetime.fromtimestamp(claims["exp"], tz=UTC),
        )
