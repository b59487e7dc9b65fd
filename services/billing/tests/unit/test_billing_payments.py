"""Payments: one per renewal, each gateway outcome, dunning, outages, and crash safety."""

import uuid
from datetime import timedelta
from typing import Any

import pytest
from billing.bootstrap import Billing
from billing.domain import PaymentState, event_id, payment_id_for
from billing.gateways import GatewayUnavailableError, PaymentRequest
from billing.handlers import on_payment_requested
from billing_testkit import (
    DUE_TABLES,
    FAILED,
    OTHER_ICCID,
    SETTLED,
    FakeGateway,
    fast_forward,
    payment_of,
    payment_requested,
)
from esim_core.clock import as_utc, utcnow
from esim_core.messaging.consumer import MessageInfo, PermanentEventError
from esim_core.persistence.db import Database
from esim_core.testing import event, expire_leases, handle, published


async def test_a_payment_taken_at_once_is_captured_once_and_settled(
    billing: Billing, database: Database, gateway: FakeGateway
) -> None:
    data = payment_requested(token="alipay_ok")
    await handle(database, on_payment_requested, data)

    pending = await payment_of(database, data.renewal_id)
    assert pending.state == PaymentState.PENDING
    assert pending.id == payment_id_for(data.renewal_id)
    assert pending.id.startswith("pay_")
    assert await billing.charges.run_once() == 1

    [request] = gateway.charges
    assert request.idempotency_key == f"charge:{data.renewal_id}"
    assert (request.reference, request.amount, request.currency, request.method) == (
        str(data.renewal_id),
        9900,
        "CNY",
        "alipay",
    )
    payment = await payment_of(database, data.renewal_id)
    capture = gateway.captures[request.idempotency_key]
    assert payment.state == PaymentState.SETTLED
    assert payment.capture_reference == capture.provider_reference
    assert payment.token is None
    assert payment.due_at is None

    [settled] = await published(database, SETTLED)
    assert settled["_key"] == data.iccid and settled["subject"] == data.iccid
    assert settled["renewalid"] == str(data.renewal_id)
    assert settled["_topic"] == "esim.payment.settled"
    assert settled["id"] == event_id("payment-settled", data.renewal_id)
    assert settled["data"] | {"settled_at": None} == {
        "renewal_id": str(data.renewal_id),
        "payment_id": payment.id,
        "iccid": data.iccid,
        "plan": {"code": "JP-30D-10GB", "data_mb": 10240, "validity_days": 30},
        "price": {"amount": 9900, "currency": "CNY"},
        "method": "alipay",
        "provider_reference": capture.provider_reference,
        "attempts": 1,
        "settled_at": None,
        "start": "now",
    }
    assert settled["data"]["settled_at"].endswith("Z")

    await fast_forward(database)
    assert await billing.charges.run_once() == 0
    assert len(gateway.charges) == 1


def test_the_payment_id_and_event_ids_are_deterministic() -> None:
    renewal_id = uuid.uuid4()
    assert payment_id_for(renewal_id) == payment_id_for(str(renewal_id))
    assert payment_id_for(renewal_id) != payment_id_for(uuid.uuid4())
    assert event_id("payment-settled", renewal_id) == event_id("payment-settled", renewal_id)
    assert event_id("payment-settled", renewal_id) != event_id("payment-failed", renewal_id)


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("card_declined", "declined"),
        ("paypal_expired", "expired_method"),
        ("alipay_garbage", "invalid_token"),
    ],
)
async def test_a_hard_decline_fails_at_once_without_retry(
    billing: Billing, database: Database, gateway: FakeGateway, token: str, reason: str
) -> None:
    data = payment_requested(token=token)
    await handle(database, on_payment_requested, data)
    await billing.charges.run_once()

    payment = await payment_of(database, data.renewal_id)
    assert payment.state == PaymentState.FAILED
    assert payment.failure_reason == reason
    assert payment.token is None and payment.due_at is None
    [failed] = await published(database, FAILED)
    assert failed["data"]["reason"] == reason
    assert failed["data"]["attempts"] == 1
    assert failed["data"]["payment_id"] == payment.id
    assert await published(database, SETTLED) == []

    await fast_forward(database)
    await billing.charges.run_once()
    assert len(gateway.charges) == 1


