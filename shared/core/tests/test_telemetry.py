"""Scrape-time gauges and timed outside calls, without a broker."""

from pathlib import Path

import httpx
from esim_core.messaging.outbox import Outbox, OutboxMessage
from esim_core.observability.telemetry import ScrapeGauges, outbox_gauges, refresh_on_scrape
from esim_core.outside.transport import TimedTransport
from esim_core.persistence.db import Database
from esim_core.settings import Topics
from esim_schemas import RenewalRejected
from fastapi import FastAPI
from prometheus_client import REGISTRY

ICCID = "8944500102198304826"


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


async def test_timed_calls_are_labelled_by_system_operation_and_outcome() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503 if request.url.path.endswith("flaky") else 201)

    transport = TimedTransport("test_gateway", httpx.MockTransport(answer))
    labels = {"system": "test_gateway", "operation": "POST /v1/charges"}
    before_ok = sample("esim_outside_call_seconds_count", **labels, outcome="2xx") or 0
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        await client.post("/v1/charges/ch_123/capture")
        await client.post("/v1/charges/flaky")
    assert sample("esim_outside_call_seconds_count", **labels, outcome="2xx") == before_ok + 1
    assert sample("esim_outside_call_seconds_count", **labels, outcome="5xx") == 1


async def test_a_failing_source_is_counted_and_the_others_still_refresh(tmp_path: Path) -> None:
    database = Database(f"sqlite+aiosqlite:///{tmp_path}/t.sqlite")
    await database.create_tables([OutboxMessage])
    outbox = Outbox("/services/test", Topics())
    async with database.session() as session:
        outbox.add(
            session,
            RenewalRejected(
                renewal_id="5b0f2a4e-8d8b-4a53-9f5c-3d9a7f1e2c11",  # type: ignore[arg-type]
                iccid=ICCID,
                user_id="u-1",
                reason="unknown_card",
                detail="x",
            ),
        )

    async def broken() -> None:
        raise ConnectionError("broker down")

    gauges = ScrapeGauges("telemetry-test")
    gauges.add("kafka", broken)
    gauges.add("outbox", outbox_gauges(database, "telemetry-test"))
    app = refresh_on_scrape(FastAPI(), gauges)

    @app.get("/metrics")
    async def metrics() -> str:
        return "ok"

    @app.get("/other")
    async def other() -> str:
        return "ok"

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
        await client.get("/other")
        assert sample("esim_scrape_errors_total", service="telemetry-test", source="kafka") is None
        assert (await client.get("/metrics")).status_code == 200
    await database.close()

    assert sample("esim_scrape_errors_total", service="telemetry-test", source="kafka") == 1
    assert sample("esim_outbox_unpublished", service="telemetry-test") == 1
