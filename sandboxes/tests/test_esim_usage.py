"""The eSIM sandbox's usage: growth by itself, a rate-limited usage endpoint, signed callbacks."""

import hashlib
import hmac
import json
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from esim_testkit import FakeClock, iccid
from sandboxes.esim import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    CallbackSender,
    EsimPlatform,
    EsimSandboxSettings,
    create_app,
)
from sandboxes.outbound import Reply

SECRET = "test-secret"
CALLBACKS = "http://provisioning.test/callbacks/esim"


CARD = iccid(1)


class Receiver:
    """The other end of the callbacks: records what arrived and answers `status`."""

    def __init__(self) -> None:
        self.received: list[tuple[bytes, dict[str, str]]] = []
        self.status = 200

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> Reply:
        self.received.append((body, {name.lower(): value for name, value in headers.items()}))
        return Reply(self.status, b"")

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(body) for body, _ in self.received]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def settings(tmp_path: Path) -> EsimSandboxSettings:
    cards = tmp_path / "cards.csv"
    cards.write_text(f"iccid,activation_code\n{CARD},LPA:1$sm-dp.example$AAA\n")
    return EsimSandboxSettings(
        cards_csv=cards,
        activation_delay=0,
        callback_url=CALLBACKS,
        callback_secret=SECRET,
        usage_polls_per_min=600,
    )


class Sandbox:
    def __init__(self, settings: EsimSandboxSettings, clock: FakeClock) -> None:
        self.app = create_app(settings, clock=clock)
        self.platform: EsimPlatform = self.app.state.platform
        self.receiver = Receiver()
        self.sender = CallbackSender(self.platform, settings, clock, post=self.receiver.post)
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://esim"
        )
        self.clock = clock

    async def order(self, key: str, **overrides: Any) -> dict[str, Any]:
        body = {
            "iccid": CARD,
            "bundle_code": "JP_1GB_7D",
            "data_mb": 1000,
            "validity_days": 7,
            "start": "now",
            "reference": key,
        } | overrides
        response = await self.client.post(
            "/v1/bundles", json=body, headers={"Idempotency-Key": key}
        )
        assert response.status_code == 202, response.text
        result: dict[str, Any] = response.json()
        return result

    async def use(self, used_mb: int) -> None:
        response = await self.client.post(
            "/sandbox/usage", json={"iccid": CARD, "data_used_mb": used_mb}
        )
        assert response.status_code == 200, response.text

    async def thresholds(self) -> list[int]:
        await self.sender.deliver_pending()
        return [b["threshold"] for b in self.receiver.bodies() if b["type"] == "usage.threshold"]

    async def usage(self) -> httpx.Response:
        return await self.client.get(f"/v1/cards/{CARD}/usage")


@pytest.fixture
async def sandbox(settings: EsimSandboxSettings, clock: FakeClock) -> Sandbox:
    return Sandbox(settings, clock)


