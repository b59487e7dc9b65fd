"""A due-work loop step whose rounds each make one call to an outside system."""

import logging
from collections.abc import Awaitable, Callable
from dataclasses import KW_ONLY, dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar, Generic, TypeVar

from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from esim_core.clock import as_utc
from esim_core.duework.loop import clear_due, work_due
from esim_core.messaging.outbox import Outbox
from esim_core.outside.retry import TryPolicy, within_round
from esim_core.persistence.db import Database

logger = logging.getLogger(__name__)

PortT = TypeVar("PortT")
RulesT = TypeVar("RulesT")
T = TypeVar("T")

#: The bound of every due row's `last_error` column (VARCHAR(512)), with room to spare.
ERROR_CHARS = 500


def same_lease(stored: datetime | None, claimed: datetime | None) -> bool:
    """Tell whether a row still carries the lease this round claimed it with."""
    if stored is None or claimed is None:
        return False
    return as_utc(stored) == as_utc(claimed)


@dataclass(eq=False, repr=False)  # a service object: equal to itself alone, and no secrets in reprs
class DueWorker(Generic[PortT, RulesT]):
    """A loop step over due rows of `table` that each need a call to an outside system.

    Subclasses set `table` and `what` and implement one round for one claimed row: `work(key)`,
    or `work_claimed(row)` with `claims_rows` (the outside call through `port` with `tries`,
    then one commit of outcome and event, `commit_round`).
    """

    table: ClassVar[type[SQLModel]]
    what: ClassVar[str]
    #: What a row is called in the logs.
    noun: ClassVar[str] = "row"
    #: What keeps the outside effect single when two rounds make the same call, for the logs.
    kept_by: ClassVar[str] = ""
    #: The port's error that a later try within the round may not meet, and the system's name.
    transient: ClassVar[type[Exception]]
    system: ClassVar[str]

    database: Database
    outbox: Outbox
    port: PortT
    rules: RulesT
    tries: TryPolicy
    _: KW_ONLY
    batch: int = 20
    lease_s: float = 60.0

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

    async def work(self, key: Any, /) -> None:
        """One round for one claimed row, given its key; with `claims_rows`, read it first."""
        if not self.claims_rows:
            raise NotImplementedError
        async with self.database.session() as session:
            row = await session.get(self.table, key)
        if row is not None:
            await self.work_claimed(row)

    async def work_claimed(self, row: Any, /) -> None:
        """One round for a row as its claim leased it; without `claims_rows`, `work` on its key."""
        if self.claims_rows:
            raise NotImplementedError
        await self.work(row.id)

    async def within_round(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """Run one call to the outside system, tried again on `transient` within the round."""
        return await within_round(what, call, self.tries, self.transient, self.system)

    async def clear(self, row: Any) -> None:
        """Take a row that is final already off the due list (a stale due time), if still ours."""
        await clear_due(self.database, self.table, row.id, row.lease_until)

    async def commit_round(
        self,
        key: Any,
        lease: datetime | None,
        apply: Callable[[AsyncSession, Any], Awaitable[None]],
        still: Callable[[Any], bool] = lambda row: True,
        *,
        load: Callable[[AsyncSession, Any], Awaitable[Any]] | None = None,
    ) -> None:
        """Commit a round's outcome with `apply`, if the row is still `still` and still ours.

        The row is locked until the outcome commits, so no claim can slip in between the check
        and the write. A row claimed again meanwhile (its lease ran out mid-round) belongs to
        the newer round: this round's outcome is dropped. `load` reads the row locked (None if
        it is gone); by default the ORM session does, and its flush writes what `apply` changed.
        """
        async with self.database.session() as session:
            current: Any = (
                await load(session, key)
                if load is not None
                else await session.get(self.table, key, with_for_update=True)
            )
            if current is None or not still(current):
                return
            if not same_lease(current.lease_until, lease):
                logger.warning(
                    "%s %s was claimed again during its round; this round's outcome is dropped%s",
                    self.noun,
                    key,
                    f" ({self.kept_by})" if self.kept_by else "",
                )
                return
            await apply(session, current)

    def count_round(self, session: AsyncSession, row: Any, now: datetime) -> None:
        """Record on a locked row that a round ran, whatever its outcome, and end its lease."""
        row.attempts += 1
        row.updated_at = now
        row.lease_until = None
        session.add(row)

    def another_round(
        self,
        row: Any,
        error: str,
        now: datetime,
        delay: Callable[[int, RulesT], float | None],
        until: datetime | None = None,
    ) -> float | None:
        """Count a round in which the outside system gave no answer, and schedule the next.

        `delay` turns the rounds in a row so far into the pause before the next (None: stop
        trying, and the caller settles the row); `until` caps the next due time.

        Returns:
            The pause, or None.
        """
        row.unavailable_rounds += 1
        row.last_error = error[:ERROR_CHARS]
        pause = delay(row.unavailable_rounds, self.rules)
        if pause is not None:
            due = now + timedelta(seconds=pause)
            row.due_at = due if until is None else min(due, until)
        return pause
