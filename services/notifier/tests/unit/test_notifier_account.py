"""Account messages: reset codes by e-mail and SMS, opened only to write them; password notices."""

from datetime import timedelta

from esim_core.sealing import DEV_RESET_CODE_KEY, Sealer
from esim_schemas import PasswordChanged, PasswordResetRequested
from notifier.sms import TransientSmsError
from notifier.store import Notification
from notifier_testkit import NOW, FakeMailer, FakeSms, Harness
from sqlmodel import select


def reset_event(
    *, phone: str | None = "+8613800138000", locale: str = "zh-CN", key: str = DEV_RESET_CODE_KEY
) -> PasswordResetRequested:
    return PasswordResetRequested(
        user_id="user-7",
        email="traveller@example.com",
        code_expires_at=NOW + timedelta(minutes=15),
        phone=phone,
        locale=locale,  # type: ignore[arg-type]
        code_sealed=Sealer(key).seal("482913", "user-7"),
    )


async def rows(harness: Harness) -> list[Notification]:
    async with harness.runtime.database.session() as session:
        return list((await session.exec(select(Notification))).all())


async def test_reset_code_goes_by_mail_and_sms_in_the_users_language(
    harness: Harness, mailer: FakeMailer, sms: FakeSms
) -> None:
    await harness.publish(reset_event())
    assert await harness.send() == 2
    assert [mail.recipient for mail in mailer.sent] == ["traveller@example.com"]
    assert "482913" in mailer.sent[0].body and "验证码" in mailer.sent[0].body
    assert "482913" not in mailer.sent[0].subject
    assert [(text.to, "482913" in text.text) for text in sms.sent] == [("+8613800138000", True)]
    stored = await rows(harness)
    assert {row.status for row in stored} == {"sent"}
    # The send log never holds the code in clear.
    for row in stored:
        assert "482913" not in repr(row.payload) + str(row.subject) + str(row.detail)


async def test_no_phone_means_mail_only(harness: Harness, mailer: FakeMailer, sms: FakeSms) -> None:
    await harness.publish(reset_event(phone=None, locale="en"))
    assert await harness.send() == 1
    assert "Your code: 482913" in mailer.sent[0].body
    assert sms.sent == []


async def test_a_code_sealed_with_another_key_is_not_sent(
    harness: Harness, mailer: FakeMailer, sms: FakeSms
) -> None:
    await harness.publish(reset_event(key="another key that is at least 32 chars"))
    await harness.send()
    assert mailer.sent == [] and sms.sent == []
    assert {row.status for row in await rows(harness)} == {"failed"}


async def test_sms_gateway_outage_is_retried_on_a_later_round(
    harness: Harness, sms: FakeSms
) -> None:
    sms.failures = [TransientSmsError("SMS gateway answered 503")] * 3
    await harness.publish(reset_event())
    await harness.send()
    texts = [row for row in await rows(harness) if row.channel == "sms"]
    assert texts[0].status == "pending" and texts[0].send_rounds == 1
    await harness.update(texts[0].id, due_at=NOW)
    await harness.send()
    assert len(sms.sent) == 1


async def test_password_changed_notice(harness: Harness, mailer: FakeMailer, sms: FakeSms) -> None:
    await harness.publish(
        PasswordChanged(
            user_id="user-7",
            email="traveller@example.com",
            phone="+8613800138000",
            locale="en",
            changed_at=NOW,
        )
    )
    assert await harness.send() == 2
    assert mailer.sent[0].subject == "Your eSIM password was changed"
    assert "password was changed" in sms.sent[0].text
