"""The payment providers the payment sandbox speaks, each in its own API's shape.

Each provider is a module here with a `mount(app, world)` that adds its routes under its own
prefix (`/stripe`, `/paypal`, `/alipay`), so a real client library pointed at
`http://<sandbox>/<prefix>` works, and the generic `/v1/charges` API stays where it was. They
share one `Ledger` (what was authorized, captured, voided, refunded: `GET /sandbox/ledger`) and
one `Deliveries` (signed webhooks and notifies to billing, redelivered on each provider's own
schedule until acknowledged).
"""

from collections.abc import Callable
from dataclasses import dataclass

from fastapi import FastAPI

from sandboxes.providers import alipay, paypal, stripe
from sandboxes.providers.delivery import Deliveries
from sandboxes.providers.ledger import Ledger
from sandboxes.timestamps import Clock


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


Mount = Callable[[FastAPI, World], None]

MOUNTS: list[Mount] = [stripe.mount, paypal.mount, alipay.mount]
"""Each provider's `mount`, added here as the provider modules land."""
