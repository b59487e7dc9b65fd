"""PayPalGateway: the `paypal` method over PayPal's Orders v2 and Payments v2 APIs.

Through PayPal's official server SDK (`paypal-server-sdk`), pointed at any base URL (PayPal's
live or sandbox API, or the payment sandbox's `/paypal`). The SDK is synchronous: each call runs
in a worker thread, at most `max_concurrent` at once, bounded by `timeout_s`. The SDK has no
call for verifying a webhook, so that one call goes over the shared adapter base with a token
of its own.

How a payment goes (CONTRACT.md, "Payments, the way each provider takes them"):

- `pay` creates an `intent: AUTHORIZE` order under `PayPal-Request-Id` = the idempotency key
  (`reference_id` and `custom_id` = the renewal id). With a saved source (`vault_id`) the order
  is APPROVED at once; without one PayPal answers PAYER_ACTION_REQUIRED and the buyer opens
  the `payer-action` link (`ActionRequired`, expiring 3 hours after the order was made, when
  PayPal drops an order nobody approved; past it, or once the order is VOIDED (the payment
  sandbox voids it on the buyer's cancel; PayPal leaves it waiting), `look_up` reads CANCELLED
  and `pay` raises `not_approved`). `pay` again under the same key finds the same order
  (PayPal answers a repeated request id with it) and, once approved, authorizes it
  (`PayPal-Request-Id` = `<key>:authorize`): `Authorized` until the authorization's
  `expiration_time` (29 days; PayPal promises the funds for the first 3 of them).
- An order can be COMPLETED while its authorization or capture is DECLINED: the status trusted
  is always the authorization's or the capture's own.
- `provider_reference` is the order id everywhere but in `Captured`, where it is the capture
  id (the `charge_id` a refund takes) and `payment_reference` is the order id; `capture` and
  `void` find the authorization on the order. The buyer's cancel sends them to `return_url` with
  `cancelled=true` added (PayPal's cancel URL carries only `token`).
- `look_up` needs the order id: PayPal finds an order by nothing else. When a create's answer
  was lost, `pay` under the same key is the question (it returns the same order, never a
  second one).

Errors: timeouts, connection errors, 5xx and 429 are `GatewayUnavailableError`; a decline
(`INSTRUMENT_DECLINED`, a DECLINED authorization or capture) is `PaymentDeclinedError`;
anything else PayPal refuses is `GatewayRejectedError`. The secret, access tokens and vault
tokens are never logged.
"""

import asyncio
import contextvars
import functools
import json
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import requests
from apimatic_core.exceptions.auth_validation_exception import AuthValidationException
from esim_core.observability.metrics import OUTSIDE_CALL_SECONDS
from esim_core.outside.adapter import HttpAdapter, is_transient
from paypalserversdk.configuration import Configuration, Server
from paypalserversdk.exceptions.api_exception import ApiException
from paypalserversdk.http.auth.o_auth_2 import ClientCredentialsAuthCredentials
from paypalserversdk.paypal_serversdk_client import PaypalServersdkClient
from pydantic import BaseModel, ValidationError

from billing.gateways import port

logger = logging.getLogger("billing.gateways.paypal")

_M = TypeVar("_M", bound=BaseModel)

METHOD = "paypal"
ORDER_APPROVAL_WINDOW = timedelta(hours=3)
"""How long PayPal keeps an order that nobody approved."""
SEARCH_WINDOW = timedelta(days=31)
"""Transaction Search takes at most 31 days per request."""
ZERO_DECIMAL_CURRENCIES = frozenset({"HUF", "JPY", "TWD"})
"""The currencies PayPal takes without decimals; every other has two."""
WEBHOOK_HEADERS = (
    "paypal-transmission-id",
    "paypal-transmission-time",
    "paypal-transmission-sig",
    "paypal-cert-url",
    "paypal-auth-algo",
)

DECLINE_ISSUES: dict[str, tuple[str, bool]] = {
    # PayPal's answer when the payer's funding failed: recoverable, the payer can fund again.
    "INSTRUMENT_DECLINED": ("insufficient_funds", True),
    "REDIRECT_PAYER_FOR_ALTERNATE_FUNDING": ("insufficient_funds", True),
    "TRANSACTION_REFUSED": ("declined", False),
    "PAYER_CANNOT_PAY": ("declined", False),
    "PAYMENT_DENIED": ("declined", False),
    "PAYEE_BLOCKED_TRANSACTION": ("declined", False),
    "PAYMENT_SOURCE_DECLINED_BY_PROCESSOR": ("declined", False),
    "PAYMENT_SOURCE_INFO_CANNOT_BE_VERIFIED": ("invalid_token", False),
}
"""An error's `details[].issue` that is a decline: our code and whether a retry may work."""

