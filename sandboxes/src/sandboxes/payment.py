"""Payment gateway sandbox: charges and refunds whose outcome the token's suffix decides."""

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, ClassVar, Literal

from fastapi import APIRouter, FastAPI, Request, Response
from pydantic import BaseModel, Field

from sandboxes.idempotency import IdempotencyKey, conflict, fingerprint, mark_replayed
from sandboxes.outbound import Unreachable
from sandboxes.problems import ProblemError, install_problem_handlers
from sandboxes.providers import MOUNTS, SlowCall, World
from sandboxes.providers.delivery import Deliveries, Replayed, UnknownDeliveryError
from sandboxes.providers.ledger import Entry, Plant
from sandboxes.providers.ledger import Ledger as ProviderLedger
from sandboxes.serving import ENV_NAME, EnvSettings, app_state, health_router, serve
from sandboxes.timestamps import Clock, Timestamp, utc_now

logger = logging.getLogger("sandboxes.payment")

Method = Literal["card", "paypal", "alipay"]

FLAKY_FAILURES = 2
"""How many requests under one Idempotency-Key a ``_flaky`` token fails before it captures."""


@dataclass(frozen=True)
class PaymentSandboxSettings(EnvSettings):
    """Where the payment sandbox listens and how slow ``_slow`` tokens are."""

    env_prefix: ClassVar[str] = "PAYMENT_SANDBOX_"

    host: str = "127.0.0.1"
    port: int = 8010
    slow_delay: float = 2.0
    public_url: str = ""
    """The sandbox's address as a buyer's browser reaches it; empty: http://<host>:<port>."""
    webhook_base_url: str = field(default="", metadata={ENV_NAME: "WEBHOOK_URL"})
    """Where billing takes the providers' calls (`<url>/webhooks/<provider>`); empty: none."""


class ChargeRequest(BaseModel):
    """A request to capture money from a payment method."""

    amount: int = Field(gt=0, strict=True, description="In the currency's minor unit.")
    currency: str = Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code, e.g. CNY.")
    method: Method
    token: str = Field(min_length=1, repr=False, description="Its suffix decides the outcome.")
    reference: str = Field(min_length=1, description="The renewal id.")
    description: str | None = None


class Charge(BaseModel):
    """A captured charge."""

    id: str
    status: Literal["captured"] = "captured"
    amount: int
    currency: str
    method: Method
    reference: str
    description: str | None = None
    created_at: Timestamp


class RefundRequest(BaseModel):
    """A request to give back all or part of a captured charge."""

    charge_id: str = Field(min_length=1)
    amount: int | None = Field(
        default=None, gt=0, strict=True, description="Defaults to what is left to refund."
    )
    reason: str | None = None


class Refund(BaseModel):
    """A completed refund."""

    id: str
    charge_id: str
    amount: int
    currency: str
    status: Literal["refunded"] = "refunded"
    reason: str | None = None
    created_at: Timestamp


class Ledger(BaseModel):
    """Everything the sandbox holds, took, released and gave back, by any of its APIs.

    The generic API's captures and refunds keep their own shape; the providers' APIs
    (`sandboxes.providers`) add `Entry` rows, each with `reference`, `method`, `amount` and
    `currency`.
    """

    authorizations: list[Entry] = []
    captures: list[Charge | Entry]
    voids: list[Entry] = []
    refunds: list[Refund | Entry]


class Outcome(StrEnum):
    """What the sandbox does with a charge, named by the token suffix that asks for it."""

    OK = "_ok"
    SLOW = "_slow"
    FLAKY = "_flaky"
    DECLINED = "_declined"
    INSUFFICIENT = "_insufficient"
    EXPIRED = "_expired"

    @classmethod
    def for_token(cls, token: str) -> "Outcome | None":
        """Return the outcome a token asks for, or None when its suffix means nothing here.

        Args:
            token: The payment token.
        """
        return next((outcome for outcome in cls if token.endswith(outcome.value)), None)


