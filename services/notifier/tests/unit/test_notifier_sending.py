"""Events in, e-mails out: one mail per event, in the contact's language, whatever the order."""

import logging
from datetime import timedelta
from uuid import uuid4

import pytest
from esim_core.clock import as_utc, utcnow
from esim_schemas import EventData
from notifier.mail import PermanentMailError, TransientMailError
from notifier_testkit import (
    ICCID,
    FakeSms,
    Harness,
    auto_renew_disabled,
    bundle_cancelled,
    card_bound,
    make_iccid,
    payment_failed,
    payment_refunded,
    payment_settled,
    profile_activated,
    renewal_rejected,
)

# The Chinese texts use full-width punctuation on purpose.
# ruff: noqa: RUF001
EN_FROM = "Nov 23, 2026, 10:15\u202fAM UTC"
EN_UNTIL = "Dec 23, 2026, 10:15\u202fAM UTC"


def receipt(bundle_state: str = "active") -> list[EventData]:
    """A renewal's payment and activation, as the notifier hears of both."""
    renewal_id = uuid4()
    return [payment_settled(renewal_id), profile_activated(renewal_id, bundle_state=bundle_state)]


async def publish_receipt(harness: Harness, *, iccid: str = ICCID) -> None:
    """Hand the notifier a renewal's payment and its activation."""
    renewal_id = uuid4()
    await harness.publish(payment_settled(renewal_id, iccid=iccid))
    await harness.publish(profile_activated(renewal_id, iccid=iccid))


CASES = [
    (
        "profile_activated",
        lambda: receipt(),
        {
            "en": (
                "Your eSIM plan JP-30D-10GB is active",
                [
                    "your new plan is live",
                    "Plan: JP-30D-10GB",
                    "Data: 10 GB",
                    f"Valid from: {EN_FROM}",
                    f"Valid until: {EN_UNTIL}",
                    "Amount paid: CN¥89.10",
                    "Discount (WELCOME10): -CN¥9.90",
                    "Payment method: Alipay",
                    "Provider reference: ch_3PZ9xK",
                    f"Card (ICCID): {ICCID}",
                ],
            ),
            "zh-CN": (
                "您的 eSIM 套餐 JP-30D-10GB 已生效",
                [
                    "新套餐已在您的 eSIM 上生效",
                    "套餐：JP-30D-10GB",
                    "流量：10 GB",
                    "生效时间：2026年11月23日 10:15 UTC",
                    "到期时间：2026年12月23日 10:15 UTC",
                    "实付金额：¥89.10",
                    "支付方式：支付宝",
                ],
            ),
        },
    ),
    (
        "profile_activated",
        lambda: receipt("queued"),
        {
            "en": (
                "Your eSIM plan JP-30D-10GB is confirmed and queued",
                ["queued behind your current plan", "Data: 10 GB", f"Valid from: {EN_FROM}"],
            ),
            "zh-CN": (
                "您的 eSIM 套餐 JP-30D-10GB 已确认，排在当前套餐之后",
                ["新套餐已排在您当前的套餐之后", "流量：10 GB"],
            ),
        },
    ),
    (
        "payment_failed",
        lambda: [payment_failed(reason="insufficient_funds")],
        {
            "en": (
                "Your eSIM renewal payment did not go through",
                ["there were not enough funds", "Nothing was charged"],
            ),
            "zh-CN": ("您的 eSIM 续费付款未成功", ["账户余额不足", "我们没有扣取任何费用"]),
        },
    ),
    (
        "payment_refunded",
        lambda: [payment_refunded()],
        {
            "en": (
                "Your eSIM renewal was refunded: CN¥99.00",
                ["could not be activated", "We refunded CN¥99.00", "Refund: refund-7"],
            ),
            "zh-CN": (
                "您的 eSIM 续费已退款：¥99.00",
                ["未能在您的 eSIM 上激活", "我们已将 ¥99.00 退回", "退款编号：refund-7"],
            ),
        },
    ),
    (
        "renewal_rejected",
        lambda: [renewal_rejected()],
        {
            "en": (
                "Your eSIM renewal was not accepted",
                [
                    "the plan you chose does not exist",
                    "Nothing was charged",
                    "Details: plan XX-1D-1GB is not in the catalogue",
                ],
            ),
            "zh-CN": ("您的 eSIM 续费申请未被受理", ["您选择的套餐不存在", "没有扣取任何费用"]),
        },
    ),
    (
        "auto_renew_disabled",
        lambda: [auto_renew_disabled("expired_method", renewal_id=uuid4())],
        {
            "en": (
                "Auto-renew is off for your eSIM",
                ["the saved payment method has expired", "Save a current payment method"],
            ),
            "zh-CN": ("您的 eSIM 自动续费已关闭", ["已保存的支付方式已过期"]),
        },
    ),
    (
        "bundle_cancelled",
        lambda: [bundle_cancelled()],
        {
            "en": (
                "Your queued eSIM plan JP-30D-10GB is cancelled",
                ["as you asked, we cancelled your queued plan", "A full refund"],
            ),
            "zh-CN": ("您排队中的 eSIM 套餐 JP-30D-10GB 已取消", ["全额退回"]),
        },
    ),
]


