"""eSIM platform sandbox: a reseller API that applies data bundles to known ICCIDs."""

import asyncio
import csv
import hashlib
import hmac
import json
import logging
import math
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self

from fastapi import APIRouter, FastAPI, Query, Response
from pydantic import AfterValidator, BaseModel, Field

from sandboxes.idempotency import IdempotencyKey, conflict, fingerprint, mark_replayed
from sandboxes.outbound import AiohttpPost, Post, Unreachable
from sandboxes.problems import ProblemError, install_problem_handlers
from sandboxes.serving import EnvSettings, app_state, health_router, serve
from sandboxes.timestamps import Clock, Timestamp, rfc3339, utc_now

logger = logging.getLogger("sandboxes.esim")

BundleStatus = Literal["processing", "queued", "active", "depleted", "expired", "revoked", "failed"]
Start = Literal["now", "after_current"]
FaultMode = Literal["fail", "flaky", "slow", "none"]
CallbackMode = Literal["signed", "bad_signature", "off"]

THRESHOLDS = (75, 90, 100)
"""Per cent of a bundle's data at which the platform calls back once (100 = used up)."""

SIGNATURE_HEADER = "X-Esim-Signature"
TIMESTAMP_HEADER = "X-Esim-Timestamp"

FLAKY_FAILURES = 2
"""How many requests for an ICCID answer 503 after its fault is set to ``flaky``."""

FAILURE_REASON = "bundle_rejected"

CancelOutcome = Literal["cancelled", "already_cancelled", "already_started", "ended", "failed"]


@dataclass(frozen=True)
class EsimSandboxSettings(EnvSettings):
    """Where the eSIM sandbox listens, which cards it knows and how long activation takes."""

    env_prefix: ClassVar[str] = "ESIM_SANDBOX_"

    host: str = "127.0.0.1"
    port: int = 8011
    cards_csv: Path = Path("deploy/local/cards.csv")
    activation_delay: float = 0.5
    slow_delay: float = 5.0
    usage_mb_per_min: float = 0.0
    """MB an active bundle uses by itself each minute (0: only `POST /sandbox/usage` moves it)."""
    usage_polls_per_min: int = 60
    """Usage requests per ICCID and minute before the platform answers 429."""
    callback_url: str = ""
    """Where the platform posts its signed callbacks; empty: no callbacks."""
    callback_secret: str = "sandbox-callback-secret"
    """The shared secret of the callbacks' HMAC-SHA256 signature."""
    callback_attempts: int = 3
    tick_s: float = 1.0
    """How often the platform looks at the clock by itself (usage growth, due callbacks)."""

    @classmethod
    def from_env(cls) -> Self:
        """Read the ESIM_SANDBOX_* environment variables; a tick of 0 means the default."""
        settings = super().from_env()
        return settings if settings.tick_s else replace(settings, tick_s=cls.tick_s)


def is_valid_iccid(iccid: str) -> bool:
    """Tell whether a string is 19 or 20 digits ending in a valid Luhn check digit.

    Args:
        iccid: The candidate ICCID.
    """
    if not (iccid.isascii() and iccid.isdigit() and len(iccid) in (19, 20)):
        return False
    total = 0
    for position, char in enumerate(reversed(iccid)):
        digit = int(char)
        if position % 2:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def _check_iccid(iccid: str) -> str:
    if not is_valid_iccid(iccid):
        raise ValueError("an ICCID is 19 or 20 digits with a valid Luhn check digit")
    return iccid


Iccid = Annotated[str, AfterValidator(_check_iccid)]


def load_cards(path: Path) -> dict[str, str]:
    """Read known cards from a CSV file with the header ``iccid,activation_code``.

    A missing file yields no cards; rows with a malformed ICCID are skipped. Both are logged.

    Args:
        path: The CSV file.

    Returns:
        Activation codes by ICCID.

    Raises:
        ValueError: The file lacks the ``iccid`` or ``activation_code`` column.
    """
    if not path.is_file():
        logger.warning("no cards file at %s; starting with no known cards", path)
        return {}
    cards: dict[str, str] = {}
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if not {"iccid", "activation_code"} <= set(reader.fieldnames or ()):
            raise ValueError(f"{path} must have the header iccid,activation_code")
        for row in reader:
            iccid = (row["iccid"] or "").strip()
            code = (row["activation_code"] or "").strip()
            if not is_valid_iccid(iccid) or not code:
                logger.warning("skipping %s line %d: bad ICCID or no code", path, reader.line_num)
                continue
            cards[iccid] = code
    logger.info("loaded %d cards from %s", len(cards), path)
    return cards


class CardIn(BaseModel):
    """A card the platform should know."""

    iccid: Iccid
    activation_code: str = Field(min_length=1)


class BundleOrderRequest(BaseModel):
    """An order to apply a data bundle to a card."""

    iccid: str = Field(min_length=1)
    bundle_code: str = Field(min_length=1)
    data_mb: int = Field(gt=0, strict=True)
    validity_days: int = Field(gt=0, strict=True)
    start: Start
    reference: str = Field(min_length=1, description="The renewal id.")


