"""The renewal saga's handlers: validation, pricing, idempotency, order tolerance, refunds."""

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from accounts.cards.plans import card_status, plans_of
from accounts.renewals.saga import RenewalSaga
from accounts.store import Card, CardPlan, Renewal, User
from accounts_testkit import ICCID, published
from esim_core.messaging.consumer import PermanentEventError
from esim_core.persistence.db import Database
from esim_schemas import (
    ActivationFailed,
    CloudEvent,
    EventData,
    PaymentFailed,
    PaymentRefunded,
    PaymentSettled,
    ProfileActivated,
    RenewalRequested,
    new_event,
)

NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


def event(data: EventData) -> CloudEvent[Any]:
    return new_event(data, source="/tests")


async def bind(database: Database, user_id: str = "u-1", locale: str = "zh-CN") -> None:
    async with database.session() as session:
        session.add(
            User(id=user_id, email=f"{user_id}@example.com", password_hash="x", locale=locale)
        )
        card = await session.get(Card, ICCID)
        assert card is not None
        card.user_id = user_id
        session.add(card)


def request(renewal_id: uuid.UUID | None = None, **changes: Any) -> RenewalRequested:
    fields: dict[str, Any] = {
        "renewal_id": renewal_id or uuid.uuid4(),
        "user_id": "u-1",
        "iccid": ICCID,
        "plan_code": "JP-30D-10GB",
        "payment": {"method": "alipay", "token": "alipay_ok"},
        "start": "now",
        "requested_at": NOW,
    }
    return RenewalRequested(**(fields | changes))


async def handle(database: Database, handler: Any, data: EventData) -> CloudEvent[Any]:
    envelope = event(data)
    async with database.session() as session:
        await handler(session, envelope)
    return envelope


async def saga_row(database: Database, renewal_id: uuid.UUID) -> Renewal:
    async with database.session() as session:
        row = await session.get(Renewal, str(renewal_id))
    assert row is not None
    return row


async def card_plans(database: Database) -> list[CardPlan]:
    async with database.session() as session:
        return (await plans_of(session, [ICCID])).get(ICCID, [])


async def test_valid_request_is_priced_and_sent_to_billing(
    database: Database, saga: RenewalSaga
) -> None:
    await bind(database)
    data = request()
    await handle(database, saga.on_renewal_requested, data)

    [row] = await published(database, "esim.payment.requested.v1")
    payment = json.loads(row.value)
    assert row.key == ICCID
    assert payment["data"]["price"] == {"amount": 9900, "currency": "CNY"}
    assert payment["data"]["plan"] == {"code": "JP-30D-10GB", "data_mb": 10240, "validity_days": 30}
    assert payment["renewalid"] == str(data.renewal_id)
    assert (await saga_row(database, data.renewal_id)).status == "PAYMENT_PENDING"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"iccid": "8944500102198304842"}, "unknown_card"),
        ({"user_id": "someone-else"}, "card_not_owned"),
        ({"plan_code": "XX-1D"}, "unknown_plan"),
        ({"plan_code": "RU-30D-10GB"}, "plan_not_available"),
    ],
)
async def test_invalid_request_is_rejected(
    database: Database, saga: RenewalSaga, changes: dict[str, Any], reason: str
) -> None:
    await bind(database)
    data = request(**changes)
    await handle(database, saga.on_renewal_requested, data)

    [rejected] = await published(database, "esim.renewal.rejected.v1")
    assert json.loads(rejected.value)["data"]["reason"] == reason
    assert await published(database, "esim.payment.requested.v1") == []
    row = await saga_row(database, data.renewal_id)
    assert row.status == "REJECTED"
    assert row.payment_token is None


async def test_same_request_twice_changes_nothing(database: Database, saga: RenewalSaga) -> None:
    await bind(database)
    data = request()
    await handle(database, saga.on_renewal_requested, data)
    await handle(database, saga.on_renewal_requested, data)

    assert len(await published(database, "esim.payment.requested.v1")) == 1


