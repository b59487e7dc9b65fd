"""The SMS port: what the notifier needs from anything that delivers text messages."""

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class OutgoingSms:
    """One text message to one E.164 number."""

    message_id: str
    to: str
    text: str

    def __repr__(self) -> str:
        # The text may hold a reset code; keep it out of reprs that end up in logs.
        return f"OutgoingSms(message_id={self.message_id!r}, to={self.to!r})"


class SmsDeliveryError(Exception):
    """The gateway did not take the message; the text says why, never what the message said."""


class TransientSmsError(SmsDeliveryError):
    """Worth trying again later: the gateway was unreachable, slow, throttled us, or failed."""


class PermanentSmsError(SmsDeliveryError):
    """Trying again will not help: the gateway refused the number or the message."""


class SmsGateway(Protocol):
    """Hands text messages to a provider that takes responsibility for delivering them."""

    async def send(self, sms: OutgoingSms) -> None:
        """Deliver one message to the gateway.

        Raises:
            TransientSmsError: a later try may succeed.
            PermanentSmsError: no later try will succeed.
        """
        ...