PROCESSOR_DECLINES: dict[str, tuple[str, bool]] = {
    "5120": ("insufficient_funds", True),
    "5400": ("expired_method", False),
}
"""A DECLINED authorization's or capture's `processor_response.response_code`; else declined."""


def to_value(minor: int, currency: str) -> str:
    """A minor-unit amount as PayPal's decimal string (`9900` USD → `"99.00"`)."""
    if currency in ZERO_DECIMAL_CURRENCIES:
        return str(minor)
    return f"{minor // 100}.{minor % 100:02d}"


def to_minor(value: str, currency: str) -> int:
    """PayPal's decimal string in the currency's minor unit (`"-5.00"` → `-500`)."""
    digits = 0 if currency in ZERO_DECIMAL_CURRENCIES else 2
    return int(Decimal(value).scaleb(digits))


# ---- what PayPal answers (only the fields billing reads) ---------------------------------


class _Money(BaseModel):
    currency_code: str
    value: str

    def minor(self) -> int:
        return to_minor(self.value, self.currency_code)


class _Link(BaseModel):
    href: str
    rel: str


class _Processor(BaseModel):
    response_code: str | None = None


class _RelatedIds(BaseModel):
    order_id: str | None = None
    authorization_id: str | None = None


class _Supplementary(BaseModel):
    related_ids: _RelatedIds = _RelatedIds()


class _Payment(BaseModel):
    """An authorization, a capture or a refund."""

    id: str
    status: str
    amount: _Money | None = None
    expiration_time: datetime | None = None
    create_time: datetime | None = None
    custom_id: str | None = None
    processor_response: _Processor | None = None
    supplementary_data: _Supplementary = _Supplementary()
    links: list[_Link] = []

    def decline(self) -> tuple[str, bool]:
        code = self.processor_response.response_code if self.processor_response else None
        return PROCESSOR_DECLINES.get(code or "", ("declined", False))

    def link(self, rel: str) -> str | None:
        return next((link.href for link in self.links if link.rel == rel), None)


class _Payments(BaseModel):
    authorizations: list[_Payment] = []
    captures: list[_Payment] = []
    refunds: list[_Payment] = []


class _PurchaseUnit(BaseModel):
    reference_id: str | None = None
    amount: _Money | None = None
    payments: _Payments = _Payments()


class _Order(BaseModel):
    id: str
    status: str
    create_time: datetime | None = None
    purchase_units: list[_PurchaseUnit] = []
    links: list[_Link] = []

    @property
    def unit(self) -> _PurchaseUnit:
        return self.purchase_units[0] if self.purchase_units else _PurchaseUnit()

    @property
    def authorization(self) -> _Payment | None:
        authorizations = self.unit.payments.authorizations
        return authorizations[-1] if authorizations else None

    @property
    def completed_capture(self) -> _Payment | None:
        return next(
            (
                c
                for c in self.unit.payments.captures
                if c.status in ("COMPLETED", "PENDING", "PARTIALLY_REFUNDED", "REFUNDED")
            ),
            None,
        )

    def link(self, *rels: str) -> str | None:
        return next((link.href for link in self.links if link.rel in rels), None)


class _Event(BaseModel):
    id: str
    event_type: str
    create_time: datetime | None = None
    resource: dict[str, Any]


class _Transaction(BaseModel):
    transaction_id: str
    transaction_event_code: str | None = None
    transaction_initiation_date: datetime | None = None
    transaction_amount: _Money
    transaction_status: str | None = None
    custom_field: str | None = None
    paypal_reference_id: str | None = None


class _TransactionDetail(BaseModel):
    transaction_info: _Transaction


class _Search(BaseModel):
    transaction_details: list[_TransactionDetail] = []
    total_pages: int = 1


class _Token(BaseModel):
    access_token: str
    expires_in: int = 3600


class _Verification(BaseModel):
    verification_status: str


