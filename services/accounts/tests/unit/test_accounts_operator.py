"""The operator API of accounts: a saga in full, the stuck list, retry and compensate."""

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from accounts.api import http_app
from accounts.bootstrap import Accounts
from accounts.renewals.saga import RenewalSaga
from accounts.settings import AccountsSettings
from accounts.store import Renewal
from accounts_testkit import Clock, published
from esim_core.clock import utcnow
from esim_core.persistence.db import Database
from esim_core.web.operator import OperatorAuth
from test_accounts_saga import activated, bind, handle, request, saga_row, settled

TOKEN = "operator-token-for-the-unit-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
REQUESTED = "esim.payment.requested.v1"
REFUND = "esim.refund.requested.v1"


@pytest.fixture
def clock() -> Clock:
    return Clock(utcnow())


@pytest.fixture
def accounts_settings(accounts_settings: AccountsSettings) -> AccountsSettings:
    # Short deadlines, which the tests pass by moving the clock on.
    return accounts_settings.model_copy(
        update={"payment_deadline_s": 100, "activation_deadline_s": 200}
    )


@pytest.fixture
async def ops(accounts: Accounts) -> AsyncIterator[httpx.AsyncClient]:
    app = http_app(accounts, OperatorAuth(TOKEN))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://accounts", headers=AUTH
    ) as http:
        yield http


async def pending(database: Database, saga: RenewalSaga, *, bound: bool = False) -> uuid.UUID:
    if not bound:
        await bind(database)
    data = request()
    await handle(database, saga.on_renewal_requested, data)
    return data.renewal_id


async def test_show_tells_state_timeline_and_published_events(
    database: Database, saga: RenewalSaga, ops: httpx.AsyncClient
) -> None:
    renewal_id = await pending(database, saga)
    await handle(database, saga.on_payment_settled, settled(renewal_id))
    await handle(database, saga.on_profile_activated, activated(renewal_id))

    answer = await ops.get(f"/v1/operator/sagas/{renewal_id}")

    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "ACTIVATED" and body["terminal"] is True
    assert [s["step"] for s in body["timeline"]] == [
        "requested",
        "payment_requested",
        "payment_settled",
        "profile_activated",
    ]
    assert all(s["event_id"] for s in body["timeline"])
    assert [e["type"] for e in body["events"]] == [REQUESTED]
    assert body["payment_id"] is not None and body["stuck"] is None
    assert "token" not in answer.text.replace("payment_", "")


async def test_an_unknown_saga_is_a_404_problem(ops: httpx.AsyncClient) -> None:
    for answer in (
        await ops.get(f"/v1/operator/sagas/{uuid.uuid4()}"),
        await ops.post(f"/v1/operator/sagas/{uuid.uuid4()}/retry"),
        await ops.post(f"/v1/operator/sagas/{uuid.uuid4()}/compensate"),
    ):
        assert answer.status_code == 404
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["type"].endswith("/renewal-not-found")


async def test_every_operator_route_needs_the_token(ops: httpx.AsyncClient) -> None:
    renewal_id = uuid.uuid4()
    for method, path in [
        ("GET", f"/v1/operator/sagas/{renewal_id}"),
        ("GET", "/v1/operator/sagas?stuck=true"),
        ("POST", f"/v1/operator/sagas/{renewal_id}/retry"),
        ("POST", f"/v1/operator/sagas/{renewal_id}/compensate"),
        ("GET", "/v1/operator/outbox"),
    ]:
        answer = await ops.request(method, path, headers={"Authorization": "Bearer nope"})
        assert answer.status_code == 401, path


async def test_stuck_lists_only_sagas_past_their_deadline_or_idle(
    database: Database, saga: RenewalSaga, ops: httpx.AsyncClient, clock: Clock
) -> None:
    waiting = await pending(database, saga)
    done = await pending(database, saga, bound=True)
    await handle(database, saga.on_payment_settled, settled(done))
    await handle(database, saga.on_profile_activated, activated(done))

    assert (await ops.get("/v1/operator/sagas", params={"stuck": "true"})).json() == []
    clock.advance(101)  # past the payment deadline of 100 s
    stuck = (await ops.get("/v1/operator/sagas", params={"stuck": "true"})).json()

    assert [item["renewal_id"] for item in stuck] == [str(waiting)]
    assert "past its deadline" in stuck[0]["stuck"]
    listed = await ops.get("/v1/operator/sagas", params={"status": "ACTIVATED"})
    assert [item["renewal_id"] for item in listed.json()] == [str(done)]


