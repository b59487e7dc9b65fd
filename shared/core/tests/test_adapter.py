"""HttpAdapter: every outside call bounded, timed and classified the same way."""

import asyncio

import httpx
import pytest
from esim_core.outside.adapter import HttpAdapter, is_transient, problem
from esim_core.outside.errors import RejectedError
from prometheus_client import REGISTRY
from pydantic import BaseModel


class UnavailableError(Exception):
    """The test system's transient error."""


class Reply(BaseModel):
    id: str


class ShopRejectedError(RejectedError):
    """The test system's refusal."""


class Shop(HttpAdapter):
    system = "test_shop"
    called = "shop"
    unavailable = UnavailableError
    rejected = ShopRejectedError
    default_headers = {"User-Agent": "esim-test", "Accept": "application/json"}


def calls(outcome: str) -> float:
    labels = {"system": "test_shop", "operation": "GET /v1/things", "outcome": outcome}
    return REGISTRY.get_sample_value("esim_outside_call_seconds_count", labels) or 0.0


async def test_every_call_is_timed_under_its_system_even_on_a_test_transport() -> None:
    before = calls("2xx")
    shop = Shop("http://shop", transport=httpx.MockTransport(lambda _: httpx.Response(200)))
    await shop.call("GET", "/v1/things/1")
    await shop.call("GET", "/v1/things/2")
    assert calls("2xx") == before + 2


async def test_a_call_that_overstays_its_bound_is_unavailable() -> None:
    async def slow(_: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200)

    shop = Shop("http://shop", timeout_s=0.05, transport=httpx.MockTransport(slow))
    with pytest.raises(UnavailableError, match=r"no answer from the shop within 0\.05 s"):
        await shop.call("GET", "/v1/things")


async def test_an_unreachable_system_is_unavailable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    shop = Shop("http://shop", transport=httpx.MockTransport(refuse))
    with pytest.raises(UnavailableError, match=r"shop unreachable \(ConnectError: refused\)"):
        await shop.call("GET", "/v1/things")


@pytest.mark.parametrize(
    ("status", "transient"),
    [
        *[(500, True), (501, True), (503, True), (408, True), (425, True), (429, True)],
        *[(400, False), (401, False), (404, False), (409, False), (422, False)],
    ],
)
def test_faults_timeouts_and_throttling_are_transient_refusals_are_not(
    status: int, transient: bool
) -> None:
    assert is_transient(status) is transient


def test_a_problem_is_read_from_an_error_object_or_a_problem_document() -> None:
    nested = httpx.Response(402, json={"error": {"code": "card_declined", "retryable": True}})
    rfc = httpx.Response(409, json={"type": "about:blank", "title": "Conflict", "detail": "key"})
    garbled = httpx.Response(502, content=b"<html>bad gateway</html>")
    assert problem(nested).model_dump() == {
        "code": "card_declined",
        "retryable": True,
        "message": "Payment Required",
    }
    assert problem(rfc).text == "key"
    assert problem(garbled).text == "Bad Gateway"


async def test_a_reply_that_is_not_the_model_is_unavailable_saying_what_it_lacks() -> None:
    shop = Shop("http://shop", transport=httpx.MockTransport(lambda _: httpx.Response(200)))
    assert shop.reply(httpx.Response(200, json={"id": "t-1"}), Reply, "no id") == Reply(id="t-1")
    with pytest.raises(UnavailableError, match="HTTP 200: no id"):
        shop.reply(httpx.Response(200, json={"name": "t"}), Reply, "no id")
    with pytest.raises(UnavailableError, match="HTTP 200: an answer that is not JSON"):
        shop.reply(httpx.Response(200, content=b"ok"), Reply, "no id")
    with pytest.raises(UnavailableError, match="HTTP 200: an answer that is not an object"):
        shop.reply(httpx.Response(200, json=["t-1"]), Reply, "no id")


async def test_the_class_headers_go_with_every_call_and_the_given_ones_win() -> None:
    seen: list[httpx.Headers] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers)
        return httpx.Response(204)

    shop = Shop(
        "http://shop", transport=httpx.MockTransport(record), headers={"User-Agent": "esim-other"}
    )
    await shop.call("GET", "/v1/things")
    assert (seen[0]["User-Agent"], seen[0]["Accept"]) == ("esim-other", "application/json")


@pytest.mark.parametrize(
    ("status", "error", "text"),
    [
        (503, UnavailableError, "HTTP 503: busy"),
        (429, UnavailableError, "HTTP 429: busy"),
        (409, ShopRejectedError, "HTTP 409: busy"),
    ],
)
def test_a_refusal_is_the_port_s_transient_error_or_its_rejection_with_the_status(
    status: int, error: type[Exception], text: str
) -> None:
    shop = Shop("http://shop", transport=httpx.MockTransport(lambda _: httpx.Response(200)))
    refusal = shop.refused(httpx.Response(status), "busy")
    assert type(refusal) is error
    assert str(refusal) == text
    assert not isinstance(refusal, ShopRejectedError) or refusal.status == status
