"""Bounded retries of one call to an outside system within a round of due work."""

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Generic, TypeVar

from sqlmodel import SQLModel

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
            ceiling = min(policy.wait_max_s, policy.wait_multiplier_s * 2 ** (attempt - 1))
            await asyncio.sleep(random.uniform(0, ceiling))
    raise AssertionError("unreachable: the last try returned or raised")  # pragma: no cover


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

    # Subclasses that start a round from the row its claim returned (`work_claimed`) set this.
    claims_rows: ClassVar[bool] = False

    @property
    def round(self) -> Callable[[Any], Awaitable[None]]:
        """What the due-work loop runs per claimed row: `work_claimed` or `work`."""
        return self.work_claimed if self.claims_rows else self.work

    async def run_once(self) -> int:
        """Claim due rows and work them concurrently; returns how many were claimed."""
        return await work_due(
            self.database,
            self.table,
            self.round,
            what=self.what,
            limit=self.batch,
            lease_s=self.lease_s,
            rows=self.claims_rows,
        )

    async def work(self, key: Any) -> None:
        """One round for one claimed row."""
        raise NotImplementedError

    async def work_claimed(self, row: Any) -> None:
        """One round for a row as its claim leased it; by default, `work` on its key."""
        await self.work(row.id)
