"""The provider flow: authorize then capture after activation, the buyer's approval, releases,
answers lost and found by asking, and captures that cannot be made in time."""

import uuid
from dataclasses import replace
from datetime import timedelta

import pytest
from billing.bootstrap import Billing
from billing.domain import PaymentState, RefundState, event_id
from billing.gateways import Captured, CaptureRequest, PaymentRequest, PayOutcome, Standing
from billing.handlers import on_payment_requested, on_profile_activated, on_refund_requested
from billing.store import Payment
from billing_testkit import (
    ACTION_REQUIRED,
    AUTHORIZED,
    FAILED,
    REFUNDED,
    SETTLED,
    FakeGateway,
    fast_forward,
    payment_of,
    payment_requested,
    profile_activated,
    refund_of,
    refund_requested,
)
from esim_core.clock import as_utc, utcnow
from esim_core.persistence.db import Database
from esim_core.testing import handle, published
from sqlalchemy import update
from sqlmodel import col


async def authorized(billing: Billing, method: str = "card") -> Payment:
    """A payment held at the provider after one round."""
    data = payment_requested(method=method, token=f"{method}_ok")
    await handle(billing.runtime.database, on_payment_requested, data)
    await billing.charges.run_once()
    payment = await payment_of(billing.runtime.database, data.renewal_id)
    assert payment.state == PaymentState.AUTHORIZED
    return payment


async def test_a_card_is_authorized_then_captured_once_after_activation(
    billing: Billing, database: Database, gateway: FakeGateway
) -> None:
    payment = await authorized(billing)

    [held] = await published(database, AUTHORIZED)
    assert held["id"] == event_id("payment-authorized", payment.renewal_id)
    assert held["data"]["provider_reference"] == payment.provider_reference
    assert held["data"]["capture_before"].endswith("Z")
    assert held["data"]["method"] == "card"
    assert await published(database, SETTLED) == []
    assert gateway.captures_of(payment.renewal_id) == 0

    activated = profile_activated(payment.renewal_id)
    await handle(database, on_profile_activated, activated)
    await handle(database, on_profile_activated, activated, event_id=str(uuid.uuid4()))
    assert await billing.charges.run_once() == 1
    await fast_forward(database)
    assert await billing.charges.run_once() == 0

    settled = await payment_of(database, payment.renewal_id)
    assert settled.state == PaymentState.SETTLED
    assert settled.provider_reference == payment.provider_reference
    assert gateway.captures_of(payment.renewal_id) == 1
    assert len(gateway.captures_made) == 1
    assert gateway.captures_made[0].idempotency_key == f"capture:{payment.renewal_id}"
    [event] = await published(database, SETTLED)
    assert event["data"]["provider_reference"] == settled.capture_reference


async def test_a_capture_whose_answer_was_lost_is_found_by_asking(
    billing: Billing, database: Database, gateway: FakeGateway
) -> None:
    payment = await authorized(billing, "paypal")
    gateway.lose["capture"] = 4
    await handle(database, on_profile_activated, profile_activated(payment.renewal_id))
    await billing.charges.run_once()
    lost = await payment_of(database, payment.renewal_id)
    assert (lost.state, lost.unknown_step) == (PaymentState.UNKNOWN, "capture")

    await fast_forward(database)
    await billing.charges.run_once()

    found = await payment_of(database, payment.renewal_id)
    assert found.state == PaymentState.SETTLED
    assert gateway.captures_of(payment.renewal_id) == 1
    assert len(await published(database, SETTLED)) == 1


async def test_the_buyer_approving_by_webhook_authorizes_the_payment(
    billing: Billing, database: Database, gateway: FakeGateway
) -> None:
    from billing.webhooks import apply_notice

    data = payment_requested(method="paypal", token="paypal_action")
    await handle(database, on_payment_requested, data)
    await billing.charges.run_once()

    waiting = await payment_of(database, data.renewal_id)
    assert waiting.state == PaymentState.ACTION_REQUIRED
    [action] = await published(database, ACTION_REQUIRED)
    assert action["data"]["action"] == {"type": "redirect", "url": waiting.action_url}
    assert action["data"]["expires_at"].endswith("Z")
    assert waiting.due_at is not None and waiting.action_expires_at is not None
    # Nothing is asked before the expiry: the answer comes by webhook.
    assert as_utc(waiting.due_at) == as_utc(waiting.action_expires_at)

    gateway.buyer(str(data.renewal_id), "approve")
    notice = await gateway.read_webhook(
        {"x-fake-signature": "valid"},
        f'{{"id": "WH-1", "key": "charge:{data.renewal_id}"}}'.encode(),
    )
    assert notice.view.standing == Standing.APPROVED
    assert await apply_notice(database, billing.charges.flow, "paypal", notice)
    await billing.charges.run_once()  # pays again: the approved order is authorized

    payment = await payment_of(database, data.renewal_id)
    assert payment.state == PaymentState.AUTHORIZED
    assert len(await published(database, AUTHORIZED)) == 1
    assert {c.idempotency_key for c in gateway.charges} == {f"charge:{data.renewal_id}"}


