"""Cancelling a queued plan: the API's answers, the saga's steps, refunds once, late starts."""

import json
import uuid
from datetime import datetime, timedelta
from typing import Any

import httpx
from accounts.renewals.saga import RenewalSaga
from accounts.store import Renewal
from accounts_testkit import CODE, ICCID, published
from esim_core.clock import utcnow
from esim_core.persistence.db import Database
from esim_schemas import (
    BundleCancelled,
    BundleEnded,
    BundleStarted,
    EventData,
    PaymentRefunded,
    PaymentSettled,
    ProfileActivated,
    RenewalRequested,
    new_event,
)
from test_accounts_api import is_problem, login

CANCEL_REQUESTED = "esim.bundle.cancel-requested.v1"
REFUND_REQUESTED = "esim.refund.requested.v1"


async def handle(database: Database, handler: Any, data: EventData) -> None:
    async with database.session() as session:
        await handler(session, new_event(data, source="/tests"))


async def saga_row(database: Database, renewal_id: str) -> Renewal:
    async with database.session() as session:
        row = await session.get(Renewal, renewal_id)
    assert row is not None
    return row


class Traveller:
    """A signed-in owner of ICCID with renewals driven through the saga's handlers."""

    def __init__(self, client: httpx.AsyncClient, database: Database, saga: RenewalSaga) -> None:
        self.client, self.database, self.saga = client, database, saga
        self.headers: dict[str, str] = {}

    async def sign_in(self) -> "Traveller":
        self.headers = await login(self.client)
        bound = await self.client.post(
            "/v1/cards", json={"iccid": ICCID, "activation_code": CODE}, headers=self.headers
        )
        assert bound.status_code == 201
        return self

    async def renewal(
        self, bundle_state: str = "queued", starts_in: timedelta = timedelta(days=10)
    ) -> str:
        """A renewal that is paid and ACTIVATED, its bundle queued (or live) from then on."""
        key = str(uuid.uuid4())
        body = {
            "plan_code": "JP-30D-10GB",
            "payment": {"method": "card", "token": "card_ok"},
            "start": "after_current",
        }
        answer = await self.client.post(
            f"/v1/cards/{ICCID}/renewals",
            json=body,
            headers=self.headers | {"Idempotency-Key": key},
        )
        assert answer.status_code == 202
        rows = await published(self.database, "esim.renewal.requested.v1")
        data = next(
            RenewalRequested.model_validate(json.loads(row.value)["data"])
            for row in rows
            if json.loads(row.value)["data"]["renewal_id"] == key
        )
        await handle(self.database, self.saga.on_renewal_requested, data)
        renewal_id = uuid.UUID(key)
        await handle(self.database, self.saga.on_payment_settled, settled(renewal_id))
        start = utcnow() + starts_in
        await handle(
            self.database,
            self.saga.on_profile_activated,
            activated(renewal_id, bundle_state, start),
        )
        assert (await saga_row(self.database, key)).status == "ACTIVATED"
        return key

    async def cancel(
        self, renewal_id: str, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        return await self.client.post(
            f"/v1/renewals/{renewal_id}/cancel", headers=headers or self.headers
        )

    async def card(self) -> dict[str, Any]:
        answer = await self.client.get(f"/v1/cards/{ICCID}", headers=self.headers)
        assert answer.status_code == 200
        result: dict[str, Any] = answer.json()
        return result

    async def timeline(self, renewal_id: str) -> list[tuple[str, str]]:
        answer = await self.client.get(f"/v1/renewals/{renewal_id}", headers=self.headers)
        return [(step["step"], step["status"]) for step in answer.json()["timeline"]]


def settled(renewal_id: uuid.UUID) -> PaymentSettled:
    return PaymentSettled(
        renewal_id=renewal_id,
        payment_id=f"pay_{renewal_id.hex[:8]}",
        iccid=ICCID,
        plan={"code": "JP-30D-10GB", "data_mb": 10240, "validity_days": 30},
        price={"amount": 9900, "currency": "USD"},
        method="card",
        provider_reference="ch_1",
        attempts=1,
        settled_at=utcnow(),
        start="after_current",
    )


def activated(renewal_id: uuid.UUID, state: str, start: datetime) -> ProfileActivated:
    return ProfileActivated(
        renewal_id=renewal_id,
        iccid=ICCID,
        plan_code="JP-30D-10GB",
        data_mb=10240,
        valid_from=start,
        valid_until=start + timedelta(days=30),
        bundle_state=state,
        platform_reference=f"ord_{renewal_id.hex[:8]}",
        activated_at=utcnow(),
    )


def cancelled(renewal_id: str, reason: str = "cancelled_by_user") -> BundleCancelled:
    return BundleCancelled(
        renewal_id=uuid.UUID(renewal_id),
        iccid=ICCID,
        plan_code="JP-30D-10GB",
        reason=reason,
        cancelled_at=utcnow(),
        platform_reference="ord_1",
    )


def refunded(renewal_id: str) -> PaymentRefunded:
    return PaymentRefunded(
        renewal_id=uuid.UUID(renewal_id),
        payment_id=f"pay_{uuid.UUID(renewal_id).hex[:8]}",
        refund_id="re_1",
        iccid=ICCID,
        price={"amount": 9900, "currency": "USD"},
        refunded_at=utcnow(),
    )


def started(renewal_id: str) -> BundleStarted:
    now = utcnow()
    return BundleStarted(
        renewal_id=uuid.UUID(renewal_id),
        iccid=ICCID,
        plan_code="JP-30D-10GB",
        data_mb=10240,
        valid_from=now,
        valid_until=now + timedelta(days=30),
        platform_reference="ord_1",
        started_at=now,
    )


async def test_a_queued_plan_is_cancelled_refunded_in_full_and_ends_cancelled(
    client: httpx.AsyncClient, database: Database, saga: RenewalSaga
) -> None:
    traveller = await Traveller(client, database, saga).sign_in()
    renewal_id = await traveller.renewal()
    assert [q["renewal_id"] for q in (await traveller.card())["queued"]] == [renewal_id]

    answer = await traveller.cancel(renewal_id)

    assert answer.status_code == 202, answer.text
    assert answer.json() == {"renewal_id": renewal_id, "status": "CANCELLING"}
    assert answer.headers["Location"] == f"/v1/renewals/{renewal_id}"
    [command] = await published(database, CANCEL_REQUESTED)
    assert command.key == ICCID
    assert json.loads(command.value)["data"]["reason"] == "cancelled_by_user"
    assert await published(database, REFUND_REQUESTED) == []

    await handle(database, saga.on_bundle_cancelled, cancelled(renewal_id))
    await handle(database, saga.on_bundle_cancelled, cancelled(renewal_id))  # re-published

    [refund] = await published(database, REFUND_REQUESTED)
    refund_data = json.loads(refund.value)["data"]
    assert refund_data["price"] == {"amount": 9900, "currency": "USD"}
    assert (await saga_row(database, renewal_id)).status == "CANCELLING"
    assert (await traveller.card())["queued"] == []
    history = (await client.get(f"/v1/cards/{ICCID}/plans", headers=traveller.headers)).json()
    assert [(p["renewal_id"], p["state"]) for p in history] == [(renewal_id, "cancelled")]

    await handle(database, saga.on_payment_refunded, refunded(renewal_id))

    row = await saga_row(database, renewal_id)
    assert row.status == "CANCELLED"
    steps = list(dict.fromkeys(await traveller.timeline(renewal_id)))  # first of each
    assert steps[-4:] == [
        ("cancel_requested", "CANCELLING"),
        ("bundle_cancelled", "CANCELLING"),
        ("refund_requested", "CANCELLING"),
        ("payment_refunded", "CANCELLED"),
    ]
    # A late repeat of the activation does not put the plan back on the card.
    await handle(
        database,
        saga.on_profile_activated,
        activated(uuid.UUID(renewal_id), "queued", utcnow() + timedelta(days=10)),
    )
    assert (await traveller.card())["queued"] == []
    assert (await saga_row(database, renewal_id)).status == "CANCELLED"


async def test_a_second_cancel_is_refused_and_changes_nothing(
    client: httpx.AsyncClient, database: Database, saga: RenewalSaga
) -> None:
    traveller = await Traveller(client, database, saga).sign_in()
    renewal_id = await traveller.renewal()
    assert (await traveller.cancel(renewal_id)).status_code == 202

    again = await traveller.cancel(renewal_id)

    problem = is_problem(again, 409)
    assert str(problem["type"]).endswith("not-cancellable")
    assert problem["detail"] == "the renewal is already being cancelled"
    assert len(await published(database, CANCEL_REQUESTED)) == 1
    await handle(database, saga.on_bundle_cancelled, cancelled(renewal_id))
    await handle(database, saga.on_payment_refunded, refunded(renewal_id))
    done = is_problem(await traveller.cancel(renewal_id), 409)
    assert done["detail"] == "the renewal is already cancelled"
    assert len(await published(database, REFUND_REQUESTED)) == 1


async def test_only_the_owner_can_cancel(
    client: httpx.AsyncClient, database: Database, saga: RenewalSaga
) -> None:
    traveller = await Traveller(client, database, saga).sign_in()
    renewal_id = await traveller.renewal()
    stranger = await login(client, "s@example.com")

    is_problem(await traveller.cancel(renewal_id, stranger), 404)
    is_problem(await traveller.cancel(str(uuid.uuid4())), 404)
    is_problem(await client.post(f"/v1/renewals/{renewal_id}/cancel"), 401)
    is_problem(await traveller.cancel("not-a-uuid"), 422)
    assert (await saga_row(database, renewal_id)).status == "ACTIVATED"


async def test_a_live_plan_a_started_plan_and_an_open_renewal_are_not_cancellable(
    client: httpx.AsyncClient, database: Database, saga: RenewalSaga
) -> None:
    traveller = await Traveller(client, database, saga).sign_in()
    live = await traveller.renewal("active", timedelta(0))
    due = await traveller.renewal("queued", timedelta(seconds=-1))
    queued = await traveller.renewal()
    await handle(database, saga.on_bundle_started, started(queued))
    open_key = str(uuid.uuid4())
    body = {"plan_code": "JP-30D-10GB", "payment": {"method": "card", "token": "card_ok"}}
    await client.post(
        f"/v1/cards/{ICCID}/renewals",
        json=body,
        headers=traveller.headers | {"Idempotency-Key": open_key},
    )

    details = [
        is_problem(await traveller.cancel(renewal_id), 409)["detail"]
        for renewal_id in (live, due, queued, open_key)
    ]

    assert details == [
        "the plan went live at once: it was never queued",
        "the queued plan has already started",
        "the queued plan has already started",
        "the renewal is REQUESTED: only a queued plan that has not started can be cancelled",
    ]
    assert await published(database, CANCEL_REQUESTED) == []


async def test_a_plan_that_starts_while_being_cancelled_stays_and_is_activated_again(
    client: httpx.AsyncClient, database: Database, saga: RenewalSaga
) -> None:
    traveller = await Traveller(client, database, saga).sign_in()
    renewal_id = await traveller.renewal()
    await traveller.cancel(renewal_id)

    await handle(database, saga.on_bundle_started, started(renewal_id))

    assert (await saga_row(database, renewal_id)).status == "ACTIVATED"
    assert (await traveller.timeline(renewal_id))[-1] == ("cancel_refused", "ACTIVATED")
    assert await published(database, REFUND_REQUESTED) == []
    assert (await traveller.card())["plan_code"] == "JP-30D-10GB"


async def test_a_plan_that_ended_while_being_cancelled_is_activated_again(
    client: httpx.AsyncClient, database: Database, saga: RenewalSaga
) -> None:
    traveller = await Traveller(client, database, saga).sign_in()
    renewal_id = await traveller.renewal()
    await traveller.cancel(renewal_id)
    now = utcnow()

    await handle(
        database,
        saga.on_bundle_ended,
        BundleEnded(
            renewal_id=uuid.UUID(renewal_id),
            iccid=ICCID,
            plan_code="JP-30D-10GB",
            reason="depleted",
            valid_from=now - timedelta(days=1),
            valid_until=now + timedelta(days=29),
            platform_reference="ord_1",
            ended_at=now,
        ),
    )

    assert (await saga_row(database, renewal_id)).status == "ACTIVATED"
    assert await published(database, REFUND_REQUESTED) == []


async def test_a_replaced_plan_leaves_the_card_without_a_refund(
    client: httpx.AsyncClient, database: Database, saga: RenewalSaga
) -> None:
    traveller = await Traveller(client, database, saga).sign_in()
    old = await traveller.renewal("active", timedelta(days=-1))
    new = await traveller.renewal("active", timedelta(0))

    await handle(database, saga.on_bundle_cancelled, cancelled(old, "replaced"))

    assert (await saga_row(database, old)).status == "ACTIVATED"
    assert await published(database, REFUND_REQUESTED) == []
    history = (await client.get(f"/v1/cards/{ICCID}/plans", headers=traveller.headers)).json()
    assert {p["renewal_id"]: p["state"] for p in history} == {old: "replaced", new: "active"}
    card = await traveller.card()
    assert (card["plan_code"], card["state"]) == ("JP-30D-10GB", "active")


async def test_an_operator_retry_sends_the_same_cancel_request_again(
    client: httpx.AsyncClient, database: Database, saga: RenewalSaga
) -> None:
    traveller = await Traveller(client, database, saga).sign_in()
    renewal_id = await traveller.renewal()
    await traveller.cancel(renewal_id)

    async with database.session() as session:
        row = await session.get(Renewal, renewal_id, with_for_update=True)
        assert row is not None
        outcome = await saga.retry(session, row, refund_reason="operator")
        compensate = await saga.compensate(session, row, "stuck")

    assert outcome.startswith("BundleCancelRequested")
    assert compensate == "its owner is cancelling it (CANCELLING); nothing changed"
    first, second = await published(database, CANCEL_REQUESTED)
    assert first.event_id == second.event_id


async def test_a_cancellation_without_an_answer_counts_as_stuck(
    client: httpx.AsyncClient, database: Database, saga: RenewalSaga
) -> None:
    from accounts.renewals.stuck import stuck_clause, stuck_reason
    from sqlalchemy import func
    from sqlmodel import select

    traveller = await Traveller(client, database, saga).sign_in()
    renewal_id = await traveller.renewal()
    await traveller.cancel(renewal_id)
    later = utcnow() + timedelta(hours=1)

    row = await saga_row(database, renewal_id)
    async with database.session() as session:
        stuck = (await session.exec(select(func.count()).where(stuck_clause(later, 900)))).one()

    assert stuck_reason(row, utcnow(), 900) is None
    assert (stuck_reason(row, later, 900) or "").startswith("CANCELLING without progress")
    assert stuck == 1


async def test_two_cancellations_of_one_plan_in_one_batch_refund_once(
    client: httpx.AsyncClient, database: Database, saga: RenewalSaga
) -> None:
    traveller = await Traveller(client, database, saga).sign_in()
    renewal_id = await traveller.renewal()
    await traveller.cancel(renewal_id)

    # As the consumer handles a batch: one transaction, no autoflush between handlers.
    async with database.session() as session:
        with session.no_autoflush:
            for _ in range(2):
                await saga.on_bundle_cancelled(
                    session, new_event(cancelled(renewal_id), source="/services/provisioning")
                )

    assert len(await published(database, REFUND_REQUESTED)) == 1
    assert (await traveller.card())["queued"] == []
