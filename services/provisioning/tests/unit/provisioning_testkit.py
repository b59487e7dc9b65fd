"""Shared bits of the provisioning unit tests: a FakePlatform, events, looks into the database."""

import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from esim_core import testing
from esim_core.clock import utcnow
from esim_core.outside.retry import TryPolicy
from esim_core.persistence.db import Database
from esim_schemas import PaymentSettled
from provisioning.bootstrap import Provisioning
from provisioning.domain import FINAL_STATES
from provisioning.platforms import (
    BundleCancellation,
    BundleOrder,
    BundleOrderRequest,
    BundleStatus,
    BundleUsage,
    CardUsage,
    OrderNotFoundError,
    PlatformRateLimitedError,
    PlatformRejectedError,
    PlatformUnavailableError,
    UnknownIccidError,
)
from provisioning.settings import ProvisioningSettings
from provisioning.store import Activation, Cancellation, UsageWatch
from sqlalchemy import update
from sqlmodel import col, select

ICCID = "8944500102198304826"
OTHER_ICCID = "8944500102198304834"
UNKNOWN_ICCID = "8944500102198304842"
ACTIVATED = "esim.profile.activated.v1"
FAILED = "esim.activation.failed.v1"

FLAKY_FAILURES = 2
DUE_TABLES = (Activation, Cancellation)
"""The tables whose rows the activation and cancellation loops claim when they are due."""
BILLING = "/services/billing"
"""The source of the PaymentSettled events provisioning consumes."""
QUEUED_FROM = datetime(2026, 12, 20, tzinfo=UTC)
"""When the current plan of a card with a `queued` bundle ends."""


NO_WAIT = TryPolicy(attempts=4, wait_multiplier_s=0, wait_max_s=0)


def settings_for(tmp_path: Path, **overrides: object) -> ProvisioningSettings:
    values: dict[str, object] = {
        "database_url": f"sqlite+aiosqlite:///{tmp_path}/provisioning.sqlite",
        "activation_deadline_s": 86400.0,
        "poll_interval_s": 0.5,
        "poll_interval_max_s": 5.0,
        "retry_backoff_s": 1.0,
        "retry_backoff_max_s": 120.0,
    }
    return ProvisioningSettings(**(values | overrides))  # type: ignore[arg-type]


@dataclass
class FakeOrder:
    order_id: str
    request: BundleOrderRequest
    created_at: datetime
    status_checks: int = 0


