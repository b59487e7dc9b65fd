"""An SMS provider over HTTP, the way Twilio-style APIs take messages: a form POST per message."""

import httpx

from notifier.sms import OutgoingSms, PermanentSmsError, TransientSmsError

# Statuses a provider answers when a later try can succeed: timeouts, throttling, its own faults.
_TRANSIENT = {408, 425, 429, 500, 502, 503, 504}


class HttpSmsGateway:
    """POSTs `To`, `From` and `Body` to `<base>/v1/messages`, keyed for idempotency.

    The notification's message id is the `Idempotency-Key`, so a resend after a crash between
    the provider's acceptance and our record is recognised by the provider, not sent twice.
    """

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
        self._url = base_url.rstrip("/") + "/v1/messages"
        self._transport = transport
        self._sender = sender
        self._auth = (username, password) if username and password else None
        self._timeout = httpx.Timeout(timeout_s)

    async def send(self, sms: OutgoingSms) -> None:
        """Hand one message to the provider.

        Raises:
            TransientSmsError: unreachable, timed out, throttled or a provider fault.
            PermanentSmsError: the provider refused the message (4xx).
        """
        try:
            async with httpx.AsyncClient(
                timeout=self._timeout, auth=self._auth, transport=self._transport
            ) as client:
                answer = await client.post(
                    self._url,
                    data={"To": sms.to, "From": self._sender, "Body": sms.text},
                    headers={"Idempotency-Key": sms.message_id},
                )
        except httpx.HTTPError as error:
            raise TransientSmsError(f"SMS gateway unreachable: {type(error).__name__}") from error
        if answer.is_success:
            return
        reason = f"SMS gateway answered {answer.status_code}"
        if answer.status_code in _TRANSIENT:
            raise TransientSmsError(reason)
        raise PermanentSmsError(reason)
