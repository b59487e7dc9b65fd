"""The mail port: what the notifier needs from anything that delivers e-mail."""

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class OutgoingMail:
    """One e-mail, ready to hand to a relay: a plain-text body, and its HTML alternative."""

    message_id: str
    recipient: str
    subject: str
    body: str
    html: str | None = None

    def __repr__(self) -> str:
        # The body may be personal; keep it out of reprs that end up in logs and tracebacks.
        return f"OutgoingMail(message_id={self.message_id!r}, recipient={self.recipient!r})"


class MailDeliveryError(Exception):
    """The relay did not take the message; the text says why, never what the message said."""


class TransientMailError(MailDeliveryError):
    """Worth trying again later: the relay was unreachable, slow, or answered 4xx."""


class PermanentMailError(MailDeliveryError):
    """Trying again will not help: the relay refused the recipient or the message (5xx)."""


class Mailer(Protocol):
    """Hands e-mail to a relay that takes responsibility for delivering it."""

    async def send(self, mail: OutgoingMail) -> None:
        """Deliver one message to the relay.

        Raises:
            TransientMailError: a later try may succeed.
            PermanentMailError: no later try will succeed.
        """
        ...
