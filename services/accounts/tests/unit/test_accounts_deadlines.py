"""The deadline sweep: a saga stuck waiting is moved on, and compensated when it was paid."""

import json
from datetime import timedelta

from accounts.deadlines import sweep_deadlines
from accounts.domain import Deadlines
from accounts.handlers import RenewalSaga
from accounts.store import Renewal
from accounts_testkit import published
from esim_core.db import Database
from esim_core.outbox import Outbox
from esim_core.worker import as_utc, utcnow
from sqlmodel import col, select
from test_accounts_saga import activated, bind, handle, request, saga_row, settled


async def overdue(database: Database) -> None:
    async with database.session() as session:
        for row in (await session.exec(select(Renewal))).all():
            if row.deadline_at is not None:
                row.deadline_at = utcnow() - timedelta(seconds=1)
                session.add(row)


async def test_deadlines_are_set_and_cleared(database: Database, outbox: Outbox) -> None:
    saga = RenewalSaga(outbox, Deadlines(payment_s=100, activation_s=200))
    await bind(database)
    data = request()
    await handle(database, saga.on_renewal_requested, data)
    pending = await saga_row(database, data.renewal_id)
    assert pending.deadline_at is not None
    assert 90 < (as_utc(pending.deadline_at) - utcnow()).total_seconds() <= 100
    await handle(database, saga.on_payment_settled, settled(data.renewal_id))
    paid = await saga_row(database, data.renewal_id)
    assert paid.deadline_at is not None
    assert 190 < (as_utc(paid.deadline_at) - utcnow()).total_seconds() <= 200
    await handle(database, saga.on_profile_activated, activated(data.renewal_id))
    assert (await saga_row(database, data.renewal_id)).deadline_at is None
    assert await sweep_deadlines(database, saga) == 0


async def test_sweep_leaves_sagas_within_their_deadline(
    database: Database, saga: RenewalSaga
) -> None:
    await bind(database)
    await handle(database, saga.on_renewal_requested, request())
    assert await sweep_deadlines(database, saga) == 0


async def test_unpaid_saga_times_out_and_a_late_capture_is_refunded(
    database: Database, saga: RenewalSaga
) -> None:
    await bind(database)
    data = request()
    await handle(database, saga.on_renewal_requested, data)
    await overdue(database)
    assert await sweep_deadlines(database, saga) == 1
    row = await saga_row(database, data.renewal_id)
    assert (row.status, row.reason) == ("TIMED_OUT", "payment_timed_out")
    assert await published(database, "esim.refund.requested.v1") == []

    await handle(database, saga.on_payment_settled, settled(data.renewal_id))
    [refund] = await published(database, "esim.refund.requested.v1")
    body = json.loads(refund.value)["data"]
    # The reason billing and ops read says what happened, not "activation failed".
    assert (body["payment_id"], body["reason"]) == (
        "pay_1",
        "payment settled after the saga timed out",
    )
    assert await sweep_deadlines(database, saga) == 0


async def test_paid_saga_without_activation_times_out_and_is_refunded_once(
    database: Database, saga: RenewalSaga
) -> None:
    await bind(database)
    data = request()
    await handle(database, saga.on_renewal_requested, data)
    await handle(database, saga.on_payment_settled, settled(data.renewal_id))
    await overdue(database)
    assert await sweep_deadlines(database, saga) == 1
    assert await sweep_deadlines(database, saga) == 0

    [refund] = await published(database, "esim.refund.requested.v1")
    assert json.loads(refund.value)["data"]["reason"] == "activation timed out"
    row = await saga_row(database, data.renewal_id)
    assert row.status == "TIMED_OUT"
    await handle(database, saga.on_profile_activated, activated(data.renewal_id))
    assert (await saga_row(database, data.renewal_id)).status == "TIMED_OUT"
    async with database.session() as session:
        steps = (
            await session.exec(select(Renewal).where(col(Renewal.status) == "TIMED_OUT"))
        ).all()
    assert len(steps) == 1
