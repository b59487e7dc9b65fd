"""ServiceRuntime.stop runs the `on_stop` actions once, after the loops, before closing, and ends
a purge between two chunks."""

import asyncio
import gc
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from unittest.mock import AsyncMock

import pytest
from esim_core.clock import utcnow
from esim_core.duework.leases import LocalLock
from esim_core.messaging.inbox import InboxEntry
from esim_core.persistence.db import Database
from esim_core.service import ServiceRuntime
from esim_core.settings import ServiceSettings
from esim_core.web.server import settle_the_heap
from sqlalchemy import func, text
from sqlmodel import select


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


async def test_a_stop_ends_a_long_purge_after_the_chunk_in_hand(
    runtime: ServiceRuntime,
) -> None:
    old = utcnow() - timedelta(seconds=runtime.settings.inbox_retention_s) - timedelta(days=1)
    await runtime.database.create_tables(runtime.tables)
    async with runtime.database.session() as session:
        for number in range(200):
            session.add(
                InboxEntry(
                    consumer="stopper", event_id=f"e-{number}", event_type="t", processed_at=old
                )
            )
    runtime.purger.lock = LocalLock()
    runtime.purger.chunk, runtime.purger.pause_s = 1, 0.02  # a backlog of 200 chunks

    async def left(database: Database) -> int:
        async with database.session() as session:
            count = (await session.exec(select(func.count()).select_from(InboxEntry))).one()
        return int(count)

    async with runtime.running():
        async with asyncio.timeout(10):
            while await left(runtime.database) == 200:
                await asyncio.sleep(0.01)
        stopping_at = time.monotonic()
    assert time.monotonic() - stopping_at < 2.0
    reopened = Database(runtime.settings.database_url)
    try:
        assert 0 < await left(reopened) < 200, "the purge stopped midway, between chunks"
    finally:
        await reopened.close()


def test_what_was_built_at_start_is_kept_out_of_the_collectors_sight() -> None:
    gc.unfreeze()
    tracked = len(gc.get_objects())
    try:
        settle_the_heap()
        assert gc.get_freeze_count() > tracked // 2  # the heap as it was, garbage collected
        assert len(gc.get_objects()) < tracked // 10  # what a collection still walks
    finally:
        gc.unfreeze()


#: Four threads each take and free an 8 MiB block (an Argon2 hash's at the tests' settings)
#: ten times over, as a service's password hashes do; prints the RSS growth in MiB.
_LARGE_BLOCKS_IN_THREADS = """
import ctypes, ctypes.util, sys, threading
from esim_core.web.server import fix_malloc_thresholds
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
def rss():
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) / 1024
if sys.argv[1] == "fixed":
    assert fix_malloc_thresholds()
before = rss()
def hash_like():
    block = libc.malloc(8 << 20)
    ctypes.memset(block, 1, 8 << 20)
    libc.free(block)
for _ in range(10):
    threads = [threading.Thread(target=hash_like) for _ in range(4)]
    for thread in threads: thread.start()
    for thread in threads: thread.join()
print(rss() - before)
"""


def test_large_blocks_freed_in_threads_are_given_back() -> None:
    """Two short interpreters (a second or so): the thresholds are per process."""

    def growth(mode: str) -> float:
        run = [sys.executable, "-c", _LARGE_BLOCKS_IN_THREADS, mode]
        return float(subprocess.run(run, capture_output=True, text=True, check=True).stdout)

    assert growth("default") > 16  # glibc's default keeps them in the threads' arenas
    assert growth("fixed") < 4


#: A BoundedServer that ticks once an hour, sent SIGTERM once it serves: prints its ticks.
_STOPPED_BETWEEN_TICKS = """
import os, signal, threading, time
import uvicorn
from esim_core.web.server import BoundedServer

async def app(scope, receive, send):
    pass

server = BoundedServer(uvicorn.Config(app, port=0, lifespan="off", log_config=None), 60)
server.tick_s = 3600.0
ticks = 0
real_tick = server.on_tick

async def on_tick(counter):
    global ticks
    ticks += 1
    return await real_tick(counter)

server.on_tick = on_tick

def stop_once_serving():
    while not server.started:
        time.sleep(0.01)
    time.sleep(0.2)
    os.kill(os.getpid(), signal.SIGTERM)

threading.Thread(target=stop_once_serving, daemon=True).start()
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # uvicorn raises it again once it has stopped
server.run()
print(ticks, server.server_state.default_headers[0][0].decode())
"""


def test_a_stop_signal_wakes_the_server_between_its_ticks() -> None:
    """An interpreter of its own (a second or so): a signal must reach uvicorn's handlers."""
    ended = subprocess.run(
        [sys.executable, "-c", _STOPPED_BETWEEN_TICKS],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    # The first tick at start, the second woken by the signal: not an hour later.
    assert ended.stdout.split() == ["2", "date"]