async def test_reused_renewal_id_with_other_content_is_rejected_not_merged(
    database: Database, saga: RenewalSaga
) -> None:
    await bind(database)
    data = request()
    await handle(database, saga.on_renewal_requested, data)
    await handle(
        database, saga.on_renewal_requested, request(data.renewal_id, plan_code="JP-1D-1GB")
    )

    [rejected] = await published(database, "esim.renewal.rejected.v1")
    assert json.loads(rejected.value)["data"]["reason"] == "conflicting_duplicate"
    row = await saga_row(database, data.renewal_id)
    assert (row.status, row.plan_code) == ("PAYMENT_PENDING", "JP-30D-10GB")


async def test_conflict_whose_event_id_is_the_renewal_id_gets_a_rejection_of_its_own(
    database: Database, saga: RenewalSaga
) -> None:
    # A requester may use its renewal_id (the idempotency key) as the CloudEvents id. The
    # rejection of a conflicting request must not take the id of the saga's own rejection, or
    # consumers' inboxes drop one of the two as a duplicate.
    await bind(database)
    first = request(plan_code="XX-1D")
    async with database.session() as session:
        await saga.on_renewal_requested(session, new_event(first, source="/frontends/web"))
    conflicting = request(first.renewal_id, plan_code="JP-1D-1GB")
    envelope = new_event(conflicting, source="/frontends/app", event_id=str(first.renewal_id))
    async with database.session() as session:
        await saga.on_renewal_requested(session, envelope)

    rejections = await published(database, "esim.renewal.rejected.v1")
    reasons = [json.loads(row.value)["data"]["reason"] for row in rejections]
    assert reasons == ["unknown_plan", "conflicting_duplicate"]
    assert len({row.event_id for row in rejections}) == 2


def settled(renewal_id: uuid.UUID) -> PaymentSettled:
    return PaymentSettled(
        renewal_id=renewal_id,
        payment_id="pay_1",
        iccid=ICCID,
        plan={"code": "JP-30D-10GB", "data_mb": 10240, "validity_days": 30},
        price={"amount": 9900, "currency": "CNY"},
        method="alipay",
        provider_reference="ch_1",
        attempts=1,
        settled_at=NOW,
        start="now",
    )


def activated(
    renewal_id: uuid.UUID, state: str = "active", start: datetime = NOW
) -> ProfileActivated:
    return ProfileActivated(
        renewal_id=renewal_id,
        iccid=ICCID,
        plan_code="JP-30D-10GB",
        data_mb=10240,
        valid_from=start,
        valid_until=start + timedelta(days=30),
        bundle_state=state,
        platform_reference="ord_1",
        activated_at=NOW,
    )


async def test_happy_path_activates_and_moves_the_card(
    database: Database, saga: RenewalSaga
) -> None:
    await bind(database)
    data = request()
    await handle(database, saga.on_renewal_requested, data)
    await handle(database, saga.on_payment_settled, settled(data.renewal_id))
    assert (await saga_row(database, data.renewal_id)).status == "PAID"
    await handle(database, saga.on_profile_activated, activated(data.renewal_id))

    row = await saga_row(database, data.renewal_id)
    assert row.status == "ACTIVATED"
    assert row.payment_token is None
    card = card_status(await card_plans(database), NOW)
    assert card["plan_code"] == "JP-30D-10GB"
    assert (card["data_total_mb"], card["state"]) == (10240, "active")


async def test_activation_before_settlement_still_ends_activated(
    database: Database, saga: RenewalSaga
) -> None:
    await bind(database)
    data = request()
    await handle(database, saga.on_renewal_requested, data)
    await handle(database, saga.on_profile_activated, activated(data.renewal_id))
    await handle(database, saga.on_payment_settled, settled(data.renewal_id))

    row = await saga_row(database, data.renewal_id)
    assert row.status == "ACTIVATED"
    assert row.payment_id == "pay_1"


