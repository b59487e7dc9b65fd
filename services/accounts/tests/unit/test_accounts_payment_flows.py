"""Payments the way each provider takes them, as accounts sees them: the buyer's approval step
(PAYMENT_ACTION_REQUIRED, `payment_action`), authorize then capture after activation
(AUTHORIZED), a hold released by void, and the payment object's rules over HTTP and Kafka."""

import json
import uuid
from datetime import timedelta
from typing import Any

import httpx
from accounts.renewals.deadlines import sagas_in_flight, sweep_deadlines
from accounts.renewals.saga import RenewalSaga
from accounts.renewals.stuck import stuck_clause, stuck_reason
from accounts.store import Card, Renewal, RenewalStep
from accounts_testkit import CODE, ICCID, published
from esim_core.clock import utcnow
from esim_core.persistence.db import Database
from esim_schemas import (
    ActivationFailed,
    PaymentActionRequired,
    PaymentAuthorized,
    PaymentFailed,
    PaymentRefunded,
    PaymentSettled,
    ProfileActivated,
)
from sqlalchemy import func
from sqlmodel import col, select
from test_accounts_api import is_problem, login
from test_accounts_saga import bind, handle, request, saga_row

PLAN = {"code": "JP-30D-10GB", "data_mb": 10240, "validity_days": 30}
PRICE = {"amount": 9900, "currency": "CNY"}
APPROVE_AT = "https://www.paypal.com/checkoutnow?token=5O190127TN364715T"
GRACE_S = 15 * 60  # ACCOUNTS_PAYMENT_ACTION_GRACE_S by default


def action_required(renewal_id: uuid.UUID, **changes: Any) -> PaymentActionRequired:
    fields: dict[str, Any] = {
        "renewal_id": renewal_id,
        "payment_id": "pay_flow",
        "iccid": ICCID,
        "method": "paypal",
        "action": {"type": "redirect", "url": APPROVE_AT},
        "expires_at": utcnow() + timedelta(minutes=30),
    }
    return PaymentActionRequired(**(fields | changes))


def authorized(renewal_id: uuid.UUID) -> PaymentAuthorized:
    now = utcnow()
    return PaymentAuthorized(
        renewal_id=renewal_id,
        payment_id="pay_flow",
        iccid=ICCID,
        plan=PLAN,
        price=PRICE,
        method="paypal",
        provider_reference="5O190127TN364715T",
        authorized_at=now,
        capture_before=now + timedelta(days=29),
        start="now",
    )


def settled(renewal_id: uuid.UUID) -> PaymentSettled:
    return PaymentSettled(
        renewal_id=renewal_id,
        payment_id="pay_flow",
        iccid=ICCID,
        plan=PLAN,
        price=PRICE,
        method="paypal",
        provider_reference="5O190127TN364715T",
        attempts=1,
        settled_at=utcnow(),
        start="now",
    )


def activated(renewal_id: uuid.UUID) -> ProfileActivated:
    now = utcnow()
    return ProfileActivated(
        renewal_id=renewal_id,
        iccid=ICCID,
        plan_code="JP-30D-10GB",
        data_mb=10240,
        valid_from=now,
        valid_until=now + timedelta(days=30),
        bundle_state="active",
        platform_reference="ord_flow",
        activated_at=now,
    )


async def steps(database: Database, renewal_id: uuid.UUID) -> list[RenewalStep]:
    async with database.session() as session:
        query = (
            select(RenewalStep)
            .where(RenewalStep.renewal_id == str(renewal_id))
            .order_by(col(RenewalStep.id))
        )
        return list((await session.exec(query)).all())


async def paypal_without_token(database: Database, saga: RenewalSaga) -> uuid.UUID:
    """A PayPal renewal without a token, priced and sent to billing."""
    await bind(database)
    data = request(payment={"method": "paypal", "return_url": "https://shop.example/renewals/back"})
    await handle(database, saga.on_renewal_requested, data)
    return data.renewal_id


# ---------------------------------------------------------------------------------------------
# The payment object over Kafka.


async def test_a_card_renewal_without_a_token_is_rejected_as_an_invalid_request(
    database: Database, saga: RenewalSaga
) -> None:
    await bind(database)
    data = request(payment={"method": "card"})
    await handle(database, saga.on_renewal_requested, data)

    [rejected] = await published(database, "esim.renewal.rejected.v1")
    said = json.loads(rejected.value)["data"]
    assert said["reason"] == "invalid_request"
    assert "payment.token" in said["detail"]
    assert (await saga_row(database, data.renewal_id)).status == "REJECTED"
    assert await published(database, "esim.payment.requested.v1") == []


