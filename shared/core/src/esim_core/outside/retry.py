"""Bounded retries of one call to an outside system within a round of due work."""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from esim_core.duework.backoff import backoff

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class TryPolicy:
    """Tries of one outside call within a round, on transient errors only."""

    attempts: int = 4
    wait_multiplier_s: float = 0.1
    wait_max_s: float = 2.0


async def within_round(
    what: str,
    call: Callable[[], Awaitable[T]],
    policy: TryPolicy,
    transient: type[Exception],
    system: str = "outside system",
) -> T:
    """Run a call, retrying it on `transient` errors with jittered exponential backoff.

    The wait before try n+1 is uniform in [0, min(wait_max_s, wait_multiplier_s * 2^(n-1))]
    ("full jitter"). A plain loop: the first try, which nearly always answers, costs nothing
    beyond the call (a retrying library's machinery cost more than the call's own Python).

    Raises:
        transient: still failing after `policy.attempts` tries; the caller reschedules the row.
    """
    attempts = max(1, policy.attempts)
    for attempt in range(1, attempts + 1):
        try:
            return await call()
        except transient as error:
            if attempt == attempts:
                raise
            logger.info(
                "%s: %s unavailable (%s); try %d of %d", what, system, error, attempt, attempts
            )
            await asyncio.sleep(
                backoff(attempt, policy.wait_multiplier_s, policy.wait_max_s, jitter=1.0)
            )
    raise AssertionError("unreachable: the last try returned or raised")  # pragma: no cover
