"""The payment token stays secret: never in a log line, an error, an event or the ops view."""

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from billing import bootstrap
from billing.api import build_router
from billing.bootstrap import Billing
from billing.domain import PaymentState
from billing.handlers import on_payment_requested
from billing.store import Payment
from billing_testkit import (
    FakeGateway,
    fast_forward,
    payment_of,
    payment_requested,
    router_of,
)
from conftest import NO_WAIT, settings_for
from esim_core.messaging.consumer import PermanentEventError
from esim_core.testing import api_client, handle, problem_app, published, with_tables
from sqlalchemy.exc import IntegrityError

SECRET = "tok_4f9d2c7e1a"


@pytest.fixture
async def wired(tmp_path: Path) -> AsyncIterator[tuple[Billing, FakeGateway]]:
    fake = FakeGateway()
    billing = bootstrap.build(settings_for(tmp_path), gateway=router_of(fake), tries=NO_WAIT)
    async with with_tables(billing.runtime):
        yield billing, fake


async def test_the_whole_flow_logs_no_token(
    wired: tuple[Billing, FakeGateway], caplog: pytest.LogCaptureFixture
) -> None:
    billing, fake = wired
    database = billing.runtime.database
    suffixes = ["_ok", "_flaky", "_declined", "_insufficient", "_unknown"]
    requests = {s: payment_requested(token=f"card_{SECRET}{s}") for s in suffixes}
    caplog.set_level(logging.DEBUG)

    for data in requests.values():
        await handle(database, on_payment_requested, data)
    other = requests["_ok"].model_copy(update={"iccid": "8944500102198304834"})
    with pytest.raises(PermanentEventError) as conflict:
        await handle(database, on_payment_requested, other)
    for _ in range(6):
        await billing.charges.run_once()
        await fast_forward(database)

    states = {s: (await payment_of(database, d.renewal_id)) for s, d in requests.items()}
    assert states["_ok"].state == states["_flaky"].state == PaymentState.SETTLED
    assert states["_declined"].failure_reason == "declined"
    assert states["_insufficient"].failure_reason == "insufficient_funds"
    assert states["_unknown"].failure_reason == "invalid_token"
    assert fake.captures_of(str(requests["_ok"].renewal_id)) == 1
    assert all(payment.token is None for payment in states.values())

    assert caplog.records, "the flow should have logged something"
    for record in caplog.records:
        assert SECRET not in record.getMessage()
        assert SECRET not in (record.exc_text or "")
    assert SECRET not in caplog.text
    assert SECRET not in str(conflict.value)
    for row in await published(database):
        assert SECRET not in json.dumps(row)
    for payment in states.values():
        assert SECRET not in (payment.last_error or "")
        assert SECRET not in repr(payment)


async def test_the_ops_view_never_shows_the_token(wired: tuple[Billing, FakeGateway]) -> None:
    billing, _ = wired
    database = billing.runtime.database
    pending = payment_requested(token=f"card_{SECRET}_insufficient")
    await handle(database, on_payment_requested, pending)
    await billing.charges.run_once()  # soft-declined: the token is still stored for dunning
    assert (await payment_of(database, pending.renewal_id)).token is not None

    async with api_client(problem_app(build_router(database)), "http://billing") as client:
        answer = await client.get(f"/v1/payments/{pending.renewal_id}")
    assert answer.status_code == 200
    assert SECRET not in answer.text


async def test_a_database_error_does_not_carry_the_token(
    wired: tuple[Billing, FakeGateway],
) -> None:
    # SQL errors end up in logs and dead-letter headers; their parameters must stay hidden.
    billing, _ = wired
    database = billing.runtime.database
    data = payment_requested(token=f"card_{SECRET}_ok")
    await handle(database, on_payment_requested, data)
    stored = await payment_of(database, data.renewal_id)

    with pytest.raises(IntegrityError) as raised:
        async with database.session() as session:
            session.add(Payment(**stored.model_dump()))
    assert SECRET not in str(raised.value)
    assert "hidden" in str(raised.value)
