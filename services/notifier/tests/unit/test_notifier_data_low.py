"""Low-data messages: at 90 % and when used up, once per bundle, in the contact's language."""

from uuid import uuid4

import pytest
from notifier_testkit import ICCID, FakeSms, Harness, card_bound, data_low


@pytest.mark.parametrize(
    ("locale", "subject", "snippet"),
    [
        ("en", "Your eSIM has 1 GB of data left", "you have used 90 % of the data"),
        ("zh-CN", "您的 eSIM 流量仅剩 1 GB", "已使用 90% 的流量"),
    ],
)
async def test_at_90_percent_the_user_is_told_with_a_renewal_link(
    harness: Harness, locale: str, subject: str, snippet: str
) -> None:
    await harness.publish(card_bound(locale))
    await harness.publish(data_low(90, uuid4()))
    await harness.send()
    [mail] = harness.mailer.sent
    assert mail.subject == subject
    assert snippet in mail.body and "JP-30D-10GB" in mail.body
    assert "http://127.0.0.1:8000/docs#/renewals" in mail.body


async def test_used_up_is_its_own_message_and_75_percent_sends_nothing(harness: Harness) -> None:
    renewal = uuid4()
    await harness.publish(card_bound("en"))
    await harness.publish(data_low(75, renewal, 2560))
    await harness.send()
    assert harness.mailer.sent == []
    await harness.publish(data_low(100, renewal, 0))
    await harness.send()
    [mail] = harness.mailer.sent
    assert mail.subject == "Your eSIM data is used up"
    assert "Renew now" in mail.body


async def test_a_repeated_alert_for_one_bundle_sends_one_mail(harness: Harness) -> None:
    renewal = uuid4()
    await harness.publish(card_bound("en"))
    event_id = await harness.publish(data_low(90, renewal))
    await harness.publish(data_low(90, renewal), event_id=event_id)
    await harness.publish(data_low(90, renewal))  # re-published under another id
    await harness.send()
    assert len(harness.mailer.sent) == 1
    # Another bundle of the card is told again.
    await harness.publish(data_low(90, uuid4()))
    await harness.send()
    assert len(harness.mailer.sent) == 2


async def test_the_renewal_link_names_the_card(make_harness) -> None:  # type: ignore[no-untyped-def]
    harness: Harness = await make_harness(renew_url="https://shop.example/cards/{iccid}/renew")
    await harness.publish(card_bound("en"))
    await harness.publish(data_low(100, uuid4(), 0))
    await harness.send()
    [mail] = harness.mailer.sent
    assert f"https://shop.example/cards/{ICCID}/renew" in mail.body


@pytest.mark.parametrize(
    ("threshold", "locale", "text"),
    [
        (90, "en", "eSIM: 90% of your JP-30D-10GB data is used. Renew: "),
        (100, "zh-CN", "【eSIM】您的套餐 JP-30D-10GB 流量已用完。续费即可恢复上网："),  # noqa: RUF001
    ],
)
async def test_a_user_who_chose_sms_is_also_texted(
    harness: Harness, sms: FakeSms, threshold: int, locale: str, text: str
) -> None:
    await harness.publish(card_bound(locale))  # with a phone: the user chose SMS
    await harness.publish(data_low(threshold, uuid4(), 0 if threshold == 100 else 1024))
    await harness.send()

    assert len(harness.mailer.sent) == 1
    [message] = sms.sent
    assert message.to == "+8613800000000"
    assert message.text.startswith(text)
    assert message.text.endswith("http://127.0.0.1:8000/docs#/renewals")


async def test_no_phone_no_text_and_one_text_per_bundle(harness: Harness, sms: FakeSms) -> None:
    bound = card_bound("en").model_copy(update={"phone": None})
    await harness.publish(bound)
    await harness.publish(data_low(90, uuid4()))
    await harness.send()
    assert len(harness.mailer.sent) == 1 and sms.sent == []

    await harness.publish(card_bound("en"))  # SMS chosen now
    renewal = uuid4()
    await harness.publish(data_low(90, renewal))
    await harness.publish(data_low(90, renewal))  # the same alert again, under another id
    await harness.send()
    assert len(sms.sent) == 1