_DECLINES: dict[Outcome, tuple[str, bool, str]] = {
    Outcome.DECLINED: ("declined", False, "The issuer declined the payment."),
    Outcome.INSUFFICIENT: ("insufficient_funds", True, "The payment method lacks funds."),
    Outcome.EXPIRED: ("expired_method", False, "The payment method has expired."),
}
"""Declines by outcome: error code, whether a later retry may succeed, message."""


@dataclass
class _ChargeKey:
    fingerprint: str
    attempts: int = 0
    charge: Charge | None = None


@dataclass(frozen=True)
class _RefundKey:
    fingerprint: str
    refund: Refund


class PaymentGateway:
    """The sandbox's in-memory gateway state.

    Requests under one Idempotency-Key are serialised by a lock of their own, held even
    while a ``_slow`` charge waits, so two concurrent requests can never both capture;
    different keys do not wait for each other.
    """

    def __init__(self, slow_delay: float, clock: Clock = utc_now) -> None:
        self._slow_delay = slow_delay
        self._clock = clock
        self._lock = asyncio.Lock()
        self._key_locks: dict[str, asyncio.Lock] = {}
        self._charges: dict[str, Charge] = {}
        self._refunds: dict[str, Refund] = {}
        self._charge_keys: dict[str, _ChargeKey] = {}
        self._refund_keys: dict[str, _RefundKey] = {}

    async def charge(self, key: str, request: ChargeRequest) -> tuple[Charge, bool]:
        """Capture a charge once per Idempotency-Key.

        Args:
            key: The Idempotency-Key.
            request: The charge request.

        Returns:
            The charge and whether it is a replay of an earlier capture.

        Raises:
            ProblemError: A decline, a transient failure, an invalid token or a key conflict.
        """
        digest = fingerprint(request)
        async with self._key_locks.setdefault(key, asyncio.Lock()):
            record = self._charge_keys.setdefault(key, _ChargeKey(digest))
            if record.fingerprint != digest:
                raise conflict(key)
            if record.charge is not None:
                return record.charge, True
            record.attempts += 1
            outcome = Outcome.for_token(request.token)
            if outcome is None:
                logger.info("charge rejected: invalid token reference=%s", request.reference)
                raise ProblemError(
                    422, "The payment token is not valid.", code="invalid_token", retryable=False
                )
            if outcome is Outcome.FLAKY and record.attempts <= FLAKY_FAILURES:
                logger.info(
                    "charge unavailable (attempt %d) reference=%s",
                    record.attempts,
                    request.reference,
                )
                raise ProblemError(
                    503,
                    "The payment provider is temporarily unavailable.",
                    code="unavailable",
                    retryable=True,
                )
            if outcome in _DECLINES:
                code, retryable, message = _DECLINES[outcome]
                logger.info("charge declined: %s reference=%s", code, request.reference)
                raise ProblemError(402, message, code=code, retryable=retryable)
            if outcome is Outcome.SLOW:
                await asyncio.sleep(self._slow_delay)
            charge = Charge(
                id=f"ch_{uuid.uuid4().hex[:24]}",
                amount=request.amount,
                currency=request.currency,
                method=request.method,
                reference=request.reference,
                description=request.description,
                created_at=self._clock(),
            )
            self._charges[charge.id] = charge
            record.charge = charge
        logger.info(
            "charge %s captured %d %s via %s reference=%s",
            charge.id,
            charge.amount,
            charge.currency,
            charge.method,
            charge.reference,
        )
        return charge, False

    async def refund(self, key: str, request: RefundRequest) -> tuple[Refund, bool]:
        """Refund a captured charge once per Idempotency-Key.

        Args:
            key: The Idempotency-Key.
            request: The refund request.

        Returns:
            The refund and whether it is a replay of an earlier one.

        Raises:
            ProblemError: Unknown charge, more than is left to refund, or a key conflict.
        """
        digest = fingerprint(request)
        async with self._lock:
            existing = self._refund_keys.get(key)
            if existing is not None:
                if existing.fingerprint != digest:
                    raise conflict(key)
                return existing.refund, True
            charge = self._charges.get(request.charge_id)
            if charge is None:
                raise ProblemError(
                    404, f"No charge {request.charge_id!r}.", code="charge_not_found"
                )
            refunded = sum(r.amount for r in self._refunds.values() if r.charge_id == charge.id)
            left = charge.amount - refunded
            amount = left if request.amount is None else request.amount
            if left <= 0 or amount > left:
                raise ProblemError(
                    409,
                    f"Charge {charge.id} has {left} {charge.currency} left to refund, "
                    f"{amount} asked.",
                    code="refund_exceeds_capture",
                )
            refund = Refund(
                id=f"re_{uuid.uuid4().hex[:24]}",
                charge_id=charge.id,
                amount=amount,
                currency=charge.currency,
                reason=request.reason,
                created_at=self._clock(),
            )
            self._refunds[refund.id] = refund
            self._refund_keys[key] = _RefundKey(digest, refund)
        logger.info(
            "refund %s of %d %s on charge %s reference=%s",
            refund.id,
            refund.amount,
            refund.currency,
            charge.id,
            charge.reference,
        )
        return refund, False

    def get_charge(self, charge_id: str) -> Charge:
        """Return a captured charge.

        Args:
            charge_id: The charge id.

        Raises:
            ProblemError: 404 when there is no such charge.
        """
        charge = self._charges.get(charge_id)
        if charge is None:
            raise ProblemError(404, f"No charge {charge_id!r}.", code="charge_not_found")
        return charge

    def ledger(self, reference: str | None = None) -> Ledger:
        """Return captures and refunds, optionally only those of one charge reference.

        Args:
            reference: The charge reference (renewal id) to keep.
        """
        captures = [c for c in self._charges.values() if reference in (None, c.reference)]
        kept = {c.id for c in captures}
        refunds = [r for r in self._refunds.values() if r.charge_id in kept]
        return Ledger(captures=captures, refunds=refunds)

    def reset(self) -> None:
        """Forget every charge, refund and idempotency key."""
        self._key_locks.clear()
        self._charges.clear()
        self._refunds.clear()
        self._charge_keys.clear()
        self._refund_keys.clear()