async def test_paypal_and_alipay_without_a_token_go_to_billing_with_the_return_url(
    database: Database, saga: RenewalSaga
) -> None:
    renewal_id = await paypal_without_token(database, saga)

    [asked] = await published(database, "esim.payment.requested.v1")
    payment = json.loads(asked.value)["data"]["payment"]
    assert payment == {"method": "paypal", "return_url": "https://shop.example/renewals/back"}
    assert (await saga_row(database, renewal_id)).status == "PAYMENT_PENDING"


async def test_an_auto_renewal_without_a_token_is_rejected(
    database: Database, saga: RenewalSaga
) -> None:
    await bind(database)
    data = request(payment={"method": "paypal"}, channel="auto_renew")
    await handle(database, saga.on_renewal_requested, data)

    [rejected] = await published(database, "esim.renewal.rejected.v1")
    assert json.loads(rejected.value)["data"]["reason"] == "invalid_request"


# ---------------------------------------------------------------------------------------------
# The saga: the buyer's approval, the hold, its capture or release.


async def test_the_buyers_approval_is_kept_until_its_expiry_plus_a_grace(
    database: Database, saga: RenewalSaga
) -> None:
    renewal_id = await paypal_without_token(database, saga)
    asked = action_required(renewal_id)
    await handle(database, saga.on_payment_action_required, asked)

    row = await saga_row(database, renewal_id)
    assert row.status == "PAYMENT_ACTION_REQUIRED"
    assert row.action_url == APPROVE_AT
    assert row.deadline_at is not None
    assert row.deadline_at.replace(tzinfo=None) == (
        asked.expires_at + timedelta(seconds=GRACE_S)
    ).replace(tzinfo=None)
    assert (await steps(database, renewal_id))[-1].step == "payment_action_required"


async def test_an_approval_cancelled_or_expired_ends_the_saga_payment_failed(
    database: Database, saga: RenewalSaga
) -> None:
    renewal_id = await paypal_without_token(database, saga)
    await handle(database, saga.on_payment_action_required, action_required(renewal_id))
    failed = PaymentFailed(
        renewal_id=renewal_id,
        payment_id="pay_flow",
        iccid=ICCID,
        reason="not_approved",
        attempts=1,
        failed_at=utcnow(),
    )
    await handle(database, saga.on_payment_failed, failed)

    row = await saga_row(database, renewal_id)
    assert (row.status, row.reason, row.deadline_at) == ("PAYMENT_FAILED", "not_approved", None)


async def test_authorized_then_activated_then_captured_records_the_capture_and_stays_activated(
    database: Database, saga: RenewalSaga
) -> None:
    renewal_id = await paypal_without_token(database, saga)
    await handle(database, saga.on_payment_action_required, action_required(renewal_id))
    await handle(database, saga.on_payment_authorized, authorized(renewal_id))

    row = await saga_row(database, renewal_id)
    assert (row.status, row.payment_id, row.payment_held) == ("AUTHORIZED", "pay_flow", True)
    assert row.deadline_at is not None

    await handle(database, saga.on_profile_activated, activated(renewal_id))
    assert (await saga_row(database, renewal_id)).status == "ACTIVATED"
    capture = settled(renewal_id)
    await handle(database, saga.on_payment_settled, capture)

    row = await saga_row(database, renewal_id)
    assert (row.status, row.payment_held) == ("ACTIVATED", False)
    timeline = [step.step for step in await steps(database, renewal_id)]
    assert timeline[-3:] == ["payment_authorized", "profile_activated", "payment_captured"]
    last = (await steps(database, renewal_id))[-1]
    assert last.detail is not None and "captured at" in last.detail
    assert await published(database, "esim.refund.requested.v1") == []


async def test_a_capture_seen_before_the_activation_moves_an_authorized_saga_to_paid(
    database: Database, saga: RenewalSaga
) -> None:
    renewal_id = await paypal_without_token(database, saga)
    await handle(database, saga.on_payment_authorized, authorized(renewal_id))
    await handle(database, saga.on_payment_settled, settled(renewal_id))

    assert (await saga_row(database, renewal_id)).status == "PAID"
    await handle(database, saga.on_profile_activated, activated(renewal_id))
    assert (await saga_row(database, renewal_id)).status == "ACTIVATED"


