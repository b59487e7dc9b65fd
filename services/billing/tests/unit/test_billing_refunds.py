"""Refunds: one per renewal, of a settled payment only; an owed refund is never dropped."""

import asyncio
import logging
import uuid
from pathlib import Path
from typing import Any

import pytest
from billing import bootstrap
from billing.bootstrap import Billing
from billing.domain import PaymentState, RefundState
from billing.gateways import GatewayRejectedError
from billing.handlers import on_payment_requested, on_refund_requested
from billing_testkit import (
    DUE_TABLES,
    REFUNDED,
    FakeGateway,
    fast_forward,
    payment_of,
    payment_requested,
    refund_of,
    refund_requested,
    router_of,
    settle,
)
from conftest import NO_WAIT, settings_for
from esim_core.messaging.consumer import PermanentEventError
from esim_core.persistence.db import Database
from esim_core.testing import expire_leases, handle, published, with_tables


async def test_a_settled_payment_is_refunded_once(
    billing: Billing, database: Database, gateway: FakeGateway
) -> None:
    payment = await settle(billing)
    await handle(database, on_refund_requested, refund_requested(payment))
    assert (await refund_of(database, payment.renewal_id)).state == RefundState.PENDING

    assert await billing.refunds.run_once() == 1

    [request] = gateway.refunds
    assert request.idempotency_key == f"refund:{payment.renewal_id}"
    assert request.charge_id == payment.capture_reference
    assert request.amount == payment.amount
    receipt = gateway.refunded[request.idempotency_key]
    refund = await refund_of(database, payment.renewal_id)
    assert refund.state == RefundState.REFUNDED
    assert refund.provider_reference == receipt.refund_id
    assert refund.due_at is None
    [refunded] = await published(database, REFUNDED)
    assert refunded["_key"] == payment.iccid
    assert refunded["data"] | {"refunded_at": None} == {
        "renewal_id": payment.renewal_id,
        "payment_id": payment.id,
        "refund_id": receipt.refund_id,
        "iccid": payment.iccid,
        "price": {"amount": 9900, "currency": "CNY"},
        "refunded_at": None,
        "via": "refund",
    }

    await fast_forward(database)
    assert await billing.refunds.run_once() == 0
    assert len(gateway.refunds) == 1


async def test_a_duplicate_refund_request_changes_nothing(
    billing: Billing, database: Database, gateway: FakeGateway
) -> None:
    payment = await settle(billing)
    data = refund_requested(payment)
    await handle(database, on_refund_requested, data, event_id=str(uuid.uuid4()))
    await handle(database, on_refund_requested, data, event_id=str(uuid.uuid4()))
    await billing.refunds.run_once()
    await handle(database, on_refund_requested, data, event_id=str(uuid.uuid4()))
    await fast_forward(database)
    await billing.refunds.run_once()

    assert len(gateway.refunds) == 1
    assert len(await published(database, REFUNDED)) == 1


async def test_a_refund_of_an_unknown_payment_is_a_permanent_error(
    billing: Billing, database: Database
) -> None:
    payment = await settle(billing)
    data = refund_requested(payment, payment_id="pay_unknown")
    with pytest.raises(PermanentEventError, match="unknown payment pay_unknown"):
        await handle(database, on_refund_requested, data)


@pytest.mark.parametrize("token", ["card_insufficient", "card_declined"])
async def test_a_refund_of_an_unsettled_payment_is_a_permanent_error(
    billing: Billing, database: Database, token: str
) -> None:
    data = payment_requested(token=token)
    await handle(database, on_payment_requested, data)
    await billing.charges.run_once()
    payment = await payment_of(database, data.renewal_id)
    assert payment.state != PaymentState.SETTLED

    with pytest.raises(PermanentEventError, match="neither settled nor authorized"):
        await handle(database, on_refund_requested, refund_requested(payment))


async def test_a_refund_of_more_than_was_captured_is_a_permanent_error(
    billing: Billing, database: Database
) -> None:
    payment = await settle(billing)
    data = refund_requested(payment, price={"amount": 99_999, "currency": "CNY"})
    with pytest.raises(PermanentEventError, match="asks 99999 CNY"):
        await handle(database, on_refund_requested, data)


