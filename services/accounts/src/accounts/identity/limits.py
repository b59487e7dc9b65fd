"""Rate limits kept in Redis: GCRA, checked and counted in one Lua script, so replicas agree."""

import math
import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BeforeValidator, Field
from pydantic_settings import NoDecode
from redis.asyncio import Redis
from redis.exceptions import RedisError

# GCRA (the generic cell rate algorithm): one number per key, the "theoretical arrival time".
# A request is allowed while that time is at most `period` ahead of now; allowing it moves
# the time on by `period / count`. ARGV: count, period in ms, 1 to count the request or 0 to
# only look. Returns {allowed (1/0), ms until the next request would be allowed}.
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local count = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local interval = period / count
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local after = tat + interval
if after - now > period then
  return {0, math.ceil(after - period - now)}
end
if ARGV[3] == '1' then
  redis.call('SET', KEYS[1], tostring(after), 'PX', math.ceil(after - now))
end
return {1, 0}
"""


@dataclass(frozen=True)
class Rate:
    """At most `count` events in any `period_s` seconds (bursts allowed up to `count`)."""

    count: int
    period_s: int

    def __str__(self) -> str:
        return f"{self.count}/{self.period_s}"


def _parse_rate(value: Any) -> Any:
    if isinstance(value, Rate):
        return value
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(value))
    if match is None or int(match.group(1)) < 1 or int(match.group(2)) < 1:
        raise ValueError(f"a rate is '<count>/<seconds>' such as '10/900', got {value!r}")
    return Rate(int(match.group(1)), int(match.group(2)))


# NoDecode: the environment gives '10/900', not JSON.
RateSetting = Annotated[Rate, BeforeValidator(_parse_rate), NoDecode]


def rate_field(default: Rate, what: str) -> Any:
    """A `RateSetting` field: `what` is counted, and the description says how to set it."""
    return Field(default, description=f"{what}, as count/seconds")


class RateLimitedError(Exception):
    """Too many requests of one kind from one client or for one account."""

    def __init__(self, what: str, retry_after_s: int) -> None:
        super().__init__(f"too many {what}; try again in {retry_after_s} s")
        self.what = what
        self.retry_after_s = retry_after_s


class RedisUnavailableError(Exception):
    """Redis (the counts, the reset codes) did not answer: refuse, never let through."""


class RateLimiter:
    """Named limits on keys (an account, a client address), counted in Redis."""

    def __init__(self, redis: Redis, *, prefix: str = "esim:accounts:rate") -> None:
        self._redis = redis
        self._prefix = prefix

    async def hit(self, what: str, rate: Rate, key: str) -> None:
        """Count one event of `what` for `key`, refusing it when the rate is exhausted.

        Raises:
            RateLimitedError: the limit is reached; nothing was counted.
            RedisUnavailableError: Redis did not answer.
        """
        await self._run(what, rate, key, count=True)

    async def check(self, what: str, rate: Rate, key: str) -> None:
        """Refuse when the rate for `key` is already exhausted, without counting anything.

        Raises:
            RateLimitedError: the limit is reached.
            RedisUnavailableError: Redis did not answer.
        """
        await self._run(what, rate, key, count=False)

    async def _run(self, what: str, rate: Rate, key: str, *, count: bool) -> None:
        name = f"{self._prefix}:{what.replace(' ', '-')}:{key}"
        try:
            allowed, wait_ms = await self._redis.eval(
                _GCRA, 1, name, rate.count, rate.period_s * 1000, "1" if count else "0"
            )
        except (RedisError, OSError) as error:
            raise RedisUnavailableError(str(error)) from error
        if not int(allowed):
            raise RateLimitedError(what, max(1, math.ceil(int(wait_ms) / 1000)))
