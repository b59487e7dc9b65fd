"""Shared bits of the billing unit tests: a FakeGateway, events, and looks into the database."""

import json
import uuid
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NoReturn

from billing import gateways
from billing.bootstrap import Billing
from billing.domain import PaymentState
from billing.gateways.router import MethodRouter
from billing.store import Payment, Refund
from esim_core.clock import utcnow
from esim_core.persistence.db import Database
from esim_core.testing import handle, make_due_now
from esim_schemas import PaymentRequested, ProfileActivated, RefundRequested
from sqlmodel import select

ICCID = "8944500102198304826"
OTHER_ICCID = "8944500102198304834"
SETTLED = "esim.payment.settled.v1"
AUTHORIZED = "esim.payment.authorized.v1"
ACTION_REQUIRED = "esim.payment.action-required.v1"
FAILED = "esim.payment.failed.v1"
REFUNDED = "esim.payment.refunded.v1"

FLAKY_FAILURES = 2
DUE_TABLES = (Payment, Refund)
"""The tables whose rows billing's loops claim when they are due."""


@dataclass
class FakePayment:
    """One payment as the fake provider keeps it."""

    key: str
    reference: str
    method: str
    amount: int
    currency: str
    status: gateways.Standing
    provider_reference: str
    capture_before: datetime
    action_url: str | None = None
    action_expires_at: datetime | None = None
    capture_reference: str | None = None
    refunded_amount: int = 0
    decline_code: str | None = None

    def view(self) -> gateways.PaymentView:
        """What `look_up`, a webhook or the list reports of it."""
        captured = self.status in (gateways.Standing.CAPTURED, gateways.Standing.REFUNDED)
        return gateways.PaymentView(
            standing=self.status,
            reference=self.reference,
            provider_reference=self.provider_reference,
            amount=self.amount,
            currency=self.currency,
            captured_amount=self.amount if captured else 0,
            refunded_amount=self.refunded_amount,
            capture_reference=self.capture_reference,
            capture_before=self.capture_before,
            action_url=self.action_url,
            action_expires_at=self.action_expires_at,
            decline_code=self.decline_code,
            method=self.method,
            # Stripe keeps the key in the PaymentIntent's metadata; the others do not say it.
            idempotency_key=self.key if self.method == "card" else None,
        )


