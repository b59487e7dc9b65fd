"""Payment gateways: the port billing charges and refunds through, and its adapters.

`port.py` says what a gateway does; `http.py` is `HttpPaymentGateway`, the one adapter that
serves card, PayPal and Alipay (the method is a field of each request). A provider that needs
its own adapter gets a module here implementing `PaymentGateway`, and `bootstrap.build_gateway`
chooses it by configuration.
"""

from billing.gateways.port import (
    Capture,
    ChargeRequest,
    GatewayRejectedError,
    GatewayUnavailableError,
    PaymentDeclinedError,
    PaymentGateway,
    RefundReceipt,
    RefundRequest,
)

__all__ = [
    "Capture",
    "ChargeRequest",
    "GatewayRejectedError",
    "GatewayUnavailableError",
    "PaymentDeclinedError",
    "PaymentGateway",
    "RefundReceipt",
    "RefundRequest",
]