@pytest.mark.parametrize(
    ("method", "keys"),
    [
        # Stripe replays a key's first answer: each dunning charge is a new attempt, new key.
        ("card", ["charge:{r}", "charge:{r}:2", "charge:{r}:3", "charge:{r}:4"]),
        # PayPal and Alipay charge again for real under the renewal's one key.
        ("paypal", ["charge:{r}"] * 4),
        ("alipay", ["charge:{r}"] * 4),
    ],
)
async def test_insufficient_funds_follows_the_dunning_schedule_then_fails(
    billing: Billing, database: Database, gateway: FakeGateway, method: str, keys: list[str]
) -> None:
    data = payment_requested(method=method, token=f"{method}_insufficient")
    await handle(database, on_payment_requested, data)

    for round_number, delay in enumerate([30, 120, 600], start=1):
        before = utcnow()
        assert await billing.charges.run_once() == 1
        payment = await payment_of(database, data.renewal_id)
        assert payment.state == PaymentState.PENDING
        assert payment.attempts == round_number
        assert payment.token == f"{method}_insufficient"  # kept for the next dunning charge
        assert payment.due_at is not None
        wait = as_utc(payment.due_at) - before
        assert timedelta(seconds=delay) <= wait < timedelta(seconds=delay + 5)
        # Not due before its time.
        assert await billing.charges.run_once() == 0
        assert await published(database) == []
        await fast_forward(database)

    await billing.charges.run_once()
    payment = await payment_of(database, data.renewal_id)
    assert payment.state == PaymentState.FAILED
    assert payment.failure_reason == "insufficient_funds"
    assert payment.token is None
    [failed] = await published(database, FAILED)
    assert failed["data"]["reason"] == "insufficient_funds"
    assert failed["data"]["attempts"] == 4
    assert [c.idempotency_key for c in gateway.charges] == [
        key.format(r=data.renewal_id) for key in keys
    ]
    assert gateway.captures == {}


async def test_a_flaky_gateway_is_retried_within_the_round_and_captures_once(
    billing: Billing, database: Database, gateway: FakeGateway
) -> None:
    data = payment_requested(token="card_flaky")
    await handle(database, on_payment_requested, data)
    await billing.charges.run_once()

    payment = await payment_of(database, data.renewal_id)
    assert payment.state == PaymentState.SETTLED
    assert len(gateway.charges) == 3  # two 503s, then the capture
    assert gateway.captures_of(str(data.renewal_id)) == 1
    [settled] = await published(database, SETTLED)
    assert settled["data"]["attempts"] == 1


async def test_an_unreachable_provider_leaves_the_payment_unknown_and_asks_on_the_schedule(
    billing: Billing, database: Database, gateway: FakeGateway
) -> None:
    gateway.outage = True
    data = payment_requested()
    await handle(database, on_payment_requested, data)

    schedule = billing.rules.unknown_schedule_s
    for round_number in range(1, len(schedule) + 2):
        before = utcnow()
        await billing.charges.run_once()
        payment = await payment_of(database, data.renewal_id)
        assert payment.state == PaymentState.UNKNOWN and payment.unknown_step == "pay"
        assert payment.unavailable_rounds == round_number
        assert payment.last_error is not None and "503" in payment.last_error
        assert payment.due_at is not None
        pause = schedule[min(round_number, len(schedule)) - 1]
        wait = (as_utc(payment.due_at) - before).total_seconds()
        assert pause - 1 <= wait <= pause + 1
        await fast_forward(database)

    # Never a guess: no event, and every call was a look-up or a pay under the one key.
    assert await published(database) == []
    assert {c.idempotency_key for c in gateway.charges} == {f"charge:{data.renewal_id}"}
    assert len(gateway.lookups) == len(schedule) * 4  # every round after the first asks first


