"""A limit on work in progress: new work waits in Kafka while too much is under way.

Under more load than the machines can finish, a consumer that takes every new request spreads
the CPU over all of them: each stage works on renewals that will not end for minutes, fewer end
each second than the platform could finish, and every saga's deadline runs while it queues.
With an `Intake`, the service's consumer stops fetching from the topics that start new work
(their partitions are paused, the group and the other topics go on) while the work in flight
is at the limit, and fetches them again, in order, once it drops below. The waiting messages
stay in Kafka, durable, and the consumer group's lag shows them.
"""

import logging
import time
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from esim_core.observability.metrics import INTAKE_HELD, INTAKE_IN_FLIGHT

logger = logging.getLogger(__name__)

#: At most one log line per this many seconds about the intake turning (held or open).
LOG_EVERY_S = 30.0


class Intake:
    """Holds back the `topics` that start new work while `in_flight()` is at `limit`.

    `in_flight` counts the work under way (for accounts, the sagas waiting on a payment or an
    activation) across every replica; it is asked at most every `check_s` seconds, and the
    messages of those topics taken since are added to its last answer, so one fetch never takes
    more than the room left. A count that fails leaves the intake as it was until the next one.
    """

    def __init__(
        self,
        name: str,
        topics: Collection[str],
        in_flight: Callable[[], Awaitable[int]],
        *,
        limit: int,
        check_s: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit < 1:
            raise ValueError(f"an intake limit is at least 1, not {limit}")
        self.name = name
        self.topics = frozenset(topics)
        self.in_flight = in_flight
        self.limit = limit
        self.check_s = check_s
        self.clock = clock
        self.held = False
        self._counted = 0
        self._taken_since = 0
        self._checked_at: float | None = None
        self._turns = 0
        self._logged_at: dict[bool, float] = {}

    @property
    def recheck_ms(self) -> int:
        """How long a fetch waits while the intake is held, so that it is looked at again soon."""
        return max(1, int(self.check_s * 1000))

    async def regulate(self, consumer: Any, max_records: int) -> int:
        """Pause or resume the intake topics' assigned partitions; returns how many records the
        next fetch may take (fewer near the limit, so it cannot overshoot it)."""
        now = self.clock()
        if self._checked_at is None or now - self._checked_at >= self.check_s:
            self._checked_at = now
            try:
                self._counted = await self.in_flight()
            except Exception as error:  # the database is away: keep the state it had
                logger.warning(
                    "%s: counting the work in flight failed (%s: %s); intake stays %s",
                    self.name,
                    type(error).__name__,
                    str(error)[:200],
                    "held" if self.held else "open",
                )
            else:
                self._taken_since = 0
                INTAKE_IN_FLIGHT.set(self._counted)
        room = self.limit - self._counted - self._taken_since
        held = room <= 0
        if held != self.held:
            self.held = held
            INTAKE_HELD.set(1 if held else 0)
            self._log_turn(now)
        # Partitions come and go with rebalances: apply the state to what is assigned now.
        mine = {tp for tp in consumer.assignment() if tp.topic in self.topics}
        paused = consumer.paused()
        if held:
            if mine - paused:
                consumer.pause(*(mine - paused))
            return max_records
        if mine & paused:
            consumer.resume(*(mine & paused))
        return max(1, min(max_records, room))

    def _log_turn(self, now: float) -> None:
        # Under sustained overload the intake turns every second or so: one line each way per
        # LOG_EVERY_S says so (the gauge `esim_intake_held` follows every turn).
        in_flight = self._counted + self._taken_since
        last = self._logged_at.get(self.held)
        if last is not None and now - last < LOG_EVERY_S:
            logger.debug("%s: intake held %s, %d in flight", self.name, self.held, in_flight)
            self._turns += 1
            return
        logger.info(
            "%s: %s new work (%s): %d in flight, limit %d%s",
            self.name,
            "holding back" if self.held else "taking",
            ", ".join(sorted(self.topics)),
            in_flight,
            self.limit,
            f"; {self._turns} turns without a line before this" if self._turns else "",
        )
        self._logged_at[self.held] = now
        self._turns = 0

    def taken(self, records: Collection[Any]) -> None:
        """Count the fetched records of the intake topics against the room left."""
        self._taken_since += sum(1 for record in records if record.topic in self.topics)
