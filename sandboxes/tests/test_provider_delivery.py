"""Signed calls to billing: redelivered until acknowledged, each attempt signed anew if asked,
and replayed as last sent on request."""

import asyncio
import itertools
import socket

import pytest
from aiohttp import web
from sandboxes.outbound import AiohttpPost, Reply, Unreachable
from sandboxes.providers.delivery import Deliveries, UnknownDeliveryError


async def test_a_call_is_redelivered_until_acknowledged_and_each_attempt_is_signed_anew() -> None:
    seen: list[str] = []
    answers = iter([500, 503, 200])

    async def receiver(url: str, body: bytes, headers: dict[str, str]) -> Reply:
        seen.append(headers["Signature"])
        return Reply(next(answers), b"")

    ticks = itertools.count()
    deliveries = Deliveries(post=receiver)
    record = deliveries.send(
        id="evt_1",
        provider="test",
        url="http://billing.test/webhooks/test",
        event="thing.happened",
        body=b"{}",
        headers={"Signature": "first", "Content-Type": "application/json"},
        waits=[0.01, 0.01, 0.01],
        reference="r-1",
        resign=lambda body: {"Signature": f"t={next(ticks)}"},
    )
    for _ in range(3000):
        if record.delivered:
            break
        await asyncio.sleep(0.01)
    await deliveries.close()

    assert record.delivered
    assert [attempt.status for attempt in record.attempts] == [500, 503, 200]
    assert seen == ["t=0", "t=1", "t=2"]


async def test_a_call_for_a_held_reference_is_not_sent() -> None:
    sent: list[str] = []

    async def receiver(url: str, body: bytes, headers: dict[str, str]) -> Reply:
        sent.append(url)
        return Reply(200, b"")

    deliveries = Deliveries(post=receiver)
    deliveries.held.add("r-lost")
    record = deliveries.send(
        id="evt_2",
        provider="test",
        url="http://billing.test/webhooks/test",
        event="thing.happened",
        body=b"{}",
        headers={},
        waits=[0.01],
        reference="r-lost",
    )
    await asyncio.sleep(0.1)
    await deliveries.close()

    assert sent == [] and not record.delivered and record.attempts == []


async def test_a_replay_sends_the_call_again_exactly_as_last_sent_and_keeps_the_schedule() -> None:
    seen: list[tuple[str, bytes]] = []

    async def receiver(url: str, body: bytes, headers: dict[str, str]) -> Reply:
        seen.append((headers["Signature"], body))
        return Reply(200, b"success")

    ticks = itertools.count()
    deliveries = Deliveries(post=receiver)
    record = deliveries.send(
        id="evt_3",
        provider="test",
        url="http://billing.test/webhooks/test",
        event="thing.happened",
        body=b'{"n": 1}',
        headers={"Signature": "first"},
        waits=[0.01],
        reference="r-3",
        resign=lambda body: {"Signature": f"t={next(ticks)}"},
    )
    for _ in range(200):
        if record.delivered:
            break
        await asyncio.sleep(0.01)

    replayed = await deliveries.replay("evt_3")
    await deliveries.close()

    assert (replayed.status, replayed.body) == (200, "success")
    assert seen == [("t=0", b'{"n": 1}'), ("t=0", b'{"n": 1}')]
    assert [a.status for a in record.attempts] == [200]
    assert [a.status for a in record.replays] == [200]


async def test_replaying_a_call_never_sent_is_an_unknown_delivery() -> None:
    deliveries = Deliveries()

    with pytest.raises(UnknownDeliveryError):
        await deliveries.replay("evt_never")


async def test_at_most_in_flight_calls_are_sent_at_once_and_every_one_arrives() -> None:
    now = 0
    most = 0
    arrived: list[str] = []

    async def receiver(url: str, body: bytes, headers: dict[str, str]) -> Reply:
        nonlocal now, most
        now += 1
        most = max(most, now)
        await asyncio.sleep(0.01)
        now -= 1
        arrived.append(headers["Id"])
        return Reply(200, b"")

    deliveries = Deliveries(in_flight=3, post=receiver)
    for number in range(20):
        deliveries.send(
            id=f"evt_{number}",
            provider="test",
            url="http://billing.test/webhooks/test",
            event="thing.happened",
            body=b"{}",
            headers={"Id": str(number)},
            waits=[],
        )
    for _ in range(3000):
        if len(arrived) == 20:
            break
        await asyncio.sleep(0.01)
    await deliveries.close()

    assert sorted(arrived, key=int) == [str(n) for n in range(20)]
    assert most == 3


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def test_the_real_post_sends_body_and_headers_and_says_when_nothing_answers() -> None:
    got: list[tuple[str, str, bytes]] = []

    async def billing(request: web.Request) -> web.Response:
        got.append((request.path, request.headers["Stripe-Signature"], await request.read()))
        return web.Response(status=202, text="success")

    app = web.Application()
    app.router.add_post("/webhooks/stripe", billing)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    post = AiohttpPost(timeout_s=5)
    try:
        url = f"http://127.0.0.1:{port}/webhooks/stripe"
        reply = await post(url, b'{"id":"evt_1"}', {"Stripe-Signature": "t=1,v1=x"})
        assert (reply.status, reply.text) == (202, "success")
        assert got == [("/webhooks/stripe", "t=1,v1=x", b'{"id":"evt_1"}')]
    finally:
        await runner.cleanup()
    with pytest.raises(Unreachable):  # the server is gone: refused
        await post(f"http://127.0.0.1:{port}/webhooks/stripe", b"{}", {})
    await post.close()