@dataclass
class FakeGateway:
    """An in-memory `PaymentGateway` that behaves like the providers in the payment sandbox.

    The token's suffix decides the outcome as at the sandbox; no token or `_action` waits for
    the buyer (`buyer` answers). Card and PayPal are authorized, Alipay is captured at once.
    Every key acts once: a repeat answers where the payment stands, and a card's decline is
    kept under its key and answered again, as Stripe replays it (PayPal and Alipay try again for
    real). `_insufficient_once` lacks funds at a renewal's first charge only. `outage` makes
    every call transient; `lose` counts, per call (`pay`, `capture`, `void`, `refund`), the answers
    still to be lost after the call took effect; `refund_error` makes refunds fail with that error.
    """

    charges: list[gateways.PaymentRequest] = field(default_factory=list)
    captures_made: list[gateways.CaptureRequest] = field(default_factory=list)
    voids: list[gateways.VoidRequest] = field(default_factory=list)
    refunds: list[gateways.RefundRequest] = field(default_factory=list)
    lookups: list[gateways.LookupRequest] = field(default_factory=list)
    payments: dict[str, FakePayment] = field(default_factory=dict)
    captures: dict[str, gateways.Captured] = field(default_factory=dict)
    """Every capture, by the key of the call that made it (a pay for Alipay, else a capture)."""
    refunded: dict[str, gateways.RefundReceipt] = field(default_factory=dict)
    outage: bool = False
    lose: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    refund_error: Exception | None = None
    tries_per_key: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    on_charge: Any = None
    reported_amount: int | None = None
    """An amount the fake reports instead of the one asked (a provider that disagrees)."""
    funded: set[str] = field(default_factory=set)
    """Renewals whose `_insufficient_once` source has been declined once (it has money now)."""

    def _transient(self) -> None:
        if self.outage:
            raise gateways.GatewayUnavailableError("HTTP 503: unavailable")

    def _lost(self, call: str) -> None:
        if self.lose[call] > 0:
            self.lose[call] -= 1
            raise gateways.GatewayUnavailableError(f"timeout: the answer to {call} was lost")

    def _held(self, payment: FakePayment) -> gateways.PayOutcome:
        if payment.status == gateways.Standing.ACTION_REQUIRED:
            assert payment.action_url is not None and payment.action_expires_at is not None
            return gateways.ActionRequired(
                payment.provider_reference, payment.action_url, payment.action_expires_at
            )
        if payment.status == gateways.Standing.APPROVED:
            payment.status = gateways.Standing.AUTHORIZED
        if payment.status == gateways.Standing.AUTHORIZED:
            return gateways.Authorized(
                payment.provider_reference,
                self.reported_amount or payment.amount,
                payment.currency,
                payment.capture_before,
            )
        if payment.status == gateways.Standing.CAPTURED:
            return self.captures[payment.key]
        raise gateways.PaymentDeclinedError(
            payment.decline_code or "declined", False, "not payable"
        )

    async def pay(self, request: gateways.PaymentRequest) -> gateways.PayOutcome:
        self.charges.append(request)
        if self.on_charge is not None:
            await self.on_charge(request)
        self._transient()
        existing = self.payments.get(request.idempotency_key)
        if existing is not None:
            outcome = self._held(existing)
            self._lost("pay")
            return outcome
        self.tries_per_key[request.idempotency_key] += 1
        token = request.token or ""
        if (
            token.endswith("_flaky")
            and self.tries_per_key[request.idempotency_key] <= FLAKY_FAILURES
        ):
            raise gateways.GatewayUnavailableError("HTTP 503: unavailable")
        if token.endswith("_declined"):
            self._decline(request, "declined", False, "The issuer declined the payment.")
        if token.endswith("_expired"):
            self._decline(request, "expired_method", False, "The method has expired.")
        if token.endswith("_insufficient") or (
            token.endswith("_insufficient_once") and request.reference not in self.funded
        ):
            self.funded.add(request.reference)
            self._decline(request, "insufficient_funds", True, "The method lacks funds.")
        if token and not token.endswith(
            ("_ok", "_slow", "_flaky", "_action", "_insufficient_once")
        ):
            self._decline(request, "invalid_token", False, "The token is not valid.")
        now = utcnow()
        payment = FakePayment(
            key=request.idempotency_key,
            reference=request.reference,
            method=request.method,
            amount=request.amount,
            currency=request.currency,
            status=gateways.Standing.AUTHORIZED,
            provider_reference=f"pi_{uuid.uuid4().hex[:20]}",
            capture_before=now + timedelta(days=7),
        )
        self.payments[request.idempotency_key] = payment
        if not token or token.endswith("_action"):
            payment.status = gateways.Standing.ACTION_REQUIRED
            payment.action_url = f"https://provider.test/approve/{payment.provider_reference}"
            payment.action_expires_at = now + timedelta(hours=3)
        elif request.method == "alipay":
            self._capture(payment, request.idempotency_key)
        outcome = self._held(payment)
        self._lost("pay")
        return outcome

    def _decline(
        self, request: gateways.PaymentRequest, code: str, retryable: bool, message: str
    ) -> NoReturn:
        if request.method == "card":
            # Stripe keeps the declined PaymentIntent under the key and replays its decline.
            self.payments[request.idempotency_key] = FakePayment(
                key=request.idempotency_key,
                reference=request.reference,
                method=request.method,
                amount=request.amount,
                currency=request.currency,
                status=gateways.Standing.DECLINED,
                provider_reference=f"pi_{uuid.uuid4().hex[:20]}",
                capture_before=utcnow() + timedelta(days=7),
                decline_code=code,
            )
        raise gateways.PaymentDeclinedError(code, retryable, message)

    def _capture(self, payment: FakePayment, key: str) -> gateways.Captured:
        payment.status = gateways.Standing.CAPTURED
        payment.capture_reference = f"ch_{uuid.uuid4().hex[:24]}"
        capture = gateways.Captured(
            payment.capture_reference,
            self.reported_amount or payment.amount,
            payment.currency,
            payment.provider_reference,
        )
        self.captures[key] = capture
        if key != payment.key:
            self.captures[payment.key] = capture
        return capture

    def _by_reference(self, provider_reference: str) -> FakePayment:
        for payment in self.payments.values():
            if payment.provider_reference == provider_reference:
                return payment
        raise gateways.GatewayRejectedError(404, f"no payment {provider_reference!r}")

    async def capture(self, request: gateways.CaptureRequest) -> gateways.Captured:
        self.captures_made.append(request)
        self._transient()
        if request.idempotency_key in self.captures:
            self._lost("capture")
            return self.captures[request.idempotency_key]
        payment = self._by_reference(request.provider_reference)
        if payment.status != gateways.Standing.AUTHORIZED:
            raise gateways.GatewayRejectedError(
                409, f"cannot capture a payment that is {payment.status}"
            )
        capture = self._capture(payment, request.idempotency_key)
        self._lost("capture")
        return capture

    async def void(self, request: gateways.VoidRequest) -> gateways.Voided:
        self.voids.append(request)
        self._transient()
        payment = self._by_reference(request.provider_reference)
        if payment.status in (gateways.Standing.AUTHORIZED, gateways.Standing.VOIDED):
            payment.status = gateways.Standing.VOIDED
        elif payment.status in (gateways.Standing.ACTION_REQUIRED, gateways.Standing.CANCELLED):
            payment.status = gateways.Standing.CANCELLED
        else:
            raise gateways.GatewayRejectedError(
                409, f"cannot void a payment that is {payment.status}"
            )
        self._lost("void")
        return gateways.Voided(payment.provider_reference)

    async def refund(self, request: gateways.RefundRequest) -> gateways.RefundReceipt:
        self.refunds.append(request)
        self._transient()
        if self.refund_error is not None:
            raise self.refund_error
        if request.idempotency_key in self.refunded:
            self._lost("refund")
            return self.refunded[request.idempotency_key]
        payment = next(
            (p for p in self.payments.values() if p.capture_reference == request.charge_id), None
        )
        if payment is None:
            raise gateways.GatewayRejectedError(
                404, f"charge_not_found: No charge {request.charge_id!r}."
            )
        payment.refunded_amount += request.amount
        payment.status = gateways.Standing.REFUNDED
        receipt = gateways.RefundReceipt(
            refund_id=f"re_{uuid.uuid4().hex[:24]}", amount=request.amount, currency="CNY"
        )
        self.refunded[request.idempotency_key] = receipt
        self._lost("refund")
        return receipt

    async def look_up(self, request: gateways.LookupRequest) -> gateways.PaymentView:
        self.lookups.append(request)
        self._transient()
        payment = self.payments.get(request.idempotency_key)
        if payment is None:
            return gateways.PaymentView(
                standing=gateways.Standing.NOT_FOUND, reference=request.reference
            )
        return payment.view()

    async def list_payments(self, since: datetime) -> list[gateways.PaymentView]:
        self._transient()
        return [payment.view() for payment in self.payments.values()]

    async def read_webhook(self, headers: Mapping[str, str], body: bytes) -> gateways.WebhookNotice:
        if headers.get("x-fake-signature") != "valid":
            raise gateways.WebhookRejectedError("the signature does not match")
        said = json.loads(body)
        payment = self.payments[said["key"]]
        return gateways.WebhookNotice(
            provider_event_id=said["id"],
            method=payment.method,
            view=payment.view(),
            answer="success" if payment.method == "alipay" else "",
        )

    def buyer(self, renewal_id: str, decision: str) -> FakePayment:
        """The buyer answers at the provider's page: approve or cancel."""
        payment = self.payments[f"charge:{renewal_id}"]
        assert payment.status == gateways.Standing.ACTION_REQUIRED
        if decision == "cancel":
            payment.status = gateways.Standing.CANCELLED
        elif payment.method == "paypal":
            payment.status = gateways.Standing.APPROVED  # authorized when billing pays again
        elif payment.method == "alipay":
            self._capture(payment, payment.key)
        else:
            payment.status = gateways.Standing.AUTHORIZED
        return payment

    def captures_of(self, renewal_id: str) -> int:
        """How many captures exist for a renewal (the contract allows at most one)."""
        return len(
            {
                c.provider_reference
                for key, c in self.captures.items()
                if key.endswith(f":{renewal_id}")
            }
        )


