"""MethodRouter: one `PaymentGateway` made of one adapter per payment method.

Each call goes to the adapter of its method (card → Stripe, paypal → PayPal, alipay → Alipay);
a webhook goes to the adapter of the provider that sent it, by the name in its path.
"""

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime

from billing.gateways import port

PROVIDER_OF_METHOD: Mapping[str, str] = {"card": "stripe", "paypal": "paypal", "alipay": "alipay"}
"""Which provider takes each method (CONTRACT.md, "Payments, the way each provider takes them")."""


class MethodRouter:
    """A `PaymentGateway` that sends each call to the adapter of the payment's method."""

    def __init__(self, adapters: Mapping[str, port.PaymentGateway]) -> None:
        """`adapters` maps a method (`card`, `paypal`, `alipay`) to the adapter that takes it."""
        unknown = sorted(set(adapters) - set(PROVIDER_OF_METHOD))
        if unknown:
            raise ValueError(f"no provider takes the method(s) {', '.join(unknown)}")
        self.adapters = dict(adapters)

    def adapter(self, method: str) -> port.PaymentGateway:
        """The adapter of `method`.

        Raises:
            GatewayRejectedError: no adapter takes the method (a request billing cannot send).
        """
        try:
            return self.adapters[method]
        except KeyError:
            raise port.GatewayRejectedError(
                422, f"no payment adapter for method {method!r}"
            ) from None

    def providers(self) -> dict[str, port.PaymentGateway]:
        """The adapters by provider name (`stripe`, `paypal`, `alipay`)."""
        return {PROVIDER_OF_METHOD[method]: gateway for method, gateway in self.adapters.items()}

    async def pay(self, request: port.PaymentRequest) -> port.PayOutcome:
        """See `PaymentGateway.pay`."""
        return await self.adapter(request.method).pay(request)

    async def capture(self, request: port.CaptureRequest) -> port.Captured:
        """See `PaymentGateway.capture`."""
        return await self.adapter(request.method).capture(request)

    async def void(self, request: port.VoidRequest) -> port.Voided:
        """See `PaymentGateway.void`."""
        return await self.adapter(request.method).void(request)

    async def refund(self, request: port.RefundRequest) -> port.RefundReceipt:
        """See `PaymentGateway.refund`."""
        return await self.adapter(request.method).refund(request)

    async def look_up(self, request: port.LookupRequest) -> port.PaymentView:
        """See `PaymentGateway.look_up`."""
        return await self.adapter(request.method).look_up(request)

    async def list_payments(self, since: datetime) -> list[port.PaymentView]:
        """Every adapter's list, each view carrying its method."""
        views: list[port.PaymentView] = []
        for method, gateway in self.adapters.items():
            for view in await gateway.list_payments(since):
                views.append(view if view.method else replace(view, method=method))
        return views

    async def read_webhook(self, headers: Mapping[str, str], body: bytes) -> port.WebhookNotice:
        """Not routable without the provider's name: use `read_webhook_of`."""
        raise port.WebhookRejectedError("a webhook is read by the provider named in its path")

    async def read_webhook_of(
        self, provider: str, headers: Mapping[str, str], body: bytes
    ) -> port.WebhookNotice:
        """Verify a call from `provider` with its adapter and say what it reports.

        Raises:
            WebhookRejectedError: no such provider here, or the call is forged, malformed or
                stale.
            GatewayUnavailableError: the provider could not be asked now.
        """
        gateway = self.providers().get(provider)
        if gateway is None:
            raise port.WebhookRejectedError(f"no payment provider {provider!r} is configured")
        return await gateway.read_webhook(headers, body)

    async def aclose(self) -> None:
        """Close every adapter that holds connections."""
        for gateway in self.adapters.values():
            close = getattr(gateway, "aclose", None)
            if close is not None:
                await close()
