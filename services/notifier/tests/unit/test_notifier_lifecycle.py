"""The plan's lifecycle as the traveller hears it: the receipt from two events in either order,
expiry reminders, auto-renew turned off, and cancelled or replaced plans; each once."""

from datetime import timedelta
from uuid import uuid4

import pytest
from esim_core.clock import as_utc, utcnow
from esim_core.messaging.inbox import InboxEntry
from esim_core.observability.metrics import DB_TRANSACTIONS
from notifier.store import SettledPayment
from notifier_testkit import (
    ICCID,
    NOW,
    FakeSms,
    Harness,
    auto_renew_disabled,
    bundle_cancelled,
    card_bound,
    payment_refunded,
    payment_settled,
    plan_expiring,
    profile_activated,
)
from sqlmodel import select

# The Chinese texts use full-width punctuation on purpose.
# ruff: noqa: RUF001

PAID = "Amount paid: CN¥89.10"


async def payments(harness: Harness) -> list[SettledPayment]:
    async with harness.runtime.database.session() as session:
        return list((await session.exec(select(SettledPayment))).all())


async def test_a_receipt_with_the_payment_first_goes_out_at_once(
    harness: Harness, sms: FakeSms
) -> None:
    renewal_id = uuid4()
    await harness.publish(card_bound("en"))
    await harness.publish(payment_settled(renewal_id))
    await harness.publish(profile_activated(renewal_id))
    await harness.send()

    [mail] = harness.mailer.sent
    assert PAID in mail.body and "Discount (WELCOME10): -CN¥9.90" in mail.body
    assert "Provider reference: ch_3PZ9xK" in mail.body
    assert mail.html is not None and "CN¥89.10" in mail.html
    [text] = sms.sent
    assert "CN¥89.10" in text.text and "JP-30D-10GB" in text.text


async def test_a_receipt_before_its_payment_waits_for_it_and_is_woken_by_it(
    harness: Harness, sms: FakeSms
) -> None:
    renewal_id = uuid4()
    await harness.publish(card_bound("zh-CN"))
    await harness.publish(profile_activated(renewal_id))
    await harness.send()

    assert harness.mailer.sent == [] and sms.sent == []
    rows = await harness.notifications(channel=None)
    assert {row.status for row in rows} == {"pending"}
    assert all(as_utc(row.due_at) > utcnow() for row in rows)
    assert all("PaymentSettled" in (row.detail or "") for row in rows)

    await harness.publish(payment_settled(renewal_id))
    await harness.send()

    [mail] = harness.mailer.sent
    assert "实付金额：¥89.10" in mail.body and "优惠（WELCOME10）：-¥9.90" in mail.body
    assert "已收到付款 ¥89.10" in sms.sent[0].text
    assert {row.status for row in await harness.notifications(channel=None)} == {"sent"}


async def test_a_payment_that_never_comes_does_not_hold_the_confirmation_for_ever(
    harness: Harness,
) -> None:
    await harness.publish(card_bound("en", phone=None))
    await harness.publish(profile_activated())
    await harness.send()
    [row] = await harness.notifications()
    assert row.status == "pending"
    # The wait is bounded from when the receipt was queued (NOTIFIER_RECEIPT_PAYMENT_WAIT_S).
    assert as_utc(row.due_at) <= as_utc(row.created_at) + timedelta(seconds=120)

    await harness.update(row.id, created_at=utcnow() - timedelta(seconds=121), due_at=utcnow())
    await harness.send()

    [mail] = harness.mailer.sent
    assert "Plan: JP-30D-10GB" in mail.body and "Amount paid" not in mail.body
    assert (await harness.notifications())[0].status == "sent"


async def test_the_receipt_wait_is_configurable(make_harness) -> None:  # type: ignore[no-untyped-def]
    harness: Harness = await make_harness(receipt_payment_wait_s=0)
    await harness.publish(card_bound("en", phone=None))
    await harness.publish(profile_activated())
    await harness.send()

    [mail] = harness.mailer.sent
    assert "Amount paid" not in mail.body


