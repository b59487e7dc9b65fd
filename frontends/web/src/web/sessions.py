"""The traveller's session: one sealed, HttpOnly cookie holding the API's tokens and the language.

The cookie is AES-GCM sealed (`esim_core.sealing`) with the cookie secret, so the browser can
neither read the tokens nor change them; the CSRF token of every form is an HMAC of the
session's random id under a second secret. Nothing of it ever appears in a URL.
"""

import hashlib
import hmac
import json
import logging
import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from esim_core.sealing import Sealer, SealError
from starlette.requests import Request
from starlette.responses import Response

logger = logging.getLogger(__name__)

COOKIE = "esim_session"
_CONTEXT = "esim-web-session"


@dataclass
class Session:
    """What the site remembers of one browser between requests."""

    sid: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    locale: str | None = None
    email: str | None = None
    access_token: str | None = None
    refresh_token: str | None = None
    #: When the access token stops working (epoch seconds), from the API's `expires_in`.
    expires_at: float = 0.0
    #: Sentences to show once on the next page rendered.
    flash: list[str] = field(default_factory=list)
    changed: bool = field(default=False, compare=False)

    @property
    def signed_in(self) -> bool:
        """Whether the session holds the API's tokens."""
        return self.refresh_token is not None

    def sign_in(self, tokens: dict[str, Any], email: str, now: float | None = None) -> None:
        """Keep the tokens of a password or refresh grant; a new id against session fixation."""
        self.sid = secrets.token_urlsafe(18)
        self.email = email
        self.keep_tokens(tokens, now)

    def keep_tokens(self, tokens: dict[str, Any], now: float | None = None) -> None:
        """Keep a grant's tokens (the refresh token rotates at every use)."""
        self.access_token = str(tokens["access_token"])
        self.refresh_token = str(tokens.get("refresh_token") or self.refresh_token or "") or None
        self.expires_at = (now if now is not None else time.time()) + int(
            tokens.get("expires_in", 900)
        )
        self.changed = True

    def sign_out(self) -> None:
        """Forget the tokens and the account; the language stays."""
        self.access_token = self.refresh_token = self.email = None
        self.expires_at = 0.0
        self.sid = secrets.token_urlsafe(18)
        self.changed = True

    def say(self, sentence: str) -> None:
        """Show `sentence` once, on the next page."""
        self.flash.append(sentence)
        self.changed = True

    def take_flash(self) -> list[str]:
        """The sentences to show now; they are not shown again."""
        said, self.flash = self.flash, []
        if said:
            self.changed = True
        return said


class SessionCodec:
    """Seals sessions into cookie values and opens them; derives the CSRF token of a session."""

    def __init__(self, cookie_key: str, csrf_key: str, *, secure: bool, max_age_s: int) -> None:
        self._sealer = Sealer(cookie_key)
        self._csrf_key = hashlib.sha256(f"esim-web-csrf:{csrf_key}".encode()).digest()
        self.secure = secure
        self.max_age_s = max_age_s

    def load(self, request: Request) -> Session:
        """The request's session, or a new empty one (a missing, altered or foreign cookie)."""
        raw = request.cookies.get(COOKIE)
        if not raw:
            return Session(changed=True)
        try:
            data = json.loads(self._sealer.open(raw, _CONTEXT))
            data.pop("changed", None)
            return Session(**data)
        except (SealError, ValueError, TypeError):
            logger.info("a session cookie that cannot be opened was replaced")
            return Session(changed=True)

    def store(self, session: Session, response: Response) -> None:
        """Write the session into the response's cookie (HttpOnly, SameSite=Lax)."""
        data = asdict(session)
        data.pop("changed")
        response.set_cookie(
            COOKIE,
            self._sealer.seal(json.dumps(data, separators=(",", ":")), _CONTEXT),
            max_age=self.max_age_s,
            path="/",
            httponly=True,
            secure=self.secure,
            samesite="lax",
        )

    def csrf_token(self, session: Session) -> str:
        """The CSRF token of this session's forms."""
        return hmac.new(self._csrf_key, session.sid.encode(), hashlib.sha256).hexdigest()

    def csrf_valid(self, session: Session, given: str | None) -> bool:
        """Whether a form's token is this session's."""
        return bool(given) and hmac.compare_digest(self.csrf_token(session), str(given))
