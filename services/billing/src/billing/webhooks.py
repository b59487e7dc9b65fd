"""The providers' calls to billing: `POST /webhooks/stripe`, `/webhooks/paypal`, `/webhooks/alipay`.

No operator token: each call is verified by its provider's own scheme (the adapter's
`read_webhook`); a forged, malformed or stale one is answered 400 and changes nothing. A
verified call is applied once: its provider's event id goes into the inbox table in the same
transaction as its effect (`flow.PaymentFlow.apply_view` on the locked payment), so a
redelivery, a call out of order or a crash at any line leaves one effect or none, and the
provider, not hearing back, sends it again. A call with no effect (the usual case: it reports
what billing's own call learnt already) writes nothing, and one reporting what this process
committed itself reads nothing either (`flow.KnownOutcomes`). The answer is the one each
provider expects (Alipay: the literal body `success`).
"""

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from esim_core.clock import utcnow
from esim_core.duework.purge import Retention
from esim_core.messaging.inbox import inbox_retention, record_new
from esim_core.observability.logs import ids_bound
from esim_core.observability.tracing import current_traceparent, span
from esim_core.persistence.db import Database
from esim_core.persistence.driver import Target
from esim_core.web.problems import ProblemError, problem_responses
from fastapi import APIRouter, Request, Response

from billing.flow import PaymentFlow
from billing.gateways.port import (
    GatewayUnavailableError,
    PaymentView,
    WebhookNotice,
    WebhookRejectedError,
)
from billing.store import (
    Payment,
    locked_payment_by_provider_reference,
    payment_by_renewal,
    snapshot,
    write_payment,
)

logger = logging.getLogger(__name__)

PROVIDERS = ("stripe", "paypal", "alipay")
MAX_BODY_BYTES = 256 * 1024


def webhook_consumer(provider: str) -> str:
    """The inbox consumer a provider's calls are recorded under (kept `WEBHOOK_RETENTION_S`)."""
    return f"webhook:{provider}"


def webhook_inbox_retention(keep_s: float) -> Retention:
    """The window of every provider's recorded calls: a call sent again within it is dropped."""
    return inbox_retention("webhook inbox", [webhook_consumer(each) for each in PROVIDERS], keep_s)


def _header(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "header",
        "required": True,
        "description": description,
        "schema": {"type": "string"},
    }


def _text(description: str) -> dict[str, Any]:
    return {"type": "string", "description": description}