async def test_an_approval_never_given_is_closed_at_the_expiry_and_fails_not_approved(
    billing: Billing, database: Database, gateway: FakeGateway
) -> None:
    data = payment_requested(method="alipay", token="alipay_action")
    await handle(database, on_payment_requested, data)
    await billing.charges.run_once()
    await fast_forward(database)
    assert await billing.charges.run_once() == 1  # due, but not expired: it waits on
    assert (await payment_of(database, data.renewal_id)).state == PaymentState.ACTION_REQUIRED

    async with database.session() as session:
        await session.exec(
            update(Payment)
            .where(col(Payment.renewal_id) == str(data.renewal_id))
            .values(action_expires_at=utcnow() - timedelta(seconds=1), due_at=utcnow())
        )
    await billing.charges.run_once()

    payment = await payment_of(database, data.renewal_id)
    assert payment.state == PaymentState.FAILED
    assert payment.failure_reason == "not_approved"
    [failed] = await published(database, FAILED)
    assert failed["data"]["reason"] == "not_approved"
    [closed] = gateway.voids
    assert closed.idempotency_key == f"void:{data.renewal_id}"
    assert gateway.payments[f"charge:{data.renewal_id}"].status == Standing.CANCELLED


async def test_a_cancelled_approval_fails_not_approved_once_whatever_the_redeliveries(
    billing: Billing, database: Database, gateway: FakeGateway
) -> None:
    from billing.webhooks import apply_notice

    data = payment_requested(method="card", token="card_action")
    await handle(database, on_payment_requested, data)
    await billing.charges.run_once()
    gateway.buyer(str(data.renewal_id), "cancel")
    body = f'{{"id": "evt_1", "key": "charge:{data.renewal_id}"}}'.encode()
    notice = await gateway.read_webhook({"x-fake-signature": "valid"}, body)
    assert await apply_notice(database, billing.charges.flow, "stripe", notice)
    assert not await apply_notice(database, billing.charges.flow, "stripe", notice)
    other = await gateway.read_webhook(
        {"x-fake-signature": "valid"},
        f'{{"id": "evt_2", "key": "charge:{data.renewal_id}"}}'.encode(),
    )
    assert not await apply_notice(database, billing.charges.flow, "stripe", other)

    payment = await payment_of(database, data.renewal_id)
    assert (payment.state, payment.failure_reason) == (PaymentState.FAILED, "not_approved")
    assert len(await published(database, FAILED)) == 1


async def test_a_refund_of_an_authorization_releases_it_without_any_capture(
    billing: Billing, database: Database, gateway: FakeGateway
) -> None:
    payment = await authorized(billing)
    await handle(database, on_refund_requested, refund_requested(payment))
    assert await billing.refunds.run_once() == 0  # the payment loop releases it
    await billing.charges.run_once()

    voided = await payment_of(database, payment.renewal_id)
    assert voided.state == PaymentState.VOIDED
    refund = await refund_of(database, payment.renewal_id)
    assert (refund.state, refund.via) == (RefundState.REFUNDED, "void")
    [event] = await published(database, REFUNDED)
    assert event["data"]["via"] == "void"
    assert event["data"]["price"] == {"amount": 9900, "currency": "CNY"}
    assert gateway.captures_of(payment.renewal_id) == 0
    assert gateway.refunds == []
    # Activation news after the release changes nothing.
    await handle(database, on_profile_activated, profile_activated(payment.renewal_id))
    await fast_forward(database)
    await billing.charges.run_once()
    assert gateway.captures_made == []


