"""Activation on a held payment: `PaymentAuthorized` starts it exactly as `PaymentSettled` does,
whichever comes first, once per renewal; the second of the two changes nothing."""

import uuid
from datetime import timedelta
from typing import Any

import pytest
from esim_core.clock import utcnow
from esim_core.messaging.consumer import MessageInfo, PermanentEventError
from esim_core.messaging.inbox import InboxEntry
from esim_core.observability.metrics import DB_TRANSACTIONS
from esim_core.persistence.db import Database
from esim_core.testing import event, published
from esim_core.testing import handle as handle_with
from esim_schemas import PaymentAuthorized
from provisioning.bootstrap import Provisioning
from provisioning.domain import ActivationState
from provisioning_testkit import (
    ACTIVATED,
    BILLING,
    ICCID,
    OTHER_ICCID,
    FakePlatform,
    activation_of,
    activations,
    handle,
    payment_settled,
    run_until_final,
)
from sqlmodel import select


def payment_authorized(renewal_id: uuid.UUID | None = None, **changes: Any) -> PaymentAuthorized:
    now = utcnow()
    fields: dict[str, Any] = {
        "renewal_id": renewal_id or uuid.uuid4(),
        "payment_id": "pay_1f6e0c1e0b7a5d3c",
        "iccid": ICCID,
        "plan": {"code": "JP-30D-10GB", "data_mb": 10240, "validity_days": 30},
        "price": {"amount": 9900, "currency": "CNY"},
        "method": "paypal",
        "provider_reference": "5O190127TN364715T",
        "authorized_at": now,
        "capture_before": now + timedelta(days=29),
        "start": "now",
    }
    return PaymentAuthorized(**(fields | changes))


async def handle_authorized(provisioning: Provisioning, data: PaymentAuthorized) -> None:
    await handle_with(
        provisioning.runtime.database,
        provisioning.handlers.on_payment_authorized,
        data,
        source=BILLING,
    )


async def test_a_held_payment_is_activated_as_a_settled_one(
    provisioning: Provisioning, database: Database, platform: FakePlatform
) -> None:
    data = payment_authorized()
    await handle_authorized(provisioning, data)

    row = await activation_of(database, data.renewal_id)
    assert (row.state, row.iccid, row.plan_code, row.start) == (
        ActivationState.ORDERING,
        ICCID,
        "JP-30D-10GB",
        "now",
    )
    await run_until_final(provisioning, data.renewal_id)
    assert len(platform.order_calls) == 1
    assert len(await published(database, ACTIVATED)) == 1


async def test_the_capture_after_the_hold_changes_nothing(
    provisioning: Provisioning, database: Database, platform: FakePlatform
) -> None:
    held = payment_authorized()
    await handle_authorized(provisioning, held)
    await run_until_final(provisioning, held.renewal_id)
    # Billing captures once it sees ProfileActivated, then publishes PaymentSettled.
    await handle(provisioning, payment_settled(held.renewal_id, method="paypal"))

    assert len(await activations(database)) == 1
    assert len(platform.order_calls) == 1
    assert len(await published(database, ACTIVATED)) == 1


async def test_a_hold_heard_of_after_the_capture_changes_nothing(
    provisioning: Provisioning, database: Database, platform: FakePlatform
) -> None:
    settled = payment_settled()
    await handle(provisioning, settled)
    await handle_authorized(provisioning, payment_authorized(settled.renewal_id))

    await run_until_final(provisioning, settled.renewal_id)
    assert len(await activations(database)) == 1
    assert len(platform.order_calls) == 1


async def test_the_consumer_takes_the_hold_from_its_own_topic(
    provisioning: Provisioning, database: Database, platform: FakePlatform
) -> None:
    consumer = provisioning.runtime.subscribe()
    assert consumer is not None
    assert "esim.payment.authorized" in consumer.routes
    data = payment_authorized()
    body = event(data, "evt-held", source=BILLING).to_json()
    info = MessageInfo(topic="esim.payment.authorized", partition=0, offset=3, key=None)

    await consumer.handle(body, info)
    await consumer.handle(body, info)  # redelivered: the inbox drops it

    await run_until_final(provisioning, data.renewal_id)
    assert len(platform.order_calls) == 1
    assert len(await published(database, ACTIVATED)) == 1


async def test_a_hold_with_other_content_than_the_activation_is_rejected(
    provisioning: Provisioning, database: Database
) -> None:
    settled = payment_settled()
    await handle(provisioning, settled)

    with pytest.raises(PermanentEventError, match=r"conflicting PaymentAuthorized .*iccid"):
        await handle_authorized(
            provisioning, payment_authorized(settled.renewal_id, iccid=OTHER_ICCID)
        )


async def consumed(database: Database) -> set[str]:
    """The event ids in provisioning's inbox."""
    async with database.session() as session:
        return set((await session.exec(select(InboxEntry.event_id))).all())


async def test_the_capture_after_an_activation_committed_here_takes_no_transaction(
    provisioning: Provisioning, database: Database, platform: FakePlatform
) -> None:
    consumer = provisioning.runtime.subscribe()
    assert consumer is not None
    held = payment_authorized()
    captured = payment_settled(held.renewal_id, method="paypal")
    held_info = MessageInfo(topic="esim.payment.authorized", partition=0, offset=1, key=None)
    captured_info = MessageInfo(topic="esim.payment.settled", partition=0, offset=1, key=None)
    await consumer.handle(event(held, "evt-held", source=BILLING).to_json(), held_info)
    transactions = DB_TRANSACTIONS._value.get()

    body = event(captured, "evt-captured", source=BILLING).to_json()
    await consumer.handle(body, captured_info)
    await consumer.handle(body, captured_info)  # redelivered: ignored again

    assert DB_TRANSACTIONS._value.get() == transactions
    assert await consumed(database) == {"evt-held"}
    await run_until_final(provisioning, held.renewal_id)
    assert len(platform.order_calls) == 1
    assert len(await activations(database)) == 1


async def test_a_capture_with_other_terms_than_the_committed_activation_is_still_rejected(
    provisioning: Provisioning, database: Database
) -> None:
    consumer = provisioning.runtime.subscribe()
    assert consumer is not None
    held = payment_authorized()
    other = payment_settled(held.renewal_id, iccid=OTHER_ICCID)
    held_info = MessageInfo(topic="esim.payment.authorized", partition=0, offset=1, key=None)
    await consumer.handle(event(held, "evt-held", source=BILLING).to_json(), held_info)

    assert provisioning.handlers.ignores(event(other, "evt-other", source=BILLING)) is None
    with pytest.raises(PermanentEventError, match=r"conflicting PaymentSettled .*iccid"):
        await handle(provisioning, other)


async def test_a_payment_event_is_ignored_only_once_its_activation_committed(
    provisioning: Provisioning, database: Database
) -> None:
    held = payment_authorized()
    captured = event(payment_settled(held.renewal_id), "evt-captured", source=BILLING)

    class RolledBackError(Exception):
        pass

    async def handled_then_rolled_back() -> None:
        async with database.session() as session:
            await provisioning.handlers.on_payment_authorized(
                session, event(held, "evt-held", source=BILLING)
            )
            raise RolledBackError

    with pytest.raises(RolledBackError):
        await handled_then_rolled_back()
    assert provisioning.handlers.ignores(captured) is None

    await handle_authorized(provisioning, held)
    assert provisioning.handlers.ignores(captured) is not None
