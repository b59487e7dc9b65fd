"""RedisLock: renewed in Redis only once a third of its TTL has passed, never trusted longer."""

from typing import Any

import pytest
from esim_core.duework import leases as locks
from esim_core.duework.leases import RedisLock


class FakeRedis:
    """Answers the lock's two commands as Redis would for one key, and counts them."""

    def __init__(self) -> None:
        self.owner: str | None = None
        self.calls: list[str] = []

    async def eval(self, _script: str, _keys: int, _name: str, token: str, _ttl: int) -> int:
        self.calls.append("renew")
        return 1 if self.owner == token else 0

    async def set(self, _name: str, token: str, *, nx: bool, px: int) -> bool:
        self.calls.append("take")
        if self.owner is None:
            self.owner = token
            return True
        return False


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [100.0]
    monkeypatch.setattr(locks.time, "monotonic", lambda: now[0])
    return now


async def test_a_held_lease_is_renewed_once_a_third_of_its_ttl_has_passed(
    clock: list[float],
) -> None:
    redis: Any = FakeRedis()
    lock = RedisLock(redis, "relay", ttl_s=9.0)

    assert await lock.acquire()
    assert redis.calls == ["renew", "take"]
    clock[0] += 2.9
    assert await lock.acquire()
    assert redis.calls == ["renew", "take"], "within a third of the TTL: no round trip"
    clock[0] += 0.2
    assert await lock.acquire()
    assert redis.calls == ["renew", "take", "renew"]


async def test_a_lease_someone_else_holds_is_not_taken_nor_trusted(clock: list[float]) -> None:
    redis: Any = FakeRedis()
    redis.owner = "another replica"
    lock = RedisLock(redis, "relay", ttl_s=9.0)

    assert not await lock.acquire()
    assert not await lock.acquire()
    assert redis.calls == ["renew", "take", "renew", "take"]


async def test_a_lease_lost_in_redis_is_noticed_at_the_next_renewal(clock: list[float]) -> None:
    redis: Any = FakeRedis()
    lock = RedisLock(redis, "relay", ttl_s=9.0)
    assert await lock.acquire()
    redis.owner = "another replica"  # Redis restarted and someone else took it

    clock[0] += 3.5
    assert not await lock.acquire()
