"""Signed calls from the sandbox's providers to billing, redelivered until acknowledged.

A provider hands `Deliveries.send` the URL, body and headers it signed, and its own schedule
of waits between attempts (Stripe retries for days, PayPal 25 times, Alipay 8 times over about
25 hours: each provider module names its schedule, scaled down by the sandbox's setting so a
test sees several attempts). `acknowledged` says what counts as received (Alipay: the literal
body `success`; the others: any 2xx). Every attempt is kept for `GET /sandbox/deliveries`.

`replay` sends one call again exactly as it was last sent (the same body, the same signed
headers), as a provider's duplicate delivery or someone who recorded the call would: a test of
a receiver that must apply a call once (`POST /sandbox/deliveries/{id}/replay`).

Calls go out through `sandboxes.outbound` (one pooled aiohttp session); `Deliveries.post` is
the one seam: tests give a function that answers as a receiver would.
"""

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel

from sandboxes.outbound import AiohttpPost, Post, Reply, Unreachable
from sandboxes.timestamps import Clock, Timestamp, utc_now

logger = logging.getLogger("sandboxes.payment.delivery")

Resign = Callable[[bytes], dict[str, str]]
"""Fresh signature headers for an attempt (Stripe signs each delivery with the time it is sent)."""
Acknowledged = Callable[[Reply], bool]


def any_2xx(reply: Reply) -> bool:
    """Stripe's and PayPal's rule: any 2xx answer is an acknowledgement."""
    return 200 <= reply.status < 300


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
    replays: list[Attempt] = []
    """The times the call was sent again as it was (`Deliveries.replay`), not by the schedule."""


class Replayed(BaseModel):
    """What the receiver answered to a call sent again exactly as before."""

    status: int
    body: str


class UnknownDeliveryError(LookupError):
    """No call with that id was sent."""


@dataclass
class _Pending:
    record: DeliveryRecord
    body: bytes
    headers: dict[str, str]
    waits: list[float]
    acknowledged: Acknowledged
    resign: Resign | None
    sent_headers: dict[str, str] | None = None
    """The headers of the last attempt, as sent (signed anew where `resign` is given)."""


@dataclass
class Deliveries:
    """Sends calls in the background; `close` stops every redelivery still waiting."""

    clock: Clock = utc_now
    timeout_s: float = 5.0
    _records: list[DeliveryRecord] = field(default_factory=list)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _pending: dict[str, _Pending] = field(default_factory=dict)
    post: Post | None = None
    """How a call is sent: an `AiohttpPost` of `timeout_s` unless given."""
    in_flight: int = 16
    """Calls sent at once at most; the others wait their turn. Unbounded, thousands of calls
    queued in the HTTP client's pool, whose scheduling is linear in its queue per call: under
    load the sandbox spent its CPU there and answered the payment calls too late."""
    _slots: asyncio.Semaphore | None = None
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
        self._pending[id] = pending
        task = asyncio.get_running_loop().create_task(self._run(pending))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return record

    def records(self, reference: str | None = None) -> list[DeliveryRecord]:
        """Every call sent (or being sent), oldest first, optionally about one reference."""
        return [r for r in self._records if reference in (None, r.reference)]

    async def replay(self, id: str) -> Replayed:
        """Send the call `id` once more, exactly as it was last sent, and say what came back.

        The body and the signed headers are those of its last attempt (of its first, where it
        was never sent): a receiver that verifies and deduplicates must accept it and change
        nothing. The replay does not touch the call's schedule of redeliveries.

        Raises:
            UnknownDeliveryError: no call with that id was sent.
            Unreachable: the receiver could not be reached.
        """
        pending = self._pending.get(id)
        if pending is None:
            raise UnknownDeliveryError(id)
        reply = await self._post()(
            pending.record.url, pending.body, pending.sent_headers or pending.headers
        )
        pending.record.replays.append(Attempt(at=self.clock(), status=reply.status))
        return Replayed(status=reply.status, body=reply.text)

    def _post(self) -> Post:
        if self.post is None:
            self.post = AiohttpPost(self.timeout_s)
        return self.post

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
        post = self._post()
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.in_flight)
        async with self._slots:
            # Signed once its turn came, so the time in the signature is the time it is sent.
            headers = pending.headers
            if pending.resign is not None:
                headers = headers | pending.resign(pending.body)
            pending.sent_headers = headers
            try:
                reply = await post(pending.record.url, pending.body, headers)
            except Unreachable as error:
                logger.info("%s call %s: %s", pending.record.provider, pending.record.id, error)
                return None
        pending.record.delivered = pending.acknowledged(reply)
        return reply.status

    async def close(self) -> None:
        """Stop every redelivery and close the client."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if isinstance(self.post, AiohttpPost):
            await self.post.close()

    def reset(self) -> None:
        """Forget the records (calls already under way go on)."""
        self._records.clear()
        self._pending.clear()
        self.held.clear()
