"""Signed calls from the sandbox's providers to billing, redelivered until acknowledged.

A provider hands `Deliveries.send` the URL, body and headers it signed, and its own schedule
of waits between attempts (Stripe retries for days, PayPal 25 times, Alipay 8 times over about
25 hours: each provider module names its schedule, scaled down by the sandbox's setting so a
test sees several attempts). `acknowledged` says what counts as received (Alipay: the literal
body `success`; the others: any 2xx). Every attempt is kept for `GET /sandbox/deliveries`.
"""

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import httpx
from pydantic import BaseModel

from sandboxes.timestamps import Clock, Timestamp, utc_now

logger = logging.getLogger("sandboxes.payment.delivery")

Acknowledged = Callable[[httpx.Response], bool]
Resign = Callable[[bytes], dict[str, str]]
"""Fresh signature headers for an attempt (Stripe signs each delivery with the time it is sent)."""


def any_2xx(response: httpx.Response) -> bool:
    """Stripe's and PayPal's rule: any 2xx answer is an acknowledgement."""
    return response.is_success


class Attempt(BaseModel):
    """One try at delivering a call, with what the receiver answered."""

    at: Timestamp
    status: int | None
    """The HTTP status, or None when nothing answered."""


class DeliveryRecord(BaseModel):
    """One call and its attempts, for tests and people reading the sandbox."""

    id: str
    provider: str
    url: str
    event: str
    reference: str | None
    delivered: bool
    attempts: list[Attempt]


@dataclass
class _Pending:
    record: DeliveryRecord
    body: bytes
    headers: dict[str, str]
    waits: list[float]
    acknowledged: Acknowledged
    resign: Resign | None


@dataclass
class Deliveries:
    """Sends calls in the background; `close` stops every redelivery still waiting."""

    clock: Clock = utc_now
    timeout_s: float = 5.0
    _records: list[DeliveryRecord] = field(default_factory=list)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _client: httpx.AsyncClient | None = None
    held: set[str] = field(default_factory=set)
    """References whose calls are not sent at all (a "lost webhook" test), until released."""

    def send(
        self,
        *,
        id: str,
        provider: str,
        url: str,
        event: str,
        body: bytes,
        headers: dict[str, str],
        waits: Sequence[float],
        reference: str | None = None,
        acknowledged: Acknowledged = any_2xx,
        resign: Resign | None = None,
    ) -> DeliveryRecord:
        """Deliver now and, until acknowledged, again after each of `waits` seconds.

        `resign`, where given, makes the signature headers of each attempt anew (merged over
        `headers`), as a provider whose signature carries a timestamp does.
        """
        record = DeliveryRecord(
            id=id,
            provider=provider,
            url=url,
            event=event,
            reference=reference,
            delivered=False,
            attempts=[],
        )
        self._records.append(record)
        pending = _Pending(record, body, dict(headers), list(waits), acknowledged, resign)
        task = asyncio.get_running_loop().create_task(self._run(pending))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return record

    def records(self, reference: str | None = None) -> list[DeliveryRecord]:
        """Every call sent (or being sent), oldest first, optionally about one reference."""
        return [r for r in self._records if reference in (None, r.reference)]

    async def _run(self, pending: _Pending) -> None:
        waits = [0.0, *pending.waits]
        for wait in waits:
            if wait:
                await asyncio.sleep(wait)
            if pending.record.reference in self.held:
                continue
            status = await self._attempt(pending)
            pending.record.attempts.append(Attempt(at=self.clock(), status=status))
            if pending.record.delivered:
                return
        logger.info(
            "%s call %s to %s never acknowledged after %d attempts",
            pending.record.provider,
            pending.record.id,
            pending.record.url,
            len(pending.record.attempts),
        )

    async def _attempt(self, pending: _Pending) -> int | None:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout_s)
        headers = pending.headers
        if pending.resign is not None:
            headers = headers | pending.resign(pending.body)
        try:
            response = await self._client.post(
                pending.record.url, content=pending.body, headers=headers
            )
        except httpx.HTTPError as error:
            logger.info("%s call %s: %s", pending.record.provider, pending.record.id, error)
            return None
        pending.record.delivered = pending.acknowledged(response)
        return response.status_code

    async def close(self) -> None:
        """Stop every redelivery and close the client."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def reset(self) -> None:
        """Forget the records (calls already under way go on)."""
        self._records.clear()
        self.held.clear()
