"""The HTTP SMS adapter: what it sends, and which answers are worth another try."""

import httpx
import pytest
from notifier.sms import OutgoingSms, PermanentSmsError, TransientSmsError
from notifier.sms.http import HttpSmsGateway
from prometheus_client import REGISTRY
from sandboxes.sms import create_app

SMS = OutgoingSms(message_id="n-1", to="+8613800138000", text="code 482913")


async def test_it_posts_the_form_with_an_idempotency_key_to_the_sandbox() -> None:
    app = create_app()
    gateway = HttpSmsGateway(
        "http://sms",
        sender="eSIM",
        username="AC1",
        password="t",
        transport=httpx.ASGITransport(app),
    )
    await gateway.send(SMS)
    await gateway.send(SMS)  # a resend after a crash: the provider answers the first again
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://sms") as c:
        listed = (await c.get("/sandbox/messages", params={"to": SMS.to})).json()
    assert [(m["to"], m["text"], m["sender"]) for m in listed] == [(SMS.to, SMS.text, "eSIM")]


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (503, TransientSmsError),
        (429, TransientSmsError),
        (400, PermanentSmsError),
        (401, PermanentSmsError),
    ],
)
async def test_answers_map_to_transient_or_permanent(status: int, error: type[Exception]) -> None:
    transport = httpx.MockTransport(lambda _: httpx.Response(status))
    gateway = HttpSmsGateway("http://sms", sender="eSIM", transport=transport)
    with pytest.raises(error) as raised:
        await gateway.send(SMS)
    assert "482913" not in str(raised.value)


async def test_an_unreachable_gateway_is_transient() -> None:
    def refuse(_: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    gateway = HttpSmsGateway("http://sms", sender="eSIM", transport=httpx.MockTransport(refuse))
    with pytest.raises(TransientSmsError):
        await gateway.send(SMS)


async def test_each_message_is_timed_as_a_call_to_the_sms_gateway() -> None:
    labels = {"system": "sms_gateway", "operation": "POST /v1/messages", "outcome": "2xx"}
    before = REGISTRY.get_sample_value("esim_outside_call_seconds_count", labels) or 0.0
    gateway = HttpSmsGateway(
        "http://sms", sender="eSIM", transport=httpx.MockTransport(lambda _: httpx.Response(201))
    )
    await gateway.send(SMS)
    assert REGISTRY.get_sample_value("esim_outside_call_seconds_count", labels) == before + 1