@dataclass
class FakePlatform:
    """An in-memory eSIM platform that behaves like the sandbox.

    An Idempotency-Key that ordered returns the same order again (another body under it is a
    409); cards in `unknown` are a 404. Per ICCID, `modes` picks what an order becomes: `none`
    (active), `queued`, `fail` (failed, `bundle_rejected`), `slow` (processing for ever here),
    `flaky` (the first two calls answer 503, then as `none`). Each order answers `processing`
    to its first `processing_checks` status checks. `outage` makes every call transient,
    `order_refusal` refuses every order with that HTTP status, `status_override` makes every
    check answer that status, `after_order` runs after an order is recorded, and
    `order_answer` is the status an order answers with (a platform that activates at once);
    with `order_describes_bundle` that answer carries the bundle as a status check would give
    it (without counting as one).
    A cancel revokes the bundle (its checks answer `revoked` from then on) unless
    `cancel_refusal` names the status it had reached first (`active`: it started).
    """

    modes: dict[str, str] = field(default_factory=dict)
    unknown: set[str] = field(default_factory=lambda: {UNKNOWN_ICCID})
    processing_checks: int = 1
    outage: bool = False
    order_refusal: int | None = None
    status_override: str | None = None
    order_answer: str = "processing"
    order_describes_bundle: bool = False
    with_dates: bool = True
    orders: dict[str, FakeOrder] = field(default_factory=dict)
    order_calls: list[BundleOrderRequest] = field(default_factory=list)
    status_calls: list[str] = field(default_factory=list)
    flakes: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    after_order: Callable[[BundleOrderRequest], Awaitable[None]] | None = None
    usage: dict[str, tuple[str, int]] = field(default_factory=dict)
    """Per order id: the status and MB used that `card_usage` reports (else as ordered, 0)."""
    usage_calls: list[str] = field(default_factory=list)
    usage_windows: list[float | None] = field(default_factory=list)
    """The `ended_within_s` each usage call asked with."""
    left_out: set[str] = field(default_factory=set)
    """Order ids that usage answers leave out (a platform listing only what ended lately)."""
    rate_limited_for: float | None = None
    cancel_refusal: str | None = None
    cancelled: set[str] = field(default_factory=set)
    cancel_calls: list[str] = field(default_factory=list)

    async def cancel_bundle(self, order_id: str) -> BundleCancellation:
        self.cancel_calls.append(order_id)
        order = next((o for o in self.orders.values() if o.order_id == order_id), None)
        if order is None:
            self._transient(None)
            raise OrderNotFoundError(404, f"order {order_id} is unknown")
        self._transient(order.request.iccid)
        if self.cancel_refusal is not None and order_id not in self.cancelled:
            start = order.created_at
            return BundleCancellation(
                order_id=order_id,
                cancelled=False,
                bundle=BundleStatus(
                    order_id=order_id,
                    status=self.cancel_refusal,
                    valid_from=start,
                    valid_until=start + timedelta(days=order.request.validity_days),
                    data_mb=order.request.data_mb,
                ),
            )
        self.cancelled.add(order_id)
        return BundleCancellation(
            order_id=order_id,
            cancelled=True,
            bundle=BundleStatus(order_id=order_id, status="revoked", data_mb=order.request.data_mb),
        )

    def set_usage(self, renewal_id: uuid.UUID | str, used_mb: int, status: str = "active") -> None:
        """What the platform will report for a renewal's bundle from now on."""
        [order] = self.orders_of(renewal_id)
        self.usage[order.order_id] = (status, used_mb)

    async def card_usage(self, iccid: str, *, ended_within_s: float | None = None) -> CardUsage:
        self.usage_calls.append(iccid)
        self.usage_windows.append(ended_within_s)
        self._transient(iccid)
        if self.rate_limited_for is not None:
            raise PlatformRateLimitedError("HTTP 429: too often", self.rate_limited_for)
        bundles = []
        for order in self.orders.values():
            if order.request.iccid != iccid or order.order_id in self.left_out:
                continue
            mode = self.modes.get(iccid, "none")
            status, used = self.usage.get(
                order.order_id, ("queued" if mode == "queued" else "active", 0)
            )
            bundles.append(
                BundleUsage(
                    order_id=order.order_id,
                    status=status,
                    data_mb=order.request.data_mb,
                    data_used_mb=used,
                )
            )
        return CardUsage(iccid=iccid, as_of=utcnow(), bundles=tuple(bundles))

    async def order_bundle(self, request: BundleOrderRequest) -> BundleOrder:
        self.order_calls.append(request)
        self._transient(request.iccid)
        if request.iccid in self.unknown:
            raise UnknownIccidError(f"the platform does not know card {request.iccid}")
        if self.order_refusal is not None:
            raise PlatformRejectedError(self.order_refusal, "refused")
        order = self.orders.get(request.idempotency_key)
        if order is not None:
            if order.request != request:
                raise PlatformRejectedError(409, "idempotency_conflict: another body")
        else:
            order = FakeOrder(f"ord_{uuid.uuid4().hex[:16]}", request, utcnow())
            self.orders[request.idempotency_key] = order
        if self.after_order is not None:
            await self.after_order(request)
        if not self.order_describes_bundle:
            return BundleOrder(order_id=order.order_id, status=self.order_answer)
        return BundleOrder(
            order_id=order.order_id,
            status=self.order_answer,
            bundle=self._described(order.order_id, order, self.order_answer),
        )

    async def bundle_status(self, order_id: str) -> BundleStatus:
        self.status_calls.append(order_id)
        order = next((o for o in self.orders.values() if o.order_id == order_id), None)
        if order is None:
            self._transient(None)
            raise OrderNotFoundError(404, f"order {order_id} is unknown")
        request = order.request
        self._transient(request.iccid)
        order.status_checks += 1
        mode = self.modes.get(request.iccid, "none")
        if self.status_override is not None:
            return BundleStatus(order_id=order_id, status=self.status_override)
        if order_id in self.cancelled:
            return BundleStatus(order_id=order_id, status="revoked", data_mb=request.data_mb)
        if mode == "slow" or order.status_checks <= self.processing_checks:
            return BundleStatus(order_id=order_id, status="processing", data_mb=request.data_mb)
        if mode == "fail":
            return BundleStatus(
                order_id=order_id,
                status="failed",
                data_mb=request.data_mb,
                failure_reason="bundle_rejected",
            )
        return self._described(order_id, order, "queued" if mode == "queued" else "active")

    def _described(self, order_id: str, order: FakeOrder, status: str) -> BundleStatus:
        request = order.request
        if status == "failed":
            return BundleStatus(
                order_id=order_id,
                status=status,
                data_mb=request.data_mb,
                failure_reason="bundle_rejected",
            )
        start = QUEUED_FROM if status == "queued" else order.created_at
        return BundleStatus(
            order_id=order_id,
            status=status,
            valid_from=start if self.with_dates else None,
            valid_until=start + timedelta(days=request.validity_days) if self.with_dates else None,
            data_mb=request.data_mb,
        )

    def _transient(self, iccid: str | None) -> None:
        if self.outage:
            raise PlatformUnavailableError("HTTP 503: unavailable")
        if iccid is not None and self.modes.get(iccid) == "flaky":
            self.flakes[iccid] += 1
            if self.flakes[iccid] <= FLAKY_FAILURES:
                raise PlatformUnavailableError("HTTP 503: flaky")

    def orders_of(self, renewal_id: uuid.UUID | str) -> list[FakeOrder]:
        """The orders the platform holds for a renewal."""
        return [o for o in self.orders.values() if o.request.reference == str(renewal_id)]