async def test_callbacks_are_signed_over_the_timestamp_and_raw_body(sandbox: Sandbox) -> None:
    placed = await sandbox.order("r-1")
    await sandbox.sender.deliver_pending()
    [(body, headers)] = sandbox.receiver.received
    timestamp = headers[TIMESTAMP_HEADER.lower()]
    expected = hmac.new(SECRET.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    assert headers[SIGNATURE_HEADER.lower()] == f"v1={expected.hexdigest()}"
    assert int(timestamp) == int(sandbox.clock.now.timestamp())
    document = json.loads(body)
    assert document["type"] == "order.completed"
    assert document["order_id"] == placed["order_id"] and document["status"] == "active"
    assert document["reference"] == "r-1"


async def test_each_threshold_is_called_back_once_even_past_two_at_once(sandbox: Sandbox) -> None:
    await sandbox.order("r-1")
    await sandbox.use(800)
    await sandbox.use(820)
    assert await sandbox.thresholds() == [75]
    await sandbox.use(950)
    assert await sandbox.thresholds() == [75, 90]
    await sandbox.use(100)
    await sandbox.use(1000)
    assert await sandbox.thresholds() == [75, 90, 100]


async def test_a_jump_to_used_up_calls_back_every_threshold(sandbox: Sandbox) -> None:
    await sandbox.order("r-1")
    await sandbox.use(100)
    await sandbox.use(1000)
    assert await sandbox.thresholds() == [75, 90, 100]
    usage = (await sandbox.usage()).json()
    assert usage["status"] == "depleted" and usage["data_remaining_mb"] == 0


async def test_usage_grows_by_itself_at_the_set_rate(
    settings: EsimSandboxSettings, clock: FakeClock
) -> None:
    sandbox = Sandbox(replace(settings, usage_mb_per_min=100), clock)
    await sandbox.order("r-1")
    clock.advance(minutes=7, seconds=30)
    usage = (await sandbox.usage()).json()
    assert usage["data_used_mb"] == 750
    assert usage["as_of"].startswith("2026-11-23T10:07:30")
    assert await sandbox.thresholds() == [75]
    clock.advance(minutes=10)
    sandbox.platform.tick()
    assert (await sandbox.usage()).json()["data_used_mb"] == 1000
    assert await sandbox.thresholds() == [75, 90, 100]


async def test_the_usage_endpoint_is_rate_limited_per_iccid(
    settings: EsimSandboxSettings, clock: FakeClock
) -> None:
    sandbox = Sandbox(replace(settings, usage_polls_per_min=20), clock)
    await sandbox.order("r-1")
    answers = [(await sandbox.usage()).status_code for _ in range(3)]
    assert answers == [200, 200, 429]
    limited = await sandbox.usage()
    assert limited.headers["retry-after"] == "3"
    assert limited.json()["error"]["code"] == "rate_limited"
    # The control endpoint is not the poller's: it is never limited.
    assert (await sandbox.client.get(f"/v1/cards/{CARD}")).status_code == 200
    clock.advance(seconds=3)
    assert (await sandbox.usage()).status_code == 200


async def test_usage_lists_every_bundle_of_the_card(sandbox: Sandbox) -> None:
    first = await sandbox.order("r-1")
    second = await sandbox.order("r-2", start="after_current")
    usage = (await sandbox.usage()).json()
    assert [(b["order_id"], b["status"]) for b in usage["bundles"]] == [
        (first["order_id"], "active"),
        (second["order_id"], "queued"),
    ]
    assert usage["reference"] == "r-1"


async def test_a_poller_can_leave_out_bundles_that_ended_long_ago(sandbox: Sandbox) -> None:
    replaced = await sandbox.order("r-1")
    sandbox.clock.advance(seconds=100)
    used_up = await sandbox.order("r-2")  # replaces r-1 now
    sandbox.clock.advance(seconds=100)
    await sandbox.use(1000)  # r-2 is used up, 100 s after r-1 ended
    sandbox.clock.advance(seconds=50)
    live = await sandbox.order("r-3")

    async def listed(within: float | None) -> list[str]:
        query = {} if within is None else {"ended_within_s": within}
        response = await sandbox.client.get(f"/v1/cards/{CARD}/usage", params=query)
        assert response.status_code == 200, response.text
        return [bundle["order_id"] for bundle in response.json()["bundles"]]

    everything = [replaced["order_id"], used_up["order_id"], live["order_id"]]
    assert await listed(None) == everything
    assert await listed(1000) == everything
    assert await listed(120) == everything[1:]
    assert await listed(10) == everything[2:]
    assert await listed(0) == everything[2:]
    refused = await sandbox.client.get(f"/v1/cards/{CARD}/usage", params={"ended_within_s": -1})
    assert refused.status_code == 422


async def test_compressed_validity_ends_the_plan_and_starts_the_queued_one(
    sandbox: Sandbox,
) -> None:
    first = await sandbox.order("r-1")
    await sandbox.order("r-2", start="after_current")
    changed = await sandbox.client.post("/sandbox/validity", json={"iccid": CARD, "ends_in_s": 5})
    assert changed.status_code == 200, changed.text
    queued = changed.json()["bundles"][1]
    assert queued["status"] == "queued"
    length = datetime.fromisoformat(queued["valid_until"]) - datetime.fromisoformat(
        queued["valid_from"]
    )
    assert length == timedelta(days=7)
    sandbox.clock.advance(seconds=5)
    usage = (await sandbox.usage()).json()
    assert usage["reference"] == "r-2" and usage["status"] == "active"
    assert usage["bundles"][0]["order_id"] == first["order_id"]
    assert usage["bundles"][0]["status"] == "expired"


async def test_a_used_up_bundle_hands_over_to_the_queued_one(sandbox: Sandbox) -> None:
    await sandbox.order("r-1")
    await sandbox.order("r-2", start="after_current")
    await sandbox.use(1000)
    usage = (await sandbox.usage()).json()
    assert usage["reference"] == "r-2" and usage["status"] == "active"
    assert [b["status"] for b in usage["bundles"]] == ["depleted", "active"]


async def test_bad_signature_mode_and_redelivery(sandbox: Sandbox) -> None:
    await sandbox.client.post(
        "/sandbox/callbacks/mode", json={"iccid": CARD, "mode": "bad_signature"}
    )
    await sandbox.order("r-1")
    await sandbox.sender.deliver_pending()
    body, headers = sandbox.receiver.received[0]
    timestamp = headers[TIMESTAMP_HEADER.lower()]
    right = hmac.new(SECRET.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    assert headers[SIGNATURE_HEADER.lower()] != f"v1={right.hexdigest()}"

    await sandbox.client.post("/sandbox/callbacks/mode", json={"iccid": CARD, "mode": "signed"})
    [logged] = (await sandbox.client.get("/sandbox/callbacks", params={"iccid": CARD})).json()[
        "callbacks"
    ]
    again = await sandbox.client.post("/sandbox/callbacks/redeliver", json={"id": logged["id"]})
    assert again.status_code == 200
    await sandbox.sender.deliver_pending()
    ids = [b["id"] for b in sandbox.receiver.bodies()]
    assert ids == [logged["id"], logged["id"]]
    [logged] = (await sandbox.client.get("/sandbox/callbacks")).json()["callbacks"]
    assert logged["delivered"] is True and logged["statuses"] == [200, 200]


async def test_off_mode_sends_nothing(sandbox: Sandbox) -> None:
    await sandbox.client.post("/sandbox/callbacks/mode", json={"iccid": CARD, "mode": "off"})
    await sandbox.order("r-1")
    await sandbox.use(1000)
    assert await sandbox.sender.deliver_pending() == 0
