"""SmtpMailer: delivers e-mail to an SMTP relay (the local SMTP sink, or a real relay)."""

from email.message import EmailMessage
from email.utils import formatdate

import aiosmtplib

from notifier.mail import OutgoingMail, PermanentMailError, TransientMailError


class SmtpMailer:
    """A `Mailer` that speaks SMTP, with an optional STARTTLS or implicit TLS and AUTH."""

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
    ) -> None:
        self.host = host
        self.port = port
        self.mail_from = mail_from
        self._username = username
        self._password = password
        self._starttls = starttls
        self._use_tls = use_tls
        self._timeout_s = timeout_s

    def __repr__(self) -> str:
        return f"SmtpMailer(host={self.host!r}, port={self.port})"

    def compose(self, mail: OutgoingMail) -> EmailMessage:
        """The RFC 5322 message for `mail`: plain UTF-8 text, marked as automatic."""
        message = EmailMessage()
        message["From"] = self.mail_from
        message["To"] = mail.recipient
        message["Subject"] = mail.subject
        message["Message-ID"] = mail.message_id
        message["Date"] = formatdate(usegmt=True)
        # RFC 3834: tells auto-responders not to answer.
        message["Auto-Submitted"] = "auto-generated"
        # Quoted-printable keeps ASCII (ICCIDs, references, amounts) readable in the raw message,
        # which base64 would hide, and needs no 8BITMIME support from the relay.
        message.set_content(mail.body, subtype="plain", charset="utf-8", cte="quoted-printable")
        return message

    async def send(self, mail: OutgoingMail) -> None:
        """Hand one message to the relay.

        Raises:
            TransientMailError: the relay was unreachable, timed out, dropped the connection,
                or answered with a temporary (4xx) failure.
            PermanentMailError: the relay refused the recipient or the message for good (5xx).
        """
        try:
            await aiosmtplib.send(
                self.compose(mail),
                hostname=self.host,
                port=self.port,
                username=self._username,
                password=self._password,
                start_tls=self._starttls,
                use_tls=self._use_tls,
                timeout=self._timeout_s,
            )
        except aiosmtplib.SMTPRecipientsRefused as error:
            codes = [refused.code for refused in error.recipients]
            text = f"relay refused the recipient: {_describe(error)}"
            if codes and all(code >= 500 for code in codes):
                raise PermanentMailError(text) from error
            raise TransientMailError(text) from error
        except (aiosmtplib.SMTPRecipientRefused, aiosmtplib.SMTPDataError) as error:
            text = f"relay refused the message: {_describe(error)}"
            if error.code >= 500:
                raise PermanentMailError(text) from error
            raise TransientMailError(text) from error
        except (aiosmtplib.SMTPException, OSError) as error:
            # Unreachable, timeouts, dropped connections, TLS or AUTH trouble, other 4xx/5xx:
            # about the relay or our configuration, not this message, so worth another round.
            raise TransientMailError(
                f"SMTP relay {self.host}:{self.port} failed: {_describe(error)}"
            ) from error


def _describe(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return f"{type(error).__name__}: {text}"[:300]