class OrderAccepted(BaseModel):
    """The answer to a bundle order: the order, and where its bundle stands already.

    An order the platform settles as it is placed (no activation delay) answers with its dates
    (or its failure), as reseller APIs do, so the reseller need not ask for its status at once;
    one still `processing` has none yet.
    """

    order_id: str
    iccid: str
    bundle_code: str
    status: BundleStatus
    created_at: Timestamp
    valid_from: Timestamp | None = None
    valid_until: Timestamp | None = None
    data_mb: int | None = None
    failure_reason: str | None = None


class Bundle(BaseModel):
    """A bundle order and where it stands."""

    order_id: str
    iccid: str
    bundle_code: str
    status: BundleStatus
    valid_from: Timestamp | None
    valid_until: Timestamp | None
    data_mb: int
    data_used_mb: int
    validity_days: int
    start: Start
    reference: str
    failure_reason: str | None
    created_at: Timestamp
    cancelled_at: Timestamp | None = None


class BundleCancellation(Bundle):
    """The answer to a cancel: the bundle as it stands, and whether it will never run.

    `cancelled` is true when the bundle is cancelled (now or by an earlier call); false when it
    had already started (`already_started`), ended (`ended`) or failed (`failed`).
    """

    cancelled: bool
    outcome: CancelOutcome


class Cancellation(BaseModel):
    """One bundle the platform cancelled (each at most once)."""

    order_id: str
    iccid: str
    reference: str
    bundle_code: str
    status_before: BundleStatus
    cancelled_at: Timestamp


class CardBundles(BaseModel):
    """A card and every bundle ordered for it."""

    iccid: str
    bundles: list[Bundle]


class BundleUsage(BaseModel):
    """One bundle that went live on a card, and its data use."""

    order_id: str
    reference: str
    bundle_code: str
    status: BundleStatus
    data_mb: int
    data_used_mb: int
    valid_from: Timestamp | None
    valid_until: Timestamp | None


class Usage(BaseModel):
    """Data use of the card's current bundle (zeros when it has none), and of all its bundles."""

    iccid: str
    order_id: str | None
    reference: str | None = None
    status: BundleStatus | None = None
    data_total_mb: int
    data_used_mb: int
    data_remaining_mb: int
    as_of: Timestamp | None = None
    bundles: list[BundleUsage] = Field(default_factory=list)


class ValidityChange(BaseModel):
    """Compress time for tests: the card's current bundle ends `ends_in_s` from now."""

    iccid: str = Field(min_length=1)
    ends_in_s: float = Field(ge=0)


class CallbackSetting(BaseModel):
    """How callbacks about one ICCID are sent: signed, signed with a wrong key, or not at all."""

    iccid: str = Field(min_length=1)
    mode: CallbackMode


class CallbackDelivery(BaseModel):
    """One callback the platform sent (or is sending), with what the receiver answered."""

    id: str
    type: str
    iccid: str
    body: dict[str, Any]
    attempts: int
    statuses: list[int]
    delivered: bool


class CallbackLog(BaseModel):
    """Every callback, oldest first."""

    callbacks: list[CallbackDelivery]


class Redelivery(BaseModel):
    """Send a callback again, as platforms do when they are unsure it arrived."""

    id: str = Field(min_length=1)


class UsageUpdate(BaseModel):
    """How much of its current bundle a card has used."""

    iccid: str = Field(min_length=1)
    data_used_mb: int = Field(ge=0, strict=True)


class Fault(BaseModel):
    """A fault to inject for one ICCID."""

    iccid: str = Field(min_length=1)
    mode: FaultMode


class OrderLedger(BaseModel):
    """Every bundle order the platform received, and every bundle it cancelled."""

    orders: list[Bundle]
    cancellations: list[Cancellation] = Field(default_factory=list)