async def test_a_refund_asked_while_capturing_gives_the_money_back_after_the_capture(
    billing: Billing, database: Database, gateway: FakeGateway
) -> None:
    payment = await authorized(billing, "paypal")
    await handle(database, on_profile_activated, profile_activated(payment.renewal_id))

    async def refund_meanwhile() -> None:
        # The capture is under way when the user cancels the queued plan.
        await handle(database, on_refund_requested, refund_requested(payment))

    real_capture = gateway.capture

    async def capture(request: CaptureRequest) -> Captured:
        answer = await real_capture(request)
        await refund_meanwhile()
        return answer

    gateway.capture = capture  # type: ignore[method-assign]  # a race, staged
    await billing.charges.run_once()
    await billing.refunds.run_once()

    assert (await payment_of(database, payment.renewal_id)).state == PaymentState.SETTLED
    refund = await refund_of(database, payment.renewal_id)
    assert (refund.state, refund.via) == (RefundState.REFUNDED, "refund")
    assert gateway.captures_of(payment.renewal_id) == 1
    assert len(gateway.refunds) == 1


async def test_a_capture_past_its_window_alerts_an_operator_and_ends_nothing_again(
    billing: Billing, database: Database, gateway: FakeGateway
) -> None:
    payment = await authorized(billing)
    # The authorization lapsed at the provider before the plan was activated.
    gateway.payments[f"charge:{payment.renewal_id}"].status = Standing.VOIDED
    async with database.session() as session:
        await session.exec(
            update(Payment)
            .where(col(Payment.id) == payment.id)
            .values(capture_before=utcnow() - timedelta(minutes=1))
        )
    await handle(database, on_profile_activated, profile_activated(payment.renewal_id))
    for _ in range(3):
        await billing.charges.run_once()
        await fast_forward(database)

    overdue = await payment_of(database, payment.renewal_id)
    assert overdue.capture_overdue_at is not None
    assert overdue.state != PaymentState.SETTLED
    assert await published(database, FAILED) == []
    assert await published(database, SETTLED) == []
    assert gateway.captures_of(payment.renewal_id) == 0


async def test_an_amount_the_provider_reports_otherwise_is_not_taken_for_granted(
    billing: Billing, database: Database, gateway: FakeGateway
) -> None:
    gateway.reported_amount = 100
    data = payment_requested(method="card", token="card_ok")
    await handle(database, on_payment_requested, data)
    await billing.charges.run_once()

    payment = await payment_of(database, data.renewal_id)
    assert payment.state == PaymentState.UNKNOWN
    assert payment.last_error is not None and "amount differs" in payment.last_error
    assert payment.unavailable_rounds >= len(billing.rules.unknown_schedule_s)
    assert await published(database, AUTHORIZED) == []


async def test_a_refund_whose_answer_was_lost_is_not_sent_twice(
    billing: Billing, database: Database, gateway: FakeGateway
) -> None:
    from billing_testkit import settle

    payment = await settle(billing)
    gateway.lose["refund"] = 4
    await handle(database, on_refund_requested, refund_requested(payment))
    await billing.refunds.run_once()
    assert (await refund_of(database, payment.renewal_id)).state == RefundState.UNKNOWN
    sent = len(gateway.refunds)

    await fast_forward(database)
    await billing.refunds.run_once()

    refund = await refund_of(database, payment.renewal_id)
    assert refund.state == RefundState.REFUNDED
    assert len(gateway.refunds) == sent  # asked, found, not sent again
    assert len(gateway.refunded) == 1
    assert len(await published(database, REFUNDED)) == 1


async def test_a_webhook_during_the_pay_round_wins_once_and_frees_the_payment(
    billing: Billing, database: Database, gateway: FakeGateway
) -> None:
    from billing.webhooks import apply_notice

    data = payment_requested(method="card", token="card_ok")
    await handle(database, on_payment_requested, data)
    real_pay = gateway.pay

    async def pay_then_hear(request: PaymentRequest) -> PayOutcome:
        # The provider's webhook is applied before the round commits the pay's answer.
        outcome = await real_pay(request)
        notice = await gateway.read_webhook(
            {"x-fake-signature": "valid"},
            f'{{"id": "evt_early", "key": "{request.idempotency_key}"}}'.encode(),
        )
        assert await apply_notice(database, billing.charges.flow, "stripe", notice)
        return outcome

    gateway.pay = pay_then_hear  # type: ignore[method-assign]  # a race, staged
    await billing.charges.run_once()

    payment = await payment_of(database, data.renewal_id)
    assert payment.state == PaymentState.AUTHORIZED
    assert payment.lease_until is None
    assert len(await published(database, AUTHORIZED)) == 1
    await handle(database, on_profile_activated, profile_activated(data.renewal_id))
    assert await billing.charges.run_once() == 1  # the capture is not held back by a lease
    assert gateway.captures_of(str(data.renewal_id)) == 1