async def test_queued_bundle_waits_behind_the_current_plan(
    database: Database, saga: RenewalSaga
) -> None:
    await bind(database)
    first, second = request(), request()
    for data in (first, second):
        await handle(database, saga.on_renewal_requested, data)
    await handle(database, saga.on_profile_activated, activated(first.renewal_id))
    later = NOW + timedelta(days=30)
    await handle(database, saga.on_profile_activated, activated(second.renewal_id, "queued", later))
    await handle(database, saga.on_profile_activated, activated(second.renewal_id, "queued", later))

    queued = card_status(await card_plans(database), NOW)["queued"]
    assert len(queued) == 1
    assert queued[0]["renewal_id"] == str(second.renewal_id)


async def test_failed_activation_is_refunded_once(database: Database, saga: RenewalSaga) -> None:
    await bind(database)
    data = request()
    await handle(database, saga.on_renewal_requested, data)
    await handle(database, saga.on_payment_settled, settled(data.renewal_id))
    failure = ActivationFailed(
        renewal_id=data.renewal_id, iccid=ICCID, reason="bundle_rejected", attempts=1, failed_at=NOW
    )
    await handle(database, saga.on_activation_failed, failure)
    await handle(database, saga.on_activation_failed, failure)

    [refund] = await published(database, "esim.refund.requested.v1")
    body = json.loads(refund.value)["data"]
    assert (body["payment_id"], body["price"]["amount"]) == ("pay_1", 9900)
    assert body["reason"] == "activation failed: bundle_rejected"
    assert (await saga_row(database, data.renewal_id)).status == "REFUNDING"
    refunded = PaymentRefunded(
        renewal_id=data.renewal_id,
        payment_id="pay_1",
        refund_id="re_1",
        iccid=ICCID,
        price={"amount": 9900, "currency": "CNY"},
        refunded_at=NOW,
    )
    await handle(database, saga.on_payment_refunded, refunded)
    assert (await saga_row(database, data.renewal_id)).status == "REFUNDED"


async def test_activation_failure_before_settlement_refunds_once_settled(
    database: Database, saga: RenewalSaga
) -> None:
    await bind(database)
    data = request()
    await handle(database, saga.on_renewal_requested, data)
    failure = ActivationFailed(
        renewal_id=data.renewal_id, iccid=ICCID, reason="bundle_rejected", attempts=1, failed_at=NOW
    )
    await handle(database, saga.on_activation_failed, failure)
    assert await published(database, "esim.refund.requested.v1") == []
    await handle(database, saga.on_payment_settled, settled(data.renewal_id))

    assert len(await published(database, "esim.refund.requested.v1")) == 1


async def test_payment_failure_ends_the_saga(database: Database, saga: RenewalSaga) -> None:
    await bind(database)
    data = request()
    await handle(database, saga.on_renewal_requested, data)
    failed = PaymentFailed(
        renewal_id=data.renewal_id,
        payment_id="pay_1",
        iccid=ICCID,
        reason="declined",
        attempts=1,
        failed_at=NOW,
    )
    await handle(database, saga.on_payment_failed, failed)

    row = await saga_row(database, data.renewal_id)
    assert (row.status, row.reason, row.payment_token) == ("PAYMENT_FAILED", "declined", None)


async def test_event_for_an_unknown_renewal_is_permanent(
    database: Database, saga: RenewalSaga
) -> None:
    with pytest.raises(PermanentEventError, match="not known"):
        await handle(database, saga.on_payment_settled, settled(uuid.uuid4()))


async def test_a_queued_plan_shows_as_current_once_its_start_has_come(
    database: Database, saga: RenewalSaga
) -> None:
    await bind(database)
    first, second = request(), request()
    for data in (first, second):
        await handle(database, saga.on_renewal_requested, data)
    await handle(database, saga.on_profile_activated, activated(first.renewal_id))
    later = NOW + timedelta(days=30)
    await handle(database, saga.on_profile_activated, activated(second.renewal_id, "queued", later))
    plans = await card_plans(database)

    before = card_status(plans, NOW + timedelta(days=29))
    assert before["valid_until"] == later
    assert len(before["queued"]) == 1
    after = card_status(plans, later + timedelta(hours=1))
    assert after["valid_from"] == later
    assert after["valid_until"] == later + timedelta(days=30)
    assert after["queued"] == []
    # Reading never writes: the queued plan's row still says queued.
    assert [plan.state for plan in await card_plans(database)] == ["active", "queued"]
