"""eSIM platform sandbox: a reseller API that applies data bundles to known ICCIDs."""

import csv
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Literal, Self

from fastapi import APIRouter, FastAPI, Request, Response
from pydantic import AfterValidator, BaseModel, Field

from sandboxes.idempotency import REPLAYED_HEADER, IdempotencyKey, conflict, fingerprint
from sandboxes.problems import ProblemError, install_problem_handlers
from sandboxes.serving import configure_logging, env_float, env_int, env_str, health_router, serve
from sandboxes.timestamps import Clock, Timestamp, utc_now

logger = logging.getLogger("sandboxes.esim")

BundleStatus = Literal["processing", "queued", "active", "depleted", "expired", "revoked", "failed"]
Start = Literal["now", "after_current"]
FaultMode = Literal["fail", "flaky", "slow", "none"]

FLAKY_FAILURES = 2
"""How many requests for an ICCID answer 503 after its fault is set to ``flaky``."""

FAILURE_REASON = "bundle_rejected"


@dataclass(frozen=True)
class EsimSandboxSettings:
    """Where the eSIM sandbox listens, which cards it knows and how long activation takes."""

    host: str = "127.0.0.1"
    port: int = 8011
    cards_csv: Path = Path("deploy/local/cards.csv")
    activation_delay: float = 0.5
    slow_delay: float = 5.0

    @classmethod
    def from_env(cls) -> Self:
        """Read the ESIM_SANDBOX_* environment variables."""
        return cls(
            host=env_str("ESIM_SANDBOX_HOST", cls.host),
            port=env_int("ESIM_SANDBOX_PORT", cls.port),
            cards_csv=Path(env_str("ESIM_SANDBOX_CARDS_CSV", str(cls.cards_csv))),
            activation_delay=env_float("ESIM_SANDBOX_ACTIVATION_DELAY", cls.activation_delay),
            slow_delay=env_float("ESIM_SANDBOX_SLOW_DELAY", cls.slow_delay),
        )


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
    """The answer to a bundle order: the order, still being processed."""

    order_id: str
    iccid: str
    bundle_code: str
    status: BundleStatus
    created_at: Timestamp


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


class CardBundles(BaseModel):
    """A card and every bundle ordered for it."""

    iccid: str
    bundles: list[Bundle]


class Usage(BaseModel):
    """Data use of the card's current bundle; zeros when it has none."""

    iccid: str
    order_id: str | None
    data_total_mb: int
    data_used_mb: int
    data_remaining_mb: int


class UsageUpdate(BaseModel):
    """How much of its current bundle a card has used."""

    iccid: str = Field(min_length=1)
    data_used_mb: int = Field(ge=0, strict=True)


class Fault(BaseModel):
    """A fault to inject for one ICCID."""

    iccid: str = Field(min_length=1)
    mode: FaultMode


class OrderLedger(BaseModel):
    """Every bundle order the platform received."""

    orders: list[Bundle]


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
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    data_used_mb: int = 0
    sequence: int = 0

    def status_at(self, moment: datetime) -> BundleStatus:
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
        )


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
        order = self._orders.get(order_id)
        if order is None:
            raise ProblemError(404, f"No order {order_id!r}.", code="order_not_found")
        self._maybe_flake(order.request.iccid)
        return order.view(now)

    def card(self, iccid: str) -> CardBundles:
        """Return a card with all its bundles.

        Args:
            iccid: The card's ICCID.

        Raises:
            ProblemError: 404 for an unknown ICCID.
        """
        now = self._settle()
        self._require_card(iccid)
        return CardBundles(iccid=iccid, bundles=[o.view(now) for o in self._orders_of(iccid)])

    def usage(self, iccid: str) -> Usage:
        """Return the data use of a card's current bundle.

        Args:
            iccid: The card's ICCID.

        Raises:
            ProblemError: 404 for an unknown ICCID.
        """
        now = self._settle()
        self._require_card(iccid)
        current = self._current(iccid, now)
        if current is None:
            return Usage(
                iccid=iccid, order_id=None, data_total_mb=0, data_used_mb=0, data_remaining_mb=0
            )
        total = current.request.data_mb
        return Usage(
            iccid=iccid,
            order_id=current.order_id,
            data_total_mb=total,
            data_used_mb=current.data_used_mb,
            data_remaining_mb=max(total - current.data_used_mb, 0),
        )

    def set_usage(self, update: UsageUpdate) -> Usage:
        """Record how much of its current bundle a card has used, capped at the bundle size.

        Args:
            update: The card and its use.

        Raises:
            ProblemError: Unknown ICCID, or no current bundle.
        """
        now = self._settle()
        self._require_card(update.iccid)
        current = self._current(update.iccid, now)
        if current is None:
            raise ProblemError(
                409, f"Card {update.iccid} has no active bundle.", code="no_active_bundle"
            )
        current.data_used_mb = min(update.data_used_mb, current.request.data_mb)
        return self.usage(update.iccid)

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
            ]
        )

    def reset(self) -> None:
        """Forget every order, idempotency key and fault; keep the cards."""
        self._orders.clear()
        self._unsettled.clear()
        self._by_iccid.clear()
        self._keys.clear()
        self._faults.clear()
        self._flaky_left.clear()

    def _require_card(self, iccid: str) -> None:
        if iccid not in self._cards:
            raise ProblemError(404, f"No card {iccid!r}.", code="unknown_iccid")

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
        return now

    def _activate(self, order: _Order, moment: datetime) -> None:
        order.settled = True
        self._unsettled.pop(order.order_id, None)
        if order.fails:
            order.failed = True
            logger.info("order %s failed: %s", order.order_id, FAILURE_REASON)
            return
        others = [o for o in self._orders_of(order.request.iccid) if o is not order]
        validity = timedelta(days=order.request.validity_days)
        if order.request.start == "now":
            for other in others:
                if other.status_at(moment) in ("active", "depleted"):
                    other.replaced = True
            order.valid_from, order.valid_until = moment, moment + validity
            self._requeue_after(order, others, moment)
        else:
            chain = [o for o in others if o.status_at(moment) in ("active", "queued")]
            start = max((o.valid_until for o in chain if o.valid_until), default=moment)
            order.valid_from, order.valid_until = start, start + validity
        logger.info(
            "order %s %s from %s",
            order.order_id,
            order.status_at(moment),
            order.valid_from.isoformat(),
        )

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


