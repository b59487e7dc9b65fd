"""Bounded retries of one call to an outside system within a round of due work."""

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from esim_core.worker import as_utc

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

    Raises:
        transient: still failing after `policy.attempts` tries; the caller reschedules the row.
    """

    def log_retry(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        logger.info(
            "%s: %s unavailable (%s); try %d of %d",
            what,
            system,
            error,
            state.attempt_number,
            policy.attempts,
        )

    async for attempt in AsyncRetrying(
        stop=stop_after_attempt(policy.attempts),
        wait=wait_random_exponential(multiplier=policy.wait_multiplier_s, max=policy.wait_max_s),
        retry=retry_if_exception_type(transient),
        before_sleep=log_retry,
        reraise=True,
    ):
        with attempt:
            return await call()
    raise AssertionError("AsyncRetrying neither returned nor raised")  # pragma: no cover


def same_lease(stored: datetime | None, claimed: datetime | None) -> bool:
    """Tell whether a row still carries the lease this round claimed it with."""
    if stored is None or claimed is None:
        return False
    return as_utc(stored) == as_utc(claimed)