@dataclass
class _Order:
    order_id: str
    fingerprint: str
    request: BundleOrderRequest
    created_at: datetime
    ready_at: datetime
    fails: bool
    settled: bool = False
    failed: bool = False
    replaced: bool = False
    ended: datetime | None = None
    """When it was replaced or used up; an expiry ends it at `valid_until`."""
    cancelled_at: datetime | None = None
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    data_used_mb: int = 0
    sequence: int = 0
    # Fractional MB of growth not yet counted, and when growth was last counted.
    growth_mb: float = 0.0
    grown_until: datetime | None = None
    thresholds_called: int = 0

    def status_at(self, moment: datetime) -> BundleStatus:
        if self.cancelled_at is not None:
            return "revoked"
        if not self.settled:
            return "processing"
        if self.failed:
            return "failed"
        if self.replaced:
            return "expired"
        assert self.valid_from is not None
        assert self.valid_until is not None
        if moment < self.valid_from:
            return "queued"
        if moment >= self.valid_until:
            return "expired"
        if self.data_used_mb >= self.request.data_mb:
            return "depleted"
        return "active"

    def ended_before(self, moment: datetime, cutoff: datetime) -> bool:
        """Whether the bundle had ended (replaced, expired, used up, cancelled) before `cutoff`."""
        if self.cancelled_at is not None:
            return self.cancelled_at < cutoff
        status = self.status_at(moment)
        if status == "expired" and not self.replaced:
            assert self.valid_until is not None
            return self.valid_until < cutoff
        if status in ("expired", "depleted"):
            return self.ended is not None and self.ended < cutoff
        return False

    def usage_view(self, moment: datetime) -> BundleUsage:
        return BundleUsage(
            order_id=self.order_id,
            reference=self.request.reference,
            bundle_code=self.request.bundle_code,
            status=self.status_at(moment),
            data_mb=self.request.data_mb,
            data_used_mb=self.data_used_mb,
            valid_from=self.valid_from,
            valid_until=self.valid_until,
        )

    def view(self, moment: datetime) -> Bundle:
        status = self.status_at(moment)
        return Bundle(
            order_id=self.order_id,
            iccid=self.request.iccid,
            bundle_code=self.request.bundle_code,
            status=status,
            valid_from=self.valid_from,
            valid_until=self.valid_until,
            data_mb=self.request.data_mb,
            data_used_mb=self.data_used_mb,
            validity_days=self.request.validity_days,
            start=self.request.start,
            reference=self.request.reference,
            failure_reason=FAILURE_REASON if status == "failed" else None,
            created_at=self.created_at,
            cancelled_at=self.cancelled_at,
        )


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The callback signature: HMAC-SHA256 over `<timestamp>.<raw body>`, as `v1=<hex>`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"v1={mac.hexdigest()}"


@dataclass
class _Callback:
    id: str
    type: str
    iccid: str
    body: dict[str, Any]
    attempts: int = 0
    statuses: list[int] = field(default_factory=list)
    delivered: bool = False

    def view(self) -> CallbackDelivery:
        return CallbackDelivery.model_validate(self, from_attributes=True)


class _Bucket:
    """A token bucket per ICCID: `per_min` requests a minute, bursts of a tenth of that."""

    def __init__(self, per_min: int, now: datetime) -> None:
        self.capacity = max(1.0, per_min / 10)
        self.rate_s = per_min / 60
        self.tokens = self.capacity
        self.at = now

    def take(self, now: datetime) -> float:
        """Take a token; returns 0, or the seconds until one is free."""
        elapsed = max(0.0, (now - self.at).total_seconds())
        self.tokens = min(self.capacity, self.tokens + elapsed * self.rate_s)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate_s if self.rate_s > 0 else 60.0


