"""Bounded retries of one call to an outside system within a round of due work."""

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Generic, TypeVar

from sqlmodel import SQLModel
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from esim_core.db import Database
from esim_core.outbox import Outbox
from esim_core.worker import as_utc, work_due

logger = logging.getLogger(__name__)

T = TypeVar("T")
PortT = TypeVar("PortT")
RulesT = TypeVar("RulesT")


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


class DueWorker(Generic[PortT, RulesT]):
    """A loop step over due rows of `table` that each need a call to an outside system.

    Subclasses set `table` and `what` and implement `work(key)`: one round for one claimed row
    (the outside call through `port` with `tries`, then one commit of outcome and event).
    """

    table: ClassVar[type[SQLModel]]
    what: ClassVar[str]

    def __init__(
        self,
        database: Database,
        outbox: Outbox,
        port: PortT,
        rules: RulesT,
        tries: TryPolicy,
        *,
        batch: int = 20,
        lease_s: float = 60.0,
    ) -> None:
        self.database = database
        self.outbox = outbox
        self.port = port
        self.rules = rules
        self.tries = tries
        self.batch = batch
        self.lease_s = lease_s

    async def run_once(self) -> int:
        """Claim due rows and work them concurrently; returns how many were claimed."""
        return await work_due(
            self.database,
            self.table,
            self.work,
            what=self.what,
            limit=self.batch,
            lease_s=self.lease_s,
        )

    async def work(self, key: Any) -> None:
        """One round for one claimed row."""
        raise NotImplementedError