async def funded_at_the_dunning_charge(billing: Billing) -> Payment:
    """A card declined for insufficient funds, then authorized by the first dunning charge."""
    database = billing.runtime.database
    data = payment_requested(method="card", token="card_insufficient_once")
    await handle(database, on_payment_requested, data)
    await billing.charges.run_once()
    declined = await payment_of(database, data.renewal_id)
    assert declined.state == PaymentState.PENDING and declined.soft_declines == 1
    await fast_forward(database)
    await billing.charges.run_once()
    payment = await payment_of(database, data.renewal_id)
    assert payment.state == PaymentState.AUTHORIZED
    return payment


async def test_a_card_declined_for_funds_is_charged_again_under_a_new_key_and_captured_once(
    billing: Billing, database: Database, gateway: FakeGateway
) -> None:
    payment = await funded_at_the_dunning_charge(billing)

    renewal = payment.renewal_id
    assert [c.idempotency_key for c in gateway.charges] == [
        f"charge:{renewal}",
        f"charge:{renewal}:2",
    ]
    # The declined attempt stays at the provider; the payment follows the one that held money.
    assert payment.provider_reference == gateway.payments[f"charge:{renewal}:2"].provider_reference
    assert len(await published(database, AUTHORIZED)) == 1
    await handle(database, on_profile_activated, profile_activated(renewal))
    await billing.charges.run_once()
    settled = await payment_of(database, renewal)
    assert settled.state == PaymentState.SETTLED
    assert gateway.captures_of(renewal) == 1
    assert len(await published(database, SETTLED)) == 1


async def test_a_dunning_charge_whose_answer_was_lost_is_asked_about_under_its_own_key(
    billing: Billing, database: Database, gateway: FakeGateway
) -> None:
    data = payment_requested(method="card", token="card_insufficient_once")
    await handle(database, on_payment_requested, data)
    await billing.charges.run_once()
    await fast_forward(database)
    gateway.lose["pay"] = 4  # every try of the round: the answer is lost each time
    await billing.charges.run_once()
    lost = await payment_of(database, data.renewal_id)
    assert lost.state == PaymentState.UNKNOWN and lost.unknown_step == "pay"

    await fast_forward(database)
    await billing.charges.run_once()

    # Asked under the key of the attempt whose answer was lost, and never charged anew.
    assert gateway.lookups[-1].idempotency_key == f"charge:{data.renewal_id}:2"
    assert gateway.lookups[-1].provider_reference is None
    first, *again = [c.idempotency_key for c in gateway.charges]
    assert first == f"charge:{data.renewal_id}"
    assert set(again) == {f"charge:{data.renewal_id}:2"}
    payment = await payment_of(database, data.renewal_id)
    assert payment.state == PaymentState.AUTHORIZED
    assert len(await published(database, AUTHORIZED)) == 1


async def test_a_late_decline_of_an_earlier_attempt_leaves_the_later_authorization_alone(
    billing: Billing, database: Database, gateway: FakeGateway
) -> None:
    from billing.webhooks import apply_notice

    payment = await funded_at_the_dunning_charge(billing)
    first = gateway.payments[f"charge:{payment.renewal_id}"]
    assert first.status == Standing.DECLINED

    # Stripe's payment_intent.payment_failed of the first PaymentIntent, delivered late.
    notice = await gateway.read_webhook(
        {"x-fake-signature": "valid"},
        f'{{"id": "evt_late", "key": "charge:{payment.renewal_id}"}}'.encode(),
    )
    assert notice.view.provider_reference == first.provider_reference
    assert not await apply_notice(database, billing.charges.flow, "stripe", notice)
    # Nor when a look-up or the list reports it, with the key billing did not send it under.
    view = replace(notice.view, idempotency_key=None)
    async with database.session() as session:
        row = await session.get(Payment, payment.id)
        assert row is not None
        assert not await billing.charges.flow.apply_view(session, row, view, utcnow())

    after = await payment_of(database, payment.renewal_id)
    assert after.state == PaymentState.AUTHORIZED
    assert after.capture_overdue_at is None
    assert after.provider_reference == payment.provider_reference
    await handle(database, on_profile_activated, profile_activated(payment.renewal_id))
    await billing.charges.run_once()
    assert (await payment_of(database, payment.renewal_id)).state == PaymentState.SETTLED
    assert gateway.captures_of(payment.renewal_id) == 1