class EsimPlatform:
    """The sandbox's in-memory platform state.

    Activation is computed lazily: every request first settles the orders whose
    processing time has passed, in the order they became due and as of that moment,
    so the outcome does not depend on when anyone looks. No method awaits, so each
    request's change is atomic on the event loop.
    """

    def __init__(self, settings: EsimSandboxSettings, clock: Clock = utc_now) -> None:
        self._settings = settings
        self._clock = clock
        self._cards = load_cards(settings.cards_csv)
        self._orders: dict[str, _Order] = {}
        # Indexes over _orders, so a request costs the same after thousands of orders.
        self._unsettled: dict[str, _Order] = {}
        self._by_iccid: dict[str, list[_Order]] = {}
        self._keys: dict[str, _Order] = {}
        self._faults: dict[str, Literal["fail", "slow"]] = {}
        self._flaky_left: dict[str, int] = {}
        # Bundles that are or may become live: the only ones usage growth looks at.
        self._live: dict[str, _Order] = {}
        self._buckets: dict[str, _Bucket] = {}
        self._callback_modes: dict[str, CallbackMode] = {}
        self._cancellations: list[Cancellation] = []
        self.callbacks: dict[str, _Callback] = {}
        self.callbacks_due: asyncio.Queue[str] = asyncio.Queue()

    def add_card(self, card: CardIn) -> CardIn:
        """Make a card known; adding the same card again changes nothing.

        Args:
            card: The card.

        Raises:
            ProblemError: 409 when the ICCID is known with another activation code.
        """
        known = self._cards.setdefault(card.iccid, card.activation_code)
        if known != card.activation_code:
            raise ProblemError(
                409, f"Card {card.iccid} has another activation code.", code="card_conflict"
            )
        return card

    def cards(self) -> list[CardIn]:
        """Return every known card."""
        return [CardIn(iccid=i, activation_code=c) for i, c in self._cards.items()]

    def place_order(self, key: str, request: BundleOrderRequest) -> tuple[Bundle, bool]:
        """Accept a bundle order once per Idempotency-Key.

        Args:
            key: The Idempotency-Key.
            request: The order.

        Returns:
            The order as it stands now and whether it is a replay of an earlier one.

        Raises:
            ProblemError: Key conflict, unknown ICCID, or an injected transient failure.
        """
        now = self._settle()
        digest = fingerprint(request)
        existing = self._keys.get(key)
        if existing is not None and existing.fingerprint != digest:
            raise conflict(key)
        self._require_card(request.iccid)
        self._maybe_flake(request.iccid)
        if existing is not None:
            return existing.view(now), True
        mode = self._faults.get(request.iccid, "none")
        delay = self._settings.slow_delay if mode == "slow" else self._settings.activation_delay
        order = _Order(
            order_id=f"ord_{uuid.uuid4().hex[:24]}",
            fingerprint=digest,
            request=request,
            created_at=now,
            ready_at=now + timedelta(seconds=delay),
            fails=mode == "fail",
            sequence=len(self._orders),
        )
        self._orders[order.order_id] = order
        self._unsettled[order.order_id] = order
        self._by_iccid.setdefault(request.iccid, []).append(order)
        self._keys[key] = order
        logger.info(
            "order %s: %s on %s start=%s reference=%s",
            order.order_id,
            request.bundle_code,
            request.iccid,
            request.start,
            request.reference,
        )
        if order.ready_at <= now:
            # No activation delay: the order is live as it is placed, and its answer says so.
            self._activate(order, now)
        return order.view(now), False

    def order(self, order_id: str) -> Bundle:
        """Return a bundle order as it stands now.

        Args:
            order_id: The order id.

        Raises:
            ProblemError: Unknown order, or an injected transient failure.
        """
        now = self._settle()
        return self._known_order(order_id).view(now)

    def _known_order(self, order_id: str) -> _Order:
        order = self._orders.get(order_id)
        if order is None:
            raise ProblemError(404, f"No order {order_id!r}.", code="order_not_found")
        self._maybe_flake(order.request.iccid)
        return order

    def cancel(self, order_id: str) -> BundleCancellation:
        """Cancel a bundle that has not started: a `processing` order or a `queued` bundle.

        Idempotent: cancelling a cancelled bundle answers `cancelled` again and records nothing
        more. A bundle that is live, has ended or failed is left as it is (`cancelled` false).
        The bundles queued behind a cancelled one move up into its place.

        Args:
            order_id: The order id.

        Raises:
            ProblemError: Unknown order, or an injected transient failure.
        """
        now = self._settle()
        order = self._known_order(order_id)
        before = order.status_at(now)
        outcome: CancelOutcome
        if before == "revoked":
            outcome = "already_cancelled"
        elif before in ("processing", "queued"):
            outcome = "cancelled"
            order.cancelled_at = now
            self._unsettled.pop(order.order_id, None)
            self._live.pop(order.order_id, None)
            self._cancellations.append(
                Cancellation(
                    order_id=order.order_id,
                    iccid=order.request.iccid,
                    reference=order.request.reference,
                    bundle_code=order.request.bundle_code,
                    status_before=before,
                    cancelled_at=now,
                )
            )
            if before == "queued" and order.valid_from is not None:
                self._close_gap(order, now)
            logger.info("order %s cancelled (was %s)", order.order_id, before)
        elif before == "failed":
            outcome = "failed"
        elif before == "expired":
            outcome = "ended"
        else:
            outcome = "already_started"
        view = order.view(now)
        return BundleCancellation(
            **view.model_dump(), cancelled=order.cancelled_at is not None, outcome=outcome
        )

    def _close_gap(self, cancelled: _Order, now: datetime) -> None:
        # The bundles queued behind a cancelled one start where it would have started.
        assert cancelled.valid_from is not None
        behind = sorted(
            (
                o
                for o in self._orders_of(cancelled.request.iccid)
                if o.status_at(now) == "queued"
                and o.valid_from is not None
                and o.valid_from >= cancelled.valid_from
            ),
            key=lambda o: (o.valid_from or now, o.sequence),
        )
        start = cancelled.valid_from
        for bundle in behind:
            assert bundle.valid_from is not None and bundle.valid_until is not None
            length = bundle.valid_until - bundle.valid_from
            bundle.valid_from, bundle.valid_until = start, start + length
            start = bundle.valid_until

    def card(self, iccid: str) -> CardBundles:
        """Return a card with all its bundles.

        Args:
            iccid: The card's ICCID.

        Raises:
            ProblemError: 404 for an unknown ICCID.
        """
        now = self._settled_card(iccid)
        return CardBundles(iccid=iccid, bundles=[o.view(now) for o in self._orders_of(iccid)])

    def poll_usage(self, iccid: str, ended_within_s: float | None = None) -> Usage:
        """Return a card's usage to a poller, at most `usage_polls_per_min` times a minute.

        Args:
            iccid: The card's ICCID.
            ended_within_s: Leave out bundles that ended longer ago than this (a poller
                asks only for what can have changed since it last looked).

        Raises:
            ProblemError: 404 for an unknown ICCID; 429 (with Retry-After) when polled too often.
        """
        now = self._settled_card(iccid)
        bucket = self._buckets.get(iccid)
        if bucket is None:
            bucket = self._buckets[iccid] = _Bucket(self._settings.usage_polls_per_min, now)
        wait_s = bucket.take(now)
        if wait_s > 0:
            raise ProblemError(
                429,
                f"Usage of {iccid} was asked for too often; try again later.",
                code="rate_limited",
                retryable=True,
                headers={"Retry-After": str(max(1, math.ceil(wait_s)))},
            )
        return self._usage(iccid, now, ended_within_s)

    def _usage(self, iccid: str, now: datetime, ended_within_s: float | None = None) -> Usage:
        # A bundle replaced by one started now is listed as expired, so pollers see it end.
        cutoff = now - timedelta(seconds=ended_within_s) if ended_within_s is not None else None
        bundles = [
            o.usage_view(now)
            for o in self._orders_of(iccid)
            if o.settled and not o.failed and (cutoff is None or not o.ended_before(now, cutoff))
        ]
        current = self._current(iccid, now)
        if current is None:
            return Usage(
                iccid=iccid,
                order_id=None,
                data_total_mb=0,
                data_used_mb=0,
                data_remaining_mb=0,
                as_of=now,
                bundles=bundles,
            )
        total = current.request.data_mb
        return Usage(
            iccid=iccid,
            order_id=current.order_id,
            reference=current.request.reference,
            status=current.status_at(now),
            data_total_mb=total,
            data_used_mb=current.data_used_mb,
            data_remaining_mb=max(total - current.data_used_mb, 0),
            as_of=now,
            bundles=bundles,
        )

    def set_usage(self, update: UsageUpdate) -> Usage:
        """Record how much of its current bundle a card has used, capped at the bundle size.

        Args:
            update: The card and its use.

        Raises:
            ProblemError: Unknown ICCID, or no current bundle.
        """
        now, current = self._current_bundle(update.iccid)
        current.data_used_mb = min(update.data_used_mb, current.request.data_mb)
        current.growth_mb = 0.0
        self._after_use(current, now)
        return self._usage(update.iccid, now)

    def set_validity(self, change: ValidityChange) -> CardBundles:
        """End the card's current bundle `ends_in_s` from now; queued bundles follow it.

        Each queued bundle keeps its length, so a test can see a plan end and the next one start
        without waiting days.

        Raises:
            ProblemError: Unknown ICCID, or no current bundle.
        """
        now, current = self._current_bundle(change.iccid)
        current.valid_until = now + timedelta(seconds=change.ends_in_s)
        self._chain_queued(change.iccid, current.valid_until, now, keep_length=True)
        logger.info("order %s now ends at %s", current.order_id, rfc3339(current.valid_until))
        return self.card(change.iccid)

    def set_callback_mode(self, setting: CallbackSetting) -> CallbackSetting:
        """Choose how callbacks about one ICCID are sent."""
        if setting.mode == "signed":
            self._callback_modes.pop(setting.iccid, None)
        else:
            self._callback_modes[setting.iccid] = setting.mode
        logger.info("callbacks for %s: %s", setting.iccid, setting.mode)
        return setting

    def callback_log(self, iccid: str | None = None) -> CallbackLog:
        """Every callback sent or being sent, optionally only those about one ICCID."""
        self._settle()
        return CallbackLog(
            callbacks=[c.view() for c in self.callbacks.values() if iccid in (None, c.iccid)]
        )

    def redeliver(self, redelivery: Redelivery) -> CallbackDelivery:
        """Send a callback again under its id, freshly timestamped and signed.

        Raises:
            ProblemError: 404 for an unknown callback id.
        """
        callback = self.callbacks.get(redelivery.id)
        if callback is None:
            raise ProblemError(404, f"No callback {redelivery.id!r}.", code="callback_not_found")
        self.callbacks_due.put_nowait(callback.id)
        return callback.view()

    def signed_request(self, callback_id: str, now: datetime) -> tuple[bytes, dict[str, str]]:
        """The raw body and headers of a callback, signed as of `now` (or tampered with)."""
        callback = self.callbacks[callback_id]
        body = json.dumps(callback.body, separators=(",", ":"), sort_keys=True).encode()
        timestamp = int(now.timestamp())
        secret = self._settings.callback_secret
        if self._callback_modes.get(callback.iccid) == "bad_signature":
            secret = "not-the-shared-secret"
        return body, {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: sign(secret, timestamp, body),
        }

    def tick(self) -> None:
        """Look at the clock: activations, usage growth and bundle ends that are due."""
        self._settle()

    def _callback(self, kind: str, order: _Order, moment: datetime, **fields: Any) -> None:
        if not self._settings.callback_url:
            return
        if self._callback_modes.get(order.request.iccid) == "off":
            return
        callback_id = f"cb_{uuid.uuid4().hex[:24]}"
        body = {
            "id": callback_id,
            "type": kind,
            "iccid": order.request.iccid,
            "order_id": order.order_id,
            "reference": order.request.reference,
            "bundle_code": order.request.bundle_code,
            "status": order.status_at(moment),
            "data_mb": order.request.data_mb,
            "data_used_mb": order.data_used_mb,
            "valid_from": rfc3339(order.valid_from) if order.valid_from else None,
            "valid_until": rfc3339(order.valid_until) if order.valid_until else None,
            "occurred_at": rfc3339(moment),
            **fields,
        }
        self.callbacks[callback_id] = _Callback(callback_id, kind, order.request.iccid, body)
        self.callbacks_due.put_nowait(callback_id)

    def _after_use(self, order: _Order, moment: datetime) -> None:
        # Thresholds are called back once each, even when use jumps past several at once.
        total = order.request.data_mb
        for threshold in THRESHOLDS:
            reached = order.data_used_mb * 100 >= threshold * total
            if reached and threshold > order.thresholds_called:
                order.thresholds_called = threshold
                self._callback("usage.threshold", order, moment, threshold=threshold)
        if order.data_used_mb >= total and order.ended is None:
            order.ended = moment
        if order.data_used_mb >= total and order.valid_until and moment < order.valid_until:
            # Used up: what was queued behind it starts now, as on real platforms.
            self._chain_queued(order.request.iccid, moment, moment, keep_length=False)

    def _chain_queued(
        self, iccid: str, start: datetime, now: datetime, *, keep_length: bool
    ) -> None:
        queued = sorted(
            (o for o in self._orders_of(iccid) if o.settled and o.status_at(now) == "queued"),
            key=lambda o: (o.valid_from or now, o.sequence),
        )
        end = start
        for bundle in queued:
            assert bundle.valid_from is not None and bundle.valid_until is not None
            length = (
                bundle.valid_until - bundle.valid_from
                if keep_length
                else timedelta(days=bundle.request.validity_days)
            )
            bundle.valid_from, bundle.valid_until = end, end + length
            end = bundle.valid_until

    def _grow(self, now: datetime) -> None:
        rate = self._settings.usage_mb_per_min
        for order in list(self._live.values()):
            if order.failed or order.replaced or order.cancelled_at or order.valid_from is None:
                self._live.pop(order.order_id, None)
                continue
            assert order.valid_until is not None
            if now >= order.valid_until or order.data_used_mb >= order.request.data_mb:
                self._live.pop(order.order_id, None)
                continue
            if rate <= 0 or now <= order.valid_from:
                continue
            since = max(order.grown_until or order.valid_from, order.valid_from)
            until = min(now, order.valid_until)
            order.grown_until = until
            order.growth_mb += rate * max(0.0, (until - since).total_seconds()) / 60
            whole = int(order.growth_mb)
            if whole:
                order.growth_mb -= whole
                order.data_used_mb = min(order.request.data_mb, order.data_used_mb + whole)
                self._after_use(order, until)

    def set_fault(self, fault: Fault) -> Fault:
        """Inject a fault for one ICCID, replacing the one it had.

        Args:
            fault: The ICCID and the fault mode.
        """
        self._faults.pop(fault.iccid, None)
        self._flaky_left.pop(fault.iccid, None)
        if fault.mode == "flaky":
            self._flaky_left[fault.iccid] = FLAKY_FAILURES
        elif fault.mode != "none":
            self._faults[fault.iccid] = fault.mode
        logger.info("fault for %s: %s", fault.iccid, fault.mode)
        return fault

    def ledger(self, iccid: str | None = None, reference: str | None = None) -> OrderLedger:
        """Return every order, optionally only those of one ICCID and/or reference.

        Args:
            iccid: The ICCID to keep.
            reference: The order reference (renewal id) to keep.
        """
        now = self._settle()
        return OrderLedger(
            orders=[
                o.view(now)
                for o in self._orders.values()
                if iccid in (None, o.request.iccid) and reference in (None, o.request.reference)
            ],
            cancellations=[
                c
                for c in self._cancellations
                if iccid in (None, c.iccid) and reference in (None, c.reference)
            ],
        )

    def reset(self) -> None:
        """Forget every order, idempotency key and fault; keep the cards."""
        self._orders.clear()
        self._unsettled.clear()
        self._by_iccid.clear()
        self._keys.clear()
        self._faults.clear()
        self._flaky_left.clear()
        self._live.clear()
        self._buckets.clear()
        self._callback_modes.clear()
        self._cancellations.clear()
        self.callbacks.clear()

    def _require_card(self, iccid: str) -> None:
        if iccid not in self._cards:
            raise ProblemError(404, f"No card {iccid!r}.", code="unknown_iccid")

    def _settled_card(self, iccid: str) -> datetime:
        """Settle what is due, then refuse an unknown card (404); the moment settled."""
        now = self._settle()
        self._require_card(iccid)
        return now

    def _current_bundle(self, iccid: str) -> tuple[datetime, _Order]:
        """The moment settled and the card's current bundle; 404 or 409 when there is none."""
        now = self._settled_card(iccid)
        current = self._current(iccid, now)
        if current is None:
            raise ProblemError(409, f"Card {iccid} has no active bundle.", code="no_active_bundle")
        return now, current

    def _maybe_flake(self, iccid: str) -> None:
        left = self._flaky_left.get(iccid, 0)
        if left == 0:
            return
        if left == 1:
            del self._flaky_left[iccid]
        else:
            self._flaky_left[iccid] = left - 1
        raise ProblemError(
            503, "The platform is temporarily unavailable.", code="unavailable", retryable=True
        )

    def _orders_of(self, iccid: str) -> list[_Order]:
        return list(self._by_iccid.get(iccid, ()))

    def _current(self, iccid: str, moment: datetime) -> _Order | None:
        in_force = [o for o in self._orders_of(iccid) if o.status_at(moment) == "active"]
        if not in_force:
            in_force = [o for o in self._orders_of(iccid) if o.status_at(moment) == "depleted"]
        return max(in_force, key=lambda o: o.sequence, default=None)

    def _settle(self) -> datetime:
        now = self._clock()
        due = [o for o in self._unsettled.values() if o.ready_at <= now]
        for order in sorted(due, key=lambda o: (o.ready_at, o.sequence)):
            self._activate(order, order.ready_at)
        if self._live:
            self._grow(now)
        return now

    def _activate(self, order: _Order, moment: datetime) -> None:
        order.settled = True
        self._unsettled.pop(order.order_id, None)
        if order.fails:
            order.failed = True
            logger.info("order %s failed: %s", order.order_id, FAILURE_REASON)
            self._callback("order.completed", order, moment)
            return
        others = [o for o in self._orders_of(order.request.iccid) if o is not order]
        validity = timedelta(days=order.request.validity_days)
        if order.request.start == "now":
            for other in others:
                if other.status_at(moment) in ("active", "depleted"):
                    other.replaced = True
                    other.ended = other.ended or moment
            order.valid_from, order.valid_until = moment, moment + validity
            self._requeue_after(order, others, moment)
        else:
            chain = [o for o in others if o.status_at(moment) in ("active", "queued")]
            start = max((o.valid_until for o in chain if o.valid_until), default=moment)
            order.valid_from, order.valid_until = start, start + validity
        if self._settings.usage_mb_per_min > 0:
            # Only a platform that measures use keeps orders to grow: every request looks at
            # each of them, and without use they would pile up for nothing.
            self._live[order.order_id] = order
        logger.info(
            "order %s %s from %s",
            order.order_id,
            order.status_at(moment),
            order.valid_from.isoformat(),
        )
        self._callback("order.completed", order, moment)

    @staticmethod
    def _requeue_after(head: _Order, others: list[_Order], moment: datetime) -> None:
        # A bundle started now replaces the current one; bundles that were queued behind
        # the replaced one move behind the new one so that only one is ever active.
        queued = sorted(
            (o for o in others if o.status_at(moment) == "queued"),
            key=lambda o: (o.valid_from or moment, o.sequence),
        )
        end = head.valid_until
        for bundle in queued:
            assert end is not None
            bundle.valid_from = end
            bundle.valid_until = end + timedelta(days=bundle.request.validity_days)
            end = bundle.valid_until