# ---- the SDK, pointed at any base URL -------------------------------------------------


class _Configuration(Configuration):  # type: ignore[misc]  # the SDK ships no type hints
    """The SDK's configuration with its base URI taken from billing's settings."""

    def __init__(self, base_uri: str, **kwargs: Any) -> None:
        self._base_uri = base_uri.rstrip("/")
        super().__init__(**kwargs)

    def get_base_uri(self, server: Server = Server.DEFAULT) -> str:
        """Every call goes to the configured base URL, whatever the environment says."""
        return self._base_uri


class _Verifier(HttpAdapter):
    """verify-webhook-signature, which the SDK lacks, with a client-credentials token."""

    system = "paypal"
    called = "PayPal"
    unavailable = port.GatewayUnavailableError

    def __init__(self, base_url: str, client_id: str, secret: str, timeout_s: float) -> None:
        super().__init__(base_url.rstrip("/"), timeout_s=timeout_s)
        self._credentials = (client_id, secret)
        self._token: str | None = None
        self._expires = 0.0

    async def verify(self, body: dict[str, Any]) -> bool:
        """Ask PayPal whether a webhook call is genuine; a stale token is renewed once.

        Raises:
            GatewayUnavailableError: PayPal cannot be asked now, or refuses billing's own
                credentials (an operator's fix; PayPal redelivers meanwhile).
            WebhookRejectedError: PayPal refuses to verify what the call carries.
        """
        for attempt in range(2):
            token = await self._access_token(renew=attempt > 0)
            response = await self.call(
                "POST",
                "/v1/notifications/verify-webhook-signature",
                json=body,
                headers={"Authorization": f"Bearer {token}"},
            )
            if response.status_code == 401 and attempt == 0:
                continue
            if response.is_success:
                answer = self.reply(response, _Verification, "an answer without a status")
                return answer.verification_status == "SUCCESS"
            if is_transient(response.status_code) or response.status_code in (401, 403):
                raise port.GatewayUnavailableError(f"PayPal verify: HTTP {response.status_code}")
            raise port.WebhookRejectedError(
                f"PayPal would not verify it: {_error_text(response.text)}"
            )
        raise port.GatewayUnavailableError("PayPal verify: the access token was refused")

    async def _access_token(self, *, renew: bool) -> str:
        if self._token is not None and not renew and time.monotonic() < self._expires:
            return self._token
        response = await self.call(
            "POST",
            "/v1/oauth2/token",
            data={"grant_type": "client_credentials"},
            auth=httpx.BasicAuth(*self._credentials),
        )
        if not response.is_success:
            if not is_transient(response.status_code):
                logger.warning("PayPal refused billing's client credentials: check them")
            raise port.GatewayUnavailableError(f"PayPal token: HTTP {response.status_code}")
        token = self.reply(response, _Token, "a token answer without a token")
        # Renew a minute early, so a token never expires between asking and using it.
        self._expires = time.monotonic() + max(token.expires_in - 60, 0)
        self._token = token.access_token
        return token.access_token