def router_of(fake: FakeGateway) -> MethodRouter:
    """Billing's gateway with the one fake behind every method."""
    return MethodRouter({"card": fake, "paypal": fake, "alipay": fake})


def payment_requested(
    renewal_id: uuid.UUID | None = None,
    token: str = "alipay_ok",
    method: str = "alipay",
    **changes: Any,
) -> PaymentRequested:
    """A payment request; by default Alipay's, which is captured at once."""
    fields: dict[str, Any] = {
        "renewal_id": renewal_id or uuid.uuid4(),
        "user_id": "u-1",
        "iccid": ICCID,
        "plan": {"code": "JP-30D-10GB", "data_mb": 10240, "validity_days": 30},
        "price": {"amount": 9900, "currency": "CNY"},
        "payment": {"method": method, "token": token},
        "start": "now",
    }
    return PaymentRequested(**(fields | changes))


def refund_requested(payment: Payment, **changes: Any) -> RefundRequested:
    fields: dict[str, Any] = {
        "renewal_id": payment.renewal_id,
        "payment_id": payment.id,
        "iccid": payment.iccid,
        "price": {"amount": payment.amount, "currency": payment.currency},
        "reason": "activation_failed",
    }
    return RefundRequested(**(fields | changes))


async def payment_of(database: Database, renewal_id: uuid.UUID | str) -> Payment:
    async with database.session() as session:
        row = (
            await session.exec(select(Payment).where(Payment.renewal_id == str(renewal_id)))
        ).first()
    assert row is not None
    return row