def payment_settled(
    renewal_id: uuid.UUID | None = None, iccid: str = ICCID, **changes: Any
) -> PaymentSettled:
    fields: dict[str, Any] = {
        "renewal_id": renewal_id or uuid.uuid4(),
        "payment_id": "pay_1f6e0c1e0b7a5d3c",
        "iccid": iccid,
        "plan": {"code": "JP-30D-10GB", "data_mb": 10240, "validity_days": 30},
        "price": {"amount": 9900, "currency": "CNY"},
        "method": "card",
        "provider_reference": "ch_abc",
        "attempts": 1,
        "settled_at": utcnow(),
        "start": "now",
    }
    return PaymentSettled(**(fields | changes))


async def handle(
    provisioning: Provisioning, data: PaymentSettled, event_id: str | None = None
) -> None:
    """Run the handler in one transaction, as the consumer does."""
    await testing.handle(
        provisioning.runtime.database,
        provisioning.handlers.on_payment_settled,
        data,
        event_id,
        source=BILLING,
    )


async def activation_of(database: Database, renewal_id: uuid.UUID | str) -> Activation:
    async with database.session() as session:
        row = (
            await session.exec(select(Activation).where(Activation.renewal_id == str(renewal_id)))
        ).first()
    assert row is not None
    return row


async def activations(database: Database) -> list[Activation]:
    async with database.session() as session:
        return list((await session.exec(select(Activation))).all())


async def fast_forward(database: Database) -> None:
    """Make every scheduled activation and cancellation due now, and let every lease run out."""
    await testing.make_due_now(database, DUE_TABLES)


async def pass_deadline(database: Database, renewal_id: uuid.UUID | str) -> None:
    """Move an activation's deadline into the past."""
    past = utcnow() - timedelta(seconds=1)
    async with database.session() as session:
        await session.exec(
            update(Activation)
            .where(col(Activation.renewal_id) == str(renewal_id))
            .values(deadline_at=past)
        )


async def run_until_final(
    provisioning: Provisioning, renewal_id: uuid.UUID | str, rounds: int = 20
) -> Activation:
    """Run loop rounds, skipping the waits between them, until the activation is final."""
    database = provisioning.runtime.database
    for _ in range(rounds):
        await provisioning.activations.run_once()
        row = await activation_of(database, renewal_id)
        if row.state in FINAL_STATES:
            return row
        await fast_forward(database)
    raise AssertionError(f"activation of {renewal_id} is still {row.state} after {rounds} rounds")


async def poll(provisioning: Provisioning) -> int:
    """Make every usage watch due now and run one poll round."""
    await testing.make_due_now(provisioning.runtime.database, (UsageWatch,))
    return await provisioning.usage.run_once()