class PayPalGateway:
    """The `paypal` method at PayPal (see the module's docstring for how a payment goes).

    Args:
        client_id: the REST app's client id.
        secret: its secret (never logged).
        base_url: PayPal's API root, e.g. `https://api-m.paypal.com` or
            `http://<payment sandbox>/paypal`.
        webhook_id: the id PayPal gave billing's webhook; signatures are verified against it.
        timeout_s: the bound on one call.
        max_concurrent: how many SDK calls run at once (each takes a worker thread).
    """

    def __init__(
        self,
        client_id: str,
        secret: str,
        base_url: str,
        webhook_id: str,
        timeout_s: float = 10.0,
        *,
        max_concurrent: int = 8,
    ) -> None:
        self._timeout_s = timeout_s
        self._webhook_id = webhook_id
        # Threads of its own: the SDK's calls never starve the loop's default executor (which
        # also resolves host names), and at most `max_concurrent` run at once.
        self._threads = ThreadPoolExecutor(max_concurrent, thread_name_prefix="paypal-sdk")
        self._client = PaypalServersdkClient(
            config=_Configuration(
                base_url,
                timeout=timeout_s,
                max_retries=0,
                client_credentials_auth_credentials=ClientCredentialsAuthCredentials(
                    o_auth_client_id=client_id, o_auth_client_secret=secret
                ),
            )
        )
        self._verifier = _Verifier(base_url, client_id, secret, timeout_s)

    async def aclose(self) -> None:
        """Close the webhook verifier's connection pool and the SDK's threads."""
        await self._verifier.aclose()
        self._threads.shutdown(wait=False, cancel_futures=True)

    # ---- the port ------------------------------------------------------------------------

    async def pay(self, request: port.PaymentRequest) -> port.PayOutcome:
        """Create (or find) the order under the key and authorize it once approved."""
        order = await self._create_order(request)
        if _waiting(order):
            return self._action_required(order)
        if order.status in ("CREATED", "PAYER_ACTION_REQUIRED", "VOIDED") and (
            order.authorization is None
        ):
            raise port.PaymentDeclinedError(
                "not_approved", False, f"PayPal order {order.id} was cancelled or expired"
            )
        if order.status == "APPROVED":
            order = await self._authorize(order.id, request.idempotency_key)
        if order.status not in ("COMPLETED", "VOIDED"):
            raise port.GatewayRejectedError(422, f"PayPal order {order.id} is {order.status}")
        return self._authorization_outcome(order)

    async def capture(self, request: port.CaptureRequest) -> port.Captured:
        """Capture the order's authorization once; an earlier capture is returned as is."""
        order = await self._get_order(request.provider_reference)
        done = order.completed_capture
        if done is not None:
            return self._captured(order, done)
        authorization = order.authorization
        if authorization is None:
            raise port.GatewayRejectedError(409, f"PayPal order {order.id} has no authorization")
        try:
            answer = await self._call(
                "capture",
                self._client.payments.capture_authorized_payment,
                _once(
                    request.idempotency_key,
                    authorization_id=authorization.id,
                    body={"final_capture": True},
                ),
            )
        except port.GatewayRejectedError as error:
            if "AUTHORIZATION_ALREADY_CAPTURED" not in str(error):
                raise
            # Captured under another key (or the answer was lost): the one capture stands.
            order = await self._get_order(request.provider_reference)
            if (done := order.completed_capture) is None:
                raise
            return self._captured(order, done)
        capture = _parse(_Payment, answer, "a capture")
        if capture.status == "DECLINED":
            code, retryable = capture.decline()
            logger.info("paypal capture %s declined on order %s", capture.id, order.id)
            raise port.PaymentDeclinedError(
                code, retryable, f"PayPal declined capture {capture.id} of order {order.id}"
            )
        return self._captured(order, capture)

    async def void(self, request: port.VoidRequest) -> port.Voided:
        """Void the order's authorization; an order with none holds nothing to release."""
        order = await self._get_order(request.provider_reference)
        authorization = order.authorization
        if authorization is None or authorization.status in ("VOIDED", "DECLINED", "EXPIRED"):
            # Nothing is held: an order nobody authorized expires by itself at PayPal.
            return port.Voided(provider_reference=order.id)
        if authorization.status != "CREATED":
            raise port.GatewayRejectedError(
                409, f"PayPal authorization {authorization.id} is {authorization.status}"
            )
        try:
            await self._call(
                "void",
                self._client.payments.void_payment,
                {
                    "authorization_id": authorization.id,
                    "paypal_request_id": request.idempotency_key,
                },
            )
        except port.GatewayRejectedError as error:
            if "AUTHORIZATION_VOIDED" not in str(error):
                raise
        return port.Voided(provider_reference=order.id)

    async def refund(self, request: port.RefundRequest) -> port.RefundReceipt:
        """Refund `amount` of a capture (`charge_id`) once per key."""
        currency = request.currency
        if currency is None:
            capture = _parse(
                _Payment,
                await self._call(
                    "get capture",
                    self._client.payments.get_captured_payment,
                    {"capture_id": request.charge_id},
                ),
                "a capture",
            )
            currency = capture.amount.currency_code if capture.amount else None
        if currency is None:
            raise port.GatewayUnavailableError("PayPal capture without an amount")
        answer = await self._call(
            "refund",
            self._client.payments.refund_captured_payment,
            _once(
                request.idempotency_key,
                capture_id=request.charge_id,
                body={
                    "amount": {
                        "currency_code": currency,
                        "value": to_value(request.amount, currency),
                    }
                },
            ),
        )
        refund = _parse(_Payment, answer, "a refund")
        amount = refund.amount.minor() if refund.amount else request.amount
        return port.RefundReceipt(refund_id=refund.id, amount=amount, currency=currency)

    async def look_up(self, request: port.LookupRequest) -> port.PaymentView:
        """Where the order stands, by its id; changes nothing."""
        if request.provider_reference is None:
            raise port.GatewayRejectedError(
                400,
                "PayPal finds an order by its id only: call pay again under the same key, "
                "which returns the order made under it",
            )
        try:
            order = await self._get_order(request.provider_reference)
        except port.GatewayRejectedError as error:
            if error.status == 404:
                return port.PaymentView(
                    standing=port.Standing.NOT_FOUND, reference=request.reference, method=METHOD
                )
            raise
        return self._view(order)

    async def list_payments(self, since: datetime) -> list[port.PaymentView]:
        """Captures and refunds from Transaction Search, 31 days per request."""
        views: list[port.PaymentView] = []
        # Whole seconds, as PayPal's dates go: the start rounded down, the end up.
        start = since.astimezone(UTC).replace(microsecond=0)
        now = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
        while start < now:
            end = min(start + SEARCH_WINDOW, now)
            page, pages = 1, 1
            while page <= pages:
                answer = await self._call(
                    "search transactions",
                    self._client.transaction_search.search_transactions,
                    {
                        "start_date": _iso(start),
                        "end_date": _iso(end),
                        "page_size": 500,
                        "page": page,
                    },
                )
                search = _parse(_Search, answer, "a transaction search")
                views.extend(v for d in search.transaction_details if (v := _transaction(d)))
                pages, page = search.total_pages, page + 1
            start = end
        return views

    async def read_webhook(self, headers: Mapping[str, str], body: bytes) -> port.WebhookNotice:
        """Verify a webhook by asking PayPal, then say what its event reports."""
        lowered = {k.lower(): v for k, v in headers.items()}
        missing = [h for h in WEBHOOK_HEADERS if not lowered.get(h)]
        if missing:
            raise port.WebhookRejectedError(f"a PayPal webhook without {', '.join(missing)}")
        try:
            document = json.loads(body)
        except ValueError:
            raise port.WebhookRejectedError("a PayPal webhook whose body is not JSON") from None
        if not isinstance(document, dict):
            raise port.WebhookRejectedError("a PayPal webhook whose body is not an object")
        try:
            event = _Event.model_validate(document)
        except ValidationError:
            raise port.WebhookRejectedError(
                "a PayPal webhook without id, event_type or resource"
            ) from None
        genuine = await self._verifier.verify(
            {
                "auth_algo": lowered["paypal-auth-algo"],
                "cert_url": lowered["paypal-cert-url"],
                "transmission_id": lowered["paypal-transmission-id"],
                "transmission_sig": lowered["paypal-transmission-sig"],
                "transmission_time": lowered["paypal-transmission-time"],
                "webhook_id": self._webhook_id,
                "webhook_event": document,
            }
        )
        if not genuine:
            raise port.WebhookRejectedError("PayPal says the webhook's signature is not genuine")
        return port.WebhookNotice(
            provider_event_id=event.id, method=METHOD, view=_event_view(event)
        )

    # ---- calls ---------------------------------------------------------------------------

    async def _call(
        self, what: str, endpoint: Callable[[dict[str, Any]], Any], options: dict[str, Any]
    ) -> dict[str, Any] | None:
        """One SDK call off the event loop; its JSON answer, or the port's error."""
        # The bound covers waiting for a free thread too; a call that outlives it goes on in
        # its thread until the SDK's own timeout, and its answer is left for asking.
        call = functools.partial(contextvars.copy_context().run, endpoint, options)
        started, outcome = time.perf_counter(), "error"
        try:
            async with asyncio.timeout(self._timeout_s):
                response = await asyncio.get_running_loop().run_in_executor(self._threads, call)
            outcome = f"{response.status_code // 100}xx"
        except TimeoutError as error:
            outcome = "timeout"
            raise port.GatewayUnavailableError(
                f"PayPal {what}: no answer within {self._timeout_s:g} s"
            ) from error
        except requests.RequestException as error:
            raise port.GatewayUnavailableError(
                f"PayPal {what}: unreachable ({type(error).__name__})"
            ) from error
        except AuthValidationException as error:
            # The SDK gives up on the token without saying why: PayPal refused the client
            # credentials, or failed while issuing one. Either way nothing was sent.
            logger.warning(
                "PayPal gave no access token for %s: check the client id and secret", what
            )
            raise port.GatewayUnavailableError(f"PayPal {what}: no access token") from error
        except ApiException as error:
            outcome = f"{int(error.response_code) // 100}xx"
            raise _refusal(what, error) from error
        finally:
            # The SDK's calls bypass the adapters' timed transport: timed here, per operation.
            OUTSIDE_CALL_SECONDS.labels("paypal", what, outcome).observe(
                time.perf_counter() - started
            )
        text = response.text or ""
        if not text.strip():
            return None
        try:
            document = json.loads(text)
        except ValueError as error:
            raise port.GatewayUnavailableError(
                f"PayPal {what}: an answer that is not JSON"
            ) from error
        return document if isinstance(document, dict) else None

    async def _create_order(self, request: port.PaymentRequest) -> _Order:
        source: dict[str, Any] = {}
        if request.token:
            source["vault_id"] = request.token
        if request.return_url:
            source["experience_context"] = {
                "return_url": request.return_url,
                "cancel_url": _with_query(request.return_url, cancelled="true"),
                "shipping_preference": "NO_SHIPPING",
                "user_action": "CONTINUE",
            }
        if not source:
            raise port.GatewayRejectedError(
                400, "a PayPal payment needs a saved source (token) or a return_url for the buyer"
            )
        unit: dict[str, Any] = {
            "reference_id": request.reference,
            "custom_id": request.reference,
            "amount": {
                "currency_code": request.currency,
                "value": to_value(request.amount, request.currency),
            },
        }
        if request.description:
            unit["description"] = request.description[:127]
        answer = await self._call(
            "create order",
            self._client.orders.create_order,
            _once(
                request.idempotency_key,
                body={
                    "intent": "AUTHORIZE",
                    "purchase_units": [unit],
                    "payment_source": {"paypal": source},
                },
            ),
        )
        order = _parse(_Order, answer, "an order")
        logger.info("paypal order %s %s reference=%s", order.id, order.status, request.reference)
        return order

    async def _authorize(self, order_id: str, key: str) -> _Order:
        answer = await self._call(
            "authorize",
            self._client.orders.authorize_order,
            _once(f"{key}:authorize", id=order_id),
        )
        return _parse(_Order, answer, "an authorized order")

    async def _get_order(self, order_id: str) -> _Order:
        return _parse(
            _Order,
            await self._call("get order", self._client.orders.get_order, {"id": order_id}),
            "an order",
        )

    # ---- answers -------------------------------------------------------------------------

    def _action_required(self, order: _Order) -> port.ActionRequired:
        url = order.link("payer-action", "approve")
        if url is None:
            raise port.GatewayUnavailableError(f"PayPal order {order.id} without an approval link")
        created = order.create_time or datetime.now(UTC)
        return port.ActionRequired(
            provider_reference=order.id, url=url, expires_at=created + ORDER_APPROVAL_WINDOW
        )

    def _authorization_outcome(self, order: _Order) -> port.PayOutcome:
        authorization = order.authorization
        if authorization is None:
            raise port.GatewayUnavailableError(
                f"PayPal order {order.id} is COMPLETED without a payment"
            )
        if authorization.status == "DECLINED":
            code, retryable = authorization.decline()
            logger.info("paypal authorization %s declined on order %s", authorization.id, order.id)
            raise port.PaymentDeclinedError(
                code, retryable, f"PayPal declined the authorization of order {order.id}"
            )
        if authorization.status == "CAPTURED" and (done := order.completed_capture) is not None:
            return self._captured(order, done)
        if authorization.status not in ("CREATED", "PENDING"):
            raise port.GatewayRejectedError(
                422, f"PayPal authorization {authorization.id} is {authorization.status}"
            )
        money = authorization.amount or order.unit.amount
        if money is None or authorization.expiration_time is None:
            raise port.GatewayUnavailableError(
                f"PayPal authorization {authorization.id} lacks terms"
            )
        return port.Authorized(
            provider_reference=order.id,
            amount=money.minor(),
            currency=money.currency_code,
            capture_before=authorization.expiration_time,
        )

    @staticmethod
    def _captured(order: _Order, capture: _Payment) -> port.Captured:
        money = capture.amount or order.unit.amount
        if money is None:
            raise port.GatewayUnavailableError(f"PayPal capture {capture.id} without an amount")
        return port.Captured(
            provider_reference=capture.id,
            amount=money.minor(),
            currency=money.currency_code,
            payment_reference=order.id,
        )

    def _view(self, order: _Order) -> port.PaymentView:
        unit = order.unit
        common: dict[str, Any] = {
            "reference": unit.reference_id,
            "provider_reference": order.id,
            "amount": unit.amount.minor() if unit.amount else None,
            "currency": unit.amount.currency_code if unit.amount else None,
            "method": METHOD,
        }
        if _waiting(order):
            action = self._action_required(order)
            return port.PaymentView(
                standing=port.Standing.ACTION_REQUIRED,
                action_url=action.url,
                action_expires_at=action.expires_at,
                **common,
            )
        if order.status == "APPROVED":
            return port.PaymentView(standing=port.Standing.APPROVED, **common)
        authorization = order.authorization
        if authorization is None:
            # Cancelled, or never approved in time: PayPal leaves a cancelled order waiting
            # until it expires, so an order past its approval window counts as cancelled.
            return port.PaymentView(standing=port.Standing.CANCELLED, **common)
        capture = order.completed_capture
        if capture is not None:
            refunded = sum(r.amount.minor() for r in unit.payments.refunds if r.amount)
            captured = capture.amount.minor() if capture.amount else 0
            return port.PaymentView(
                standing=port.Standing.REFUNDED
                if captured and refunded >= captured
                else port.Standing.CAPTURED,
                captured_amount=captured,
                refunded_amount=refunded,
                capture_reference=capture.id,
                **common,
            )
        declined = [c for c in unit.payments.captures if c.status == "DECLINED"]
        if authorization.status == "DECLINED" or declined:
            code, _ = (declined[-1] if declined else authorization).decline()
            return port.PaymentView(standing=port.Standing.DECLINED, decline_code=code, **common)
        if authorization.status in ("VOIDED", "EXPIRED"):
            return port.PaymentView(standing=port.Standing.VOIDED, **common)
        return port.PaymentView(
            standing=port.Standing.AUTHORIZED,
            capture_before=authorization.expiration_time,
            **common,
        )