async def refund_of(database: Database, renewal_id: uuid.UUID | str) -> Refund:
    async with database.session() as session:
        row = (
            await session.exec(select(Refund).where(Refund.renewal_id == str(renewal_id)))
        ).first()
    assert row is not None
    return row


async def fast_forward(database: Database) -> None:
    """Make every scheduled payment and refund due now, and let every lease run out."""
    await make_due_now(database, DUE_TABLES)


async def settle(billing: Billing, data: PaymentRequested | None = None) -> Payment:
    """A settled payment, through the handler and one charge round."""
    from billing.handlers import on_payment_requested

    data = data or payment_requested()
    await handle(billing.runtime.database, on_payment_requested, data)
    await billing.charges.run_once()
    payment = await payment_of(billing.runtime.database, data.renewal_id)
    assert payment.state == PaymentState.SETTLED
    return payment


def profile_activated(renewal_id: uuid.UUID | str) -> ProfileActivated:
    """Provisioning's word that the renewal's plan is live."""
    now = utcnow()
    return ProfileActivated(
        renewal_id=uuid.UUID(str(renewal_id)),
        iccid=ICCID,
        plan_code="JP-30D-10GB",
        data_mb=10240,
        valid_from=now,
        valid_until=now + timedelta(days=30),
        bundle_state="active",
        platform_reference="ord_1",
        activated_at=now,
    )
