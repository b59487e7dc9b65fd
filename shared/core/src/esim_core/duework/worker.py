"""A due-work loop step whose rounds each make one call to an outside system."""

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, ClassVar, Generic, TypeVar

from sqlmodel import SQLModel

from esim_core.clock import as_utc
from esim_core.duework.loop import work_due
from esim_core.messaging.outbox import Outbox
from esim_core.outside.retry import TryPolicy
from esim_core.persistence.db import Database

PortT = TypeVar("PortT")
RulesT = TypeVar("RulesT")


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
