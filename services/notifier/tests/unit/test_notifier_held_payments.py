"""Receipts of payments held first (card, PayPal: authorized, captured after the activation) and
the mail of a hold released (`PaymentRefunded` `via` `void`), in both locales; each once."""

from datetime import timedelta
from uuid import UUID, uuid4

from esim_core.clock import utcnow
from esim_schemas import Money, PaymentAuthorized, PaymentRefunded, PaymentSettled, PlanRef
from notifier.store import HeldPayment
from notifier_testkit import (
    ICCID,
    NOW,
    FakeSms,
    Harness,
    card_bound,
    payment_settled,
    profile_activated,
)
from sqlmodel import select

# The Chinese texts use full-width punctuation on purpose.
# ruff: noqa: RUF001

HELD_AT = NOW - timedelta(minutes=5)


def payment_authorized(renewal_id: UUID) -> PaymentAuthorized:
    """89.10 CNY held by PayPal after 9.90 off with WELCOME10."""
    return PaymentAuthorized(
        renewal_id=renewal_id,
        payment_id="pay-1",
        iccid=ICCID,
        plan=PlanRef(code="JP-30D-10GB", data_mb=10240, validity_days=30),
        price=Money(amount=8910, currency="CNY"),
        method="paypal",
        provider_reference="5O190127TN364715T",
        authorized_at=HELD_AT,
        capture_before=HELD_AT + timedelta(days=29),
        start="now",
        discount=Money(amount=990, currency="CNY"),
        promo_code="WELCOME10",
    )


def captured(renewal_id: UUID) -> PaymentSettled:
    return payment_settled(renewal_id).model_copy(
        update={"method": "paypal", "provider_reference": "5O190127TN364715T"}
    )


def released(renewal_id: UUID) -> PaymentRefunded:
    return PaymentRefunded(
        renewal_id=renewal_id,
        payment_id="pay-1",
        refund_id="void-3",
        iccid=ICCID,
        price=Money(amount=8910, currency="CNY"),
        refunded_at=NOW,
        via="void",
    )


async def test_a_held_then_captured_payment_gets_one_receipt_saying_both_times(
    harness: Harness, sms: FakeSms
) -> None:
    renewal_id = uuid4()
    await harness.publish(card_bound("en"))
    await harness.publish(payment_authorized(renewal_id))
    await harness.publish(profile_activated(renewal_id))
    await harness.send()

    # Billing captures once it sees the activation: the receipt waits for that capture.
    assert harness.mailer.sent == []
    rows = await harness.notifications(channel=None)
    assert all("capture of the held payment" in (row.detail or "") for row in rows)

    await harness.publish(captured(renewal_id))
    await harness.send()
    await harness.publish(captured(renewal_id))  # re-published: nothing more is mailed
    await harness.send()

    [mail] = harness.mailer.sent
    assert "Amount paid: CN¥89.10" in mail.body
    assert "Payment method: PayPal" in mail.body
    assert "Held on:" in mail.body and "Taken on:" in mail.body
    assert "Paid on:" not in mail.body
    assert mail.html is not None and "Held on" in mail.html
    [text] = sms.sent
    assert "payment of CN¥89.10 received" in text.text


async def test_a_capture_that_does_not_come_in_time_leaves_a_receipt_of_the_hold(
    harness: Harness,
) -> None:
    renewal_id = uuid4()
    await harness.publish(card_bound("zh-CN", phone=None))
    await harness.publish(payment_authorized(renewal_id))
    await harness.publish(profile_activated(renewal_id))
    await harness.send()
    [row] = await harness.notifications()
    await harness.update(row.id, created_at=utcnow() - timedelta(seconds=121), due_at=utcnow())
    await harness.send()
    await harness.publish(captured(renewal_id))  # later still: not mailed again
    await harness.send()

    [mail] = harness.mailer.sent
    assert "冻结金额：¥89.10" in mail.body and "冻结时间：" in mail.body
    assert "实付金额" not in mail.body and "扣款时间" not in mail.body
    assert "该金额已在您的支付方式上冻结" in mail.body


async def test_a_payment_taken_at_once_still_reads_paid_on(harness: Harness) -> None:
    renewal_id = uuid4()
    await harness.publish(card_bound("en", phone=None))
    await harness.publish(payment_settled(renewal_id))
    await harness.publish(profile_activated(renewal_id))
    await harness.send()

    [mail] = harness.mailer.sent
    assert "Paid on:" in mail.body and "Held on" not in mail.body


async def test_a_hold_is_kept_once(harness: Harness) -> None:
    renewal_id = uuid4()
    first = await harness.publish(payment_authorized(renewal_id))
    await harness.publish(payment_authorized(renewal_id))

    async with harness.runtime.database.session() as session:
        [kept] = (await session.exec(select(HeldPayment))).all()
    assert kept.event_id == first


async def test_a_released_hold_says_nothing_was_taken_in_each_locale(
    harness: Harness, sms: FakeSms
) -> None:
    first, second = uuid4(), uuid4()
    await harness.publish(card_bound("en"))
    await harness.publish(released(first))
    await harness.send()
    await harness.publish(card_bound("zh-CN"), time=utcnow() + timedelta(seconds=1))
    await harness.publish(released(second))
    await harness.send()

    english, chinese = harness.mailer.sent
    assert english.subject.startswith("Your eSIM renewal: the hold of CN¥89.10 was released")
    assert "nothing was taken" in english.body
    assert "Amount released: CN¥89.10" in english.body and "refunded" not in english.body
    assert "could not be activated" in english.body
    assert "冻结的 ¥89.10 已释放" in chinese.subject
    assert "未扣任何款项" in chinese.body and "释放金额：¥89.10" in chinese.body
    assert "退款金额" not in chinese.body
    assert "nothing was taken" in sms.sent[0].text and "未扣任何款项" in sms.sent[1].text
