"""Serving a service's app: uvicorn until a stop signal, and an exit within the stop bound."""

import asyncio
import contextlib
import ctypes
import ctypes.util
import gc
import logging
import os
import signal
import threading
from types import FrameType
from typing import Any

import uvicorn
from fastapi import FastAPI

from esim_core.messaging.kafka import KafkaAccessRefused, check_access
from esim_core.settings import ServiceSettings, SettingsError

logger = logging.getLogger(__name__)

#: Seconds past `stop_timeout_s` after which the watchdog ends a stopping process: its whole
#: stop bound is `stop_timeout_s + STOP_WATCHDOG_GRACE_S`, which an orchestrator's grace period
#: (compose's `stop_grace_period`, a pod's `terminationGracePeriodSeconds`) must exceed.
STOP_WATCHDOG_GRACE_S = 3.0

#: Seconds an idle HTTP connection is kept open for the caller's next request. Longer than any
#: caller keeps one in its pool (httpx 5 s, the outside transport 15 s, an ingress 60 s): a
#: caller that reuses a connection the server is closing that very moment gets no answer at
#: all ("server disconnected"), and a POST it cannot safely send again. uvicorn's own 5 s
#: matched httpx's pool to the second and lost the website a password reset under load.
KEEP_ALIVE_S = 75


def server_config(
    app: FastAPI, host: str, port: int, stop_timeout_s: float, **more: Any
) -> uvicorn.Config:
    """uvicorn's settings for an app of the platform: no log set-up of its own (the process's
    JSON logs), idle connections kept `KEEP_ALIVE_S`, in-flight requests given a quarter of the
    stop bound to finish. `more` is passed on (the website's `proxy_headers`)."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        timeout_keep_alive=KEEP_ALIVE_S,
        timeout_graceful_shutdown=max(1, int(stop_timeout_s / 4)),
        **more,
    )


#: glibc's `mallopt` parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: Blocks from this size up get a mapping of their own, returned when freed. By default glibc
#: raises this threshold to the largest such block freed so far (up to 32 MiB), and blocks under
#: it stay in the arena of the thread that asked: every thread that hashed a password (Argon2
#: blocks of `ACCOUNTS_PASSWORD_MEMORY_KIB`) kept 8 to 16 MiB for good, some 50 MiB of accounts.
LARGE_BLOCK_BYTES = 4 << 20
#: Free memory at an arena's top past this is given back to the system.
ARENA_TRIM_BYTES = 1 << 20


def serve(app: FastAPI, settings: ServiceSettings) -> None:
    """Serve the app with uvicorn until SIGTERM or SIGINT, and exit within the stop bound.

    uvicorn stops taking requests, lets those in flight finish, then runs the lifespan's
    shutdown (`ServiceRuntime.stop`). Should anything hang past `stop_timeout_s` plus a short
    grace, a watchdog thread ends the process: everything it left is durable and redone.

    Raises:
        SettingsError: the Kafka brokers refuse the settings (`refuse_unless_kafka_accepts`).
    """
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # aiosqlite logs every call with its arguments at DEBUG, tokens included.
    logging.getLogger("aiosqlite").setLevel(max(logging.INFO, logging.getLogger().level))
    refuse_unless_kafka_accepts(settings)
    config = server_config(app, settings.http_host, settings.http_port, settings.stop_timeout_s)
    settle_the_heap()
    BoundedServer(config, settings.stop_timeout_s + STOP_WATCHDOG_GRACE_S).run()


def settle_the_heap() -> None:
    """Keep what was built at start (modules, the app, its settings: some 200,000 objects, alive
    for the process's life) out of the cyclic garbage collector's sight, and large blocks out of
    the allocator's arenas.

    Each full collection walked them all again: 150 to 200 ms of CPU, about ten times in a
    few minutes of load, where they can never be garbage. Collected first, then frozen
    (`gc.freeze`); what comes later is collected as ever. Under glibc, the thresholds are
    fixed (`LARGE_BLOCK_BYTES`, `ARENA_TRIM_BYTES`) and what start-up freed is given back.
    """
    gc.collect()
    gc.freeze()
    fix_malloc_thresholds()


def fix_malloc_thresholds() -> bool:
    """Fix glibc's mmap and trim thresholds (see `LARGE_BLOCK_BYTES`) and give back free memory.

    Returns:
        Whether they were set: False where the C library is not glibc (musl has no `mallopt`).
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt, malloc_trim = libc.mallopt, libc.malloc_trim
    except (OSError, AttributeError, TypeError):
        return False
    mallopt(_M_MMAP_THRESHOLD, LARGE_BLOCK_BYTES)
    mallopt(_M_TRIM_THRESHOLD, ARENA_TRIM_BYTES)
    malloc_trim(0)
    return True


def refuse_unless_kafka_accepts(settings: ServiceSettings) -> None:
    """Stop before anything starts when the brokers refuse the login or the TLS handshake.

    Without this a wrong password shows as a startup failure deep in a client's retries; a
    process that exits with the setting to fix is what an operator (and a pod's restarts) can
    act on. A broker that does not answer yet is left to the clients' own retries.

    Raises:
        SettingsError: the brokers refused; the message names the settings to check.
    """
    try:
        asyncio.run(check_access(settings))
    except KafkaAccessRefused as error:
        logger.error("refusing to start: %s", error)
        raise SettingsError(f"refusing to start: {error}") from None


class BoundedServer(uvicorn.Server):
    """A uvicorn server whose first stop signal also arms an exit watchdog.

    uvicorn's main loop wakes ten times a second to see whether a stop was asked (and to
    renew the `date` header once a second): a tenth of an idle service's CPU. Here it wakes
    once every `tick_s`, and a stop signal wakes it at once.
    """

    tick_s = 1.0

    def __init__(self, config: uvicorn.Config, bound_s: float) -> None:
        super().__init__(config)
        self.bound_s = bound_s
        self._armed = False
        self._ticked = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def main_loop(self) -> None:
        """Tick (uvicorn's `on_tick`: the `date` header, the stop check) until a stop."""
        self._loop = asyncio.get_running_loop()
        while not await self.on_tick(0):  # 0: each tick renews the date header
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ticked.wait(), self.tick_s)
            self._ticked.clear()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Begin uvicorn's graceful stop, and make sure the process ends within the bound."""
        if not self._armed:
            self._armed = True
            _arm_watchdog(self.bound_s, signal.Signals(sig).name)
        super().handle_exit(sig, frame)
        if self._loop is not None:  # a signal handler: only the thread-safe call may wake it
            self._loop.call_soon_threadsafe(self._ticked.set)


def _arm_watchdog(bound_s: float, why: str) -> None:
    def expire() -> None:
        logger.error("stop (%s) took longer than %.0f s; exiting now", why, bound_s)
        logging.shutdown()
        os._exit(1)

    timer = threading.Timer(bound_s, expire)
    timer.daemon = True
    timer.start()