@pytest.mark.parametrize("locale", ["en", "zh-CN"])
@pytest.mark.parametrize(("kind", "build", "expected"), CASES)
async def test_each_event_sends_one_mail_in_the_contacts_language(
    harness: Harness, sms: FakeSms, locale: str, kind: str, build, expected
) -> None:
    await harness.publish(card_bound(locale))
    events: list[EventData] = build()

    for data in events:
        await harness.publish(data)
    await harness.send()

    data = events[-1]
    subject, snippets = expected[locale]
    [mail] = harness.mailer.sent
    assert mail.recipient == "user-1@example.com"
    assert mail.subject == subject
    for snippet in snippets:
        assert snippet in mail.body
    assert str(data.renewal()) in mail.body
    assert mail.html is not None and str(data.renewal()) in mail.html
    [row] = await harness.notifications()
    assert (row.kind, row.channel, row.status, row.locale) == (kind, "email", "sent", locale)
    assert row.renewal_id == data.renewal()
    assert row.sent_at is not None
    assert row.due_at is None
    assert mail.message_id == f"<{row.id}@esim.local>"
    # The user chose SMS (the contact has a phone): one short text too, in the same language.
    [text] = sms.sent
    assert text.to == "+8613800000000"
    assert text.text.startswith("eSIM: " if locale == "en" else "【eSIM】")


async def test_a_redelivered_event_sends_one_mail(harness: Harness) -> None:
    await harness.publish(card_bound())
    renewal_id = uuid4()
    await harness.publish(payment_settled(renewal_id))
    event = profile_activated(renewal_id)

    event_id = await harness.publish(event)
    await harness.publish(event, event_id=event_id)
    await harness.send()
    await harness.publish(event, event_id=event_id)
    await harness.send()

    assert len(harness.mailer.sent) == 1
    assert len(await harness.notifications()) == 1


async def test_a_duplicate_with_a_new_event_id_sends_one_mail(harness: Harness) -> None:
    await harness.publish(card_bound())
    renewal_id = uuid4()

    first = await harness.publish(payment_failed(renewal_id))
    second = await harness.publish(payment_failed(renewal_id))
    await harness.send()
    await harness.publish(payment_failed(renewal_id))
    await harness.send()

    assert first != second
    assert len(harness.mailer.sent) == 1
    [row] = await harness.notifications()
    assert row.event_id == first


async def test_different_kinds_for_one_renewal_are_separate_mails(harness: Harness) -> None:
    await harness.publish(card_bound())
    renewal_id = uuid4()

    await harness.publish(payment_refunded(renewal_id))
    await harness.publish(renewal_rejected(renewal_id))
    await harness.send()

    assert len(harness.mailer.sent) == 2


async def test_an_event_before_its_card_bound_is_mailed_once_the_contact_arrives(
    harness: Harness,
) -> None:
    await publish_receipt(harness)
    await harness.send()

    assert harness.mailer.sent == []
    [waiting] = await harness.notifications()
    assert waiting.status == "pending"
    assert waiting.due_at is not None and as_utc(waiting.due_at) > utcnow()
    assert waiting.detail is not None and "CardBound" in waiting.detail

    await harness.publish(card_bound("zh-CN"))
    await harness.send()

    [mail] = harness.mailer.sent
    assert mail.subject == "您的 eSIM 套餐 JP-30D-10GB 已生效"
    [row] = await harness.notifications()
    assert (row.status, row.recipient, row.locale) == ("sent", "user-1@example.com", "zh-CN")


async def test_a_contact_that_never_arrives_makes_it_undeliverable(harness: Harness) -> None:
    await harness.publish(payment_failed())
    await harness.send()
    [row] = await harness.notifications()
    assert row.status == "pending"
    assert as_utc(row.due_at) <= as_utc(row.created_at) + timedelta(seconds=600)

    # Ten minutes and a second later, still no CardBound:
    await harness.update(row.id, created_at=utcnow() - timedelta(seconds=601), due_at=utcnow())
    await harness.send()

    [row] = await harness.notifications()
    assert row.status == "undeliverable"
    assert row.due_at is None
    assert "no CardBound" in (row.detail or "")
    # A CardBound that comes too late does not bring it back.
    await harness.publish(card_bound())
    await harness.send()
    assert harness.mailer.sent == []
    assert (await harness.notifications())[0].status == "undeliverable"


async def test_contact_wait_is_configurable(make_harness) -> None:
    harness = await make_harness(contact_wait_s=0)

    await harness.publish(payment_failed())
    await harness.send()

    [row] = await harness.notifications()
    assert row.status == "undeliverable"


async def test_a_transient_smtp_failure_is_retried_then_sent(harness: Harness) -> None:
    await harness.publish(card_bound())
    await publish_receipt(harness)
    harness.mailer.failures = [
        TransientMailError("SMTP relay 127.0.0.1:1025 failed: ConnectionRefusedError"),
        TransientMailError("451 4.3.0 try again later"),
    ]

    await harness.send()

    assert harness.mailer.calls == 3
    assert len(harness.mailer.sent) == 1
    [row] = await harness.notifications()
    assert row.status == "sent"
    assert row.send_rounds == 0