PlatformDep = Annotated[EsimPlatform, app_state("platform")]
router = APIRouter()


@router.post("/v1/bundles", status_code=202, response_model=OrderAccepted, tags=["bundles"])
async def create_bundle(
    body: BundleOrderRequest, key: IdempotencyKey, platform: PlatformDep, response: Response
) -> OrderAccepted:
    """Order a bundle; 200 with ``Idempotent-Replayed: true`` and its status now on replay."""
    view, replayed = platform.place_order(key, body)
    mark_replayed(response, replayed)
    return OrderAccepted.model_validate(view, from_attributes=True)


@router.get("/v1/bundles/{order_id}", response_model=Bundle, tags=["bundles"])
async def get_bundle(order_id: str, platform: PlatformDep) -> Bundle:
    """Return a bundle order as it stands now."""
    return platform.order(order_id)


@router.post("/v1/bundles/{order_id}/cancel", response_model=BundleCancellation, tags=["bundles"])
async def cancel_bundle(order_id: str, platform: PlatformDep) -> BundleCancellation:
    """Cancel a bundle that has not started (idempotent); says whether it will never run."""
    return platform.cancel(order_id)


@router.get("/v1/cards/{iccid}", response_model=CardBundles, tags=["cards"])
async def get_card(iccid: str, platform: PlatformDep) -> CardBundles:
    """Return a card and all its bundles."""
    return platform.card(iccid)


