"""Passwords (scrypt, salted) and bearer access tokens (HS256 JWTs)."""

import base64
import hashlib
import hmac
import secrets
from datetime import timedelta

import jwt
from esim_core.worker import utcnow

_N, _R, _P = 2**14, 8, 1


def hash_password(password: str) -> str:
    """A salted scrypt hash, self-describing so its parameters can change later."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    encoded = [base64.b64encode(part).decode() for part in (salt, digest)]
    return "$".join(["scrypt", str(_N), str(_R), str(_P), *encoded])


def verify_password(password: str, stored: str) -> bool:
    """Tell whether a password matches a stored hash, in constant time."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    candidate = hashlib.scrypt(
        password.encode(),
        salt=base64.b64decode(salt),
        n=int(n),
        r=int(r),
        p=int(p),
        dklen=32,
    )
    return hmac.compare_digest(candidate, base64.b64decode(digest))


class TokenError(Exception):
    """An access token that is missing, malformed, expired or not ours."""


class TokenIssuer:
    """Issues and checks access tokens."""

    def __init__(self, secret: str, ttl_s: int) -> None:
        self._secret = secret
        self.ttl_s = ttl_s

    def issue(self, user_id: str) -> str:
        """A signed token naming the user, valid for `ttl_s` seconds."""
        now = utcnow()
        claims = {"sub": user_id, "iat": now, "exp": now + timedelta(seconds=self.ttl_s)}
        return jwt.encode(claims, self._secret, algorithm="HS256")

    def user_id(self, token: str) -> str:
        """The user a valid token names.

        Raises:
            TokenError: the token is not valid.
        """
        try:
            claims = jwt.decode(
                token, self._secret, algorithms=["HS256"], options={"require": ["sub", "exp"]}
            )
        except jwt.ExpiredSignatureError as error:
            raise TokenError("the access token has expired") from error
        except jwt.InvalidTokenError as error:
            raise TokenError("the access token is not valid") from error
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise TokenError("the access token names no user")
        return subject
