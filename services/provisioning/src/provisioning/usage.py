"""Following live bundles: what the platform measured becomes UsageUpdated, DataLow and transitions.

Polls (`UsagePoller`, due work per card) and signed callbacks (`callbacks.py`) both report to
`observe`, which compares a report with the stored bundle under a row lock and publishes only
what is new, in the same transaction as the new state: a callback and a poll that report the
same change, a redelivered callback or a redo after a crash publish nothing the second time.
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol, TypedDict, cast
from uuid import UUID

from esim_core.clock import as_utc, utcnow
from esim_core.duework.worker import DueWorker
from esim_core.messaging.outbox import Outbox
from esim_core.persistence.db import add_row
from esim_core.persistence.driver import Target
from esim_schemas import BundleCancelled, BundleEnded, BundleStarted, DataLow, UsageUpdated
from esim_schemas.events import BundleCancelReason
from esim_schemas.types import BundleStatus
from prometheus_client import Counter
from sqlmodel.ext.asyncio.session import AsyncSession

from provisioning.domain import (
    ENDED_STATUSES,
    UsageRules,
    event_id,
    later_status,
    retry_delay,
    thresholds_reached,
    usage_poll_delay,
)
from provisioning.platforms import BundleStatus as OrderStatus
from provisioning.platforms import (
    BundleUsage,
    CardUsage,
    EsimPlatform,
    PlatformRateLimitedError,
    PlatformRejectedError,
    PlatformUnavailableError,
    UnknownIccidError,
)
from provisioning.store import (
    Activation,
    Bundle,
    UsageWatch,
    cancel_bundle,
    followed_orders,
    live_bundle_rows,
    locked_followed_bundles,
    locked_watch,
    new_bundle,
    upsert_usage_watch,
    write_changes,
)

logger = logging.getLogger(__name__)

DATA_LOW = Counter("esim_provisioning_data_low_total", "DataLow events published", ["threshold"])


@dataclass(frozen=True)
class Observation:
    """What the platform said about one bundle at one moment."""

    order_id: str
    status: str
    data_used_mb: int
    as_of: datetime
    data_mb: int | None = None
    valid_from: datetime | None = None
    valid_until: datetime | None = None


def observe(outbox: Outbox, session: Target, bundle: Bundle, seen: Observation) -> bool:
    """Fold one report into a (locked) bundle; publish what changed. Returns whether anything did.

    A report older than the last measurement does not move usage back; a status never goes back
    (queued → active → depleted | expired); each threshold and transition is published once.
    The bundle is written by whoever read it: the session's flush, for a bundle it loaded (a
    callback's); the poll, for the ones it read on the driver (`write_changes`).
    """
    changed = False
    renewal = UUID(bundle.renewal_id)
    status = later_status(bundle.status, seen.status)
    # A queued bundle moves forward when the one before it ends early (used up, cut short).
    moved = seen.valid_from is not None and seen.valid_until is not None and status != "queued"
    if moved and (as_utc(bundle.valid_from), as_utc(bundle.valid_until)) != (
        seen.valid_from,
        seen.valid_until,
    ):
        assert seen.valid_from is not None and seen.valid_until is not None
        bundle.valid_from, bundle.valid_until = seen.valid_from, seen.valid_until
        changed = True
    if status != bundle.status:
        bundle.status = status
        changed = True
    last = as_utc(bundle.usage_as_of)
    fresh = last is None or seen.as_of >= last
    # A bundle starts with nothing used: a first report of 0 MB is measured, not published.
    if fresh and seen.data_used_mb != bundle.data_used_mb:
        bundle.data_used_mb = min(seen.data_used_mb, bundle.data_mb)
        bundle.usage_as_of = seen.as_of
        changed = True
        outbox.add(
            session,
            UsageUpdated(
                iccid=bundle.iccid,
                renewal_id=renewal,
                data_total_mb=bundle.data_mb,
                data_used_mb=bundle.data_used_mb,
                as_of=seen.as_of,
                plan_code=bundle.plan_code,
                bundle_status=cast(BundleStatus, bundle.status),
            ),
            event_id=event_id(
                f"usage-updated:{bundle.data_used_mb}:{seen.as_of.isoformat()}", bundle.order_id
            ),
        )
    elif fresh:
        bundle.usage_as_of = seen.as_of
    if (
        bundle.status != "queued"
        and not bundle.started_published
        and bundle.first_state == "queued"
    ):
        bundle.started_published = True
        changed = True
        outbox.add(
            session,
            BundleStarted(
                **_bundle_ref(bundle),
                data_mb=bundle.data_mb,
                valid_from=as_utc(bundle.valid_from),
                valid_until=as_utc(bundle.valid_until),
                started_at=min(as_utc(bundle.valid_from), seen.as_of),
            ),
            event_id=event_id("bundle-started", bundle.order_id),
        )
    for threshold in thresholds_reached(
        bundle.data_used_mb, bundle.data_mb, bundle.status, bundle.alerted_pct
    ):
        bundle.alerted_pct = threshold
        changed = True
        remaining = 0 if threshold == 100 else max(0, bundle.data_mb - bundle.data_used_mb)
        outbox.add(
            session,
            DataLow(
                iccid=bundle.iccid,
                renewal_id=renewal,
                threshold=cast(Any, threshold),
                data_remaining_mb=remaining,
                as_of=seen.as_of,
                data_total_mb=bundle.data_mb,
                plan_code=bundle.plan_code,
            ),
            event_id=event_id(f"data-low:{threshold}", bundle.order_id),
        )
        DATA_LOW.labels(str(threshold)).inc()
        logger.info(
            "bundle %s on card %s: %d %% used (%d of %d MB)",
            bundle.order_id,
            bundle.iccid,
            threshold,
            bundle.data_used_mb,
            bundle.data_mb,
        )
    if (
        bundle.status == "expired"
        and not bundle.ended_published
        and seen.valid_until is not None
        and seen.as_of < seen.valid_until
    ):
        # Reported ended before the end the platform itself gives it, with data left: a plan
        # started now replaced it (that is what replacing looks like from a poll). Carriers
        # hear BundleCancelled (replaced) once, whichever of this poll and the new plan's
        # activation commits first.
        mark_cancelled(outbox, session, bundle, "replaced", seen.as_of)
        return True
    if bundle.status in ENDED_STATUSES and not bundle.ended_published:
        bundle.ended_published = True
        changed = True
        outbox.add(
            session,
            BundleEnded(
                **_bundle_ref(bundle),
                reason="depleted" if bundle.status == "depleted" else "expired",
                valid_from=as_utc(bundle.valid_from),
                valid_until=as_utc(bundle.valid_until),
                ended_at=seen.as_of
                if bundle.status == "depleted"
                else min(as_utc(bundle.valid_until), seen.as_of),
            ),
            event_id=event_id("bundle-ended", bundle.order_id),
        )
        logger.info("bundle %s on card %s %s", bundle.order_id, bundle.iccid, bundle.status)
    if changed:
        bundle.updated_at = utcnow()
    return changed


def mark_cancelled(
    outbox: Outbox,
    session: Target,
    bundle: Bundle,
    reason: BundleCancelReason,
    now: datetime,
    *,
    replaced_by: str | None = None,
) -> bool:
    """Record that a (locked) bundle will not run (further) and tell carriers, once per bundle.

    Returns whether it did: a bundle already cancelled (or replaced) keeps its first reason.
    It is no longer followed, and no BundleEnded follows its BundleCancelled. `replaced_by`:
    the renewal whose plan took its place, where known. The bundle is written by whoever read
    it (`observe`).
    """
    if bundle.cancelled_at is not None:
        return False
    bundle.cancelled_at = now
    bundle.cancel_reason = reason
    bundle.ended_published = True
    bundle.updated_at = now
    _tell_cancelled(outbox, session, bundle, reason, now, replaced_by)
    return True


def _tell_cancelled(
    outbox: Outbox,
    session: Target,
    bundle: "LiveBundle",
    reason: BundleCancelReason,
    now: datetime,
    replaced_by: str | None,
) -> None:
    outbox.add(
        session,
        BundleCancelled(
            **_bundle_ref(bundle),
            reason=reason,
            cancelled_at=now,
            replaced_by=UUID(replaced_by) if replaced_by is not None else None,
        ),
        event_id=event_id("bundle-cancelled", bundle.order_id),
    )
    logger.info("bundle %s on card %s cancelled: %s", bundle.order_id, bundle.iccid, reason)


class LiveBundle(Protocol):
    """What replacing a bundle needs of it (a `Bundle`, or a row of `live_bundle_rows`)."""

    @property
    def order_id(self) -> str: ...
    @property
    def renewal_id(self) -> str: ...
    @property
    def iccid(self) -> str: ...
    @property
    def plan_code(self) -> str: ...
    @property
    def valid_from(self) -> datetime: ...
    @property
    def valid_until(self) -> datetime: ...
    @property
    def cancelled_at(self) -> datetime | None: ...


class _BundleRef(TypedDict):
    """What BundleStarted, BundleEnded and BundleCancelled each say of their bundle: its
    renewal, card, plan and order at the platform."""

    renewal_id: UUID
    iccid: str
    plan_code: str
    platform_reference: str


def _bundle_ref(bundle: LiveBundle) -> _BundleRef:
    return _BundleRef(
        renewal_id=UUID(bundle.renewal_id),
        iccid=bundle.iccid,
        plan_code=bundle.plan_code,
        platform_reference=bundle.order_id,
    )


@dataclass
class LiveBundles:
    """A card's bundles live when a plan started at once goes live (locked by the round), and
    those it replaced: their BundleCancelled goes to the outbox when the round decides
    (`replace`), their rows are written before the round commits (`write`)."""

    rows: Sequence[LiveBundle] = ()
    replaced: list[tuple[str, datetime]] = field(default_factory=list)

    def replace(
        self,
        outbox: Outbox,
        session: Target,
        bundles: Sequence[LiveBundle],
        now: datetime,
        *,
        replaced_by: str,
    ) -> None:
        """Tell carriers that these bundles were replaced, once each; `write` records it."""
        for bundle in bundles:
            _tell_cancelled(outbox, session, bundle, "replaced", now, replaced_by)
            self.replaced.append((bundle.order_id, now))

    async def write(self, session: Target) -> None:
        """Record the replaced bundles (cancelled, no end to announce)."""
        if not self.replaced:
            return
        for order_id, now in self.replaced:
            await cancel_bundle(session, order_id, "replaced", now)
        self.replaced.clear()


async def live_bundles(session: Target, iccid: str, starts: datetime) -> LiveBundles:
    """The card's bundles live at `starts`, locked: what a plan started then at once ends.

    The platform ends the live bundle when one with start=now goes live; queued bundles move
    behind the new one and stay, a used-up one had ended already. A poll may have seen the live
    one `expired` (the platform ended it for the new one) before this: it was still replaced.
    Only what was live when the new one started, not the card's whole history.
    """
    return LiveBundles(await live_bundle_rows(session, iccid, starts))


def replaced_at(
    candidates: Sequence[LiveBundle], order_id: str, starts: datetime
) -> list[LiveBundle]:
    """Of `live_bundles`, those a bundle (`order_id`) started at once at `starts` replaced."""
    return [
        bundle
        for bundle in candidates
        if bundle.order_id != order_id
        and bundle.cancelled_at is None
        and as_utc(bundle.valid_from) <= starts < as_utc(bundle.valid_until)
    ]


def track_bundle(session: Target, activation: Activation, data_mb: int) -> None:
    """Start following the bundle of an activation that just went live or was queued.

    The row is inserted at commit (`add_row`): nothing in the activation's round reads it.
    """
    assert activation.order_id is not None
    assert activation.valid_from is not None and activation.valid_until is not None
    add_row(session, Bundle, new_bundle(activation, data_mb, utcnow()))


async def locked_bundle(session: AsyncSession, order_id: str) -> Bundle | None:
    """A bundle, locked until the transaction ends (PostgreSQL; SQLite serializes writers)."""
    return await session.get(Bundle, order_id, with_for_update=True)


async def watch_card(session: Target, iccid: str, due_at: datetime) -> None:
    """Make sure a card's usage is polled by `due_at` at the latest (one statement)."""
    await upsert_usage_watch(session, iccid, due_at)


