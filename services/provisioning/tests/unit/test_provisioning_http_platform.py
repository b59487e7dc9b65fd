"""HttpEsimPlatform against an httpx.MockTransport: what each sandbox answer becomes."""

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from provisioning.platforms import (
    BundleOrderRequest,
    BundleStatus,
    OrderNotFoundError,
    PlatformRejectedError,
    PlatformUnavailableError,
    UnknownIccidError,
)
from provisioning.platforms.http import HttpEsimPlatform

from sandboxes import esim as esim_sandbox

RENEWAL = "5b0f2a4e-8d8b-4a53-9f5c-3d9a7f1e2c11"
ORDER = BundleOrderRequest(
    idempotency_key=f"bundle:{RENEWAL}",
    iccid="8944500102198304826",
    bundle_code="JP-30D-10GB",
    data_mb=10240,
    validity_days=30,
    start="after_current",
    reference=RENEWAL,
)
ACCEPTED = {
    "order_id": "ord_4c2a",
    "iccid": ORDER.iccid,
    "bundle_code": "JP-30D-10GB",
    "status": "processing",
    "created_at": "2026-11-24T10:00:00.000Z",
}


def problem(status: int, detail: str = "d") -> httpx.Response:
    """An answer shaped like the sandbox's problem+json."""
    body = {"type": "about:blank", "title": "t", "status": status, "detail": detail}
    return httpx.Response(status, json=body, headers={"content-type": "application/problem+json"})


def bundle(**fields: Any) -> httpx.Response:
    body = {
        "order_id": "ord_4c2a",
        "iccid": ORDER.iccid,
        "bundle_code": "JP-30D-10GB",
        "data_mb": 10240,
    }
    return httpx.Response(200, json=body | fields)


def platform(answer: Callable[[httpx.Request], Any], timeout_s: float = 5.0) -> HttpEsimPlatform:
    return HttpEsimPlatform(
        "http://esim.test", timeout_s=timeout_s, transport=httpx.MockTransport(answer)
    )


async def test_an_order_sends_the_bundle_with_its_idempotency_key() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202, json=ACCEPTED)

    order = await platform(answer).order_bundle(ORDER)

    assert (order.order_id, order.status) == ("ord_4c2a", "processing")
    assert order.bundle == BundleStatus(order_id="ord_4c2a", status="processing")
    [request] = seen
    assert (request.method, request.url.path) == ("POST", "/v1/bundles")
    assert request.headers["Idempotency-Key"] == f"bundle:{RENEWAL}"
    assert json.loads(request.content) == {
        "iccid": ORDER.iccid,
        "bundle_code": "JP-30D-10GB",
        "data_mb": 10240,
        "validity_days": 30,
        "start": "after_current",
        "reference": RENEWAL,
    }


async def test_an_idempotent_replay_is_the_same_order(tmp_path: Path) -> None:
    cards = tmp_path / "cards.csv"
    cards.write_text(f"iccid,activation_code\n{ORDER.iccid},LPA:1$sm-dp.example$AAA\n")
    sandbox = esim_sandbox.create_app(esim_sandbox.EsimSandboxSettings(cards_csv=cards))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(sandbox), base_url="http://esim.test"
    ) as provider:
        through_sandbox = HttpEsimPlatform(
            "http://esim.test", transport=httpx.ASGITransport(sandbox)
        )
        first = await through_sandbox.order_bundle(ORDER)
        # A round after a crash between the call and the commit orders again under the same key.
        replayed = await through_sandbox.order_bundle(ORDER)
        ledger = await provider.get("/sandbox/ledger", params={"reference": ORDER.reference})
    assert replayed.order_id == first.order_id
    assert [order["order_id"] for order in ledger.json()["orders"]] == [first.order_id]


async def test_an_unknown_card_is_its_own_error() -> None:
    answer = problem(404, "No card 8944500102198304826.")
    with pytest.raises(UnknownIccidError, match="8944500102198304826"):
        await platform(lambda _: answer).order_bundle(ORDER)


@pytest.mark.parametrize(
    "answer",
    [
        problem(503, "flaky"),
        httpx.Response(500, text="<html>oops</html>"),
        httpx.Response(502),
        problem(429),
        problem(408),
        httpx.Response(202, text="not json"),
        httpx.Response(202, json=["not", "an", "object"]),
        httpx.Response(202, json={"status": "processing"}),
    ],
)
async def test_transient_order_answers_are_unavailable(answer: httpx.Response) -> None:
    with pytest.raises(PlatformUnavailableError):
        await platform(lambda _: answer).order_bundle(ORDER)


@pytest.mark.parametrize("status", [400, 401, 409, 422])
async def test_other_refusals_are_rejections(status: int) -> None:
    with pytest.raises(PlatformRejectedError) as raised:
        await platform(lambda _: problem(status, "same key, other body")).order_bundle(ORDER)
    assert raised.value.status == status
    assert "same key, other body" in str(raised.value)
    assert not isinstance(raised.value, OrderNotFoundError)


@pytest.mark.parametrize(
    "error",
    [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("x")],
)
async def test_network_errors_are_unavailable(error: Exception) -> None:
    def answer(_: httpx.Request) -> httpx.Response:
        raise error

    with pytest.raises(PlatformUnavailableError):
        await platform(answer).order_bundle(ORDER)
    with pytest.raises(PlatformUnavailableError):
        await platform(answer).bundle_status("ord_4c2a")


