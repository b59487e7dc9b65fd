"""Leases that let one replica at a time run a singleton loop (outbox relay, timer sweeps)."""

import secrets
import time
from typing import Protocol

from redis.asyncio import Redis

_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""


class Lock(Protocol):
    """A lease that a loop re-acquires before each round."""

    async def acquire(self) -> bool:
        """Take or renew the lease; true while this replica holds it."""
        ...


class RedisLock:
    """A Redis lease with a random owner token, renewed while held.

    A loop asks before every round, and a busy relay runs hundreds of rounds a second: the
    lease is renewed in Redis only once a third of its TTL has passed since the last renewal
    (timed from before that request was sent), so the holder never believes in a lease that
    Redis let lapse, with two thirds of the TTL to spare.
    """

    def __init__(self, redis: Redis, name: str, ttl_s: float = 10.0) -> None:
        self.redis = redis
        self.name = f"esim:lock:{name}"
        self.ttl_ms = int(ttl_s * 1000)
        self.token = secrets.token_hex(16)
        self._trusted_until = 0.0

    async def acquire(self) -> bool:
        """Take the lease if free, or renew it if this replica already holds it."""
        asked_at = time.monotonic()
        if asked_at < self._trusted_until:
            return True
        self._trusted_until = 0.0
        renewed = await self.redis.eval(_RENEW, 1, self.name, self.token, self.ttl_ms)
        if not renewed:
            renewed = await self.redis.set(self.name, self.token, nx=True, px=self.ttl_ms)
        if renewed:
            self._trusted_until = asked_at + self.ttl_ms / 3000
        return bool(renewed)


class LocalLock:
    """A lease that is always held: for one-replica runs and tests without Redis."""

    async def acquire(self) -> bool:
        """Always true."""
        return True