async def test_a_failed_activation_releases_the_hold_and_the_void_ends_the_saga(
    database: Database, saga: RenewalSaga
) -> None:
    renewal_id = await paypal_without_token(database, saga)
    await handle(database, saga.on_payment_authorized, authorized(renewal_id))
    failure = ActivationFailed(
        renewal_id=renewal_id, iccid=ICCID, reason="bundle_rejected", attempts=3, failed_at=utcnow()
    )
    await handle(database, saga.on_activation_failed, failure)

    [asked] = await published(database, "esim.refund.requested.v1")
    assert json.loads(asked.value)["data"]["payment_id"] == "pay_flow"
    assert (await saga_row(database, renewal_id)).status == "REFUNDING"

    released = PaymentRefunded(
        renewal_id=renewal_id,
        payment_id="pay_flow",
        refund_id="void_1",
        iccid=ICCID,
        price=PRICE,
        refunded_at=utcnow(),
        via="void",
    )
    await handle(database, saga.on_payment_refunded, released)

    row = await saga_row(database, renewal_id)
    assert row.status == "REFUNDED"
    last = (await steps(database, renewal_id))[-1]
    assert last.step == "hold_released"
    assert last.detail is not None and "nothing was taken" in last.detail


async def test_a_late_authorization_does_not_make_a_capture_a_hold_again(
    database: Database, saga: RenewalSaga
) -> None:
    renewal_id = await paypal_without_token(database, saga)
    await handle(database, saga.on_payment_settled, settled(renewal_id))
    await handle(database, saga.on_payment_authorized, authorized(renewal_id))

    row = await saga_row(database, renewal_id)
    assert (row.status, row.payment_held) == ("PAID", False)


# ---------------------------------------------------------------------------------------------
# Deadlines, the stuck-saga detector and the intake limit know the new states.


async def test_the_sweep_and_the_stuck_list_wait_for_the_approval_until_expiry_plus_grace(
    database: Database, saga: RenewalSaga
) -> None:
    renewal_id = await paypal_without_token(database, saga)
    asked = action_required(renewal_id, expires_at=utcnow() + timedelta(minutes=30))
    await handle(database, saga.on_payment_action_required, asked)
    row = await saga_row(database, renewal_id)
    just_before = asked.expires_at + timedelta(seconds=GRACE_S - 1)
    past = asked.expires_at + timedelta(seconds=GRACE_S + 1)

    assert stuck_reason(row, just_before, 900) is None
    assert (stuck_reason(row, past, 900) or "").startswith("PAYMENT_ACTION_REQUIRED past")
    async with database.session() as session:
        query = select(func.count()).select_from(Renewal).where(stuck_clause(past, 900))
        assert (await session.exec(query)).one() == 1
    # The sweep runs by the saga's clock: past the deadline, the saga times out.
    saga.clock = lambda: past
    assert await sweep_deadlines(database, saga) == 1
    row = await saga_row(database, renewal_id)
    assert (row.status, row.reason) == ("TIMED_OUT", "payment_timed_out")


async def test_a_saga_waiting_for_the_buyer_does_not_count_against_the_intake_limit(
    database: Database, saga: RenewalSaga
) -> None:
    renewal_id = await paypal_without_token(database, saga)
    assert await sagas_in_flight(database, utcnow(), window_s=600) == 1
    await handle(database, saga.on_payment_action_required, action_required(renewal_id))
    assert await sagas_in_flight(database, utcnow(), window_s=600) == 0
    await handle(database, saga.on_payment_authorized, authorized(renewal_id))
    assert await sagas_in_flight(database, utcnow(), window_s=600) == 1


# ---------------------------------------------------------------------------------------------
# The HTTP API: the payment object, `payment_action`, auto-renew's rule.


async def bound(client: httpx.AsyncClient) -> dict[str, str]:
    headers = await login(client)
    await client.post("/v1/cards", json={"iccid": ICCID, "activation_code": CODE}, headers=headers)
    return headers


async def test_a_card_renewal_without_a_token_is_a_422_naming_the_field(
    client: httpx.AsyncClient,
) -> None:
    headers = await bound(client)
    body = {"plan_code": "JP-30D-10GB", "payment": {"method": "card"}}
    answer = await client.post(f"/v1/cards/{ICCID}/renewals", json=body, headers=headers)

    problem = is_problem(answer, 422)
    assert [error["field"] for error in problem["errors"]] == ["body.payment.token"]  # type: ignore[attr-defined]


