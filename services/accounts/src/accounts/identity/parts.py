"""What the identity routes work with: sessions, password hashing, rate limits, reset codes."""

from dataclasses import dataclass

from esim_core.sealing import Sealer

from accounts.identity.limits import RateLimiter
from accounts.identity.passwords import Passwords
from accounts.identity.resets import ResetCodes
from accounts.identity.sessions import Sessions


@dataclass(frozen=True)
class Identity:
    """The identity adapters, configured from settings in the bootstrap."""

    sessions: Sessions
    passwords: Passwords
    limiter: RateLimiter
    codes: ResetCodes
    sealer: Sealer