async def test_a_pay_the_provider_never_received_is_failed_after_the_bound(
    billing: Billing, database: Database, gateway: FakeGateway
) -> None:
    data = payment_requested()
    await handle(database, on_payment_requested, data)
    gateway.outage = True
    await billing.charges.run_once()
    for _ in range(billing.rules.max_unavailable_rounds):
        # The look-up answers (the payment does not exist); the pay that follows does not.
        gateway.outage = False
        real_pay = gateway.pay

        async def unavailable(request: Any) -> Any:
            raise GatewayUnavailableError("HTTP 503: unavailable")

        gateway.pay = unavailable  # type: ignore[method-assign]  # an outage of pay alone
        await fast_forward(database)
        await billing.charges.run_once()
        gateway.pay = real_pay  # type: ignore[method-assign]

    payment = await payment_of(database, data.renewal_id)
    assert payment.state == PaymentState.FAILED
    assert payment.failure_reason == "provider_unavailable"
    [failed] = await published(database, FAILED)
    assert failed["data"]["reason"] == "provider_unavailable"


async def test_the_provider_coming_back_settles_the_payment_under_the_same_key(
    billing: Billing, database: Database, gateway: FakeGateway
) -> None:
    gateway.outage = True
    data = payment_requested()
    await handle(database, on_payment_requested, data)
    await billing.charges.run_once()
    gateway.outage = False
    await fast_forward(database)
    await billing.charges.run_once()

    payment = await payment_of(database, data.renewal_id)
    assert payment.state == PaymentState.SETTLED
    assert payment.last_error is None and payment.unknown_step is None
    [settled] = await published(database, SETTLED)
    assert settled["data"]["attempts"] == 2
    assert gateway.lookups[-1].idempotency_key == f"charge:{data.renewal_id}"


async def test_a_lost_answer_is_resolved_by_asking_never_by_paying_again(
    billing: Billing, database: Database, gateway: FakeGateway
) -> None:
    gateway.lose["pay"] = 4  # every try of the round: the answer is lost each time
    data = payment_requested()
    await handle(database, on_payment_requested, data)
    await billing.charges.run_once()
    payment = await payment_of(database, data.renewal_id)
    assert payment.state == PaymentState.UNKNOWN and payment.unknown_step == "pay"
    pays = len(gateway.charges)

    await fast_forward(database)
    await billing.charges.run_once()

    payment = await payment_of(database, data.renewal_id)
    assert payment.state == PaymentState.SETTLED
    assert len(gateway.charges) == pays  # asked, not paid again
    assert gateway.captures_of(str(data.renewal_id)) == 1
    assert len(await published(database, SETTLED)) == 1


async def test_a_duplicate_request_makes_one_payment_and_one_charge(
    billing: Billing, database: Database, gateway: FakeGateway
) -> None:
    data = payment_requested()
    await handle(database, on_payment_requested, data, event_id=str(uuid.uuid4()))
    await handle(database, on_payment_requested, data, event_id=str(uuid.uuid4()))
    await billing.charges.run_once()
    # Once more after the payment is final: still nothing new.
    await handle(database, on_payment_requested, data, event_id=str(uuid.uuid4()))
    await fast_forward(database)
    await billing.charges.run_once()

    assert len(gateway.charges) == 1
    assert len(await published(database, SETTLED)) == 1
    payment = await payment_of(database, data.renewal_id)
    assert payment.attempts == 1


@pytest.mark.parametrize(
    "changes",
    [
        {"price": {"amount": 100, "currency": "CNY"}},
        {"iccid": OTHER_ICCID},
        {"plan": {"code": "JP-1D-1GB", "data_mb": 1024, "validity_days": 1}},
        {"payment": {"method": "paypal", "token": "paypal_ok"}},
    ],
)
async def test_a_conflicting_duplicate_is_a_permanent_error(
    billing: Billing, database: Database, gateway: FakeGateway, changes: dict[str, Any]
) -> None:
    data = payment_requested()
    await handle(database, on_payment_requested, data)
    other = payment_requested(renewal_id=data.renewal_id, **changes)

    with pytest.raises(PermanentEventError, match="conflicting payment request for renewal"):
        await handle(database, on_payment_requested, other)

    await billing.charges.run_once()
    [request] = gateway.charges
    assert request.amount == 9900 and request.method == "alipay"
    payment = await payment_of(database, data.renewal_id)
    assert payment.iccid == data.iccid and payment.amount == 9900