async def test_a_return_url_that_is_not_a_web_address_is_a_422(
    client: httpx.AsyncClient,
) -> None:
    headers = await bound(client)
    payment = {"method": "paypal", "return_url": "javascript:alert(1)"}
    body = {"plan_code": "JP-30D-10GB", "payment": payment}
    answer = await client.post(f"/v1/cards/{ICCID}/renewals", json=body, headers=headers)

    problem = is_problem(answer, 422)
    assert [error["field"] for error in problem["errors"]] == ["body.payment.return_url"]  # type: ignore[attr-defined]


async def test_the_renewal_shows_the_buyers_action_while_it_waits_and_not_after(
    client: httpx.AsyncClient, database: Database, saga: RenewalSaga
) -> None:
    headers = await bound(client)
    payment = {"method": "alipay", "return_url": "https://shop.example/back"}
    body = {"plan_code": "JP-30D-10GB", "payment": payment}
    accepted = await client.post(f"/v1/cards/{ICCID}/renewals", json=body, headers=headers)
    assert accepted.status_code == 202, accepted.text
    renewal_id = uuid.UUID(accepted.json()["renewal_id"])
    [requested] = await published(database, "esim.renewal.requested.v1")
    assert json.loads(requested.value)["data"]["payment"] == payment
    shown = await client.get(f"/v1/renewals/{renewal_id}", headers=headers)
    assert shown.json()["payment_action"] is None

    # The saga as accounts' consumer moves it: priced, then the provider needs the buyer.
    async with database.session() as session:
        row = await session.get(Renewal, str(renewal_id))
        assert row is not None
        row.status, row.price_amount, row.currency = "PAYMENT_PENDING", 9900, "CNY"
        row.data_mb, row.validity_days = 10240, 30
        session.add(row)
    asked = action_required(renewal_id, method="alipay")
    await handle(database, saga.on_payment_action_required, asked)

    shown = await client.get(f"/v1/renewals/{renewal_id}", headers=headers)
    assert shown.json()["status"] == "PAYMENT_ACTION_REQUIRED"
    action = shown.json()["payment_action"]
    assert (action["type"], action["url"]) == ("redirect", APPROVE_AT)
    assert action["expires_at"].endswith("Z")

    await handle(database, saga.on_payment_authorized, authorized(renewal_id))
    shown = await client.get(f"/v1/renewals/{renewal_id}", headers=headers)
    assert (shown.json()["status"], shown.json()["payment_action"]) == ("AUTHORIZED", None)


async def auto_renew(
    client: httpx.AsyncClient, headers: dict[str, str], payment: dict[str, str]
) -> httpx.Response:
    body = {"enabled": True, "plan_code": "JP-30D-10GB", "payment": payment}
    return await client.put(f"/v1/cards/{ICCID}/auto-renew", json=body, headers=headers)


async def test_auto_renew_takes_only_a_source_chargeable_without_the_buyer(
    client: httpx.AsyncClient, database: Database
) -> None:
    headers = await bound(client)

    alipay = is_problem(await auto_renew(client, headers, {"method": "alipay", "token": "a"}), 422)
    assert str(alipay["type"]).endswith("/auto-renew-payment")
    assert [e["field"] for e in alipay["errors"]] == ["body.payment.method"]  # type: ignore[attr-defined]
    for method in ("card", "paypal"):
        tokenless = is_problem(await auto_renew(client, headers, {"method": method}), 422)
        assert [e["field"] for e in tokenless["errors"]] == ["body.payment.token"]  # type: ignore[attr-defined]
        assert "without the buyer" in str(tokenless["detail"])
    async with database.session() as session:
        card = await session.get(Card, ICCID)
        assert card is not None and not card.auto_renew

    vault = {"method": "paypal", "token": "paypal_ok", "return_url": "https://shop.example/b"}
    answer = await auto_renew(client, headers, vault)
    assert answer.status_code == 200, answer.text
    async with database.session() as session:
        card = await session.get(Card, ICCID)
        assert card is not None
        assert (card.auto_renew, card.auto_renew_method) == (True, "paypal")
        assert card.auto_renew_return_url == "https://shop.example/b"
