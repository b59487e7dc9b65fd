"""SmtpMailer against a real in-process SMTP server (aiosmtpd) on a free port."""

import asyncio
import socket
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any
from uuid import uuid4

import pytest
from aiosmtpd.controller import Controller
from notifier.mail import OutgoingMail, PermanentMailError, TransientMailError
from notifier.mail.smtp import SmtpMailer
from notifier.sms.http import HttpSmsGateway
from notifier_testkit import Harness, card_bound, payment_settled, profile_activated


class Collector:
    """An aiosmtpd handler that keeps what it receives, or refuses as told."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.raw: list[bytes] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.rcpt_reply: str | None = None
        self.data_replies: list[str] = []
        # The connection each accepted message came over, kept alive so that no two are the
        # same object (an id alone may be reused once a closed session is collected).
        self.sessions: list[Any] = []

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if self.rcpt_reply is not None:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.data_replies:
            return self.data_replies.pop(0)
        parsed = message_from_bytes(envelope.original_content, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append(parsed)
        self.raw.append(envelope.original_content)
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        self.sessions.append(session)
        return "250 Message accepted"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def smtp_server() -> Iterator[tuple[Collector, int]]:
    collector = Collector()
    port = free_port()
    controller = Controller(collector, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield collector, port
    finally:
        controller.stop()


def mailer_for(port: int, **overrides: Any) -> SmtpMailer:
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "mail_from": "eSIM <no-reply@esim.local>",
        "timeout_s": 5,
        "connections": 4,
        **overrides,
    }
    return SmtpMailer(**values)


MAIL = OutgoingMail(
    message_id="<0f5e6c4e-1d7a-5a43-9a8e-0a4a5b1f9c11@esim.local>",
    recipient="traveller@example.com",
    subject="您的 eSIM 套餐 JP-30D-10GB 已生效",
    body="您好：\n\n套餐：JP-30D-10GB\n卡号（ICCID）：8944500102198304826\n",  # noqa: RUF001
)


async def test_a_message_arrives_with_its_headers_and_utf8_text(
    smtp_server: tuple[Collector, int],
) -> None:
    collector, port = smtp_server

    await mailer_for(port).send(MAIL)

    [message] = collector.messages
    assert collector.envelopes == [("no-reply@esim.local", ["traveller@example.com"])]
    assert message["From"] == "eSIM <no-reply@esim.local>"
    assert message["To"] == "traveller@example.com"
    assert message["Subject"] == MAIL.subject
    assert message["Message-ID"] == MAIL.message_id
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["Date"]
    assert message.get_content_type() == "text/plain"
    assert message.get_content().replace("\r\n", "\n") == MAIL.body
    # The raw message keeps ASCII readable, so the sink's files can be searched for a card.
    assert message["Content-Transfer-Encoding"] == "quoted-printable"
    assert b"8944500102198304826" in collector.raw[0]
    assert b"JP-30D-10GB" in collector.raw[0]


async def test_a_subject_too_long_for_one_encoded_word_arrives_as_it_was_written(
    smtp_server: tuple[Collector, int],
) -> None:
    collector, port = smtp_server
    # A reminder's subject in zh-CN takes two encoded words: folded before the first one, the
    # header read back with a leading space.
    subject = "您的 eSIM 套餐 JP-1D-1GB 将在 1天后到期"
    mail = OutgoingMail(
        message_id=MAIL.message_id, recipient=MAIL.recipient, subject=subject, body=MAIL.body
    )

    await mailer_for(port).send(mail)

    [message] = collector.messages
    assert str(message["Subject"]) == subject
    [head] = [line for line in collector.raw[0].splitlines() if line.startswith(b"Subject:")]
    assert head.startswith(b"Subject: =?utf-8?")


async def test_credentials_are_used_where_configured(smtp_server: tuple[Collector, int]) -> None:
    collector, port = smtp_server

    # aiosmtpd without an authenticator offers no AUTH, which aiosmtplib reports as an error
    # about the relay, so a misconfigured relay is retried rather than failed for good.
    with pytest.raises(TransientMailError, match=r"SMTP relay 127\.0\.0\.1"):
        await mailer_for(port, username="user", password="secret").send(MAIL)
    assert collector.messages == []


async def test_an_unreachable_relay_is_transient() -> None:
    with pytest.raises(TransientMailError, match=r"SMTP relay 127\.0\.0\.1:\d+ failed"):
        await mailer_for(free_port()).send(MAIL)


async def test_a_refused_recipient_is_permanent(smtp_server: tuple[Collector, int]) -> None:
    collector, port = smtp_server
    collector.rcpt_reply = "550 5.1.1 No such mailbox"

    with pytest.raises(PermanentMailError, match="550"):
        await mailer_for(port).send(MAIL)


async def test_a_greylisted_recipient_is_transient(smtp_server: tuple[Collector, int]) -> None:
    collector, port = smtp_server
    collector.rcpt_reply = "450 4.2.0 Greylisted, try again later"

    with pytest.raises(TransientMailError, match="450"):
        await mailer_for(port).send(MAIL)


async def test_a_temporary_data_failure_is_transient(smtp_server: tuple[Collector, int]) -> None:
    collector, port = smtp_server
    collector.data_replies = ["451 4.3.0 Message not kept; try again later"]

    with pytest.raises(TransientMailError, match="451") as caught:
        await mailer_for(port).send(MAIL)
    assert "套餐" not in str(caught.value)  # the body never ends up in an error


async def test_messages_share_a_kept_connection(smtp_server: tuple[Collector, int]) -> None:
    collector, port = smtp_server
    mailer = mailer_for(port)

    for _ in range(3):
        await mailer.send(MAIL)
    await asyncio.gather(*(mailer.send(MAIL) for _ in range(6)))
    await mailer.aclose()

    assert len(collector.messages) == 9
    # 6 at once on at most 4 connections (the default)
    assert len({id(session) for session in collector.sessions}) <= 4
    assert collector.sessions[0] is collector.sessions[1] is collector.sessions[2]


async def test_a_refusal_leaves_the_connection_usable(smtp_server: tuple[Collector, int]) -> None:
    collector, port = smtp_server
    mailer = mailer_for(port)
    collector.rcpt_reply = "550 5.1.1 No such mailbox"
    with pytest.raises(PermanentMailError):
        await mailer.send(MAIL)
    collector.rcpt_reply = None

    await mailer.send(MAIL)

    assert collector.envelopes == [("no-reply@esim.local", ["traveller@example.com"])]


async def test_a_connection_the_relay_dropped_is_replaced() -> None:
    collector, port = Collector(), free_port()
    mailer = mailer_for(port)
    for _ in range(2):
        controller = Controller(collector, hostname="127.0.0.1", port=port)
        controller.start()
        try:
            # The kept connection has been idle long enough to be checked before use.
            mailer._idle = [(client, since - 5.0) for client, since in mailer._idle]
            await mailer.send(MAIL)
        finally:
            controller.stop()  # the relay restarts: its connections are gone

    assert len(collector.messages) == 2
    assert len({id(session) for session in collector.sessions}) == 2


async def test_the_send_loop_mails_through_smtp_and_retries_a_temporary_failure(
    make_harness: Any, smtp_server: tuple[Collector, int]
) -> None:
    collector, port = smtp_server
    harness: Harness = await make_harness(smtp=mailer_for(port))
    collector.data_replies = ["451 4.3.0 try again later"]
    await harness.publish(card_bound("en", phone=None))
    renewal_id = uuid4()
    await harness.publish(payment_settled(renewal_id))
    await harness.publish(profile_activated(renewal_id))

    await harness.send()

    [message] = collector.messages
    [row] = await harness.notifications()
    assert row.status == "sent"
    assert message["Message-ID"] == f"<{row.id}@esim.local>"
    assert message["Subject"] == "Your eSIM plan JP-30D-10GB is active"
    # multipart/alternative: the plain text first, the HTML last (the one readers prefer).
    assert message.get_content_type() == "multipart/alternative"
    plain, html = message.iter_parts()
    assert (plain.get_content_type(), html.get_content_type()) == ("text/plain", "text/html")
    assert "Data: 10 GB" in plain.get_content()
    assert "Amount paid: CN¥89.10" in plain.get_content()
    assert "<strong>live</strong>" in html.get_content()
    assert plain["MIME-Version"] is None and message["MIME-Version"] == "1.0"


async def test_bootstrap_wires_smtp_from_the_settings(tmp_path: Any) -> None:
    from notifier import bootstrap
    from notifier_testkit import settings_for

    notifier = bootstrap.build(
        settings_for(tmp_path, smtp_host="relay.example.com", smtp_port=2525)
    )
    try:
        assert isinstance(notifier.mailer, SmtpMailer)
        assert (notifier.mailer.host, notifier.mailer.port) == ("relay.example.com", 2525)
        consumer = notifier.runtime.subscribe()
        assert consumer is not None
        topics = notifier.runtime.topics
        assert set(consumer.topics) == {
            topics.card_bound,
            topics.profile_activated,
            topics.payment_failed,
            topics.payment_refunded,
            topics.renewal_rejected,
            topics.data_low,
            topics.password_reset,
            topics.password_changed,
            topics.payment_settled,
            topics.plan_expiring,
            topics.auto_renew_disabled,
            topics.bundle_cancelled,
            topics.payment_authorized,
        }
    finally:
        await notifier.runtime.stop()
    # The stop closed the SMS gateway's pool with the rest.
    assert isinstance(notifier.sms, HttpSmsGateway)
    with pytest.raises(RuntimeError, match="closed"):
        await notifier.sms.call("POST", "/messages")
