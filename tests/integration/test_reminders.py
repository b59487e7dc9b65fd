"""Expiry reminders with the default leads (3d,1d) over the real broker, Redis and sandboxes: a
daily plan gets exactly one reminder, by mail and SMS in the user's language, and none again
after accounts restarts."""

from collections.abc import Iterator
from email.message import EmailMessage

import pytest

from tests.integration.test_lifecycle import of_card
from tests.support.client import (
    PlainKafka,
    Traveller,
    mail_parts,
    mails_to,
    notifications,
    texts_to,
)
from tests.support.infra import Platform, wait_until

pytestmark = pytest.mark.integration

DAILY = "JP-1D-1GB"
RENEW_LINK = "/docs#/renewals"
#: One reminder by each channel, sent (the notifier's own record of it).
SENT_ONCE = {"email": ["sent"], "sms": ["sent"]}


@pytest.fixture(scope="module")
def kafka(platform: Platform) -> Iterator[PlainKafka]:
    client = PlainKafka(platform.kafka)
    yield client
    client.close()


def reminder_mails(platform: Platform, traveller: Traveller, plan_code: str) -> list[EmailMessage]:
    """The zh-CN expiry reminders the traveller was mailed about a plan."""
    return [
        mail
        for mail in mails_to(platform, traveller.email)
        if plan_code in str(mail["Subject"]) and "到期" in str(mail["Subject"])
    ]


def reminder_texts(platform: Platform, phone: str, plan_code: str) -> list[str]:
    """The zh-CN expiry reminders texted to a number about a plan (not its receipt)."""
    return [text for text in texts_to(platform, phone) if plan_code in text and "到期" in text]


def reminded(platform: Platform, iccid: str) -> bool:
    """Whether the notifier sent the card exactly one reminder by each channel."""
    return notifications(platform, iccid, "plan_expiring") == SENT_ONCE


def daily_plan_reminded(platform: Platform, kafka: PlainKafka) -> tuple[Traveller, str, str]:
    """A zh-CN traveller who chose SMS renews a daily plan and is reminded of it once, by mail
    and SMS; returns the traveller, their phone and the card."""
    traveller = Traveller.register(platform, locale="zh-CN")
    phone = traveller.choose_sms()
    iccid = traveller.bind_new_card()
    renewal_id = traveller.renew(iccid, plan_code=DAILY).json()["renewal_id"]
    traveller.wait_for_status(renewal_id, "ACTIVATED")

    # A daily plan starts with both leads due: only the shortest goes out.
    [reminder] = of_card(kafka, platform, "esim.plan.expiring", iccid)
    assert reminder["data"]["renewal_id"] == renewal_id
    assert reminder["data"]["plan_code"] == DAILY
    assert reminder["data"]["days_left"] == 1 and reminder["data"]["auto_renew"] is False

    [mail] = wait_until(
        lambda: reminder_mails(platform, traveller, DAILY), what="the reminder mail"
    )
    assert str(mail["Subject"]) == f"您的 eSIM 套餐 {DAILY} 将在 1天后到期"
    text, html = mail_parts(mail)
    assert "还剩 1天" in text and iccid in text and RENEW_LINK in text
    assert "立即续费" in html and f'href="http://127.0.0.1:8000{RENEW_LINK}"' in html
    [sms] = wait_until(lambda: reminder_texts(platform, phone, DAILY), what="the reminder SMS")
    assert sms.startswith(f"【eSIM】您的套餐 {DAILY} 将于") and RENEW_LINK in sms
    return traveller, phone, iccid


def test_a_daily_plan_is_reminded_once_by_mail_and_sms_and_not_again_after_a_restart(
    platform: Platform, kafka: PlainKafka
) -> None:
    """About 15 s: two daily plans are renewed and reminded by mail and SMS, around a restart of
    accounts."""
    traveller, phone, iccid = daily_plan_reminded(platform, kafka)
    wait_until(lambda: reminded(platform, iccid), what="the reminders sent")

    platform.processes["accounts"].stop()
    platform.restart("accounts")
    # The restarted accounts demonstrably works its due plans: another card's reminder comes,
    # and the notifier has taken it (mail and SMS) before the first card is looked at again.
    _, _, other = daily_plan_reminded(platform, kafka)
    wait_until(lambda: reminded(platform, other), what="the reminders sent")

    assert len(of_card(kafka, platform, "esim.plan.expiring", iccid)) == 1
    assert len(reminder_mails(platform, traveller, DAILY)) == 1
    assert len(reminder_texts(platform, phone, DAILY)) == 1
    assert reminded(platform, iccid)
