"""Payment gateways: the port billing charges and refunds through, and its adapters.

`port.py` says what a provider does for billing (`PaymentGateway`); `http.py` is
`HttpPaymentGateway`, the charge-at-once adapter (`ChargingGateway`) over the sandbox's generic
`/v1/charges` API that the loops use until they move to the provider adapters (one module a
provider, each implementing `PaymentGateway`).
"""

from billing.gateways.port import (
    ActionRequired,
    Authorized,
    Capture,
    Captured,
    CaptureRequest,
    ChargeRequest,
    ChargingGateway,
    GatewayRejectedError,
    GatewayUnavailableError,
    LookupRequest,
    PaymentDeclinedError,
    PaymentGateway,
    PaymentRequest,
    PaymentView,
    PayOutcome,
    RefundReceipt,
    RefundRequest,
    Standing,
    Voided,
    VoidRequest,
    WebhookNotice,
    WebhookRejectedError,
)

__all__ = [
    "ActionRequired",
    "Authorized",
    "Capture",
    "CaptureRequest",
    "Captured",
    "ChargeRequest",
    "ChargingGateway",
    "GatewayRejectedError",
    "GatewayUnavailableError",
    "LookupRequest",
    "PayOutcome",
    "PaymentDeclinedError",
    "PaymentGateway",
    "PaymentRequest",
    "PaymentView",
    "RefundReceipt",
    "RefundRequest",
    "Standing",
    "VoidRequest",
    "Voided",
    "WebhookNotice",
    "WebhookRejectedError",
]