# ---- helpers -----------------------------------------------------------------------------


def _once(key: str, **options: Any) -> dict[str, Any]:
    """The SDK options of a call that moves money: made once per `key` (PayPal-Request-Id),
    a repeat answered with what the first made, in full (`return=representation`)."""
    return {"paypal_request_id": key, "prefer": "return=representation", **options}


def _waiting(order: _Order) -> bool:
    """Whether the order still waits for the buyer (and may still be approved)."""
    if order.status not in ("CREATED", "PAYER_ACTION_REQUIRED"):
        return False
    created = order.create_time
    return created is None or datetime.now(UTC) < created + ORDER_APPROVAL_WINDOW


def _refusal(what: str, error: ApiException) -> Exception:
    """The port's error for an answer PayPal gave with an error status."""
    status = int(error.response_code)
    text = getattr(error.response, "text", "") or ""
    if is_transient(status):
        return port.GatewayUnavailableError(f"PayPal {what}: HTTP {status}")
    issues = _issues(text)
    for issue in issues:
        if issue in DECLINE_ISSUES:
            code, retryable = DECLINE_ISSUES[issue]
            return port.PaymentDeclinedError(code, retryable, f"PayPal {what}: {issue}")
    return port.GatewayRejectedError(status, f"PayPal {what}: {_error_text(text)}")


