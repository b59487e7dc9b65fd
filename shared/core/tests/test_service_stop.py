"""ServiceRuntime.stop runs the `on_stop` actions once, after the loops, before closing."""

import asyncio
from pathlib import Path
from unittest.mock import AsyncMock

import pytest
from esim_core.service import ServiceRuntime
from esim_core.settings import ServiceSettings
from sqlalchemy import text


@pytest.fixture
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ServiceRuntime:
    """A runtime on a SQLite file whose Kafka and Redis ends do nothing (no broker here)."""
    settings = ServiceSettings(
        database_url=f"sqlite+aiosqlite:///{tmp_path}/stop.sqlite",
        http_port=8000,
        stop_timeout_s=5,
    )
    built = ServiceRuntime("stopper", settings, tables=[])
    monkeypatch.setattr(built, "_create_topics", AsyncMock())
    monkeypatch.setattr(built.publisher, "start", AsyncMock())
    monkeypatch.setattr(built.publisher, "stop", AsyncMock())
    monkeypatch.setattr(built.broker, "start", AsyncMock())
    monkeypatch.setattr(built.broker, "stop", AsyncMock())
    monkeypatch.setattr(built.relay, "run", AsyncMock())
    monkeypatch.setattr(built.relay, "flush", AsyncMock())
    monkeypatch.setattr(built.redis, "aclose", AsyncMock())
    return built


async def run_until_a_step_is_under_way(runtime: ServiceRuntime, order: list[str]) -> None:
    """Start the runtime with a slow periodic loop, and stop it while a step is in flight."""
    under_way = asyncio.Event()

    async def slow_step() -> None:
        under_way.set()
        await asyncio.sleep(0.2)
        order.append("loop step ended")

    runtime.loop("slow", slow_step, interval_s=0.01)
    close = runtime.database.close

    async def close_database() -> None:
        order.append("database closed")
        await close()

    runtime.database.close = close_database  # type: ignore[method-assign]
    async with runtime.running():
        await under_way.wait()


async def test_an_action_runs_once_after_the_loops_and_before_the_database_closes(
    runtime: ServiceRuntime,
) -> None:
    order: list[str] = []

    async def close_pool() -> None:
        async with runtime.database.session() as session:
            await session.exec(text("SELECT 1"))  # type: ignore[call-overload]
        order.append("pool closed")

    runtime.on_stop(close_pool)
    await run_until_a_step_is_under_way(runtime, order)

    assert order == ["loop step ended", "pool closed", "database closed"]
    await runtime.stop()
    assert order.count("pool closed") == 1


async def test_a_failing_action_does_not_stop_the_rest_of_the_shutdown(
    runtime: ServiceRuntime,
) -> None:
    order: list[str] = []

    async def fail() -> None:
        order.append("failing action")
        raise RuntimeError("the pool was already gone")

    async def close_pool() -> None:
        order.append("pool closed")

    runtime.on_stop(fail)
    runtime.on_stop(close_pool)
    await run_until_a_step_is_under_way(runtime, order)

    assert order == ["loop step ended", "failing action", "pool closed", "database closed"]
    runtime.publisher.stop.assert_awaited_once()  # type: ignore[attr-defined]
