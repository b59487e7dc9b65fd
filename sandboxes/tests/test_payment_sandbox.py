"""Tests of the payment gateway sandbox through its HTTP API."""

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sandboxes.payment import PaymentSandboxSettings, create_app

SLOW_DELAY = 0.2


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(PaymentSandboxSettings(slow_delay=SLOW_DELAY))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://payment") as client:
        yield client


def charge_body(token: str = "card_ok", **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "amount": 9900,
        "currency": "CNY",
        "method": "card",
        "token": token,
        "reference": "renewal-1",
        "description": "JP 10 GB monthly",
    }
    return body | overrides


async def charge(
    client: httpx.AsyncClient, key: str, body: dict[str, Any] | None = None
) -> httpx.Response:
    return await client.post(
        "/v1/charges", json=body or charge_body(), headers={"Idempotency-Key": key}
    )


async def captures(client: httpx.AsyncClient, reference: str | None = None) -> list[Any]:
    params = {"reference": reference} if reference else {}
    response = await client.get("/sandbox/ledger", params=params)
    assert response.status_code == 200
    result: list[Any] = response.json()["captures"]
    return result


def assert_problem(response: httpx.Response, status: int, code: str | None = None) -> None:
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["status"] == status
    assert {"type", "title", "detail"} <= problem.keys()
    if code is not None:
        assert problem["error"]["code"] == code


@pytest.mark.parametrize("method", ["card", "paypal", "alipay"])
async def test_ok_token_captures_for_every_method(client: httpx.AsyncClient, method: str) -> None:
    response = await charge(client, "k1", charge_body(f"{method}_ok", method=method))

    assert response.status_code == 201
    body = response.json()
    assert body["id"].startswith("ch_")
    assert body["status"] == "captured"
    assert (body["amount"], body["currency"], body["method"]) == (9900, "CNY", method)
    assert body["reference"] == "renewal-1"
    assert body["created_at"].endswith("Z")
    assert [c["id"] for c in await captures(client)] == [body["id"]]


@pytest.mark.parametrize(
    ("token", "code", "retryable"),
    [
        ("card_declined", "declined", False),
        ("paypal_insufficient", "insufficient_funds", True),
        ("alipay_expired", "expired_method", False),
    ],
)
async def test_declines_answer_402_and_capture_nothing(
    client: httpx.AsyncClient, token: str, code: str, retryable: bool
) -> None:
    for _ in range(3):
        response = await charge(client, "k1", charge_body(token))

        assert_problem(response, 402, code)
        assert response.json()["error"]["retryable"] is retryable
    assert await captures(client) == []


async def test_unknown_token_suffix_is_invalid_token(client: httpx.AsyncClient) -> None:
    response = await charge(client, "k1", charge_body("card_whatever"))

    assert_problem(response, 422, "invalid_token")
    assert response.json()["error"]["retryable"] is False


async def test_flaky_fails_twice_per_key_then_captures_once(client: httpx.AsyncClient) -> None:
    statuses = [
        (await charge(client, "k1", charge_body("card_flaky"))).status_code for _ in range(4)
    ]
    other_key = await charge(client, "k2", charge_body("card_flaky"))

    assert statuses == [503, 503, 201, 200]
    assert_problem(other_key, 503, "unavailable")
    assert other_key.json()["error"]["retryable"] is True
    assert len(await captures(client)) == 1


async def test_slow_token_captures_after_the_delay(client: httpx.AsyncClient) -> None:
    started = time.monotonic()
    response = await charge(client, "k1", charge_body("card_slow"))

    assert response.status_code == 201
    assert time.monotonic() - started >= SLOW_DELAY
    assert PaymentSandboxSettings().slow_delay == 2.0


async def test_same_key_and_body_three_times_captures_once(client: httpx.AsyncClient) -> None:
    responses = [await charge(client, "k1") for _ in range(3)]

    assert [r.status_code for r in responses] == [201, 200, 200]
    assert [r.headers.get("Idempotent-Replayed") for r in responses] == [None, "true", "true"]
    assert len({r.json()["id"] for r in responses}) == 1
    assert responses[1].json() == responses[0].json()
    assert len(await captures(client)) == 1


async def test_concurrent_same_key_requests_capture_once(client: httpx.AsyncClient) -> None:
    responses = await asyncio.gather(
        *(charge(client, "k1", charge_body("card_slow")) for _ in range(3))
    )

    assert sorted(r.status_code for r in responses) == [200, 200, 201]
    assert len(await captures(client)) == 1


async def test_same_key_with_another_body_is_a_conflict(client: httpx.AsyncClient) -> None:
    await charge(client, "k1")

    response = await charge(client, "k1", charge_body(amount=100))

    assert_problem(response, 409, "idempotency_conflict")
    assert len(await captures(client)) == 1


async def test_charge_without_idempotency_key_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/charges", json=charge_body())

    assert_problem(response, 400, "missing_idempotency_key")
    assert await captures(client) == []


