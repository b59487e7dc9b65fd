"""Password reset codes: six random digits, kept in Redis only as a keyed digest, with a TTL."""

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta

from esim_core.clock import utcnow
from redis.asyncio import Redis
from redis.exceptions import RedisError

from accounts.identity.limits import RedisUnavailableError

# One use, a bounded number of wrong tries: the compare, the count and the deletion happen in
# one script so two confirmations at once cannot both use the code or both miss the count.
# ARGV: the candidate's digest, the most wrong tries. Returns 1 when it matched.
_REDEEM = """
local digest = redis.call('HGET', KEYS[1], 'digest')
if not digest then return 0 end
if digest == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
local tries = redis.call('HINCRBY', KEYS[1], 'tries', 1)
if tries >= tonumber(ARGV[2]) then redis.call('DEL', KEYS[1]) end
return 0
"""


class ResetCodes:
    """Issues and redeems reset codes; a new code for a user replaces the one before."""

    def __init__(
        self, redis: Redis, pepper: bytes, *, ttl_s: int = 900, max_tries: int = 5
    ) -> None:
        self._redis = redis
        self._pepper = pepper
        self.ttl_s = ttl_s
        self.max_tries = max_tries

    def _key(self, user_id: str) -> str:
        return f"esim:accounts:reset-code:{user_id}"

    def _digest(self, user_id: str, code: str) -> str:
        # Keyed: a million possible codes are no secret to a plain hash, so one read of Redis
        # must not be enough to learn a code.
        return hmac.new(self._pepper, f"{user_id}:{code}".encode(), hashlib.sha256).hexdigest()

    async def issue(self, user_id: str) -> tuple[str, datetime]:
        """A new code for the user and when it expires; only its digest is stored.

        Raises:
            RedisUnavailableError: Redis did not answer.
        """
        code = f"{secrets.randbelow(10**6):06d}"
        expires_at = utcnow() + timedelta(seconds=self.ttl_s)
        key = self._key(user_id)
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(key)
                pipe.hset(key, mapping={"digest": self._digest(user_id, code), "tries": 0})
                pipe.expire(key, self.ttl_s)
                await pipe.execute()
        except (RedisError, OSError) as error:
            raise RedisUnavailableError(str(error)) from error
        return code, expires_at

    async def redeem(self, user_id: str, code: str) -> bool:
        """Use the user's code: true once for the right code, within its TTL and tries.

        Raises:
            RedisUnavailableError: Redis did not answer.
        """
        try:
            matched = await self._redis.eval(
                _REDEEM, 1, self._key(user_id), self._digest(user_id, code), self.max_tries
            )
        except (RedisError, OSError) as error:
            raise RedisUnavailableError(str(error)) from error
        return bool(int(matched))

    async def forget(self, user_id: str) -> None:
        """Drop the user's code (after a reset by any means)."""
        try:
            await self._redis.delete(self._key(user_id))
        except (RedisError, OSError) as error:
            raise RedisUnavailableError(str(error)) from error
