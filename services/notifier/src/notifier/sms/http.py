"""An SMS provider over HTTP, the way Twilio-style APIs take messages: a form POST per message."""

import httpx
from esim_core.outside.adapter import HttpAdapter, is_transient

from notifier.sms import OutgoingSms, PermanentSmsError, TransientSmsError


class HttpSmsGateway(HttpAdapter):
    """POSTs `To`, `From` and `Body` to `<base>/v1/messages`, keyed for idempotency.

    The notification's message id is the `Idempotency-Key`, so a resend after a crash between
    the provider's acceptance and our record is recognised by the provider, not sent twice.
    """

    system = "sms_gateway"
    called = "SMS gateway"
    unavailable = TransientSmsError

    def __init__(
        self,
        base_url: str,
        *,
        sender: str,
        username: str | None = None,
        password: str | None = None,
        timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(
            base_url,
            timeout_s=timeout_s,
            transport=transport,
            auth=(username, password) if username and password else None,
        )
        self._sender = sender

    async def send(self, sms: OutgoingSms) -> None:
        """Hand one message to the provider.

        Raises:
            TransientSmsError: unreachable, timed out, throttled or a provider fault.
            PermanentSmsError: the provider refused the message (4xx).
        """
        answer = await self.call(
            "POST",
            "/v1/messages",
            data={"To": sms.to, "From": self._sender, "Body": sms.text},
            headers={"Idempotency-Key": sms.message_id},
        )
        if answer.is_success:
            return
        reason = f"SMS gateway answered {answer.status_code}"
        if is_transient(answer.status_code):
            raise TransientSmsError(reason)
        raise PermanentSmsError(reason)
