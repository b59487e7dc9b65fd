"""Tests of the SMTP sink: what a mailer sends ends up as one .eml file per message."""

import asyncio
import logging
import re
import smtplib
from collections.abc import AsyncIterator
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from pathlib import Path

import pytest
from sandboxes.smtp import SmtpSink

EML_NAME = re.compile(r"^\d{8}T\d{6}\.\d{6}Z-[0-9a-f-]{36}\.eml$")


@pytest.fixture
async def sink(tmp_path: Path) -> AsyncIterator[SmtpSink]:
    async with SmtpSink("127.0.0.1", 0, tmp_path / "mail") as sink:
        yield sink


def message(to: str, subject: str, body: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "noreply@esim.example"
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content(body)
    return msg


def send(port: int, msg: EmailMessage, login: tuple[str, str] | None = None) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
        if login:
            client.login(*login)
        client.send_message(msg)


def kept(sink: SmtpSink) -> list[Path]:
    return sorted(sink.directory.iterdir())


async def test_each_message_is_kept_as_an_eml_file(sink: SmtpSink) -> None:
    await asyncio.to_thread(
        send, sink.port, message("ann@example.com", "续费成功", "Plan renewed.")
    )
    await asyncio.to_thread(send, sink.port, message("bob@example.com", "Second", "Again."))

    files = kept(sink)
    assert len(files) == 2
    assert all(EML_NAME.match(f.name) for f in files)
    first = BytesParser(policy=default_policy).parsebytes(files[0].read_bytes())
    assert first["To"] == "ann@example.com"
    assert first["Subject"] == "续费成功"
    body = first.get_body()
    assert body is not None
    assert body.get_content().strip() == "Plan renewed."


async def test_logs_recipients_and_subject_but_not_the_body(
    sink: SmtpSink, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sandboxes.smtp")

    await asyncio.to_thread(send, sink.port, message("ann@example.com", "Your code", "CODE-731904"))

    lines = [r.getMessage() for r in caplog.records if r.name == "sandboxes.smtp"]
    assert any("ann@example.com" in line and "Your code" in line for line in lines)
    assert "CODE-731904" not in caplog.text


async def test_accepts_any_login(sink: SmtpSink) -> None:
    msg = message("ann@example.com", "Hi", "Hello.")

    await asyncio.to_thread(send, sink.port, msg, ("mailer", "whatever"))

    assert len(kept(sink)) == 1


async def test_stop_does_not_wait_for_idle_connections(tmp_path: Path) -> None:
    sink = SmtpSink("127.0.0.1", 0, tmp_path)
    await sink.start()
    client = await asyncio.to_thread(smtplib.SMTP, "127.0.0.1", sink.port, timeout=5)
    try:
        await asyncio.to_thread(client.ehlo)
        await asyncio.wait_for(sink.stop(), timeout=2)
    finally:
        client.close()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.to_thread(smtplib.SMTP, "127.0.0.1", sink.port, timeout=1)