GatewayDep = Annotated[PaymentGateway, app_state("gateway")]
WorldDep = Annotated[World, app_state("world")]
router = APIRouter()


@router.post("/v1/charges", status_code=201, response_model=Charge, tags=["charges"])
async def create_charge(
    body: ChargeRequest, key: IdempotencyKey, gateway: GatewayDep, response: Response
) -> Charge:
    """Capture a charge; 200 with ``Idempotent-Replayed: true`` when the key was captured."""
    charge, replayed = await gateway.charge(key, body)
    mark_replayed(response, replayed)
    return charge


@router.get("/v1/charges/{charge_id}", response_model=Charge, tags=["charges"])
async def get_charge(charge_id: str, gateway: GatewayDep) -> Charge:
    """Return a captured charge."""
    return gateway.get_charge(charge_id)


@router.post("/v1/refunds", status_code=201, response_model=Refund, tags=["refunds"])
async def create_refund(
    body: RefundRequest, key: IdempotencyKey, gateway: GatewayDep, response: Response
) -> Refund:
    """Refund a charge; 200 with ``Idempotent-Replayed: true`` when the key was used."""
    refund, replayed = await gateway.refund(key, body)
    mark_replayed(response, replayed)
    return refund


@router.get("/sandbox/ledger", response_model=Ledger, tags=["sandbox"])
async def get_ledger(gateway: GatewayDep, world: WorldDep, reference: str | None = None) -> Ledger:
    """List authorizations, captures, voids and refunds, optionally of one reference."""
    generic = gateway.ledger(reference)
    providers = world.ledger.view(reference)
    return Ledger(
        authorizations=providers.authorizations,
        captures=[*generic.captures, *providers.captures],
        voids=providers.voids,
        refunds=[*generic.refunds, *providers.refunds],
    )


@router.post("/sandbox/ledger/plant", status_code=201, response_model=Entry, tags=["sandbox"])
async def plant(body: Plant, world: WorldDep) -> Entry:
    """Record a capture that billing never asked for, as a reconciliation test needs."""
    return world.ledger.record(
        "captures",
        id=f"planted_{uuid.uuid4().hex[:20]}",
        reference=body.reference,
        method=body.method,
        amount=body.amount,
        currency=body.currency,
        provider={"card": "stripe", "paypal": "paypal", "alipay": "alipay"}[body.method],
        planted=True,
    )


