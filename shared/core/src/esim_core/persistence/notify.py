"""Waking another process of the same service when a transaction commits, on PostgreSQL.

Replicas share one database, and work one of them commits can be waiting on another: the outbox
relay runs in one replica at a time (its lease), so an event that another replica commits would
wait out the relay's poll interval. A transaction notes the channel (`notify_on_commit` in
`esim_core.persistence.db`); `Database.session` sends PostgreSQL's NOTIFY with it, which the
server delivers only if the transaction commits, to every connection that LISTENs on the channel
(`Listener`). The poll stays as the fallback: a note lost with a listener's connection delays
the work, never loses it.
"""

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from esim_core.persistence.db import Database

logger = logging.getLogger(__name__)


class Listener:
    """Calls `wake` whenever a transaction that sent a NOTIFY on `channel` commits.

    While open it holds one connection of the database's pool (LISTEN is a property of a
    connection). `open` is meant to be called before each round of the loop it wakes: it does
    nothing while the connection lives, connects again once one was lost (a database restart),
    and after a failed attempt tries again no sooner than `retry_s` later.
    """

    def __init__(
        self, database: Database, channel: str, wake: Callable[[], None], *, retry_s: float = 5.0
    ) -> None:
        self.database = database
        self.channel = channel
        self.wake = wake
        self.retry_s = retry_s
        self._connection: AsyncConnection | None = None
        self._driver: Any = None
        self._retry_at = 0.0

    @property
    def listening(self) -> bool:
        """Whether a live connection listens on the channel now."""
        return self._driver is not None and not self._driver.is_closed()

    async def open(self) -> None:
        """Listen on the channel, unless already listening or waiting to retry."""
        if self.listening:
            return
        await self.close()
        if time.monotonic() < self._retry_at:
            return
        connection: AsyncConnection | None = None
        try:
            connection = await self.database.engine.connect()
            raw = await connection.get_raw_connection()
            driver = raw.driver_connection
            await driver.add_listener(self.channel, self._notified)  # type: ignore[union-attr]
        except Exception as error:
            self._retry_at = time.monotonic() + self.retry_s
            logger.warning(
                "cannot listen on %s (%s); polling meanwhile, trying again in %.0f s",
                self.channel,
                type(error).__name__,
                self.retry_s,
            )
            if connection is not None:
                await _discard(connection)
            return
        except BaseException:  # cancelled (a stop): the connection must not stay checked out
            if connection is not None:
                await asyncio.shield(_discard(connection))
            raise
        self._connection, self._driver = connection, driver
        # A commit made while nobody listened woke nobody: look once now.
        self.wake()

    async def close(self) -> None:
        """Stop listening and give the connection back to the pool (or drop it, if broken)."""
        connection, driver = self._connection, self._driver
        self._connection = self._driver = None
        if connection is None:
            return
        returned = False
        try:
            if not driver.is_closed():
                await driver.remove_listener(self.channel, self._notified)  # UNLISTEN
                await connection.close()
                returned = True
        except Exception:
            logger.debug("closing the listener on %s failed", self.channel, exc_info=True)
        finally:
            # Not given back cleanly (failed, or cancelled by a stop): dropped, never pooled
            # while it may still listen.
            if not returned:
                await asyncio.shield(_discard(connection))

    def _notified(self, *_details: Any) -> None:
        # asyncpg calls this on the event loop with (connection, pid, channel, payload).
        self.wake()


async def _discard(connection: AsyncConnection) -> None:
    try:
        await connection.invalidate()
        await connection.close()
    except Exception:
        logger.debug("discarding a listener's connection failed", exc_info=True)
