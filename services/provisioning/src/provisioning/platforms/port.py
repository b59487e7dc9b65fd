"""The EsimPlatform port: order a bundle on a card with an idempotency key, follow it, cancel it."""

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from esim_core.outside.errors import RejectedError


@dataclass(frozen=True)
class BundleOrderRequest:
    """One bundle order; repeating it with the same `idempotency_key` never applies it twice."""

    idempotency_key: str
    iccid: str
    bundle_code: str
    data_mb: int
    validity_days: int
    start: str
    reference: str


@dataclass(frozen=True)
class BundleOrder:
    """An accepted order; `order_id` is the platform's reference to follow it by.

    `bundle` is the bundle as the order's answer described it, where the answer carried what
    a status lookup would (a platform that activates at once says so, with the dates): then
    no lookup is needed to activate or fail it.
    """

    order_id: str
    status: str
    bundle: "BundleStatus | None" = None


@dataclass(frozen=True)
class BundleStatus:
    """Where an ordered bundle is at the platform.

    `status` is the platform's word: `processing`, `active`, `queued`, `failed`, and later
    `depleted`, `expired` or `revoked`; the domain decides what each means.
    """

    order_id: str
    status: str
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    data_mb: int | None = None
    failure_reason: str | None = None


@dataclass(frozen=True)
class BundleCancellation:
    """The platform's answer to a cancel: whether the bundle will never run, and where it is.

    `cancelled` false means it could not be cancelled: it is live or queued-and-started
    (`active`, `depleted`), ended (`expired`) or `failed`; `bundle.status` says which.
    """

    order_id: str
    cancelled: bool
    bundle: BundleStatus


@dataclass(frozen=True)
class BundleUsage:
    """One bundle of a card as the platform measured it: its state and data use."""

    order_id: str
    status: str
    data_mb: int
    data_used_mb: int
    valid_from: datetime | None = None
    valid_until: datetime | None = None


@dataclass(frozen=True)
class CardUsage:
    """Every bundle of a card that went live, measured `as_of`."""

    iccid: str
    as_of: datetime
    bundles: tuple[BundleUsage, ...]


class UnknownIccidError(Exception):
    """The platform does not know the card: no order on it can ever succeed."""


class PlatformUnavailableError(Exception):
    """The platform could not answer now (connection, timeout, 5xx): the same call may succeed."""


class PlatformRateLimitedError(PlatformUnavailableError):
    """The platform asks to be called less often (429): not before `retry_after_s`."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class PlatformRejectedError(RejectedError):
    """The platform refused the request itself (key conflict, invalid order, unknown order)."""


class OrderNotFoundError(PlatformRejectedError):
    """The platform does not (or not yet) know an order id it handed out."""


class EsimPlatform(Protocol):
    """Applies bundles to existing cards at an eSIM platform (a reseller API or an SM-DP+)."""

    async def order_bundle(self, request: BundleOrderRequest) -> BundleOrder:
        """Order a bundle, or return the order already placed under its idempotency key.

        Raises:
            UnknownIccidError: the platform does not know the card.
            PlatformUnavailableError: no answer now; repeating the call is safe.
            PlatformRejectedError: the order itself was refused.
        """
        ...

    async def bundle_status(self, order_id: str) -> BundleStatus:
        """Where an order's bundle is now.

        Raises:
            OrderNotFoundError: the platform does not know the order.
            PlatformUnavailableError: no answer now; repeating the call is safe.
            PlatformRejectedError: the request was refused.
        """
        ...

    async def cancel_bundle(self, order_id: str) -> BundleCancellation:
        """Cancel an order's bundle if it has not started; repeating it is safe.

        Raises:
            OrderNotFoundError: the platform does not know the order.
            PlatformUnavailableError: no answer now; repeating the call is safe.
            PlatformRejectedError: the request was refused.
        """
        ...

    async def card_usage(self, iccid: str, *, ended_within_s: float | None = None) -> CardUsage:
        """The state and data use of every bundle of a card (rate-limited per card).

        With `ended_within_s`, the platform may leave out bundles that ended longer ago than
        that: a poller asks only for what can have changed since it last looked.

        Raises:
            UnknownIccidError: the platform does not know the card.
            PlatformRateLimitedError: asked too often; try after `retry_after_s`.
            PlatformUnavailableError: no answer now; repeating the call is safe.
            PlatformRejectedError: the request was refused.
        """
        ...