@router.get("/sandbox/deliveries", tags=["sandbox"])
async def deliveries(world: WorldDep, reference: str | None = None) -> list[dict[str, object]]:
    """Every webhook or notify sent to billing, with its attempts, optionally of one reference."""
    return [r.model_dump(mode="json") for r in world.deliveries.records(reference)]


class Lose(BaseModel):
    """`POST /sandbox/deliveries/lose`: a renewal whose webhooks and notifies never arrive."""

    reference: str = Field(min_length=1, max_length=128)


@router.post("/sandbox/deliveries/lose", status_code=204, tags=["sandbox"])
async def lose(body: Lose, world: WorldDep) -> Response:
    """Send none of a reference's calls to billing from now on (a lost-webhook test): billing
    must learn where the payment stands by asking."""
    world.deliveries.held.add(body.reference)
    return Response(status_code=204)


@router.post("/sandbox/deliveries/{delivery_id}/replay", response_model=Replayed, tags=["sandbox"])
async def replay(delivery_id: str, world: WorldDep) -> Replayed:
    """Send one webhook or notify to billing again, exactly as it was last sent (body and
    signed headers), and answer what billing answered: a replayed call must change nothing."""
    try:
        return await world.deliveries.replay(delivery_id)
    except UnknownDeliveryError:
        raise ProblemError(
            404, f"No delivery {delivery_id!r} was sent.", code="delivery_not_found"
        ) from None
    except Unreachable as error:
        raise ProblemError(
            502, f"The receiver could not be reached: {error}", code="receiver_unreachable"
        ) from None


@router.get("/sandbox/slow-calls", response_model=list[SlowCall], tags=["sandbox"])
async def slow_calls(world: WorldDep, reference: str | None = None) -> list[SlowCall]:
    """The `_slow` sources' calls being held right now (sent, not yet answered), optionally of
    one reference: a test kills the caller while its call is in flight."""
    return [c for c in world.slow_calls if reference in (None, c.reference)]


@router.post("/sandbox/reset", status_code=204, tags=["sandbox"])
async def reset(request: Request, gateway: GatewayDep, world: WorldDep) -> Response:
    """Forget everything the gateway recorded."""
    gateway.reset()
    world.ledger.reset()
    world.deliveries.reset()
    for provider in ("stripe", "paypal", "alipay"):
        state = getattr(request.app.state, provider, None)
        if state is not None:
            state.reset()
    return Response(status_code=204)


def create_app(
    settings: PaymentSandboxSettings | None = None, *, clock: Clock = utc_now
) -> FastAPI:
    """Build the payment gateway sandbox app.

    Args:
        settings: Its settings; read from the environment when omitted.
        clock: The source of ``created_at`` times.
    """
    settings = settings or PaymentSandboxSettings.from_env()
    app = FastAPI(
        title="Payment gateway sandbox",
        description="Outcome by token suffix: _ok, _declined, _insufficient, _flaky, "
        "_slow, _expired.",
    )
    app.state.gateway = PaymentGateway(settings.slow_delay, clock)
    deliveries = Deliveries(clock=clock)
    app.state.world = World(
        ledger=ProviderLedger(clock=clock),
        deliveries=deliveries,
        clock=clock,
        public_url=(settings.public_url or f"http://{settings.host}:{settings.port}").rstrip("/"),
        webhook_base_url=settings.webhook_base_url.rstrip("/"),
        slow_delay=settings.slow_delay,
    )
    app.router.add_event_handler("shutdown", deliveries.close)
    install_problem_handlers(app)
    app.include_router(router)
    app.include_router(health_router)
    for mount in MOUNTS:
        mount(app, app.state.world)
    return app


def main() -> None:
    """Serve the payment sandbox on PAYMENT_SANDBOX_HOST:PAYMENT_SANDBOX_PORT."""
    settings = PaymentSandboxSettings.from_env()
    serve(create_app(settings), settings.host, settings.port)


if __name__ == "__main__":
    main()
