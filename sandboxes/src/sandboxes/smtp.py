"""SMTP sink: accepts every message and keeps it, as received, in its own .eml file."""

import asyncio
import contextlib
import logging
import os
import signal
import uuid
import weakref
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session

from sandboxes.serving import configure_logging, env_int, env_str

logger = logging.getLogger("sandboxes.smtp")

ACCEPTED = "250 2.0.0 Message accepted"
NOT_KEPT = "451 4.3.0 Message not kept; try again later"


def write_message(directory: Path, content: bytes) -> Path:
    """Write a message to ``<UTC timestamp>-<uuid>.eml`` so readers never see a partial file.

    Args:
        directory: Where to put it; created if missing.
        content: The message's RFC 5322 bytes.

    Returns:
        The path of the new file.
    """
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    final = directory / f"{stamp}-{uuid.uuid4()}.eml"
    partial = directory / f".{final.name}.tmp"
    with partial.open("wb") as handle:
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())
    partial.replace(final)
    return final


def _subject(content: bytes) -> str:
    try:
        headers = BytesHeaderParser(policy=default_policy).parsebytes(content)
        return str(headers.get("subject", ""))
    except Exception:  # a mangled header must not fail a message that is already kept
        return "<unreadable>"


def _accept_any_login(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    # Lets a mailer configured with credentials use the sink unchanged.
    return AuthResult(success=True)


class EmlFileHandler:
    """An aiosmtpd handler that keeps every message as a file."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """Keep the message and log its recipients and subject, never its body."""
        content = envelope.original_content or b""
        try:
            path = await asyncio.to_thread(write_message, self.directory, content)
        except OSError:
            logger.exception("could not keep a message for %s", ", ".join(envelope.rcpt_tos))
            return NOT_KEPT
        logger.info(
            "message to %s subject=%r kept as %s",
            ", ".join(envelope.rcpt_tos),
            _subject(content),
            path.name,
        )
        return ACCEPTED


class SmtpSink:
    """An SMTP sink running on the current event loop, for the local run and for tests.

    Use ``async with SmtpSink(host, 0, tmp_path) as sink:`` and read ``sink.port``
    to get a free port.
    """

    def __init__(self, host: str, port: int, directory: Path) -> None:
        self.host = host
        self.directory = directory
        self._requested_port = port
        self._handler = EmlFileHandler(directory)
        self._server: asyncio.Server | None = None
        self._sessions: weakref.WeakSet[SMTP] = weakref.WeakSet()

    @property
    def port(self) -> int:
        """The port it listens on, the one the OS chose when asked for port 0."""
        if self._server is None or not self._server.sockets:
            return self._requested_port
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def _new_session(self) -> SMTP:
        session = SMTP(
            self._handler,
            hostname="smtp-sink",
            enable_SMTPUTF8=True,
            authenticator=_accept_any_login,
            auth_require_tls=False,
        )
        self._sessions.add(session)
        return session

    async def start(self) -> None:
        """Create the mail directory and start listening."""
        await asyncio.to_thread(self.directory.mkdir, parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._new_session, self.host, self._requested_port)
        logger.info("SMTP sink on %s:%d keeping mail in %s", self.host, self.port, self.directory)

    async def stop(self) -> None:
        """Stop listening and drop open connections."""
        if self._server is None:
            return
        self._server.close()
        for session in list(self._sessions):
            if session.transport is not None:
                session.transport.close()
        await self._server.wait_closed()
        self._server = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()


async def run_sink(host: str, port: int, directory: Path) -> None:
    """Serve until SIGINT or SIGTERM, then stop cleanly.

    Args:
        host: The address to listen on.
        port: The TCP port to listen on.
        directory: Where to keep the messages.
    """
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        # Windows event loops cannot watch signals; Ctrl-C still ends the process there.
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stopping.set)
    async with SmtpSink(host, port, directory):
        await stopping.wait()
    logger.info("SMTP sink stopped")


def main() -> None:
    """Serve the SMTP sink on SMTP_SINK_HOST:SMTP_SINK_PORT, keeping mail in SMTP_SINK_DIR."""
    configure_logging()
    # aiosmtpd logs every connection at INFO; one line per message is enough here.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    asyncio.run(
        run_sink(
            env_str("SMTP_SINK_HOST", "127.0.0.1"),
            env_int("SMTP_SINK_PORT", 1025),
            Path(env_str("SMTP_SINK_DIR", "var/mail")),
        )
    )


if __name__ == "__main__":
    main()