@router.get("/v1/cards/{iccid}/usage", response_model=Usage, tags=["cards"])
async def get_usage(
    iccid: str,
    platform: PlatformDep,
    ended_within_s: Annotated[float | None, Query(ge=0, le=366 * 86400)] = None,
) -> Usage:
    """Return the data use of the card's bundles; 429 with Retry-After when polled too often.

    With `ended_within_s`, bundles that ended (expired, replaced or used up) longer ago than
    that are left out: a poller asks only for what can have changed since it last looked.
    """
    return platform.poll_usage(iccid, ended_within_s)


@router.post("/sandbox/cards", status_code=201, response_model=CardIn, tags=["sandbox"])
async def add_card(body: CardIn, platform: PlatformDep) -> CardIn:
    """Make a card known (idempotent)."""
    return platform.add_card(body)


@router.get("/sandbox/cards", tags=["sandbox"])
async def list_cards(platform: PlatformDep) -> dict[str, list[CardIn]]:
    """List the known cards."""
    return {"cards": platform.cards()}


@router.post("/sandbox/usage", response_model=Usage, tags=["sandbox"])
async def set_usage(body: UsageUpdate, platform: PlatformDep) -> Usage:
    """Set how much data the card's current bundle has used."""
    return platform.set_usage(body)


@router.post("/sandbox/validity", response_model=CardBundles, tags=["sandbox"])
async def set_validity(body: ValidityChange, platform: PlatformDep) -> CardBundles:
    """End the card's current bundle soon; the queued ones follow it, each as long as before."""
    return platform.set_validity(body)