@pytest.mark.parametrize(
    "body",
    [
        charge_body(amount=0),
        charge_body(amount="9900"),
        charge_body(currency="yuan"),
        charge_body(method="cash"),
        {"amount": 1},
    ],
)
async def test_malformed_charge_is_a_422_problem_without_the_token(
    client: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    response = await charge(client, "k1", body)

    assert_problem(response, 422, "invalid_request")
    assert response.json()["errors"]
    assert "card_ok" not in response.text


async def test_non_json_body_is_a_422_problem(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/charges",
        content=b"{not json",
        headers={"Idempotency-Key": "k1", "Content-Type": "application/json"},
    )

    assert_problem(response, 422)


async def test_get_charge(client: httpx.AsyncClient) -> None:
    created = (await charge(client, "k1")).json()

    found = await client.get(f"/v1/charges/{created['id']}")
    missing = await client.get("/v1/charges/ch_nope")

    assert found.status_code == 200
    assert found.json() == created
    assert_problem(missing, 404)


async def refund(client: httpx.AsyncClient, key: str, **body: Any) -> httpx.Response:
    return await client.post("/v1/refunds", json=body, headers={"Idempotency-Key": key})


async def test_refund_defaults_to_the_full_amount(client: httpx.AsyncClient) -> None:
    charge_id = (await charge(client, "k1")).json()["id"]

    response = await refund(client, "r1", charge_id=charge_id, reason="activation_failed")

    assert response.status_code == 201
    body = response.json()
    assert body["id"].startswith("re_")
    assert (body["charge_id"], body["amount"], body["currency"]) == (charge_id, 9900, "CNY")
    assert body["status"] == "refunded"
    ledger = (await client.get("/sandbox/ledger")).json()
    assert [r["id"] for r in ledger["refunds"]] == [body["id"]]


async def test_refund_replay_refunds_once(client: httpx.AsyncClient) -> None:
    charge_id = (await charge(client, "k1")).json()["id"]

    responses = [await refund(client, "r1", charge_id=charge_id) for _ in range(3)]
    conflicting = await refund(client, "r1", charge_id=charge_id, amount=1)

    assert [r.status_code for r in responses] == [201, 200, 200]
    assert responses[2].headers["Idempotent-Replayed"] == "true"
    assert len({r.json()["id"] for r in responses}) == 1
    assert_problem(conflicting, 409, "idempotency_conflict")
    assert len((await client.get("/sandbox/ledger")).json()["refunds"]) == 1


async def test_refunds_cannot_exceed_the_capture(client: httpx.AsyncClient) -> None:
    charge_id = (await charge(client, "k1")).json()["id"]

    partial = await refund(client, "r1", charge_id=charge_id, amount=9000)
    too_much = await refund(client, "r2", charge_id=charge_id, amount=901)
    rest = await refund(client, "r3", charge_id=charge_id)
    nothing_left = await refund(client, "r4", charge_id=charge_id)

    assert partial.status_code == 201
    assert_problem(too_much, 409, "refund_exceeds_capture")
    assert (rest.status_code, rest.json()["amount"]) == (201, 900)
    assert_problem(nothing_left, 409, "refund_exceeds_capture")


async def test_refund_of_unknown_charge_is_404(client: httpx.AsyncClient) -> None:
    assert_problem(await refund(client, "r1", charge_id="ch_nope"), 404, "charge_not_found")


async def test_refund_without_idempotency_key_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/refunds", json={"charge_id": "ch_x"})

    assert_problem(response, 400, "missing_idempotency_key")


async def test_ledger_filters_by_reference(client: httpx.AsyncClient) -> None:
    first = (await charge(client, "k1", charge_body(reference="renewal-1"))).json()
    await charge(client, "k2", charge_body(reference="renewal-2"))
    await refund(client, "r1", charge_id=first["id"])

    ledger = (await client.get("/sandbox/ledger", params={"reference": "renewal-1"})).json()

    assert [c["id"] for c in ledger["captures"]] == [first["id"]]
    assert [r["charge_id"] for r in ledger["refunds"]] == [first["id"]]
    assert len(await captures(client)) == 2


async def test_reset_forgets_everything(client: httpx.AsyncClient) -> None:
    await charge(client, "k1")

    assert (await client.post("/sandbox/reset")).status_code == 204
    again = await charge(client, "k1", charge_body(amount=1))

    assert again.status_code == 201
    assert len(await captures(client)) == 1


async def test_tokens_never_reach_the_logs(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    tokens = ["tok-4242_ok", "tok-4242_declined", "tok-4242_flaky", "tok-4242_bad"]

    for number, token in enumerate(tokens):
        await charge(client, f"k{number}", charge_body(token))

    assert caplog.records
    assert "tok-4242" not in caplog.text


async def test_unknown_route_is_a_problem(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/v1/nothing"), 404)


async def test_a_slow_call_is_listed_while_it_is_held_and_lands_after() -> None:
    app = create_app(PaymentSandboxSettings(slow_delay=0.5))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://payment") as client:
        paying = asyncio.create_task(
            client.post(
                "/stripe/v1/payment_intents",
                data={
                    "amount": "900",
                    "currency": "usd",
                    "payment_method": "pm_slow",
                    "confirm": "true",
                    "capture_method": "manual",
                    "metadata[reference]": "renewal-slow",
                },
                headers={"Authorization": "Bearer sk_test_sandbox", "Idempotency-Key": "k-slow"},
            )
        )
        held: list[Any] = []
        for _ in range(100):
            held = (
                await client.get("/sandbox/slow-calls", params={"reference": "renewal-slow"})
            ).json()
            if held:
                break
            await asyncio.sleep(0.01)
        ledger_meanwhile = (
            await client.get("/sandbox/ledger", params={"reference": "renewal-slow"})
        ).json()
        answer = await paying
        after = (await client.get("/sandbox/slow-calls")).json()
        ledger_after = (
            await client.get("/sandbox/ledger", params={"reference": "renewal-slow"})
        ).json()

    assert [(c["provider"], c["call"], c["reference"]) for c in held] == [
        ("stripe", "pay", "renewal-slow")
    ]
    assert held[0]["since"].endswith(("Z", "+00:00"))
    assert ledger_meanwhile["authorizations"] == []
    assert answer.status_code == 200, answer.text
    assert after == []
    assert len(ledger_after["authorizations"]) == 1


async def test_replaying_a_delivery_the_sandbox_never_sent_is_404(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/sandbox/deliveries/evt_unknown/replay")

    assert_problem(response, 404, "delivery_not_found")
