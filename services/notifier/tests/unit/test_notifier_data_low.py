"""Low-data messages: at 90 % and when used up, once per bundle, in the contact's language."""

from uuid import UUID, uuid4

import pytest
from esim_schemas import DataLow
from notifier_testkit import ICCID, NOW, Harness, card_bound


def data_low(threshold: int, renewal_id: UUID, remaining: int = 1024) -> DataLow:
    return DataLow(
        iccid=ICCID,
        renewal_id=renewal_id,
        threshold=threshold,  # type: ignore[arg-type]
        data_remaining_mb=remaining,
        as_of=NOW,
        data_total_mb=10240,
        plan_code="JP-30D-10GB",
    )


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