@router.post("/sandbox/callbacks/mode", response_model=CallbackSetting, tags=["sandbox"])
async def set_callback_mode(body: CallbackSetting, platform: PlatformDep) -> CallbackSetting:
    """Send callbacks about an ICCID signed (default), with a bad signature, or not at all."""
    return platform.set_callback_mode(body)


@router.get("/sandbox/callbacks", response_model=CallbackLog, tags=["sandbox"])
async def list_callbacks(platform: PlatformDep, iccid: str | None = None) -> CallbackLog:
    """List the callbacks sent, with the receiver's answers."""
    return platform.callback_log(iccid)


@router.post("/sandbox/callbacks/redeliver", response_model=CallbackDelivery, tags=["sandbox"])
async def redeliver(body: Redelivery, platform: PlatformDep) -> CallbackDelivery:
    """Send a callback once more under the same id."""
    return platform.redeliver(body)


@router.post("/sandbox/faults", response_model=Fault, tags=["sandbox"])
async def set_fault(body: Fault, platform: PlatformDep) -> Fault:
    """Inject a fault for one ICCID: fail, flaky, slow, or none to clear it."""
    return platform.set_fault(body)


@router.get("/sandbox/ledger", response_model=OrderLedger, tags=["sandbox"])
async def get_ledger(
    platform: PlatformDep, iccid: str | None = None, reference: str | None = None
) -> OrderLedger:
    """List every bundle order with its status, and every cancellation, optionally filtered."""
    return platform.ledger(iccid, reference)