async def test_a_redelivered_payment_is_kept_once_and_the_receipt_sent_once(
    harness: Harness, sms: FakeSms
) -> None:
    renewal_id = uuid4()
    await harness.publish(card_bound("en"))
    first = await harness.publish(payment_settled(renewal_id))
    await harness.publish(payment_settled(renewal_id), event_id=first)
    await harness.publish(payment_settled(renewal_id, amount=1))  # re-published, new id
    activated = await harness.publish(profile_activated(renewal_id))
    await harness.send()
    await harness.publish(profile_activated(renewal_id), event_id=activated)
    await harness.publish(profile_activated(renewal_id))
    await harness.send()

    [kept] = await payments(harness)
    assert kept.event_id == first
    assert len(harness.mailer.sent) == 1 and len(sms.sent) == 1
    assert PAID in harness.mailer.sent[0].body


async def test_reminders_go_by_mail_and_sms_once_per_lead(harness: Harness, sms: FakeSms) -> None:
    renewal_id = uuid4()
    until = NOW + timedelta(days=3)
    await harness.publish(card_bound("en"))
    three = plan_expiring(3, renewal_id=renewal_id, valid_until=until, auto_renew=True)
    first = await harness.publish(three)
    await harness.publish(three, event_id=first)  # redelivered
    await harness.publish(three)  # re-published under another id
    await harness.send()

    [mail] = harness.mailer.sent
    assert mail.subject == "Your eSIM plan JP-1D-1GB ends in 3 days"
    assert "Auto-renew is on" in mail.body
    assert "http://127.0.0.1:8000/docs#/renewals" in mail.body
    [text] = sms.sent
    assert text.text.startswith("eSIM: your plan JP-1D-1GB ends ")

    # The 1-day reminder of the same plan is a reminder of its own.
    await harness.publish(plan_expiring(1, renewal_id=renewal_id, valid_until=until))
    await harness.send()

    assert [m.subject for m in harness.mailer.sent][1] == "Your eSIM plan JP-1D-1GB ends in 1 day"
    assert "Renew now" in harness.mailer.sent[1].body
    assert len(sms.sent) == 2
    rows = await harness.notifications(channel=None)
    assert len(rows) == 4 and {row.kind for row in rows} == {"plan_expiring"}


async def test_a_reminder_without_a_phone_is_mailed_only_in_the_users_language(
    harness: Harness, sms: FakeSms
) -> None:
    await harness.publish(card_bound("zh-CN", phone=None))
    await harness.publish(plan_expiring(1))
    await harness.send()

    [mail] = harness.mailer.sent
    assert mail.subject == "您的 eSIM 套餐 JP-1D-1GB 将在 1天后到期"
    assert "现在续费" in mail.body
    assert sms.sent == []


async def test_a_reminder_before_the_card_bound_waits_for_the_contact(harness: Harness) -> None:
    await harness.publish(plan_expiring(3))
    await harness.send()
    assert harness.mailer.sent == []

    await harness.publish(card_bound("en"))
    await harness.send()

    [mail] = harness.mailer.sent
    assert mail.recipient == "user-1@example.com"


async def test_auto_renew_turned_off_says_why_once(harness: Harness, sms: FakeSms) -> None:
    await harness.publish(card_bound("en"))
    event = auto_renew_disabled("declined", renewal_id=uuid4())
    event_id = await harness.publish(event)
    await harness.publish(event, event_id=event_id)
    await harness.publish(event)  # re-published: one per failed auto-renewal
    await harness.send()

    [mail] = harness.mailer.sent
    assert mail.subject == "Auto-renew is off for your eSIM"
    assert "declined the payment for the automatic renewal" in mail.body
    assert "Check with your bank" in mail.body
    [text] = sms.sent
    assert text.text.endswith("http://127.0.0.1:8000/docs#/renewals")


async def test_auto_renew_off_for_the_cap_without_a_renewal_is_one_per_event(
    harness: Harness,
) -> None:
    await harness.publish(card_bound("en", phone=None))
    event = auto_renew_disabled("monthly_cap", plan=None)
    event_id = await harness.publish(event)
    await harness.publish(event, event_id=event_id)
    await harness.send()

    [mail] = harness.mailer.sent
    assert "monthly spending cap" in mail.body and "Nothing was charged" not in mail.body


