"""The SMS gateway sandbox takes messages as an HTTP SMS provider does and lists them by number."""

from collections.abc import AsyncIterator

import httpx
import pytest
from sandboxes.sms import create_app


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://sms") as http:
        yield http


async def test_messages_are_listed_by_number(client: httpx.AsyncClient) -> None:
    for to, text in (("+8613800138000", "code 123456"), ("+447700900123", "hello")):
        sent = await client.post("/v1/messages", data={"To": to, "From": "eSIM", "Body": text})
        assert sent.status_code == 201, sent.text
        assert sent.json()["status"] == "queued"
    listed = (await client.get("/sandbox/messages", params={"to": "+8613800138000"})).json()
    assert [(m["to"], m["text"]) for m in listed] == [("+8613800138000", "code 123456")]
    assert listed[0]["received_at"].endswith("Z")
    assert len((await client.get("/sandbox/messages")).json()) == 2


async def test_an_idempotency_key_sends_once(client: httpx.AsyncClient) -> None:
    form = {"To": "+8613800138000", "From": "eSIM", "Body": "once"}
    first = await client.post("/v1/messages", data=form, headers={"Idempotency-Key": "k1"})
    again = await client.post("/v1/messages", data=form, headers={"Idempotency-Key": "k1"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["sid"] == again.json()["sid"]
    assert len((await client.get("/sandbox/messages")).json()) == 1


async def test_a_number_that_is_not_e164_is_refused(client: httpx.AsyncClient) -> None:
    bad = await client.post("/v1/messages", data={"To": "0138", "From": "eSIM", "Body": "x"})
    assert bad.status_code == 400
    assert bad.headers["content-type"] == "application/problem+json"