def _issues(text: str) -> list[str]:
    try:
        document = json.loads(text)
    except ValueError:
        return []
    details = document.get("details") if isinstance(document, dict) else None
    if not isinstance(details, list):
        return []
    return [d["issue"] for d in details if isinstance(d, dict) and isinstance(d.get("issue"), str)]


def _error_text(text: str) -> str:
    """`NAME: ISSUE (description)` of PayPal's error body, short."""
    try:
        document = json.loads(text)
    except ValueError:
        return "an error answer that is not JSON"
    if not isinstance(document, dict):
        return "an error answer that is not an object"
    parts = [str(document.get("name") or document.get("error") or "error")]
    details = document.get("details")
    if isinstance(details, list) and details and isinstance(details[0], dict):
        parts.append(f"{details[0].get('issue')} ({details[0].get('description')})")
    elif document.get("message") or document.get("error_description"):
        parts.append(str(document.get("message") or document.get("error_description")))
    return ": ".join(parts)[:300]


def _parse(model: type[_M], document: dict[str, Any] | None, what: str) -> _M:
    """A success answer as `model`; one that says too little is treated as no answer."""
    try:
        return model.model_validate(document or {})
    except ValidationError as error:
        # The call may have worked: billing asks again (look_up or the same key).
        raise port.GatewayUnavailableError(
            f"PayPal answered with {what} that lacks fields"
        ) from error