def _platform(request: Request) -> EsimPlatform:
    platform: EsimPlatform = request.app.state.platform
    return platform


router = APIRouter()


@router.post("/v1/bundles", status_code=202, response_model=OrderAccepted, tags=["bundles"])
async def create_bundle(
    body: BundleOrderRequest, key: IdempotencyKey, request: Request, response: Response
) -> OrderAccepted:
    """Order a bundle; 200 with ``Idempotent-Replayed: true`` and its status now on replay."""
    view, replayed = _platform(request).place_order(key, body)
    if replayed:
        response.status_code = 200
        response.headers[REPLAYED_HEADER] = "true"
    return OrderAccepted(
        order_id=view.order_id,
        iccid=view.iccid,
        bundle_code=view.bundle_code,
        status=view.status,
        created_at=view.created_at,
    )


@router.get("/v1/bundles/{order_id}", response_model=Bundle, tags=["bundles"])
async def get_bundle(order_id: str, request: Request) -> Bundle:
    """Return a bundle order as it stands now."""
    return _platform(request).order(order_id)


@router.get("/v1/cards/{iccid}", response_model=CardBundles, tags=["cards"])
async def get_card(iccid: str, request: Request) -> CardBundles:
    """Return a card and all its bundles."""
    return _platform(request).card(iccid)


@router.get("/v1/cards/{iccid}/usage", response_model=Usage, tags=["cards"])
async def get_usage(iccid: str, request: Request) -> Usage:
    """Return the data use of the card's current bundle."""
    return _platform(request).usage(iccid)


@router.post("/sandbox/cards", status_code=201, response_model=CardIn, tags=["sandbox"])
async def add_card(body: CardIn, request: Request) -> CardIn:
    """Make a card known (idempotent)."""
    return _platform(request).add_card(body)


@router.get("/sandbox/cards", tags=["sandbox"])
async def list_cards(request: Request) -> dict[str, list[CardIn]]:
    """List the known cards."""
    return {"cards": _platform(request).cards()}


@router.post("/sandbox/usage", response_model=Usage, tags=["sandbox"])
async def set_usage(body: UsageUpdate, request: Request) -> Usage:
    """Set how much data the card's current bundle has used."""
    return _platform(request).set_usage(body)


@router.post("/sandbox/faults", response_model=Fault, tags=["sandbox"])
async def set_fault(body: Fault, request: Request) -> Fault:
    """Inject a fault for one ICCID: fail, flaky, slow, or none to clear it."""
    return _platform(request).set_fault(body)


@router.get("/sandbox/ledger", response_model=OrderLedger, tags=["sandbox"])
async def get_ledger(
    request: Request, iccid: str | None = None, reference: str | None = None
) -> OrderLedger:
    """List every bundle order with its status, optionally filtered."""
    return _platform(request).ledger(iccid, reference)


@router.post("/sandbox/reset", status_code=204, tags=["sandbox"])
async def reset(request: Request) -> Response:
    """Forget orders and faults; keep the cards."""
    _platform(request).reset()
    return Response(status_code=204)


def create_app(settings: EsimSandboxSettings | None = None, *, clock: Clock = utc_now) -> FastAPI:
    """Build the eSIM platform sandbox app, loading the known cards from its CSV file.

    Args:
        settings: Its settings; read from the environment when omitted.
        clock: The time source for activation and validity.
    """
    settings = settings or EsimSandboxSettings.from_env()
    app = FastAPI(
        title="eSIM platform sandbox",
        description="Bundles on known ICCIDs, activated asynchronously; faults on demand.",
    )
    app.state.platform = EsimPlatform(settings, clock)
    install_problem_handlers(app)
    app.include_router(router)
    app.include_router(health_router)
    return app


def main() -> None:
    """Serve the eSIM sandbox on ESIM_SANDBOX_HOST:ESIM_SANDBOX_PORT."""
    configure_logging()
    settings = EsimSandboxSettings.from_env()
    serve(create_app(settings), settings.host, settings.port)


if __name__ == "__main__":
    main()