async def test_a_relay_down_for_a_round_reschedules_then_gives_up(make_harness) -> None:
    harness = await make_harness(smtp_attempts=2, max_send_rounds=2)
    await harness.publish(card_bound())
    await publish_receipt(harness)
    harness.mailer.failures = [TransientMailError("relay down")] * 4

    await harness.send()

    [row] = await harness.notifications()
    assert (row.status, row.send_rounds) == ("pending", 1)
    assert as_utc(row.due_at) > utcnow() + timedelta(seconds=20)
    assert "relay down" in (row.detail or "")
    assert await harness.send() == 0  # not due yet

    await harness.update(row.id, due_at=utcnow())
    await harness.send()

    [row] = await harness.notifications()
    assert (row.status, row.send_rounds, row.due_at) == ("failed", 2, None)
    assert "gave up after 2 send rounds" in (row.detail or "")
    assert harness.mailer.sent == []
    assert harness.mailer.calls == 4


async def test_a_relay_back_after_a_failed_round_sends_with_the_same_message_id(
    make_harness,
) -> None:
    harness = await make_harness(smtp_attempts=1)
    await harness.publish(card_bound())
    await harness.publish(payment_refunded())
    harness.mailer.failures = [TransientMailError("relay down")]
    await harness.send()
    [row] = await harness.notifications()

    await harness.update(row.id, due_at=utcnow())
    await harness.send()

    [mail] = harness.mailer.sent
    assert mail.message_id == f"<{row.id}@esim.local>"
    assert (await harness.notifications())[0].status == "sent"


async def test_a_refused_recipient_fails_at_once(harness: Harness) -> None:
    await harness.publish(card_bound())
    await harness.publish(payment_failed())
    harness.mailer.failures = [PermanentMailError("550 5.1.1 no such mailbox")]

    await harness.send()

    [row] = await harness.notifications()
    assert (row.status, row.due_at) == ("failed", None)
    assert "550 5.1.1" in (row.detail or "")
    assert harness.mailer.calls == 1


async def test_a_rejection_is_mailed_only_to_a_known_holder(harness: Harness) -> None:
    await harness.publish(renewal_rejected(reason="unknown_card"))
    await harness.publish(card_bound(user_id="holder"))
    await harness.publish(renewal_rejected(user_id="stranger", reason="card_not_owned"))
    await harness.send()

    assert harness.mailer.sent == []
    assert await harness.notifications() == []

    await harness.publish(renewal_rejected(user_id="holder", reason="plan_not_available"))
    await harness.publish(renewal_rejected(user_id=None, reason="invalid_request"))
    await harness.send()

    assert [mail.recipient for mail in harness.mailer.sent] == ["holder@example.com"] * 2


async def test_a_card_bound_again_changes_whom_and_how_to_write(harness: Harness) -> None:
    await harness.publish(card_bound("en", user_id="old"))
    await harness.publish(card_bound("zh-CN", user_id="new"))
    await harness.publish(payment_failed())
    await harness.send()

    [mail] = harness.mailer.sent
    assert mail.recipient == "new@example.com"
    assert mail.subject == "您的 eSIM 续费付款未成功"


async def test_an_older_card_bound_delivered_late_is_ignored(harness: Harness) -> None:
    now = utcnow()
    await harness.publish(card_bound(user_id="new"), time=now)
    await harness.publish(card_bound(user_id="old"), time=now - timedelta(hours=1))

    contact = await harness.contact()
    assert contact is not None
    assert contact.email == "new@example.com"


async def test_cards_do_not_mix(harness: Harness) -> None:
    other = make_iccid(111111)
    await harness.publish(card_bound(iccid=other, user_id="other"))
    await publish_receipt(harness, iccid=other)
    await publish_receipt(harness)
    await harness.send()

    assert [mail.recipient for mail in harness.mailer.sent] == ["other@example.com"]
    assert len(await harness.notifications()) == 1  # still waiting for its own contact


async def test_logs_name_the_recipient_but_never_the_body(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await harness.publish(card_bound())
    await harness.publish(payment_refunded())

    await harness.send()

    [mail] = harness.mailer.sent
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "user-1@example.com" in logged
    assert "could not be activated" not in logged
    assert mail.body not in logged


async def test_a_notification_that_cannot_be_rendered_fails_without_stopping_others(
    harness: Harness,
) -> None:
    await harness.publish(card_bound())
    await publish_receipt(harness)
    await harness.publish(payment_failed())
    [broken] = [row for row in await harness.notifications() if row.kind == "profile_activated"]
    await harness.update(broken.id, payload={"iccid": ICCID})

    await harness.send()

    rows = {row.kind: row for row in await harness.notifications()}
    assert rows["profile_activated"].status == "failed"
    assert "cannot render" in (rows["profile_activated"].detail or "")
    assert rows["payment_failed"].status == "sent"
    assert len(harness.mailer.sent) == 1
