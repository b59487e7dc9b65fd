"""The payment providers the payment sandbox speaks, each in its own API's shape.

Each provider is a module here with a `mount(app, world)` that adds its routes under its own
prefix (`/stripe`, `/paypal`, `/alipay`), so a real client library pointed at
`http://<sandbox>/<prefix>` works, and the generic `/v1/charges` API stays where it was. They
share one `Ledger` (what was authorized, captured, voided, refunded: `GET /sandbox/ledger`) and
one `Deliveries` (signed webhooks and notifies to billing, redelivered on each provider's own
schedule until acknowledged). A `_slow` source's call waits in `World.slow`, which lists it on
`GET /sandbox/slow-calls` while it waits, so a test can act while the call is in flight (kill
the caller between sending it and hearing its answer).
"""

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from fastapi import FastAPI
from pydantic import BaseModel

from sandboxes.providers import alipay, paypal, stripe
from sandboxes.providers.delivery import Deliveries
from sandboxes.providers.ledger import Ledger
from sandboxes.timestamps import Clock, Timestamp


class SlowCall(BaseModel):
    """A `_slow` source's call the sandbox is holding before it acts and answers."""

    provider: str
    call: str
    """What was asked: `pay` (create, authorize or charge), `capture`."""
    reference: str
    since: Timestamp


@dataclass
class World:
    """What every provider of the payment sandbox shares."""

    ledger: Ledger
    deliveries: Deliveries
    clock: Clock
    public_url: str
    """The sandbox's own address as a buyer's browser reaches it (for approval pages)."""
    webhook_base_url: str
    """Where billing receives the providers' calls (`<url>/webhooks/<provider>`); empty: none."""
    slow_delay: float
    slow_calls: list[SlowCall] = field(default_factory=list)
    """The calls `slow` is holding right now."""

    async def slow(self, provider: str, call: str, reference: str) -> None:
        """Wait `slow_delay`, as a `_slow` source asks, listed in `slow_calls` meanwhile.

        The call goes on after the wait even if its caller has gone (a provider finishes what
        it was sent), so its effect lands without anyone hearing the answer.
        """
        held = SlowCall(provider=provider, call=call, reference=reference, since=self.clock())
        self.slow_calls.append(held)
        try:
            await asyncio.sleep(self.slow_delay)
        finally:
            self.slow_calls.remove(held)


Mount = Callable[[FastAPI, World], None]

MOUNTS: list[Mount] = [stripe.mount, paypal.mount, alipay.mount]
"""Each provider's `mount`, added here as the provider modules land."""
