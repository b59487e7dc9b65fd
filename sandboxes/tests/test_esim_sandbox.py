"""Tests of the eSIM platform sandbox through its HTTP API."""

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from esim_testkit import FakeClock, iccid
from sandboxes.esim import EsimSandboxSettings, create_app
from sandboxes.timestamps import Clock, utc_now

ACTIVATION_DELAY = 0.05
SLOW_DELAY = 0.3


CARD = iccid(1)
OTHER_CARD = iccid(2)
UNKNOWN_CARD = iccid(3)


@pytest.fixture
def cards_csv(tmp_path: Path) -> Path:
    path = tmp_path / "cards.csv"
    path.write_text(
        f"iccid,activation_code\n{CARD},LPA:1$sm-dp.example$AAA\n"
        f"{OTHER_CARD},LPA:1$sm-dp.example$BBB\n12345,LPA:1$bad\n"
    )
    return path


@pytest.fixture
def settings(cards_csv: Path) -> EsimSandboxSettings:
    return EsimSandboxSettings(
        cards_csv=cards_csv, activation_delay=ACTIVATION_DELAY, slow_delay=SLOW_DELAY
    )


def client_for(settings: EsimSandboxSettings, clock: Clock = utc_now) -> httpx.AsyncClient:
    app = create_app(settings, clock=clock)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://esim")


@pytest.fixture
async def client(settings: EsimSandboxSettings) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(settings) as client:
        yield client


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def timed_client(
    settings: EsimSandboxSettings, clock: FakeClock
) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(settings, clock) as client:
        yield client


def order_body(card: str = CARD, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "iccid": card,
        "bundle_code": "JP_10GB_30D",
        "data_mb": 10240,
        "validity_days": 30,
        "start": "now",
        "reference": "renewal-1",
    }
    return body | overrides


async def order(
    client: httpx.AsyncClient, key: str, body: dict[str, Any] | None = None
) -> httpx.Response:
    return await client.post(
        "/v1/bundles", json=body or order_body(), headers={"Idempotency-Key": key}
    )


async def bundle(client: httpx.AsyncClient, order_id: str) -> dict[str, Any]:
    response = await client.get(f"/v1/bundles/{order_id}")
    assert response.status_code == 200
    result: dict[str, Any] = response.json()
    return result


