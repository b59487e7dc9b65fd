"""The deadline sweep: a saga stuck waiting is moved on; provisioning's answer decides a refund."""

import json
import uuid
from datetime import timedelta

import pytest
from accounts.domain import Deadlines
from accounts.renewals.deadlines import sagas_in_flight, sweep_deadlines
from accounts.renewals.saga import RenewalSaga
from accounts.renewals.stuck import stuck_reason
from accounts.settings import AccountsSettings
from accounts.store import Renewal
from accounts_testkit import ICCID, published
from esim_core.clock import as_utc, utcnow
from esim_core.messaging.outbox import Outbox
from esim_core.persistence.db import Database
from esim_core.settings import SettingsError, load_settings
from esim_schemas import ActivationFailed
from sqlmodel import select
from test_accounts_saga import activated, bind, card_plans, handle, request, saga_row, settled


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


async def test_unpaid_saga_times_out_and_a_late_capture_waits_for_provisioning(
    database: Database, saga: RenewalSaga
) -> None:
    await bind(database)
    data = request()
    await handle(database, saga.on_renewal_requested, data)
    await overdue(database)
    assert await sweep_deadlines(database, saga) == 1
    row = await saga_row(database, data.renewal_id)
    assert (row.status, row.reason) == ("TIMED_OUT", "payment_timed_out")

    # Provisioning applies the bundle of every capture: its answer, not accounts, decides.
    await handle(database, saga.on_payment_settled, settled(data.renewal_id))
    assert await published(database, "esim.refund.requested.v1") == []
    assert await sweep_deadlines(database, saga) == 0
    await handle(database, saga.on_profile_activated, activated(data.renewal_id))

    row = await saga_row(database, data.renewal_id)
    assert (row.status, row.reason, row.payment_id) == ("ACTIVATED", None, "pay_1")
    assert await published(database, "esim.refund.requested.v1") == []


async def test_a_late_capture_whose_activation_fails_is_refunded_once(
    database: Database, saga: RenewalSaga
) -> None:
    await bind(database)
    data = request()
    await handle(database, saga.on_renewal_requested, data)
    await overdue(database)
    await sweep_deadlines(database, saga)
    await handle(database, saga.on_payment_settled, settled(data.renewal_id))

    await handle(database, saga.on_activation_failed, failed_activation(data.renewal_id))
    await handle(database, saga.on_activation_failed, failed_activation(data.renewal_id))

    [refund] = await published(database, "esim.refund.requested.v1")
    assert json.loads(refund.value)["data"]["payment_id"] == "pay_1"
    assert (await saga_row(database, data.renewal_id)).status == "TIMED_OUT"


async def test_paid_saga_without_activation_times_out_and_keeps_a_late_activation(
    database: Database, saga: RenewalSaga
) -> None:
    await bind(database)
    data = request()
    await handle(database, saga.on_renewal_requested, data)
    await handle(database, saga.on_payment_settled, settled(data.renewal_id))
    await overdue(database)
    assert await sweep_deadlines(database, saga) == 1
    assert await sweep_deadlines(database, saga) == 0

    row = await saga_row(database, data.renewal_id)
    assert (row.status, row.reason) == ("TIMED_OUT", "activation_timed_out")
    assert await published(database, "esim.refund.requested.v1") == []
    stuck_later = stuck_reason(row, utcnow() + timedelta(hours=1), 900)
    assert (stuck_later or "").startswith("TIMED_OUT without progress")

    # Provisioning cancels a bundle that is not live by its deadline; one that went live stays.
    await handle(database, saga.on_profile_activated, activated(data.renewal_id))

    assert (await saga_row(database, data.renewal_id)).status == "ACTIVATED"
    assert await published(database, "esim.refund.requested.v1") == []
    plans = await card_plans(database)
    assert [(plan.renewal_id, plan.state) for plan in plans] == [(str(data.renewal_id), "active")]


def failed_activation(renewal_id: uuid.UUID) -> ActivationFailed:
    return ActivationFailed(
        renewal_id=renewal_id,
        iccid=ICCID,
        reason="activation_timeout",
        attempts=3,
        failed_at=utcnow(),
    )


async def test_compensating_a_timed_out_capture_waits_for_provisioning(
    database: Database, saga: RenewalSaga
) -> None:
    await bind(database)
    data = request()
    await handle(database, saga.on_renewal_requested, data)
    await handle(database, saga.on_payment_settled, settled(data.renewal_id))
    await overdue(database)
    await sweep_deadlines(database, saga)

    async with database.session() as session:
        row = await session.get(Renewal, str(data.renewal_id), with_for_update=True)
        assert row is not None
        outcome = await saga.compensate(session, row, "stuck")

    assert outcome == (
        "already compensating (TIMED_OUT, captured; provisioning's answer decides: "
        "a failure is refunded); nothing changed"
    )
    assert await published(database, "esim.refund.requested.v1") == []


async def test_in_flight_counts_sagas_waiting_on_a_payment_or_activation_that_moved_lately(
    database: Database, saga: RenewalSaga
) -> None:
    await bind(database)
    waiting_payment, paid, done, rejected, stale = (request() for _ in range(5))
    for data in (waiting_payment, paid, done, stale):
        await handle(database, saga.on_renewal_requested, data)
    await handle(database, saga.on_renewal_requested, rejected.model_copy(update={"user_id": "x"}))
    for data in (paid, done):
        await handle(database, saga.on_payment_settled, settled(data.renewal_id))
    await handle(database, saga.on_profile_activated, activated(done.renewal_id))
    async with database.session() as session:
        row = await session.get(Renewal, str(stale.renewal_id))
        assert row is not None
        row.updated_at = utcnow() - timedelta(seconds=601)
        session.add(row)

    # PAYMENT_PENDING and PAID count; ACTIVATED, REJECTED and one stuck for 10 minutes do not.
    assert await sagas_in_flight(database, utcnow(), window_s=600) == 2
    assert await sagas_in_flight(database, utcnow(), window_s=3600) == 3


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("ACCOUNTS_MAX_SAGAS_IN_FLIGHT", "-1", "greater than or equal to 0"),
        ("ACCOUNTS_MAX_SAGAS_IN_FLIGHT", "many", "valid integer"),
        ("ACCOUNTS_IN_FLIGHT_WINDOW_S", "0", "greater than 0"),
    ],
)
def test_a_wrong_intake_setting_stops_the_service_naming_it(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=f"{variable}: .*{message}"):
        load_settings(AccountsSettings)


def test_the_intake_limit_is_off_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ACCOUNTS_MAX_SAGAS_IN_FLIGHT", raising=False)
    assert load_settings(AccountsSettings).max_sagas_in_flight == 0
    monkeypatch.setenv("ACCOUNTS_MAX_SAGAS_IN_FLIGHT", "250")
    assert load_settings(AccountsSettings).max_sagas_in_flight == 250