@router.post("/sandbox/reset", status_code=204, tags=["sandbox"])
async def reset(platform: PlatformDep) -> Response:
    """Forget orders and faults; keep the cards."""
    platform.reset()
    return Response(status_code=204)


def create_app(settings: EsimSandboxSettings | None = None, *, clock: Clock = utc_now) -> FastAPI:
    """Build the eSIM platform sandbox app, loading the known cards from its CSV file.

    Args:
        settings: Its settings; read from the environment when omitted.
        clock: The time source for activation and validity.
    """
    settings = settings or EsimSandboxSettings.from_env()
    platform = EsimPlatform(settings, clock)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        sender = CallbackSender(platform, settings, clock)
        tasks = [
            asyncio.create_task(_ticking(platform, settings.tick_s)),
            asyncio.create_task(sender.run()),
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await sender.aclose()

    app = FastAPI(
        title="eSIM platform sandbox",
        description="Bundles on known ICCIDs, activated asynchronously; usage, signed "
        "callbacks and faults on demand.",
        lifespan=lifespan,
    )
    app.state.platform = platform
    install_problem_handlers(app)
    app.include_router(router)
    app.include_router(health_router)
    return app


async def _ticking(platform: EsimPlatform, every_s: float) -> None:
    while True:
        await asyncio.sleep(every_s)
        try:
            platform.tick()
        except Exception:
            logger.exception("tick failed")


class CallbackSender:
    """Posts due callbacks to `callback_url`, signed, retrying a few times on failure."""

    def __init__(
        self,
        platform: EsimPlatform,
        settings: EsimSandboxSettings,
        clock: Clock = utc_now,
        post: Post | None = None,
    ) -> None:
        self.platform = platform
        self.settings = settings
        self.clock = clock
        self.post: Post = post or AiohttpPost(timeout_s=5.0)

    async def run(self) -> None:
        """Send callbacks as they fall due, until cancelled."""
        while True:
            callback_id = await self.platform.callbacks_due.get()
            await self.deliver(callback_id)

    async def deliver_pending(self) -> int:
        """Send every callback due now (for tests); returns how many."""
        sent = 0
        while not self.platform.callbacks_due.empty():
            await self.deliver(self.platform.callbacks_due.get_nowait())
            sent += 1
        return sent

    async def deliver(self, callback_id: str) -> None:
        """Post one callback, up to `callback_attempts` times until it is answered 2xx."""
        callback = self.platform.callbacks.get(callback_id)
        if callback is None or not self.settings.callback_url:
            return
        for attempt in range(self.settings.callback_attempts):
            body, headers = self.platform.signed_request(callback_id, self.clock())
            callback.attempts += 1
            try:
                status = (await self.post(self.settings.callback_url, body, headers)).status
            except Unreachable as error:
                logger.info("callback %s: %s", callback_id, error)
                status = 0
            callback.statuses.append(status)
            if 200 <= status < 300:
                callback.delivered = True
                return
            await asyncio.sleep(min(4.0, 0.5 * 2**attempt))
        logger.warning("callback %s not accepted after %d tries", callback_id, callback.attempts)

    async def aclose(self) -> None:
        """Close the HTTP session."""
        if isinstance(self.post, AiohttpPost):
            await self.post.close()


def main() -> None:
    """Serve the eSIM sandbox on ESIM_SANDBOX_HOST:ESIM_SANDBOX_PORT."""
    settings = EsimSandboxSettings.from_env()
    serve(create_app(settings), settings.host, settings.port)


if __name__ == "__main__":
    main()