class UsagePoller(DueWorker[EsimPlatform, UsageRules]):
    """Polls the usage of cards with live bundles, backing off while nothing changes."""

    table = UsageWatch
    what = "polling card usage"
    claims_rows = True  # a poll starts from the row its claim returned: no read of its own
    ended_margin_s: float = 60.0
    """How much further back than the last look a poll asks for ended bundles (clock skew)."""
    look_ups_per_poll: int = 5
    """Followed bundles a usage answer left out, looked up one by one in a poll at most."""
    noun = "usage watch"

    async def work_claimed(self, row: Any) -> None:
        """One poll of a card as its claim leased it: the platform's answer, then one commit.

        The poll asks only for bundles that ended since the card was last looked at (with a
        margin); a bundle followed here that the answer leaves out is looked up on its own,
        so its end is never missed.
        """
        key, lease = row.id, row.lease_until
        now = utcnow()
        try:
            # One try: a poll is a round already, and a 429 must not be asked again at once.
            outcome: CardUsage | Exception = await self.port.card_usage(
                key, ended_within_s=self._window(row, now)
            )
        except (PlatformUnavailableError, PlatformRejectedError, UnknownIccidError) as error:
            outcome = error
        missing: dict[str, OrderStatus] = {}
        if isinstance(outcome, CardUsage):
            missing = await self._look_up_missing(key, outcome)

        # The watch is read locked as a transient object (on the driver), and what the poll
        # changed of it is written back in one UPDATE (`write_changes`).
        read: dict[str, Any] = {}

        async def load(session: AsyncSession, key: str) -> UsageWatch | None:
            found = await locked_watch(session, key)
            if found is None:
                return None
            watch, values = found
            read.update(values)
            return watch

        async def apply(session: AsyncSession, current: UsageWatch) -> None:
            await self._apply(session, current, outcome, missing, utcnow())
            await write_changes(session, current, read)

        await self.commit_round(key, lease, apply, load=load)

    def _window(self, watch: UsageWatch, now: datetime) -> float | None:
        """How far back the poll asks for ended bundles: since the last look, with a margin."""
        if watch.last_polled_at is None:
            return None
        since = (now - as_utc(watch.last_polled_at)).total_seconds()
        return max(0.0, since) + self.ended_margin_s

    async def _look_up_missing(self, iccid: str, usage: CardUsage) -> dict[str, OrderStatus]:
        """The status of followed bundles that a usage answer left out (at most a few a poll)."""
        reported = {item.order_id for item in usage.bundles}
        async with self.database.session() as session:
            followed = await followed_orders(session, iccid)
        found: dict[str, OrderStatus] = {}
        for order_id in [o for o in followed if o not in reported][: self.look_ups_per_poll]:
            try:
                found[order_id] = await self.port.bundle_status(order_id)
            except (PlatformUnavailableError, PlatformRejectedError) as error:
                logger.info("bundle %s left out of card %s's usage: %s", order_id, iccid, error)
        return found

    async def _apply(
        self,
        session: AsyncSession,
        watch: UsageWatch,
        outcome: CardUsage | Exception,
        missing: dict[str, OrderStatus],
        now: datetime,
    ) -> None:
        # The watch and its bundles are transient objects read on the driver (no ORM session
        # writes them): `_commit` writes what changed of the watch, the loop below of each bundle.
        watch.lease_until = None
        watch.last_polled_at = now
        if isinstance(outcome, Exception):
            watch.last_error = str(outcome)[:500]
            if isinstance(outcome, PlatformRateLimitedError):
                delay = outcome.retry_after_s
            else:
                watch.unavailable_rounds += 1
                delay = retry_delay(watch.unavailable_rounds, self.rules)
            watch.due_at = now + timedelta(seconds=delay)
            logger.info("usage of card %s: %s; next poll in %.1f s", watch.id, outcome, delay)
            return
        watch.polls += 1
        watch.unavailable_rounds = 0
        watch.last_error = None
        reported = {item.order_id: item for item in outcome.bundles}
        # Only bundles still followed: an ended one has nothing more to report.
        bundles = await locked_followed_bundles(session, watch.id)
        changed = False
        open_bundles = 0
        for bundle, _read in bundles:
            if bundle.cancelled_at is not None:
                continue  # cancelled or replaced: nothing more to tell about it
            seen = _observation(
                bundle,
                reported.get(bundle.order_id),
                missing.get(bundle.order_id),
                outcome.as_of,
            )
            if seen is not None:
                changed |= observe(self.outbox, session, bundle, seen)
            if bundle.status not in ENDED_STATUSES:
                open_bundles += 1
        for bundle, read in bundles:
            await write_changes(session, bundle, read)
        if open_bundles == 0:
            # Nothing left to follow; a new activation on the card makes it due again.
            watch.due_at = None
            return
        watch.idle_polls = 0 if changed else watch.idle_polls + 1
        watch.due_at = now + timedelta(seconds=usage_poll_delay(watch.idle_polls, self.rules))


def _observation(
    bundle: Bundle, usage: BundleUsage | None, looked_up: OrderStatus | None, as_of: datetime
) -> Observation | None:
    """What the platform said of `bundle`: its entry in the usage report, else a status lookup.

    A status lookup tells the state, size and dates, not the data used: that stays as measured.
    """
    said = usage or looked_up
    if said is None:
        return None
    return Observation(
        order_id=bundle.order_id,
        status=said.status,
        data_used_mb=bundle.data_used_mb if usage is None else usage.data_used_mb,
        as_of=as_of,
        data_mb=said.data_mb,
        valid_from=said.valid_from,
        valid_until=said.valid_until,
    )
