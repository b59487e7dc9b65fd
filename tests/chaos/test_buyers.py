"""The chaos harness's HTTP calls hold up as a client of a busy platform must: the buyers read
their saga as a website does behind a load balancer (a replica that is down or answers 5xx is
passed over for the next), and a fault setting sent on a connection the sandbox had closed is
sent again."""

import asyncio
import json
import random
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.chaos.harness import Buyers, _set_faults
from tests.chaos.verdict import APPROVE
from tests.support.load import Card

ICCID = "8944500100000000335"
PAGE = "http://payment.test/paypal/checkout/ORDER1"


def saga_waiting_for_the_buyer() -> dict[str, object]:
    expires = datetime.now(UTC) + timedelta(seconds=60)
    return {
        "status": "PAYMENT_ACTION_REQUIRED",
        "payment_action": {"url": PAGE, "expires_at": expires.isoformat()},
    }


def renewal_starting_on(replica: int, replicas: int) -> str:
    while True:
        renewal_id = str(uuid.uuid4())
        if uuid.UUID(renewal_id).int % replicas == replica:
            return renewal_id


def test_a_buyer_whose_replica_is_down_reads_the_other_and_answers_the_page() -> None:
    """About 2 s: a buyer asks once a second."""
    asked: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.host)
        if request.url.host == "accounts-1.test":
            raise httpx.ConnectError("connection refused", request=request)
        if request.url.host == "accounts-2.test":
            return httpx.Response(200, json=saga_waiting_for_the_buyer())
        if request.method == "GET":
            return httpx.Response(200, text="the provider's page")
        return httpx.Response(303, headers={"location": "http://web.test/renewals/return"})

    buyers = Buyers(
        ["http://accounts-1.test", "http://accounts-2.test"],
        {ICCID: Card(ICCID, "user", "token", "buyer@example.com")},
        random.Random(1),
    )
    renewal_id = renewal_starting_on(0, 2)  # on the replica that is down
    buyers._meant[renewal_id] = APPROVE

    async def buy() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
            await buyers._buy(client, renewal_id, ICCID, until=time.monotonic() + 30)

    asyncio.run(buy())

    assert asked == ["accounts-1.test", "accounts-2.test", "payment.test", "payment.test"]
    assert buyers.approvals() == {renewal_id: APPROVE}


def test_a_fault_setting_whose_connection_was_closed_is_sent_again() -> None:
    sent: list[dict[str, str]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        if len(sent) == 2:  # the sandbox had closed the kept-alive connection
            raise httpx.ReadError("connection closed", request=request)
        return httpx.Response(200, json={})

    faults = {"8944500100000000001": "flaky", "8944500100000000002": "flaky"}
    asyncio.run(_set_faults("http://esim.test", faults, transport=httpx.MockTransport(answer)))

    assert [one["iccid"] for one in sent] == [
        "8944500100000000001",
        "8944500100000000002",
        "8944500100000000002",
    ]


def test_a_sandbox_that_keeps_failing_fails_the_setting() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadError("connection closed", request=request)

    with pytest.raises(httpx.ReadError):
        asyncio.run(
            _set_faults(
                "http://esim.test",
                {"8944500100000000001": "flaky"},
                transport=httpx.MockTransport(answer),
            )
        )