async def settled(client: httpx.AsyncClient, order_id: str, timeout: float = 2.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        current = await bundle(client, order_id)
        if current["status"] != "processing" or time.monotonic() > deadline:
            return current
        await asyncio.sleep(0.01)


def assert_problem(response: httpx.Response, status: int, code: str | None = None) -> None:
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["status"] == status
    assert {"type", "title", "detail"} <= problem.keys()
    if code is not None:
        assert problem["error"]["code"] == code


def parse(moment: str) -> datetime:
    return datetime.fromisoformat(moment)


async def test_cards_come_from_the_csv_file(client: httpx.AsyncClient) -> None:
    known = await client.get(f"/v1/cards/{CARD}")
    unknown = await client.get(f"/v1/cards/{UNKNOWN_CARD}")
    listed = (await client.get("/sandbox/cards")).json()["cards"]

    assert known.status_code == 200
    assert known.json() == {"iccid": CARD, "bundles": []}
    assert_problem(unknown, 404, "unknown_iccid")
    assert {c["iccid"] for c in listed} == {CARD, OTHER_CARD}


async def test_missing_cards_file_starts_empty_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = EsimSandboxSettings(cards_csv=tmp_path / "absent.csv")

    async with client_for(settings) as client:
        listed = (await client.get("/sandbox/cards")).json()["cards"]

    assert listed == []
    assert any(r.levelno == logging.WARNING for r in caplog.records)


async def test_cards_can_be_added_idempotently(client: httpx.AsyncClient) -> None:
    card = {"iccid": UNKNOWN_CARD, "activation_code": "LPA:1$x$CCC"}

    first = await client.post("/sandbox/cards", json=card)
    again = await client.post("/sandbox/cards", json=card)
    other_code = await client.post("/sandbox/cards", json=card | {"activation_code": "other"})
    bad = await client.post("/sandbox/cards", json=card | {"iccid": CARD[:-1] + "0"})

    assert (first.status_code, again.status_code) == (201, 201)
    assert first.json() == card
    assert_problem(other_code, 409, "card_conflict")
    assert_problem(bad, 422, "invalid_request")
    assert (await order(client, "k1", order_body(UNKNOWN_CARD))).status_code == 202


async def test_order_is_processing_then_active(client: httpx.AsyncClient) -> None:
    response = await order(client, "k1")

    assert response.status_code == 202
    accepted = response.json()
    assert accepted["order_id"].startswith("ord_")
    assert (accepted["iccid"], accepted["bundle_code"]) == (CARD, "JP_10GB_30D")
    assert accepted["status"] == "processing"
    assert accepted["valid_from"] is None and accepted["valid_until"] is None
    current = await settled(client, accepted["order_id"])
    assert current["status"] == "active"
    assert current["failure_reason"] is None
    assert current["data_mb"] == 10240
    assert parse(current["valid_until"]) - parse(current["valid_from"]) == timedelta(days=30)
    assert parse(current["valid_from"]) >= parse(accepted["created_at"])


async def test_without_an_activation_delay_an_order_is_live_as_it_is_placed(
    cards_csv: Path,
) -> None:
    instant = EsimSandboxSettings(cards_csv=cards_csv, activation_delay=0, slow_delay=SLOW_DELAY)
    async with client_for(instant) as client:
        response = await order(client, "k1")
        assert response.status_code == 202
        accepted = response.json()
        assert accepted["status"] == "active"
        current = (await client.get(f"/v1/bundles/{accepted['order_id']}")).json()
        assert current["status"] == "active" and current["valid_from"] is not None
        # The answer carries the bundle as it stands: no status call needed to activate it.
        for field in ("valid_from", "valid_until", "data_mb", "failure_reason"):
            assert accepted[field] == current[field], field


async def test_same_key_and_body_is_the_same_order(client: httpx.AsyncClient) -> None:
    responses = [await order(client, "k1") for _ in range(3)]
    conflicting = await order(client, "k1", order_body(data_mb=1))

    assert [r.status_code for r in responses] == [202, 200, 200]
    assert responses[1].headers["Idempotent-Replayed"] == "true"
    assert len({r.json()["order_id"] for r in responses}) == 1
    assert_problem(conflicting, 409, "idempotency_conflict")
    assert len((await client.get("/sandbox/ledger")).json()["orders"]) == 1


async def test_order_needs_a_known_card_a_key_and_a_valid_body(
    client: httpx.AsyncClient,
) -> None:
    unknown = await order(client, "k1", order_body(UNKNOWN_CARD))
    no_key = await client.post("/v1/bundles", json=order_body())
    bad = await order(client, "k2", order_body(data_mb=0, start="later"))
    missing = await client.get("/v1/bundles/ord_nope")

    assert_problem(unknown, 404, "unknown_iccid")
    assert_problem(no_key, 400, "missing_idempotency_key")
    assert_problem(bad, 422, "invalid_request")
    assert {tuple(e["loc"]) for e in bad.json()["errors"]} == {
        ("body", "data_mb"),
        ("body", "start"),
    }
    assert_problem(missing, 404, "order_not_found")


async def test_after_current_queues_behind_the_active_bundle(client: httpx.AsyncClient) -> None:
    first = await settled(client, (await order(client, "k1")).json()["order_id"])
    body = order_body(start="after_current", validity_days=7, reference="renewal-2")

    second = await settled(client, (await order(client, "k2", body)).json()["order_id"])

    assert first["status"] == "active"
    assert second["status"] == "queued"
    assert second["valid_from"] == first["valid_until"]
    assert parse(second["valid_until"]) - parse(second["valid_from"]) == timedelta(days=7)
    card = (await client.get(f"/v1/cards/{CARD}")).json()
    assert [b["status"] for b in card["bundles"]] == ["active", "queued"]


async def test_after_current_without_an_active_bundle_starts_now(
    client: httpx.AsyncClient,
) -> None:
    body = order_body(start="after_current")

    current = await settled(client, (await order(client, "k1", body)).json()["order_id"])

    assert current["status"] == "active"


async def test_start_now_replaces_the_active_bundle(client: httpx.AsyncClient) -> None:
    first_id = (await order(client, "k1")).json()["order_id"]
    await settled(client, first_id)

    second = await settled(client, (await order(client, "k2")).json()["order_id"])

    assert second["status"] == "active"
    assert (await bundle(client, first_id))["status"] == "expired"


async def test_queued_bundle_takes_over_when_the_active_one_ends(
    timed_client: httpx.AsyncClient, clock: FakeClock
) -> None:
    first_id = (await order(timed_client, "k1")).json()["order_id"]
    second_id = (await order(timed_client, "k2", order_body(start="after_current"))).json()[
        "order_id"
    ]
    clock.advance(seconds=1)
    assert (await bundle(timed_client, first_id))["status"] == "active"
    assert (await bundle(timed_client, second_id))["status"] == "queued"

    clock.advance(days=30)

    assert (await bundle(timed_client, first_id))["status"] == "expired"
    assert (await bundle(timed_client, second_id))["status"] == "active"


async def test_start_now_moves_the_queue_behind_the_new_bundle(
    timed_client: httpx.AsyncClient, clock: FakeClock
) -> None:
    await order(timed_client, "k1")
    queued_id = (await order(timed_client, "k2", order_body(start="after_current"))).json()[
        "order_id"
    ]
    clock.advance(days=1)
    replacing_id = (await order(timed_client, "k3")).json()["order_id"]
    clock.advance(seconds=1)

    replacing = await bundle(timed_client, replacing_id)
    queued = await bundle(timed_client, queued_id)

    assert replacing["status"] == "active"
    assert queued["status"] == "queued"
    assert queued["valid_from"] == replacing["valid_until"]


async def test_fail_fault_fails_every_order_for_good(client: httpx.AsyncClient) -> None:
    await client.post("/sandbox/faults", json={"iccid": CARD, "mode": "fail"})

    accepted = [await order(client, f"k{n}") for n in range(2)]
    results = [await settled(client, r.json()["order_id"]) for r in accepted]
    other = await settled(
        client, (await order(client, "k9", order_body(OTHER_CARD))).json()["order_id"]
    )

    assert [r.status_code for r in accepted] == [202, 202]
    assert [r["status"] for r in results] == ["failed", "failed"]
    assert {r["failure_reason"] for r in results} == {"bundle_rejected"}
    assert all(r["valid_from"] is None for r in results)
    assert other["status"] == "active"


async def test_flaky_fault_fails_the_next_two_requests(client: httpx.AsyncClient) -> None:
    order_id = (await order(client, "k1")).json()["order_id"]
    fault = await client.post("/sandbox/faults", json={"iccid": CARD, "mode": "flaky"})

    get_failure = await client.get(f"/v1/bundles/{order_id}")
    post_failure = await order(client, "k2")
    after = [await client.get(f"/v1/bundles/{order_id}"), await order(client, "k2")]

    assert fault.status_code == 200
    assert_problem(get_failure, 503, "unavailable")
    assert get_failure.json()["error"]["retryable"] is True
    assert_problem(post_failure, 503, "unavailable")
    assert [r.status_code for r in after] == [200, 202]
    assert len((await client.get("/sandbox/ledger")).json()["orders"]) == 2


async def test_slow_fault_delays_activation(
    timed_client: httpx.AsyncClient, clock: FakeClock
) -> None:
    await timed_client.post("/sandbox/faults", json={"iccid": CARD, "mode": "slow"})
    slow_id = (await order(timed_client, "k1")).json()["order_id"]
    normal_id = (await order(timed_client, "k2", order_body(OTHER_CARD))).json()["order_id"]

    clock.advance(seconds=SLOW_DELAY / 2)
    assert (await bundle(timed_client, normal_id))["status"] == "active"
    assert (await bundle(timed_client, slow_id))["status"] == "processing"
    clock.advance(seconds=SLOW_DELAY)

    slow = await bundle(timed_client, slow_id)
    assert slow["status"] == "active"
    assert parse(slow["valid_from"]) - clock.now == timedelta(seconds=-SLOW_DELAY / 2)


async def test_slow_fault_with_the_real_clock(client: httpx.AsyncClient) -> None:
    await client.post("/sandbox/faults", json={"iccid": CARD, "mode": "slow"})
    started = time.monotonic()

    current = await settled(client, (await order(client, "k1")).json()["order_id"])

    assert current["status"] == "active"
    assert time.monotonic() - started >= SLOW_DELAY


async def test_none_clears_the_fault(client: httpx.AsyncClient) -> None:
    await client.post("/sandbox/faults", json={"iccid": CARD, "mode": "fail"})
    cleared = await client.post("/sandbox/faults", json={"iccid": CARD, "mode": "none"})

    current = await settled(client, (await order(client, "k1")).json()["order_id"])

    assert cleared.json() == {"iccid": CARD, "mode": "none"}
    assert current["status"] == "active"


async def test_unknown_fault_mode_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post("/sandbox/faults", json={"iccid": CARD, "mode": "explode"})

    assert_problem(response, 422, "invalid_request")


async def test_usage_of_the_active_bundle(client: httpx.AsyncClient) -> None:
    order_id = (await order(client, "k1")).json()["order_id"]
    before = (await client.get(f"/v1/cards/{CARD}/usage")).json()
    await settled(client, order_id)

    fresh = (await client.get(f"/v1/cards/{CARD}/usage")).json()
    partly = await client.post("/sandbox/usage", json={"iccid": CARD, "data_used_mb": 4000})
    await client.post("/sandbox/usage", json={"iccid": CARD, "data_used_mb": 20000})
    used_up = (await client.get(f"/v1/cards/{CARD}/usage")).json()

    assert before["data_total_mb"] == 0
    assert (fresh["data_total_mb"], fresh["data_used_mb"], fresh["data_remaining_mb"]) == (
        10240,
        0,
        10240,
    )
    assert (partly.json()["data_used_mb"], partly.json()["data_remaining_mb"]) == (4000, 6240)
    assert (used_up["data_used_mb"], used_up["data_remaining_mb"]) == (10240, 0)
    assert (await bundle(client, order_id))["status"] == "depleted"


async def test_usage_needs_an_active_bundle(client: httpx.AsyncClient) -> None:
    response = await client.post("/sandbox/usage", json={"iccid": CARD, "data_used_mb": 1})

    assert_problem(response, 409, "no_active_bundle")


async def test_ledger_filters_and_reset_keeps_cards(client: httpx.AsyncClient) -> None:
    await order(client, "k1", order_body(reference="renewal-1"))
    await order(client, "k2", order_body(OTHER_CARD, reference="renewal-2"))
    await client.post("/sandbox/faults", json={"iccid": CARD, "mode": "fail"})

    everything = (await client.get("/sandbox/ledger")).json()["orders"]
    by_card = (await client.get("/sandbox/ledger", params={"iccid": OTHER_CARD})).json()
    by_reference = (await client.get("/sandbox/ledger", params={"reference": "renewal-1"})).json()
    reset = await client.post("/sandbox/reset")
    after_reset = (await client.get("/sandbox/ledger")).json()["orders"]
    fresh = await settled(client, (await order(client, "k1")).json()["order_id"])

    assert len(everything) == 2
    assert {"order_id", "iccid", "status", "reference"} <= everything[0].keys()
    assert [o["iccid"] for o in by_card["orders"]] == [OTHER_CARD]
    assert [o["reference"] for o in by_reference["orders"]] == ["renewal-1"]
    assert reset.status_code == 204
    assert after_reset == []
    assert fresh["status"] == "active"


async def cancel(client: httpx.AsyncClient, order_id: str) -> dict[str, Any]:
    response = await client.post(f"/v1/bundles/{order_id}/cancel")
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def test_a_queued_bundle_is_cancelled_once_and_never_starts(
    timed_client: httpx.AsyncClient, clock: FakeClock
) -> None:
    await order(timed_client, "k1")
    queued_id = (
        await order(timed_client, "k2", order_body(start="after_current", reference="r-2"))
    ).json()["order_id"]
    clock.advance(seconds=1)
    assert (await bundle(timed_client, queued_id))["status"] == "queued"

    first = await cancel(timed_client, queued_id)
    again = await cancel(timed_client, queued_id)
    clock.advance(days=31)

    assert (first["cancelled"], first["outcome"], first["status"]) == (True, "cancelled", "revoked")
    assert (again["cancelled"], again["outcome"]) == (True, "already_cancelled")
    assert (await bundle(timed_client, queued_id))["status"] == "revoked"
    ledger = (await timed_client.get("/sandbox/ledger", params={"reference": "r-2"})).json()
    assert [(c["order_id"], c["status_before"]) for c in ledger["cancellations"]] == [
        (queued_id, "queued")
    ]
    assert ledger["orders"][0]["cancelled_at"] == first["cancelled_at"]


async def test_a_processing_order_that_is_cancelled_never_goes_live(
    timed_client: httpx.AsyncClient, clock: FakeClock
) -> None:
    order_id = (await order(timed_client, "k1")).json()["order_id"]

    answer = await cancel(timed_client, order_id)
    clock.advance(seconds=5)

    assert (answer["cancelled"], answer["status"]) == (True, "revoked")
    assert (await bundle(timed_client, order_id))["status"] == "revoked"
    usage = (await timed_client.get(f"/v1/cards/{CARD}/usage")).json()
    assert usage["order_id"] is None


async def test_a_live_bundle_is_not_cancelled(
    timed_client: httpx.AsyncClient, clock: FakeClock
) -> None:
    order_id = (await order(timed_client, "k1")).json()["order_id"]
    clock.advance(seconds=1)

    answer = await cancel(timed_client, order_id)

    assert (answer["cancelled"], answer["outcome"], answer["status"]) == (
        False,
        "already_started",
        "active",
    )
    assert (await bundle(timed_client, order_id))["status"] == "active"
    assert (await timed_client.get("/sandbox/ledger")).json()["cancellations"] == []


async def test_ended_and_failed_bundles_are_not_cancelled(
    timed_client: httpx.AsyncClient, clock: FakeClock
) -> None:
    ended_id = (await order(timed_client, "k1")).json()["order_id"]
    await timed_client.post("/sandbox/faults", json={"iccid": OTHER_CARD, "mode": "fail"})
    failed_id = (await order(timed_client, "k2", order_body(OTHER_CARD))).json()["order_id"]
    clock.advance(days=31)

    ended = await cancel(timed_client, ended_id)
    failed = await cancel(timed_client, failed_id)

    assert (ended["cancelled"], ended["outcome"]) == (False, "ended")
    assert (failed["cancelled"], failed["outcome"]) == (False, "failed")


async def test_a_cancelled_queued_bundle_makes_room_for_the_next(
    timed_client: httpx.AsyncClient, clock: FakeClock
) -> None:
    first_id = (await order(timed_client, "k1")).json()["order_id"]
    second_id = (await order(timed_client, "k2", order_body(start="after_current"))).json()[
        "order_id"
    ]
    third_id = (
        await order(timed_client, "k3", order_body(start="after_current", validity_days=7))
    ).json()["order_id"]
    clock.advance(seconds=1)

    await cancel(timed_client, second_id)

    first, third = await bundle(timed_client, first_id), await bundle(timed_client, third_id)
    assert third["status"] == "queued"
    assert third["valid_from"] == first["valid_until"]
    assert parse(third["valid_until"]) - parse(third["valid_from"]) == timedelta(days=7)


async def test_cancel_of_an_unknown_order_is_404_and_a_flaky_platform_503(
    client: httpx.AsyncClient,
) -> None:
    order_id = (await order(client, "k1")).json()["order_id"]
    await client.post("/sandbox/faults", json={"iccid": CARD, "mode": "flaky"})

    missing = await client.post("/v1/bundles/ord_nope/cancel")
    flaky = await client.post(f"/v1/bundles/{order_id}/cancel")

    assert_problem(missing, 404, "order_not_found")
    assert_problem(flaky, 503, "unavailable")