async def test_a_conflicting_refund_request_is_a_permanent_error(
    billing: Billing, database: Database
) -> None:
    payment = await settle(billing)
    await handle(database, on_refund_requested, refund_requested(payment))
    other = refund_requested(payment, price={"amount": 100, "currency": "CNY"})
    with pytest.raises(PermanentEventError, match="conflicting refund request"):
        await handle(database, on_refund_requested, other)


async def test_an_unreachable_gateway_parks_the_refund_as_failed_and_says_so(
    billing: Billing,
    database: Database,
    gateway: FakeGateway,
    caplog: pytest.LogCaptureFixture,
) -> None:
    payment = await settle(billing)
    await handle(database, on_refund_requested, refund_requested(payment))
    gateway.outage = True
    for _ in range(4):
        await billing.refunds.run_once()
        # The answer is lost: the next round asks the provider before it refunds again.
        assert (await refund_of(database, payment.renewal_id)).state == RefundState.UNKNOWN
        await fast_forward(database)

    with caplog.at_level(logging.ERROR, logger="billing"):
        await billing.refunds.run_once()

    refund = await refund_of(database, payment.renewal_id)
    assert refund.state == RefundState.FAILED
    assert refund.last_error is not None and "503" in refund.last_error
    assert refund.due_at is None
    assert await published(database, REFUNDED) == []
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "OWED" in record.getMessage() and payment.renewal_id in record.getMessage()


async def test_a_refused_refund_is_parked_at_once_and_can_be_retried(
    billing: Billing, database: Database, gateway: FakeGateway
) -> None:
    payment = await settle(billing)
    await handle(database, on_refund_requested, refund_requested(payment))
    gateway.refund_error = GatewayRejectedError(409, "refund_exceeds_capture: nothing left")
    await billing.refunds.run_once()
    refund = await refund_of(database, payment.renewal_id)
    assert refund.state == RefundState.FAILED
    assert refund.last_error is not None and "409" in refund.last_error
    assert len(gateway.refunds) == 1


async def test_a_crash_between_refund_and_commit_never_refunds_twice(
    billing: Billing, database: Database, gateway: FakeGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    payment = await settle(billing)
    await handle(database, on_refund_requested, refund_requested(payment))
    outbox = billing.runtime.outbox
    real_add = outbox.add

    def crash(*args: object, **kwargs: object) -> object:
        raise OSError("disk I/O error")

    monkeypatch.setattr(outbox, "add", crash)
    await billing.refunds.run_once()
    assert (await refund_of(database, payment.renewal_id)).state == RefundState.PENDING

    monkeypatch.setattr(outbox, "add", real_add)
    await expire_leases(database, DUE_TABLES)
    await billing.refunds.run_once()

    assert len(gateway.refunds) == 2
    assert len(gateway.refunded) == 1
    refund = await refund_of(database, payment.renewal_id)
    assert refund.state == RefundState.REFUNDED
    assert len(await published(database, REFUNDED)) == 1


async def test_a_payment_and_its_refund_are_worked_right_after_their_commits(
    tmp_path: Path, gateway: FakeGateway
) -> None:
    """The loops, running, look again only a minute later: the commits that made each row
    due wake them (`made_due`), not a timer."""
    settings = settings_for(tmp_path, worker_interval_s=60, worker_idle_max_s=60)
    billing = bootstrap.build(settings, gateway=router_of(gateway), tries=NO_WAIT)
    async with with_tables(billing.runtime):
        database = billing.runtime.database
        loops = list(billing.runtime.due_loops)
        tasks = [asyncio.create_task(loop.run()) for loop in loops]
        try:
            await asyncio.sleep(0.2)  # their first looks found nothing: the next are a minute away
            data = payment_requested()
            await handle(database, on_payment_requested, data)
            payment = await _eventually(database, data.renewal_id, "payment")
            assert payment.state == PaymentState.SETTLED

            await handle(database, on_refund_requested, refund_requested(payment))
            refund = await _eventually(database, data.renewal_id, "refund")
            assert refund.state == RefundState.REFUNDED
        finally:
            for loop in loops:
                await loop.stop(1.0)
            await asyncio.gather(*tasks)


async def _eventually(database: Database, renewal_id: uuid.UUID, what: str) -> Any:
    # Within five seconds, or never: the loops' own next look is a minute away.
    for _ in range(50):
        row = await (payment_of if what == "payment" else refund_of)(database, renewal_id)
        if row.due_at is None and row.lease_until is None:
            return row
        await asyncio.sleep(0.1)
    return await (payment_of if what == "payment" else refund_of)(database, renewal_id)