async def test_a_cancelled_queued_plan_then_its_refund_say_what_happened(
    harness: Harness, sms: FakeSms
) -> None:
    renewal_id = uuid4()
    await harness.publish(card_bound("en"))
    await harness.publish(payment_settled(renewal_id))
    await harness.publish(profile_activated(renewal_id, bundle_state="queued"))
    await harness.send()
    cancel = bundle_cancelled(renewal_id)
    cancel_id = await harness.publish(cancel)
    await harness.publish(cancel, event_id=cancel_id)
    await harness.send()
    await harness.publish(payment_refunded(renewal_id))
    await harness.send()

    receipt, cancelled, refunded = harness.mailer.sent
    assert "Amount paid: CN¥89.10" in receipt.body
    assert cancelled.subject == "Your queued eSIM plan JP-30D-10GB is cancelled"
    assert "A full refund of CN¥89.10 to your Alipay follows" in cancelled.body
    assert refunded.subject == "Your eSIM renewal was refunded: CN¥99.00"
    assert "as you asked, we cancelled your queued plan" in refunded.body
    assert "could not be activated" not in refunded.body
    assert [t.text for t in sms.sent][1].startswith(
        "eSIM: your queued plan JP-30D-10GB is cancelled"
    )
    assert len(sms.sent) == 3


async def test_a_replaced_plan_is_a_short_notice(harness: Harness, sms: FakeSms) -> None:
    await harness.publish(card_bound("zh-CN"))
    await harness.publish(bundle_cancelled(reason="replaced"))
    await harness.send()

    [mail] = harness.mailer.sent
    assert mail.subject == "您的 eSIM 套餐 JP-30D-10GB 已被替换"
    assert "退" not in mail.body
    assert sms.sent[0].text == "【eSIM】您的套餐 JP-30D-10GB 已被新套餐替换。"


@pytest.mark.parametrize(
    ("locale", "said", "texted"),
    [
        (
            "en",
            "It replaces your plan JP-7D-3GB, which ended as the new one started",
            "replacing JP-7D-3GB.",
        ),
        ("zh-CN", "新套餐替换了您的套餐 JP-7D-3GB", "已替换 JP-7D-3GB。"),
    ],
)
async def test_a_plan_replaced_by_a_renewal_is_told_in_its_receipt_alone(
    harness: Harness, sms: FakeSms, locale: str, said: str, texted: str
) -> None:
    renewal_id = uuid4()
    await harness.publish(card_bound(locale))
    await harness.publish(payment_settled(renewal_id))
    # Published together by provisioning; either may be consumed first.
    await harness.publish(bundle_cancelled(reason="replaced", replaced_by=renewal_id))
    await harness.publish(profile_activated(renewal_id, replaces=["JP-7D-3GB"]))
    await harness.send()

    [receipt] = harness.mailer.sent
    assert said in receipt.body
    assert said in (receipt.html or "")
    [text] = sms.sent
    assert text.text.endswith(texted)


async def test_a_refund_of_a_confirmed_plan_does_not_say_it_never_went_live(
    harness: Harness,
) -> None:
    renewal_id = uuid4()
    await harness.publish(card_bound("en", phone=None))
    await harness.publish(payment_settled(renewal_id))
    await harness.publish(profile_activated(renewal_id))
    await harness.publish(payment_refunded(renewal_id))
    await harness.send()

    refunded = next(m for m in harness.mailer.sent if "refunded" in m.subject)
    assert "could not be activated" not in refunded.body
    assert "We refunded CN¥99.00" in refunded.body
    assert ICCID in refunded.body


async def test_a_plan_replaced_by_a_renewal_costs_no_transaction_nor_inbox_row(
    harness: Harness,
) -> None:
    await harness.publish(card_bound("en", phone=None))
    transactions = DB_TRANSACTIONS._value.get()

    cancelled = bundle_cancelled(reason="replaced", replaced_by=uuid4())
    replaced = await harness.publish(cancelled)
    await harness.publish(cancelled, event_id=replaced)  # redelivered: ignored again

    assert DB_TRANSACTIONS._value.get() == transactions
    async with harness.runtime.database.session() as session:
        assert replaced not in set((await session.exec(select(InboxEntry.event_id))).all())
    assert await harness.notifications() == []


async def test_a_receipt_waiting_for_its_payment_takes_no_send_round_until_woken(
    harness: Harness,
) -> None:
    renewal_id = uuid4()
    await harness.publish(card_bound("en", phone=None))
    await harness.publish(profile_activated(renewal_id))

    assert await harness.send() == 0, "queued waiting: no round looks at it before its payment"
    [row] = await harness.notifications()
    assert as_utc(row.due_at) > utcnow()
    assert "PaymentSettled" in (row.detail or "")

    await harness.publish(payment_settled(renewal_id))
    assert await harness.send() == 1
    [mail] = harness.mailer.sent
    assert PAID in mail.body
