"""SmtpMailer: delivers e-mail to an SMTP relay (the local SMTP sink, or a real relay)."""

import asyncio
import socket
from email import charset as charsets
from email.header import Header
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.nonmultipart import MIMENonMultipart
from email.utils import formatdate, parseaddr

import aiosmtplib

from notifier.mail import OutgoingMail, PermanentMailError, TransientMailError

# UTF-8 text as quoted-printable: ASCII (ICCIDs, references, amounts) stays readable in the raw
# message, which base64 would hide, and the relay needs no 8BITMIME support.
_UTF8_QP = charsets.Charset("utf-8")
_UTF8_QP.body_encoding = charsets.QP


class SmtpMailer:
    """A `Mailer` that speaks SMTP, with an optional STARTTLS or implicit TLS and AUTH.

    Connections are kept and reused (at most `connections` open at once): a relay conversation
    costs a TCP handshake, EHLO, maybe TLS and AUTH, several times the work of one message. A
    connection idle longer than `idle_s` is closed; one idle for more than a second is checked
    with NOOP before it carries a message; one whose conversation failed is dropped.
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        mail_from: str,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = False,
        use_tls: bool = False,
        timeout_s: float = 10.0,
        connections: int = 4,
        idle_s: float = 30.0,
    ) -> None:
        self.host = host
        self.port = port
        self.mail_from = mail_from
        self._sender = parseaddr(mail_from)[1] or mail_from  # the envelope's MAIL FROM
        self._username = username
        self._password = password
        self._starttls = starttls
        self._use_tls = use_tls
        self._timeout_s = timeout_s
        self._idle_s = idle_s
        self._slots = asyncio.Semaphore(connections)
        self._idle: list[tuple[aiosmtplib.SMTP, float]] = []
        self._local_hostname: str | None = None

    def __repr__(self) -> str:
        return f"SmtpMailer(host={self.host!r}, port={self.port})"

    def compose(self, mail: OutgoingMail) -> Message:
        """The RFC 5322 message for `mail`, marked as automatic: UTF-8 plain text, or
        multipart/alternative with the plain text first and the HTML last (the part a reader
        that can show it prefers, RFC 2046)."""
        # The compat32 classes: the same message as EmailMessage's, at a quarter of the CPU
        # (EmailMessage parses every header it is given).
        text = _part("plain", mail.body)
        message: Message
        if mail.html is None:
            message = text
        else:
            html = _part("html", mail.html)
            for part in (text, html):
                del part["MIME-Version"]  # the message's header, not its parts'
            message = MIMEMultipart("alternative", _subparts=[text, html])
        message["From"] = self.mail_from
        message["To"] = mail.recipient
        # The Header itself, folded by the generator with the field's name counted: encoded
        # beforehand, a subject of two encoded words was folded before the first, and readers
        # took the fold for a leading space.
        message["Subject"] = Header(mail.subject, "utf-8", header_name="Subject")  # type: ignore[assignment]  # compat32 takes a Header
        message["Message-ID"] = mail.message_id
        message["Date"] = formatdate(usegmt=True)
        # RFC 3834: tells auto-responders not to answer.
        message["Auto-Submitted"] = "auto-generated"
        return message

    async def send(self, mail: OutgoingMail) -> None:
        """Hand one message to the relay.

        Raises:
            TransientMailError: the relay was unreachable, timed out, dropped the connection,
                or answered with a temporary (4xx) failure.
            PermanentMailError: the relay refused the recipient or the message for good (5xx).
        """
        message = self.compose(mail)
        async with self._slots:
            client: aiosmtplib.SMTP | None = None
            try:
                client = await self._connection()
                await client.send_message(message, sender=self._sender, recipients=[mail.recipient])
            except aiosmtplib.SMTPRecipientsRefused as error:
                await self._keep(client, reset=True)
                codes = [refused.code for refused in error.recipients]
                text = f"relay refused the recipient: {_describe(error)}"
                if codes and all(code >= 500 for code in codes):
                    raise PermanentMailError(text) from error
                raise TransientMailError(text) from error
            except (aiosmtplib.SMTPRecipientRefused, aiosmtplib.SMTPDataError) as error:
                await self._keep(client, reset=True)
                text = f"relay refused the message: {_describe(error)}"
                if error.code >= 500:
                    raise PermanentMailError(text) from error
                raise TransientMailError(text) from error
            except (aiosmtplib.SMTPException, OSError) as error:
                # Unreachable, timeouts, dropped connections, TLS or AUTH trouble, other
                # 4xx/5xx: about the relay or our configuration, not this message, so worth
                # another round, on a new connection.
                if client is not None:
                    client.close()
                raise TransientMailError(
                    f"SMTP relay {self.host}:{self.port} failed: {_describe(error)}"
                ) from error
            except BaseException:
                # Cancelled mid-conversation: the connection's state is unknown.
                if client is not None:
                    client.close()
                raise
            await self._keep(client)

    async def aclose(self) -> None:
        """Say QUIT on every kept connection."""
        idle, self._idle = self._idle, []
        for client, _ in idle:
            await _quit(client)

    async def _connection(self) -> aiosmtplib.SMTP:
        now = asyncio.get_running_loop().time()
        while self._idle:
            client, since = self._idle.pop()
            idle_for = now - since
            if not client.is_connected or idle_for > self._idle_s:
                await _quit(client)
                continue
            if idle_for > 1.0:
                try:
                    await client.noop()
                except (aiosmtplib.SMTPException, OSError):
                    client.close()
                    continue
            return client
        if self._local_hostname is None:
            # aiosmtplib would look the host's name up (socket.getfqdn) on every connection.
            self._local_hostname = await asyncio.to_thread(socket.getfqdn)
        client = aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            username=self._username,
            password=self._password,
            start_tls=self._starttls,
            use_tls=self._use_tls,
            timeout=self._timeout_s,
            local_hostname=self._local_hostname,
        )
        await client.connect()
        return client

    async def _keep(self, client: aiosmtplib.SMTP | None, *, reset: bool = False) -> None:
        """Put a connection whose conversation ended cleanly back for the next message.

        After a refusal (`reset`) the relay may still hold the transaction open: RSET ends it.
        """
        if client is None or not client.is_connected:
            return
        if reset:
            try:
                await client.rset()
            except (aiosmtplib.SMTPException, OSError):
                client.close()
                return
        self._idle.append((client, asyncio.get_running_loop().time()))


def _part(subtype: str, content: str) -> MIMENonMultipart:
    part = MIMENonMultipart("text", subtype, charset="utf-8")
    part.set_payload(content, _UTF8_QP)
    return part


async def _quit(client: aiosmtplib.SMTP) -> None:
    if not client.is_connected:
        return
    try:
        await client.quit()
    except (aiosmtplib.SMTPException, OSError):
        client.close()


def _describe(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return f"{type(error).__name__}: {text}"[:300]
