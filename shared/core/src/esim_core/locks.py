"""Leases that let one replica at a time run a singleton loop (outbox relay, timer sweeps)."""

import secrets
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
    """A Redis lease with a random owner token, renewed on each call while held."""

    def __init__(self, redis: Redis, name: str, ttl_s: float = 10.0) -> None:
        self.redis = redis
        self.name = f"esim:lock:{name}"
        self.ttl_ms = int(ttl_s * 1000)
        self.token = secrets.token_hex(16)

    async def acquire(self) -> bool:
        """Take the lease if free, or renew it if this replica already holds it."""
        renewed = await self.redis.eval(_RENEW, 1, self.name, self.token, self.ttl_ms)
        if renewed:
            return True
        taken = await self.redis.set(self.name, self.token, nx=True, px=self.ttl_ms)
        return bool(taken)


class LocalLock:
    """A lease that is always held: for one-replica runs and tests without Redis."""

    async def acquire(self) -> bool:
        """Always true."""
        return True