def _body(media_type: str, required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    """A required request body of one media type: an object with these fields."""
    return {
        "required": True,
        "content": {
            media_type: {
                "schema": {"type": "object", "required": required, "properties": properties}
            }
        },
    }


#: Each provider's call as the OpenAPI document shows it (the route reads the raw body, so
#: FastAPI cannot infer it): the body and the signature headers. Documentation for a
#: provider's integrator, and what `make fuzz` draws its forged calls from.
CALL_SHAPES: dict[str, dict[str, Any]] = {
    "stripe": {
        "description": "A Stripe event about a PaymentIntent or a charge, signed "
        "`Stripe-Signature: t=<unix time>,v1=<HMAC-SHA256>` with the endpoint's secret; "
        'older than 300 s is stale. Answered `{"received":true}`.',
        "parameters": [_header("Stripe-Signature", "`t=<unix time>,v1=<hex HMAC-SHA256>`")],
        "requestBody": _body(
            "application/json",
            ["id", "object", "type", "data"],
            {
                "id": _text("the event id (`evt_...`): a repeat is applied once"),
                "object": {"type": "string", "enum": ["event"]},
                "type": _text("e.g. `payment_intent.amount_capturable_updated`"),
                "created": {"type": "integer"},
                "data": {
                    "type": "object",
                    "required": ["object"],
                    "properties": {"object": {"type": "object"}},
                },
            },
        ),
    },
    "paypal": {
        "description": "A PayPal webhook event about an order, an authorization or a "
        "capture, verified by asking PayPal (`verify-webhook-signature`) with its "
        'transmission headers. Answered `{"received":true}`.',
        "parameters": [
            _header("PAYPAL-TRANSMISSION-ID", "the delivery's id"),
            _header("PAYPAL-TRANSMISSION-TIME", "when it was sent (RFC 3339)"),
            _header("PAYPAL-TRANSMISSION-SIG", "the signature, base64"),
            _header("PAYPAL-CERT-URL", "the certificate that signed it"),
            _header("PAYPAL-AUTH-ALGO", "e.g. `SHA256withRSA`"),
        ],
        "requestBody": _body(
            "application/json",
            ["id", "event_type", "resource"],
            {
                "id": _text("the event id (`WH-...`): a repeat is applied once"),
                "event_type": _text("e.g. `PAYMENT.AUTHORIZATION.CREATED`"),
                "resource_type": {"type": "string"},
                "resource": {"type": "object"},
            },
        ),
    },
    "alipay": {
        "description": "An Alipay asynchronous notify, RSA2-signed over every field but "
        "`sign` and `sign_type`. Answered with the literal `success`.",
        "requestBody": _body(
            "application/x-www-form-urlencoded",
            [
                "notify_id",
                "app_id",
                "out_trade_no",
                "trade_status",
                "sign_type",
                "sign",
            ],
            {
                "notify_id": _text("the notify's id: a repeat is applied once"),
                "notify_time": _text("`yyyy-MM-dd HH:mm:ss`, Beijing time"),
                "app_id": _text("the merchant app the notify is for"),
                "out_trade_no": _text("the renewal id"),
                "trade_no": _text("Alipay's trade number"),
                "trade_status": {
                    "type": "string",
                    "enum": [
                        "WAIT_BUYER_PAY",
                        "TRADE_SUCCESS",
                        "TRADE_FINISHED",
                        "TRADE_CLOSED",
                    ],
                },
                "total_amount": _text("yuan, e.g. `99.00`"),
                "charset": {"type": "string", "enum": ["utf-8"]},
                "sign_type": {"type": "string", "enum": ["RSA2"]},
                "sign": _text("the RSA2 signature, base64"),
            },
        ),
    },
}


class WebhookReader(Protocol):
    """What the webhooks need of the gateway: read a call by its provider's name."""

    async def read_webhook_of(
        self, provider: str, headers: dict[str, str], body: bytes
    ) -> WebhookNotice:
        """Verify the call and say what it reports (see `MethodRouter.read_webhook_of`)."""
        ...


async def payment_of_view(connection: Target, view: PaymentView) -> Payment | None:
    """The payment a provider's view is about, locked: by the renewal id, else the reference."""
    if view.reference:
        found = await payment_by_renewal(connection, view.reference, lock=True)
        if found is not None:
            return found
    if view.provider_reference:
        return await locked_payment_by_provider_reference(connection, view.provider_reference)
    return None


class _AppliedBefore(Exception):
    """The call's event id is in the inbox already: its effect is rolled back."""


async def apply_notice(
    database: Database, flow: PaymentFlow, provider: str, notice: WebhookNotice
) -> bool:
    """Apply a verified call once; True when it moved a payment.

    The payment is read locked, and the call applied to it; only a call that moves it records
    its event id, in the same transaction as the effect (a repeat of a recorded call rolls the
    effect back). A call that moves nothing writes nothing: most calls report what billing
    learnt from its own call's answer already, and applying one of those again, or a repeat of
    it, changes nothing either (each transition starts only from the states it leaves). One
    that reports the hold or capture this process committed itself needs no transaction at all
    (`flow.KnownOutcomes`).
    """
    if flow.known.covers(notice.view):
        # What this process committed itself: nothing to read, nothing to write.
        logger.debug(
            "%s webhook %s: payment of renewal %s as committed (%s)",
            provider,
            notice.provider_event_id,
            notice.view.reference,
            notice.view.standing,
        )
        return False
    try:
        async with database.transaction() as transaction:
            payment = await payment_of_view(transaction, notice.view)
            if payment is None:
                # Not billing's, or about a payment billing has not recorded: the look-ups
                # find it.
                logger.warning(
                    "%s webhook %s (%s) names no payment here",
                    provider,
                    notice.provider_event_id,
                    notice.view.standing,
                )
                return False
            # The effect (and any event it publishes) continues the renewal's own trace, which
            # the payment row keeps, so a renewal stays one trace whichever way the news came;
            # the provider's call is linked to it.
            with (
                ids_bound(renewal_id=payment.renewal_id, iccid=payment.iccid),
                span(
                    f"{provider} webhook",
                    parent=payment.traceparent,
                    links=(current_traceparent(),),
                ),
            ):
                before = snapshot(payment)
                now = utcnow()
                moved = await flow.apply_view(transaction, payment, notice.view, now)
                if moved:
                    new = await record_new(
                        transaction,
                        webhook_consumer(provider),
                        [(notice.provider_event_id, notice.view.standing)],
                    )
                    if not new:
                        raise _AppliedBefore
                    payment.updated_at = now
                    # A round in flight (its call answered after this news) commits nothing
                    # now; its lease must not hold back the payment's next step until it runs
                    # out.
                    payment.lease_until = None
                    await write_payment(transaction, payment, before)
                # Most calls repeat what billing knew (the access log has them): those at DEBUG.
                logger.log(
                    logging.INFO if moved else logging.DEBUG,
                    "%s webhook %s: payment %s %s (%s)",
                    provider,
                    notice.provider_event_id,
                    payment.id,
                    f"now {payment.state}" if moved else "unchanged",
                    notice.view.standing,
                )
        flow.known.remember(payment)
        return moved
    except _AppliedBefore:
        logger.info("%s webhook %s again: applied before", provider, notice.provider_event_id)
        return False


def build_webhook_router(
    database: Database,
    flow: PaymentFlow,
    gateway: WebhookReader,
    wake: Callable[[], None],
) -> APIRouter:
    """The three webhook routes; they sit outside the operator guard."""
    router = APIRouter(prefix="/webhooks", tags=["webhooks"])

    async def receive(provider: str, request: Request) -> Response:
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            raise ProblemError(400, f"a {provider} call of {len(body)} bytes is too large")
        headers = {key.lower(): value for key, value in request.headers.items()}
        try:
            notice = await gateway.read_webhook_of(provider, headers, body)
        except WebhookRejectedError as error:
            logger.warning("%s webhook rejected: %s", provider, error)
            raise ProblemError(
                400, f"not a valid {provider} call: {error}", kind="webhook-rejected"
            ) from None
        except GatewayUnavailableError as error:
            # The provider could not be asked to verify it: it sends the call again.
            raise ProblemError(
                503, f"{provider} could not be asked now: {error}", kind="provider-unavailable"
            ) from None
        if await apply_notice(database, flow, provider, notice):
            wake()
        if notice.answer:
            return Response(notice.answer, media_type="text/plain")
        return Response('{"received":true}', media_type="application/json")

    for provider in PROVIDERS:
        router.add_api_route(
            f"/{provider}",
            _route(receive, provider),
            methods=["POST"],
            summary=f"A signed call from {provider}",
            responses=problem_responses(400, 503),
            response_class=Response,
            openapi_extra=CALL_SHAPES[provider],
        )
    return router


def _route(
    receive: Callable[[str, Request], Awaitable[Response]], provider: str
) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        return await receive(provider, request)

    endpoint.__name__ = f"webhook_{provider}"
    return endpoint