async def test_a_redelivered_event_goes_through_the_inbox_once(
    billing: Billing, database: Database, gateway: FakeGateway
) -> None:
    consumer = billing.runtime.subscribe()
    assert consumer is not None
    data = payment_requested()
    body = event(data).to_json()
    info = MessageInfo(topic=consumer.topics[0], partition=0, offset=0, key=None)
    for _ in range(2):
        await consumer.handle(body, info)
    await billing.charges.run_once()
    assert len(gateway.charges) == 1


async def test_a_crash_between_capture_and_commit_never_captures_twice(
    billing: Billing, database: Database, gateway: FakeGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = payment_requested()
    await handle(database, on_payment_requested, data)
    outbox = billing.runtime.outbox
    real_add = outbox.add

    def crash(*args: Any, **kwargs: Any) -> Any:
        raise OSError("disk I/O error")

    monkeypatch.setattr(outbox, "add", crash)
    await billing.charges.run_once()  # the gateway captured; the write failed and rolled back

    payment = await payment_of(database, data.renewal_id)
    assert payment.state == PaymentState.PENDING
    assert payment.attempts == 0
    assert await published(database) == []
    assert gateway.captures_of(str(data.renewal_id)) == 1

    monkeypatch.setattr(outbox, "add", real_add)
    assert await billing.charges.run_once() == 0  # leased until the lease runs out
    await expire_leases(database, DUE_TABLES)
    await billing.charges.run_once()

    first, second = gateway.charges
    assert first.idempotency_key == second.idempotency_key == f"charge:{data.renewal_id}"
    assert gateway.captures_of(str(data.renewal_id)) == 1
    payment = await payment_of(database, data.renewal_id)
    capture = gateway.captures[first.idempotency_key]
    assert payment.state == PaymentState.SETTLED
    assert payment.capture_reference == capture.provider_reference
    [settled] = await published(database, SETTLED)
    assert settled["data"]["provider_reference"] == capture.provider_reference


async def test_a_round_whose_lease_was_taken_over_keeps_its_hands_off(
    billing: Billing, database: Database, gateway: FakeGateway
) -> None:
    data = payment_requested()
    await handle(database, on_payment_requested, data)

    async def another_replica_claims(_: PaymentRequest) -> None:
        # The round outlived its lease and another replica claimed the payment meanwhile.
        gateway.on_charge = None
        await expire_leases(database, DUE_TABLES)
        assert await billing.charges.run_once() == 1

    gateway.on_charge = another_replica_claims
    await billing.charges.run_once()

    assert gateway.captures_of(str(data.renewal_id)) == 1
    assert len(await published(database, SETTLED)) == 1
    payment = await payment_of(database, data.renewal_id)
    assert payment.state == PaymentState.SETTLED and payment.attempts == 1


async def test_a_zero_price_is_refused(billing: Billing, database: Database) -> None:
    data = payment_requested(price={"amount": 0, "currency": "CNY"})
    with pytest.raises(PermanentEventError, match="nothing to charge"):
        await handle(database, on_payment_requested, data)


async def test_a_discount_is_kept_and_shown_on_the_settlement(
    billing: Billing, database: Database, gateway: FakeGateway
) -> None:
    data = payment_requested(
        price={"amount": 8910, "currency": "CNY"},
        discount={"amount": 990, "currency": "CNY"},
        promo_code="WELCOME10",
    )
    await handle(database, on_payment_requested, data)
    assert await billing.charges.run_once() == 1
    [request] = gateway.charges
    assert request.amount == 8910  # the price is what is charged; the discount is for receipts
    [settled] = await published(database, SETTLED)
    assert settled["data"]["price"] == {"amount": 8910, "currency": "CNY"}
    assert settled["data"]["discount"] == {"amount": 990, "currency": "CNY"}
    assert settled["data"]["promo_code"] == "WELCOME10"
