"""Signed calls to billing: redelivered until acknowledged, each attempt signed anew if asked,
and replayed as last sent on request."""

import asyncio
import itertools

import httpx
import pytest
from sandboxes.providers.delivery import Deliveries, UnknownDeliveryError


async def test_a_call_is_redelivered_until_acknowledged_and_each_attempt_is_signed_anew() -> None:
    seen: list[str] = []
    answers = iter([500, 503, 200])

    def receiver(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Signature"])
        return httpx.Response(next(answers))

    ticks = itertools.count()
    deliveries = Deliveries()
    deliveries._client = httpx.AsyncClient(transport=httpx.MockTransport(receiver))
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
    sent: list[httpx.Request] = []
    deliveries = Deliveries()

    def receiver(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200)

    deliveries._client = httpx.AsyncClient(transport=httpx.MockTransport(receiver))
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

    def receiver(request: httpx.Request) -> httpx.Response:
        seen.append((request.headers["Signature"], request.content))
        return httpx.Response(200, text="success")

    ticks = itertools.count()
    deliveries = Deliveries()
    deliveries._client = httpx.AsyncClient(transport=httpx.MockTransport(receiver))
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

    async def receiver(request: httpx.Request) -> httpx.Response:
        nonlocal now, most
        now += 1
        most = max(most, now)
        await asyncio.sleep(0.01)
        now -= 1
        arrived.append(request.headers["Id"])
        return httpx.Response(200)

    deliveries = Deliveries(in_flight=3)
    deliveries._client = httpx.AsyncClient(transport=httpx.MockTransport(receiver))
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