def _event_view(event: _Event) -> port.PaymentView:
    """What a PayPal event says of the payment it is about."""
    kind = event.event_type
    if kind == "CHECKOUT.ORDER.APPROVED":
        order = _parse_event(_Order, event)
        unit = order.unit
        return port.PaymentView(
            standing=port.Standing.APPROVED,
            reference=unit.reference_id,
            provider_reference=order.id,
            amount=unit.amount.minor() if unit.amount else None,
            currency=unit.amount.currency_code if unit.amount else None,
            method=METHOD,
            at=event.create_time,
        )
    standings = {
        "PAYMENT.AUTHORIZATION.CREATED": port.Standing.AUTHORIZED,
        "PAYMENT.AUTHORIZATION.VOIDED": port.Standing.VOIDED,
        "PAYMENT.CAPTURE.COMPLETED": port.Standing.CAPTURED,
        "PAYMENT.CAPTURE.DECLINED": port.Standing.DECLINED,
        "PAYMENT.CAPTURE.REFUNDED": port.Standing.REFUNDED,
    }
    if kind not in standings:
        raise port.WebhookRejectedError(f"a PayPal event billing does not subscribe to: {kind}")
    payment = _parse_event(_Payment, event)
    standing = standings[kind]
    amount = payment.amount.minor() if payment.amount else None
    capture_reference: str | None = None
    if standing in (port.Standing.CAPTURED, port.Standing.DECLINED):
        capture_reference = payment.id
    elif standing is port.Standing.REFUNDED and (up := payment.link("up")):
        capture_reference = up.rstrip("/").rsplit("/", 1)[-1]
    return port.PaymentView(
        standing=standing,
        reference=payment.custom_id,
        provider_reference=payment.supplementary_data.related_ids.order_id,
        amount=amount if standing is not port.Standing.REFUNDED else None,
        currency=payment.amount.currency_code if payment.amount else None,
        captured_amount=(amount or 0) if standing is port.Standing.CAPTURED else 0,
        refunded_amount=(amount or 0) if standing is port.Standing.REFUNDED else 0,
        capture_reference=capture_reference,
        capture_before=payment.expiration_time if standing is port.Standing.AUTHORIZED else None,
        decline_code=payment.decline()[0] if standing is port.Standing.DECLINED else None,
        method=METHOD,
        at=event.create_time,
    )


def _parse_event(model: type[_M], event: _Event) -> _M:
    try:
        return model.model_validate(event.resource)
    except ValidationError:
        raise port.WebhookRejectedError(
            f"a PayPal {event.event_type} event without its resource"
        ) from None


def _transaction(detail: _TransactionDetail) -> port.PaymentView | None:
    """A Transaction Search row as a payment: captures (T0006) and refunds (T1107) only."""
    info = detail.transaction_info
    amount = info.transaction_amount.minor()
    common: dict[str, Any] = {
        "reference": info.custom_field,
        "currency": info.transaction_amount.currency_code,
        "method": METHOD,
        "at": info.transaction_initiation_date,
    }
    if info.transaction_event_code == "T0006":
        return port.PaymentView(
            standing=port.Standing.CAPTURED,
            amount=amount,
            captured_amount=amount,
            capture_reference=info.transaction_id,
            **common,
        )
    if info.transaction_event_code == "T1107":
        return port.PaymentView(
            standing=port.Standing.REFUNDED,
            provider_reference=info.transaction_id,
            refunded_amount=-amount,
            capture_reference=info.paypal_reference_id,
            **common,
        )
    return None


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))
