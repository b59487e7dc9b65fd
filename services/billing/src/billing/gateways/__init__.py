"""Payment gateways: the port billing charges and refunds through, and its adapters.

`port.py` says what a provider does for billing (`PaymentGateway`); each provider has its
adapter module (`stripe.py`, `paypal.py`, `alipay.py`), and `router.py`'s `MethodRouter` sends
each call to the adapter of its payment method.
"""

from billing.gateways.port import (
    ActionRequired,
    Authorized,
    Capture,
    Captured,
    CaptureRequest,
    ChargeRequest,
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