async def test_retry_resends_the_payment_request_with_its_id_twice_safely(
    database: Database, saga: RenewalSaga, ops: httpx.AsyncClient, clock: Clock
) -> None:
    renewal_id = await pending(database, saga)
    clock.advance(101)

    first = await ops.post(f"/v1/operator/sagas/{renewal_id}/retry")
    second = await ops.post(f"/v1/operator/sagas/{renewal_id}/retry")

    assert first.status_code == second.status_code == 202
    assert first.json()["status"] == "PAYMENT_PENDING"
    assert "PaymentRequested" in first.json()["outcome"]
    sent = await published(database, REQUESTED)
    # The same CloudEvents id each time: billing's inbox handles it once at most.
    assert len(sent) == 3 and len({row.event_id for row in sent}) == 1
    row = await saga_row(database, renewal_id)
    assert row.deadline_at is not None
    assert (await ops.get("/v1/operator/sagas", params={"stuck": "true"})).json() == []


async def test_retry_of_an_ended_or_paid_saga_is_refused(
    database: Database, saga: RenewalSaga, ops: httpx.AsyncClient
) -> None:
    renewal_id = await pending(database, saga)
    await handle(database, saga.on_payment_settled, settled(renewal_id))
    paid = await ops.post(f"/v1/operator/sagas/{renewal_id}/retry")
    assert paid.status_code == 409
    assert "PAID" in paid.json()["detail"]
    await handle(database, saga.on_profile_activated, activated(renewal_id))
    ended = await ops.post(f"/v1/operator/sagas/{renewal_id}/retry")
    assert ended.status_code == 409
    assert ended.json()["type"].endswith("/saga-action-refused")


async def test_compensating_a_paid_saga_refunds_once_however_often_it_is_asked(
    database: Database, saga: RenewalSaga, ops: httpx.AsyncClient
) -> None:
    renewal_id = await pending(database, saga)
    await handle(database, saga.on_payment_settled, settled(renewal_id))

    first = await ops.post(f"/v1/operator/sagas/{renewal_id}/compensate", params={"reason": "x"})
    second = await ops.post(f"/v1/operator/sagas/{renewal_id}/compensate")

    assert first.status_code == second.status_code == 202
    assert first.json()["status"] == "TIMED_OUT"
    assert "refund" in first.json()["outcome"]
    assert "nothing changed" in second.json()["outcome"]
    assert len(await published(database, REFUND)) == 1
    row: Renewal = await saga_row(database, renewal_id)
    assert row.refund_requested and row.reason == "compensated_by_operator"
    # A retry now sends that refund request again, with its id.
    retried = await ops.post(f"/v1/operator/sagas/{renewal_id}/retry")
    assert retried.status_code == 202 and "RefundRequested" in retried.json()["outcome"]
    refunds = await published(database, REFUND)
    assert len(refunds) == 2 and refunds[0].event_id == refunds[1].event_id


async def test_compensating_before_any_capture_refunds_a_late_one(
    database: Database, saga: RenewalSaga, ops: httpx.AsyncClient
) -> None:
    renewal_id = await pending(database, saga)
    answer = await ops.post(f"/v1/operator/sagas/{renewal_id}/compensate")
    assert answer.json()["status"] == "TIMED_OUT"
    assert await published(database, REFUND) == []

    await handle(database, saga.on_payment_settled, settled(renewal_id))

    assert len(await published(database, REFUND)) == 1
    ended = await ops.post(f"/v1/operator/sagas/{renewal_id}/compensate")
    assert ended.status_code == 202  # already compensating: nothing more


async def test_outbox_status_counts_what_waits(
    database: Database, saga: RenewalSaga, ops: httpx.AsyncClient
) -> None:
    await pending(database, saga)
    body = (await ops.get("/v1/operator/outbox")).json()
    assert body["service"] == "accounts"
    assert body["unpublished"] == 1 and body["published_kept"] == 0
    # The one waiting event was queued by this test a moment ago.
    assert 0 <= body["oldest_unpublished_age_s"] < 60
