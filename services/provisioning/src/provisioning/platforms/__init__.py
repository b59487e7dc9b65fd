"""eSIM platforms: the port provisioning orders and follows bundles through, and its adapters.

`port.py` says what a platform does; `http.py` is `HttpEsimPlatform`, the adapter for the
reseller-style HTTP API (`POST /v1/bundles`, `GET /v1/bundles/{order_id}`,
`POST /v1/bundles/{order_id}/cancel`, `GET /v1/cards/{iccid}/usage`) that the sandbox
emulates. An SM-DP+ (GSMA SGP.22 ES2+) adapter would be another module here implementing
`EsimPlatform`, chosen by `bootstrap.build_platform` from configuration.
"""

from provisioning.platforms.port import (
    BundleCancellation,
    BundleOrder,
    BundleOrderRequest,
    BundleStatus,
    BundleUsage,
    CardUsage,
    EsimPlatform,
    OrderNotFoundError,
    PlatformRateLimitedError,
    PlatformRejectedError,
    PlatformUnavailableError,
    UnknownIccidError,
)

__all__ = [
    "BundleCancellation",
    "BundleOrder",
    "BundleOrderRequest",
    "BundleStatus",
    "BundleUsage",
    "CardUsage",
    "EsimPlatform",
    "OrderNotFoundError",
    "PlatformRateLimitedError",
    "PlatformRejectedError",
    "PlatformUnavailableError",
    "UnknownIccidError",
]