async def test_a_webhook_that_moves_nothing_writes_nothing_and_one_that_moves_is_recorded(
    billing: Billing, database: Database, gateway: FakeGateway
) -> None:
    from billing.webhooks import apply_notice, webhook_consumer
    from esim_core.messaging.inbox import processed_ids

    payment = await authorized(billing)
    key = f"charge:{payment.renewal_id}"

    async def notice(event: str) -> bool:
        read = await gateway.read_webhook(
            {"x-fake-signature": "valid"}, f'{{"id": "{event}", "key": "{key}"}}'.encode()
        )
        return await apply_notice(database, billing.charges.flow, "stripe", read)

    async def recorded(*events: str) -> set[str]:
        async with database.session() as session:
            return await processed_ids(session, webhook_consumer("stripe"), events)

    # The provider reports the authorization the round recorded already: nothing to write.
    assert not await notice("evt_authorized")
    assert await recorded("evt_authorized") == set()

    # The capture, made at the provider and heard of first by webhook: applied and recorded
    # once; the same call again changes nothing.
    await handle(database, on_profile_activated, profile_activated(payment.renewal_id))
    await gateway.capture(
        CaptureRequest(
            idempotency_key=f"capture:{payment.renewal_id}",
            reference=payment.renewal_id,
            provider_reference=payment.provider_reference or "",
            amount=payment.amount,
            currency=payment.currency,
            method=payment.method,
        )
    )
    assert await notice("evt_captured")
    assert not await notice("evt_captured")
    assert await recorded("evt_captured") == {"evt_captured"}
    settled = await payment_of(database, payment.renewal_id)
    assert settled.state == PaymentState.SETTLED and settled.due_at is None
    assert len(await published(database, SETTLED)) == 1
    assert await billing.charges.run_once() == 0
    assert gateway.captures_of(payment.renewal_id) == 1


async def test_activation_during_the_pay_round_makes_the_capture_due_at_the_authorization(
    billing: Billing, database: Database, gateway: FakeGateway
) -> None:
    data = payment_requested(method="card", token="card_ok")
    await handle(database, on_payment_requested, data)
    real_pay = gateway.pay

    async def pay_then_activate(request: PaymentRequest) -> PayOutcome:
        # ProfileActivated is handled while the round waits for the pay's answer: the round's
        # outcome must be applied to the row as the handler left it, not as the claim read it.
        outcome = await real_pay(request)
        await handle(database, on_profile_activated, profile_activated(data.renewal_id))
        return outcome

    gateway.pay = pay_then_activate  # type: ignore[method-assign]  # a race, staged
    await billing.charges.run_once()

    payment = await payment_of(database, data.renewal_id)
    assert payment.state == PaymentState.AUTHORIZED
    assert payment.capture_requested_at is not None and payment.attempts == 1
    assert len(await published(database, AUTHORIZED)) == 1
    assert await billing.charges.run_once() == 1
    assert (await payment_of(database, data.renewal_id)).state == PaymentState.SETTLED
    assert gateway.captures_of(str(data.renewal_id)) == 1


async def test_activation_of_a_renewal_without_a_payment_or_with_a_final_one_changes_nothing(
    billing: Billing, database: Database, gateway: FakeGateway, caplog: pytest.LogCaptureFixture
) -> None:
    unknown = str(uuid.uuid4())
    with caplog.at_level("WARNING", logger="billing.handlers"):
        await handle(database, on_profile_activated, profile_activated(unknown))
    assert f"renewal {unknown} has no payment here" in caplog.text

    data = payment_requested(method="alipay", token="alipay_ok")  # paid at once
    await handle(database, on_payment_requested, data)
    await billing.charges.run_once()
    before = await payment_of(database, data.renewal_id)
    assert before.state == PaymentState.SETTLED
    caplog.clear()
    with caplog.at_level("WARNING", logger="billing.handlers"):
        await handle(database, on_profile_activated, profile_activated(data.renewal_id))
    after = await payment_of(database, data.renewal_id)
    assert after.capture_requested_at is None and after.updated_at == before.updated_at
    assert caplog.text == ""


