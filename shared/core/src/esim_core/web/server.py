"""Serving a service's app: uvicorn until a stop signal, and an exit within the stop bound."""

import logging
import os
import signal
import threading
from types import FrameType

import uvicorn
from fastapi import FastAPI

from esim_core.settings import ServiceSettings

logger = logging.getLogger(__name__)

#: Seconds past `stop_timeout_s` after which the watchdog ends a stopping process: its whole
#: stop bound is `stop_timeout_s + STOP_WATCHDOG_GRACE_S`, which an orchestrator's grace period
#: (compose's `stop_grace_period`, a pod's `terminationGracePeriodSeconds`) must exceed.
STOP_WATCHDOG_GRACE_S = 3.0


def serve(app: FastAPI, settings: ServiceSettings) -> None:
    """Serve the app with uvicorn until SIGTERM or SIGINT, and exit within the stop bound.

    uvicorn stops taking requests, lets those in flight finish, then runs the lifespan's
    shutdown (`ServiceRuntime.stop`). Should anything hang past `stop_timeout_s` plus a short
    grace, a watchdog thread ends the process: everything it left is durable and redone.
    """
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # aiosqlite logs every call with its arguments at DEBUG, tokens included.
    logging.getLogger("aiosqlite").setLevel(max(logging.INFO, logging.getLogger().level))
    config = uvicorn.Config(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        timeout_graceful_shutdown=max(1, int(settings.stop_timeout_s / 4)),
    )
    BoundedServer(config, settings.stop_timeout_s + STOP_WATCHDOG_GRACE_S).run()


class BoundedServer(uvicorn.Server):
    """A uvicorn server whose first stop signal also arms an exit watchdog."""

    def __init__(self, config: uvicorn.Config, bound_s: float) -> None:
        super().__init__(config)
        self.bound_s = bound_s
        self._armed = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Begin uvicorn's graceful stop, and make sure the process ends within the bound."""
        if not self._armed:
            self._armed = True
            _arm_watchdog(self.bound_s, signal.Signals(sig).name)
        super().handle_exit(sig, frame)


def _arm_watchdog(bound_s: float, why: str) -> None:
    def expire() -> None:
        logger.error("stop (%s) took longer than %.0f s; exiting now", why, bound_s)
        logging.shutdown()
        os._exit(1)

    timer = threading.Timer(bound_s, expire)
    timer.daemon = True
    timer.start()