async def test_an_answer_later_than_the_timeout_is_unavailable() -> None:
    async def answer(_: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(202, json=ACCEPTED)

    with pytest.raises(PlatformUnavailableError, match=r"within 0\.05 s"):
        await platform(answer, timeout_s=0.05).order_bundle(ORDER)


async def test_an_active_bundle_carries_its_dates_in_utc() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return bundle(
            status="active",
            valid_from="2026-11-24T10:00:01.250Z",
            valid_until="2026-12-24T18:00:01.250+08:00",
        )

    status = await platform(answer).bundle_status("ord_4c2a")

    assert status == BundleStatus(
        order_id="ord_4c2a",
        status="active",
        valid_from=datetime(2026, 11, 24, 10, 0, 1, 250000, tzinfo=UTC),
        valid_until=datetime(2026, 12, 24, 10, 0, 1, 250000, tzinfo=UTC),
        data_mb=10240,
    )
    [request] = seen
    assert (request.method, request.url.path) == ("GET", "/v1/bundles/ord_4c2a")


async def test_the_order_id_is_escaped_in_the_path() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return bundle(status="processing")

    await platform(answer).bundle_status("ord/../x")
    assert seen[0].url.raw_path == b"/v1/bundles/ord%2F..%2Fx"


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"status": "processing"}, BundleStatus("ord_4c2a", "processing", data_mb=10240)),
        (
            {
                "status": "queued",
                "valid_from": "2026-12-20T00:00:00Z",
                "valid_until": "2027-01-19T00:00:00Z",
            },
            BundleStatus(
                "ord_4c2a",
                "queued",
                datetime(2026, 12, 20, tzinfo=UTC),
                datetime(2027, 1, 19, tzinfo=UTC),
                10240,
            ),
        ),
        (
            {"status": "failed", "failure_reason": "bundle_rejected"},
            BundleStatus("ord_4c2a", "failed", data_mb=10240, failure_reason="bundle_rejected"),
        ),
        (
            {"status": "active", "valid_from": "yesterday", "data_mb": "lots"},
            BundleStatus("ord_4c2a", "active"),
        ),
        (
            {"status": "active", "valid_from": "2026-11-24T10:00:00", "data_mb": True},
            BundleStatus("ord_4c2a", "active", datetime(2026, 11, 24, 10, tzinfo=UTC)),
        ),
    ],
)
async def test_bundle_answers(fields: dict[str, Any], expected: BundleStatus) -> None:
    def answer(_: httpx.Request) -> httpx.Response:
        response = bundle(**fields)
        if "data_mb" in fields:
            document = json.loads(response.content) | {"data_mb": fields["data_mb"]}
            return httpx.Response(200, json=document)
        return response

    assert await platform(answer).bundle_status("ord_4c2a") == expected


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (problem(404, "no such order"), OrderNotFoundError),
        (problem(503, "flaky"), PlatformUnavailableError),
        (httpx.Response(504), PlatformUnavailableError),
        (httpx.Response(200, text="??"), PlatformUnavailableError),
        (httpx.Response(200, json={"order_id": "ord_4c2a"}), PlatformUnavailableError),
        (problem(403, "forbidden"), PlatformRejectedError),
    ],
)
async def test_status_errors(answer: httpx.Response, error: type[Exception]) -> None:
    with pytest.raises(error):
        await platform(lambda _: answer).bundle_status("ord_4c2a")


async def test_a_cancel_posts_to_the_order_and_says_whether_it_will_run() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return bundle(status="revoked", cancelled=True, outcome="cancelled")

    cancellation = await platform(answer).cancel_bundle("ord/4c2a")

    [request] = seen
    assert (request.method, request.url.raw_path) == ("POST", b"/v1/bundles/ord%2F4c2a/cancel")
    assert cancellation.cancelled is True
    assert cancellation.bundle.status == "revoked"


async def test_a_cancel_refused_for_a_live_bundle_carries_its_dates() -> None:
    answer = bundle(
        status="active",
        cancelled=False,
        outcome="already_started",
        valid_from="2026-11-24T10:00:00Z",
        valid_until="2026-12-24T10:00:00Z",
    )

    cancellation = await platform(lambda _: answer).cancel_bundle("ord_4c2a")

    assert cancellation.cancelled is False
    assert cancellation.bundle.status == "active"
    assert cancellation.bundle.valid_from == datetime(2026, 11, 24, 10, tzinfo=UTC)


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (problem(404), OrderNotFoundError),
        (problem(503), PlatformUnavailableError),
        (problem(429), PlatformUnavailableError),
        (problem(403), PlatformRejectedError),
        (bundle(status="revoked"), PlatformUnavailableError),
        (bundle(status="revoked", cancelled="yes"), PlatformUnavailableError),
        (bundle(cancelled=True), PlatformUnavailableError),
        (httpx.Response(200, text="not json"), PlatformUnavailableError),
    ],
)
async def test_cancel_errors(answer: httpx.Response, error: type[Exception]) -> None:
    with pytest.raises(error):
        await platform(lambda _: answer).cancel_bundle("ord_4c2a")


async def test_the_sandboxs_answer_to_an_instant_order_is_the_whole_bundle(tmp_path: Any) -> None:
    """An order the platform settles as placed needs no status call to be activated."""
    from provisioning.activating import _complete
    from sandboxes.esim import EsimSandboxSettings, create_app

    cards = tmp_path / "cards.csv"
    cards.write_text(f"iccid,activation_code\n{ORDER.iccid},LPA:1$sm-dp.example$AAA\n")
    app = create_app(EsimSandboxSettings(cards_csv=cards, activation_delay=0))
    seen: list[str] = []

    class Counting(httpx.ASGITransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            seen.append(f"{request.method} {request.url.path}")
            return await super().handle_async_request(request)

    adapter = HttpEsimPlatform("http://esim.test", timeout_s=5.0, transport=Counting(app=app))
    order = await adapter.order_bundle(ORDER)
    assert order.status == "active" and _complete(order.bundle)
    assert order.bundle is not None and order.bundle.valid_from is not None
    assert seen == ["POST /v1/bundles"]