async def test_a_webhook_reporting_what_this_process_committed_takes_no_transaction(
    billing: Billing, database: Database, gateway: FakeGateway
) -> None:
    from billing.webhooks import apply_notice
    from prometheus_client import REGISTRY

    def transactions() -> float:
        return REGISTRY.get_sample_value("esim_db_transactions_total") or 0.0

    payment = await authorized(billing)
    read = await gateway.read_webhook(
        {"x-fake-signature": "valid"},
        f'{{"id": "evt_held", "key": "charge:{payment.renewal_id}"}}'.encode(),
    )
    assert read.view.standing == Standing.AUTHORIZED
    before = transactions()

    assert not await apply_notice(database, billing.charges.flow, "stripe", read)

    assert transactions() == before
    # The same hold at another amount is news: it goes to the row, which flags it.
    assert await apply_notice(
        database, billing.charges.flow, "stripe", replace(read, view=replace(read.view, amount=1))
    )
    assert transactions() > before
    flagged = await payment_of(database, payment.renewal_id)
    assert flagged.state == PaymentState.UNKNOWN and flagged.last_error is not None


def test_known_outcomes_cover_only_the_committed_hold_or_capture_as_it_was_committed() -> None:
    from billing.flow import KnownOutcomes
    from billing.gateways import PaymentView

    known = KnownOutcomes(size=2)
    payment = Payment(
        id="pay_1",
        renewal_id="r1",
        user_id="u",
        iccid="8986",
        plan_code="JP-1D-1GB",
        data_mb=1024,
        validity_days=1,
        amount=9900,
        currency="CNY",
        method="card",
        start="now",
        state=PaymentState.AUTHORIZED,
        provider_reference="pi_1",
    )
    held = PaymentView(Standing.AUTHORIZED, "r1", "pi_1", 9900, "cny")
    captured = replace(held, standing=Standing.CAPTURED)
    assert not known.covers(held)

    known.remember(payment)
    assert known.covers(held) and not known.covers(captured)
    assert not known.covers(replace(held, provider_reference="pi_2"))
    assert not known.covers(replace(held, amount=9800))
    assert not known.covers(replace(held, currency="USD"))
    assert not known.covers(replace(held, standing=Standing.CANCELLED))
    assert not known.covers(replace(held, reference=None))

    payment.state = PaymentState.SETTLED
    known.remember(payment)
    assert known.covers(held) and known.covers(captured)
    assert not known.covers(replace(captured, standing=Standing.REFUNDED))

    payment.state = PaymentState.UNKNOWN  # e.g. a later look-up of this process
    known.remember(payment)
    assert not known.covers(held)

    for renewal in ("r1", "r2", "r3"):  # bounded: the oldest is forgotten
        payment.renewal_id, payment.state = renewal, PaymentState.SETTLED
        known.remember(payment)
    assert not known.covers(captured)
    assert known.covers(replace(captured, reference="r3"))


async def test_a_card_renewal_takes_one_statement_per_handler_and_two_per_round(
    billing: Billing, database: Database, gateway: FakeGateway
) -> None:
    """What billing's own share of a renewal costs the database (the consumer's inbox row
    aside): the two events one statement each, each round its claim and one guarded write
    with its event, and the provider's two webhooks nothing."""
    from billing.webhooks import apply_notice
    from prometheus_client import REGISTRY

    def counted() -> tuple[float, float]:
        statements = sum(
            REGISTRY.get_sample_value("esim_db_statements_total", {"verb": verb}) or 0.0
            for verb in ("select", "insert", "update", "delete", "other")
        )
        return REGISTRY.get_sample_value("esim_db_transactions_total") or 0.0, statements

    async def webhook(event: str, renewal_id: str) -> None:
        read = await gateway.read_webhook(
            {"x-fake-signature": "valid"},
            f'{{"id": "{event}", "key": "charge:{renewal_id}"}}'.encode(),
        )
        assert not await apply_notice(database, billing.charges.flow, "stripe", read)

    data = payment_requested(method="card", token="card_ok")
    renewal_id = str(data.renewal_id)
    before = counted()

    await handle(database, on_payment_requested, data)
    assert await billing.charges.run_once() == 1
    await webhook("evt_held", renewal_id)
    await handle(database, on_profile_activated, profile_activated(data.renewal_id))
    assert await billing.charges.run_once() == 1
    await webhook("evt_captured", renewal_id)

    (transactions, statements) = (now - then for now, then in zip(counted(), before, strict=True))
    assert (await payment_of(database, renewal_id)).state == PaymentState.SETTLED
    assert (transactions, statements) == (6, 8)
