"""Signed calls to billing: redelivered until acknowledged, each attempt signed anew if asked."""

import asyncio
import itertools

import httpx
from sandboxes.providers.delivery import Deliveries


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
