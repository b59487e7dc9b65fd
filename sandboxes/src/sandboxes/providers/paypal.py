"""PayPal in the payment sandbox: OAuth, Orders v2, Payments v2, Transaction Search, webhooks.

Everything is under `/paypal`, so PayPal's own server SDK pointed at `http://<sandbox>/paypal`
works. What is PayPal's and what is the sandbox's own choice:

- `POST /v1/oauth2/token` takes the client credentials by Basic auth
  (`PAYMENT_SANDBOX_PAYPAL_CLIENT_ID` / `_SECRET`) and gives a Bearer token valid 9 hours, as
  PayPal does; every other call but the buyer's page needs that token.
- Orders are `intent: AUTHORIZE` with one purchase unit (`reference_id` = the renewal id, the
  reference in the ledger). `PayPal-Request-Id` makes a create, authorize, capture, void or
  refund idempotent: a repeat returns what the first success returned (a create answers 200
  with the order as it stands now). Failures are not remembered, so a repeat tries again.
- A saved source is `payment_source.paypal.vault_id`; its suffix decides, as for every method
  (CONTRACT.md, "Sandbox behaviour"): `_ok` authorizes; `_slow` authorizes and captures after
  `PAYMENT_SANDBOX_SLOW_DELAY`; `_flaky` answers 503 to the first two creates under one
  request id; `_action` needs the buyer like an order without a source; `_insufficient` is a
  422 `INSTRUMENT_DECLINED` at every authorize (a soft decline: the order stays APPROVED);
  `_declined` and `_expired` complete the order with a DECLINED authorization (processor codes
  `0500` DO_NOT_HONOR and `5400` EXPIRED_CARD): the status to trust is the authorization's or
  the capture's own, never the order's. A vault id with another suffix is a 422
  `PAYMENT_SOURCE_INFO_CANNOT_BE_VERIFIED`.
- PayPal's negative testing header `PayPal-Mock-Response: {"mock_application_codes":
  "DECLINED"}` on a capture makes that capture DECLINED under the COMPLETED order (the bank
  refused at capture time); `"INSTRUMENT_DECLINED"` on an authorize or capture is the 422.
- The buyer approves at the order's `payer-action` link (with `payment_source.paypal`) or its
  `approve` link (without): `GET /paypal/checkoutnow?token=<order id>` is the page, `POST` with
  `decision` = approve|cancel answers 303 to `return_url?token=<id>&PayerID=<id>` or
  `cancel_url?token=<id>`. An approved order is APPROVED. A cancel voids the order here
  (PayPal leaves it to expire; voiding it lets `GET` the order tell what happened). An order
  nobody approved expires 3 hours after it was made (PayPal's limit for an unapproved order),
  and then reads VOIDED.
- An authorization is valid 29 days (`expiration_time`), PayPal's rule; PayPal only promises
  the funds for the first 3 days (the honour period), which the sandbox does not model: a
  capture within the 29 days succeeds.
- Webhooks go to `<PAYMENT_SANDBOX_WEBHOOK_URL>/webhooks/paypal` in PayPal's event shape with
  the `PAYPAL-TRANSMISSION-*`, `PAYPAL-CERT-URL` and `PAYPAL-AUTH-ALGO` headers, and are
  redelivered up to 25 times in all on a schedule spanning about 3 days, as PayPal does, times
  `PAYMENT_SANDBOX_PAYPAL_REDELIVERY_SCALE`. The signature is the sandbox's own (an HMAC of
  PayPal's signed string `<transmission id>|<time>|<webhook id>|<crc32 of the body>`): like
  PayPal's, it is checked by calling `POST /v1/notifications/verify-webhook-signature`, which
  answers SUCCESS only for a call this sandbox sent to the configured webhook id
  (`PAYMENT_SANDBOX_PAYPAL_WEBHOOK_ID`).
- `GET /v1/reporting/transactions?start_date&end_date` lists captures (`T0006`) and refunds
  (`T1107`) from the ledger, planted captures included, as Transaction Search does.
"""

import asyncio
import base64
import binascii
import hashlib
import hmac
import html
import json
import logging
import re
import secrets
import uuid
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, TypeVar
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from fastapi import APIRouter, Depends, FastAPI, Header, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sandboxes.serving import EnvSettings
from sandboxes.timestamps import rfc3339

if TYPE_CHECKING:
    from sandboxes.providers import World
    from sandboxes.providers.ledger import Kind

logger = logging.getLogger("sandboxes.payment.paypal")

PREFIX = "/paypal"
TOKEN_LIFETIME_S = 32_400
"""PayPal's access tokens last 9 hours."""
ORDER_APPROVAL_WINDOW = timedelta(hours=3)
"""How long an order waits for the buyer before it expires."""
AUTHORIZATION_VALIDITY = timedelta(days=29)
"""How long PayPal lets an authorization be captured (funds promised for the first 3 days)."""
FLAKY_FAILURES = 2
"""How many creates under one PayPal-Request-Id a `_flaky` source fails before it works."""
REDELIVERY_WAITS_S = tuple(30.0 * 1.4**i for i in range(24))
"""PayPal's retries: 24 more after the first try, growing, about 2.8 days in all."""
_ERRORS_DOC = "https://developer.paypal.com/docs/api/orders/v2/"
ZERO_DECIMAL_CURRENCIES = frozenset({"HUF", "JPY", "TWD"})
"""The currencies PayPal takes without decimals; every other has two."""

Suffix = Literal["_ok", "_slow", "_flaky", "_action", "_insufficient", "_declined", "_expired"]
SUFFIXES: tuple[Suffix, ...] = (
    "_ok",
    "_slow",
    "_flaky",
    "_action",
    "_insufficient",
    "_declined",
    "_expired",
)
_DECLINED_AUTHORIZATIONS = {
    "_declined": ("0500", "DO_NOT_HONOR"),
    "_expired": ("5400", "EXPIRED_CARD"),
}


@dataclass(frozen=True)
class PayPalSandboxSettings(EnvSettings):
    """The PayPal API's credentials, webhook id and redelivery pace in the sandbox."""

    env_prefix: ClassVar[str] = "PAYMENT_SANDBOX_PAYPAL_"

    client_id: str = "sandbox-paypal-client"
    secret: str = field(default="sandbox-paypal-secret", repr=False)
    webhook_id: str = "SANDBOXWEBHOOK0000000001"
    redelivery_scale: float = 0.001
    """PayPal's 3 days of redeliveries times this (about 4 minutes by default)."""


class PayPalError(Exception):
    """An answer in PayPal's error shape: `name`, `message`, `debug_id`, `details`."""

    def __init__(
        self, status: int, name: str, message: str, issue: str | None = None, description: str = ""
    ) -> None:
        super().__init__(message)
        self.status = status
        self.name = name
        self.message = message
        self.issue = issue
        self.description = description or message

    def body(self) -> dict[str, Any]:
        """The JSON body PayPal sends with this error."""
        body: dict[str, Any] = {
            "name": self.name,
            "message": self.message,
            "debug_id": secrets.token_hex(7),
        }
        if self.issue is not None:
            body["details"] = [{"issue": self.issue, "description": self.description}]
        body["links"] = [
            {
                "href": f"{_ERRORS_DOC}#error-{self.issue or self.name}",
                "rel": "information_link",
            }
        ]
        return body


_ERROR_NAMES = {
    400: (
        "INVALID_REQUEST",
        "Request is not well-formed, syntactically incorrect, or violates schema.",
    ),
    404: ("RESOURCE_NOT_FOUND", "The specified resource does not exist."),
    422: (
        "UNPROCESSABLE_ENTITY",
        "The requested action could not be performed, semantically incorrect, or failed "
        "business validation.",
    ),
}
"""PayPal's error name and message for each status that carries one issue in its details."""


def _issue(status: int, issue: str, description: str) -> PayPalError:
    name, message = _ERROR_NAMES[status]
    return PayPalError(status, name, message, issue, description)


def _invalid(issue: str, description: str) -> PayPalError:
    return _issue(400, issue, description)


def _unprocessable(issue: str, description: str) -> PayPalError:
    return _issue(422, issue, description)


def _not_found(what: str, id: str) -> PayPalError:
    return _issue(404, "INVALID_RESOURCE_ID", f"No {what} {id!r}.")


_R = TypeVar("_R")


def _known(records: dict[str, _R], what: str, id: str) -> _R:
    """The record of that id, or PayPal's 404 naming what was asked for."""
    record = records.get(id)
    if record is None:
        raise _not_found(what, id)
    return record


def to_minor(value: str, currency: str) -> int:
    """A PayPal amount (`"99.00"`, `"1200"` for JPY) in the currency's minor unit.

    Raises:
        PayPalError: 400 when the value is not a positive decimal with the currency's digits.
    """
    digits = 0 if currency in ZERO_DECIMAL_CURRENCIES else 2
    pattern = r"^\d{1,10}$" if digits == 0 else r"^\d{1,10}(\.\d{1,2})?$"
    if not re.fullmatch(pattern, value):
        raise _invalid(
            "DECIMAL_PRECISION" if "." in value else "INVALID_PARAMETER_VALUE",
            f"amount.value {value!r} is not a decimal with at most {digits} digits after the "
            f"point for {currency}.",
        )
    try:
        minor = int(Decimal(value).scaleb(digits))
    except InvalidOperation:
        raise _invalid("INVALID_PARAMETER_VALUE", f"amount.value {value!r}") from None
    if minor <= 0:
        raise _unprocessable("AMOUNT_NOT_POSITIVE", "amount.value must be greater than zero.")
    return minor


def to_value(minor: int, currency: str) -> str:
    """A minor-unit amount as PayPal's decimal string."""
    if currency in ZERO_DECIMAL_CURRENCIES:
        return str(minor)
    return f"{minor // 100}.{minor % 100:02d}"


def _money(minor: int, currency: str) -> dict[str, str]:
    return {"currency_code": currency, "value": to_value(minor, currency)}


_SPENT_AUTHORIZATIONS = {
    "CAPTURED": "AUTHORIZATION_ALREADY_CAPTURED",
    "VOIDED": "AUTHORIZATION_VOIDED",
    "EXPIRED": "AUTHORIZATION_EXPIRED",
    "DECLINED": "AUTHORIZATION_DENIED",
}
"""PayPal's issue for capturing or voiding an authorization in each closed status."""


def _check_open(authorization: "_Authorization") -> None:
    """Refuse, as PayPal does, to capture or void an authorization that is no longer open."""
    issue = _SPENT_AUTHORIZATIONS.get(authorization.status)
    if issue is not None:
        raise _unprocessable(issue, f"The authorization is {authorization.status}.")


def _order_ids(order: "_Order") -> dict[str, str]:
    """The merchant's own ids of an order, as its payments repeat them when they were given."""
    ids = {"custom_id": order.custom_id, "invoice_id": order.invoice_id}
    return {name: value for name, value in ids.items() if value is not None}


def _processor_fields(processor: tuple[str, str] | None) -> dict[str, Any]:
    """A declined payment's processor code and reason; nothing for an approved one."""
    if processor is None:
        return {}
    code, reason = processor
    return {"processor_response": {"response_code": code}, "status_details": {"reason": reason}}


def _paypal_id(length: int = 17) -> str:
    """An id in PayPal's style: upper-case letters and digits."""
    alphabet = "ABCDEFGHJKLMNPRSTUVWXY0123456789"
    return "".join(secrets.choice(alphabet) for _ in range(length))


# ---- what the requests carry -------------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _Amount(_Body):
    currency_code: str = Field(pattern=r"^[A-Z]{3}$")
    value: str = Field(min_length=1, max_length=32)


class _PurchaseUnit(_Body):
    reference_id: str = Field(min_length=1, max_length=256)
    amount: _Amount
    custom_id: str | None = Field(default=None, max_length=255)
    invoice_id: str | None = Field(default=None, max_length=127)
    description: str | None = Field(default=None, max_length=127)


class _ExperienceContext(_Body):
    return_url: str | None = Field(default=None, max_length=4000)
    cancel_url: str | None = Field(default=None, max_length=4000)


class _PayPalSource(_Body):
    vault_id: str | None = Field(default=None, min_length=1, max_length=255)
    experience_context: _ExperienceContext | None = None


class _PaymentSource(_Body):
    paypal: _PayPalSource | None = None


class _OrderRequest(_Body):
    intent: str
    purchase_units: list[_PurchaseUnit] = Field(min_length=1)
    payment_source: _PaymentSource | None = None


class _CaptureRequest(_Body):
    amount: _Amount | None = None
    final_capture: bool = True
    invoice_id: str | None = None


class _RefundRequest(_Body):
    amount: _Amount | None = None
    note_to_payer: str | None = None


class _VerifyRequest(_Body):
    auth_algo: str = Field(min_length=1)
    cert_url: str = Field(min_length=1)
    transmission_id: str = Field(min_length=1)
    transmission_sig: str = Field(min_length=1)
    transmission_time: str = Field(min_length=1)
    webhook_id: str = Field(min_length=1)
    webhook_event: dict[str, Any]


# ---- what the sandbox keeps --------------------------------------------------------------


@dataclass
class _Order:
    id: str
    reference: str
    amount: int
    currency: str
    custom_id: str | None
    invoice_id: str | None
    vault_id: str | None
    outcome: Suffix
    return_url: str | None
    cancel_url: str | None
    with_source: bool
    status: str
    created: datetime
    updated: datetime
    payer_id: str | None = None
    authorization_id: str | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass(kw_only=True)
class _Payment:
    """What an authorization and a capture share: money moved (or refused) on an order."""

    id: str
    order_id: str
    amount: int
    currency: str
    status: str
    created: datetime
    updated: datetime
    processor: tuple[str, str] | None = None
    """A declined payment's processor code and reason."""


@dataclass(kw_only=True)
class _Authorization(_Payment):
    expires: datetime
    capture_ids: list[str] = field(default_factory=list)


@dataclass(kw_only=True)
class _Capture(_Payment):
    authorization_id: str
    refund_ids: list[str] = field(default_factory=list)


_Held = TypeVar("_Held", bound="_Order | _Payment")
"""What a PayPal-Request-Id's operation acts on: an order, or a payment on one."""


@dataclass
class _Refund:
    id: str
    capture_id: str
    amount: int
    currency: str
    created: datetime


@dataclass
class _Replay:
    status: int
    body: dict[str, Any] | None


class PayPalSandbox:
    """PayPal's side of the payment sandbox: tokens, orders, payments, and their webhooks."""

    def __init__(self, world: "World", settings: PayPalSandboxSettings) -> None:
        self.world = world
        self.settings = settings
        self._tokens: dict[str, datetime] = {}
        self._orders: dict[str, _Order] = {}
        self._authorizations: dict[str, _Authorization] = {}
        self._captures: dict[str, _Capture] = {}
        self._refunds: dict[str, _Refund] = {}
        self._replays: dict[tuple[str, str], _Replay] = {}
        self._create_keys: dict[str, str] = {}
        self._flaky_attempts: dict[str, int] = {}
        self._signing_key = secrets.token_bytes(32)
        self._lock = asyncio.Lock()

    @property
    def base(self) -> str:
        """The API's own address, for links."""
        return f"{self.world.public_url}{PREFIX}"

    def now(self) -> datetime:
        """The sandbox clock."""
        return self.world.clock()

    # ---- OAuth ---------------------------------------------------------------------------

    def issue_token(self, authorization: str | None) -> dict[str, Any]:
        """Client credentials by Basic auth → a Bearer token (PayPal's token answer)."""
        if not authorization or not authorization.startswith("Basic "):
            raise _OAuthError("Client Authentication failed")
        try:
            decoded = base64.b64decode(authorization[6:], validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise _OAuthError("Client Authentication failed") from None
        client_id, _, secret = decoded.partition(":")
        expected = f"{self.settings.client_id}:{self.settings.secret}"
        if not hmac.compare_digest(f"{client_id}:{secret}".encode(), expected.encode()):
            raise _OAuthError("Client Authentication failed")
        token = f"A21AA{secrets.token_urlsafe(48)}"
        self._tokens[token] = self.now() + timedelta(seconds=TOKEN_LIFETIME_S)
        return {
            "scope": "https://uri.paypal.com/services/payments/payment/authcapture "
            "https://uri.paypal.com/services/reporting/search/read "
            "https://uri.paypal.com/services/applications/webhooks",
            "access_token": token,
            "token_type": "Bearer",
            "app_id": "APP-SANDBOX",
            "expires_in": TOKEN_LIFETIME_S,
            "nonce": f"{rfc3339(self.now())}{secrets.token_hex(8)}",
        }

    def authenticate(self, authorization: str | None) -> None:
        """Accept a live Bearer token this sandbox issued."""
        token = (authorization or "").removeprefix("Bearer ").strip()
        expires = self._tokens.get(token)
        if not token or expires is None or expires <= self.now():
            raise PayPalError(
                401,
                "AUTHENTICATION_FAILURE",
                "Authentication failed due to invalid authentication credentials or a missing "
                "Authorization header.",
            )

    # ---- orders --------------------------------------------------------------------------

    async def create_order(self, request_id: str | None, raw: bytes) -> tuple[int, dict[str, Any]]:
        """Create an order, or return the one created under the same PayPal-Request-Id."""
        async with self._lock:
            if request_id is not None and request_id in self._create_keys:
                order = self._orders[self._create_keys[request_id]]
                return 200, self.order_view(order)
            body = _parse(_OrderRequest, raw)
            if body.intent != "AUTHORIZE":
                raise _unprocessable(
                    "UNSUPPORTED_INTENT",
                    "This sandbox takes intent AUTHORIZE only: authorize, then capture.",
                )
            if len(body.purchase_units) != 1:
                raise _unprocessable(
                    "MULTIPLE_PURCHASE_UNITS_NOT_SUPPORTED", "Send exactly one purchase unit."
                )
            unit = body.purchase_units[0]
            amount = to_minor(unit.amount.value, unit.amount.currency_code)
            source = body.payment_source.paypal if body.payment_source else None
            vault_id = source.vault_id if source else None
            context = source.experience_context if source else None
            outcome: Suffix = "_action"
            if vault_id is not None:
                found = next((s for s in SUFFIXES if vault_id.endswith(s)), None)
                if found is None:
                    raise _unprocessable(
                        "PAYMENT_SOURCE_INFO_CANNOT_BE_VERIFIED",
                        "The vaulted payment source is not known.",
                    )
                outcome = found
            if outcome == "_flaky" and request_id is not None:
                attempts = self._flaky_attempts.get(request_id, 0) + 1
                self._flaky_attempts[request_id] = attempts
                if attempts <= FLAKY_FAILURES:
                    raise PayPalError(
                        503,
                        "SERVICE_UNAVAILABLE",
                        "Service Unavailable. Please try again later.",
                    )
            now = self.now()
            order = _Order(
                id=_paypal_id(),
                reference=unit.reference_id,
                amount=amount,
                currency=unit.amount.currency_code,
                custom_id=unit.custom_id,
                invoice_id=unit.invoice_id,
                vault_id=vault_id,
                outcome="_ok" if outcome == "_action" else outcome,
                return_url=context.return_url if context else None,
                cancel_url=context.cancel_url if context else None,
                with_source=source is not None,
                status=(
                    "PAYER_ACTION_REQUIRED"
                    if outcome == "_action" and source is not None
                    else "CREATED"
                    if outcome == "_action"
                    else "APPROVED"
                ),
                created=now,
                updated=now,
            )
            self._orders[order.id] = order
            if request_id is not None:
                self._create_keys[request_id] = order.id
        logger.info(
            "paypal order %s %s %d %s reference=%s",
            order.id,
            order.status,
            order.amount,
            order.currency,
            order.reference,
        )
        return 201, self.order_view(order)

    def order(self, order_id: str) -> _Order:
        """An order by id, expired first when nobody approved it in time."""
        order = _known(self._orders, "order", order_id)
        waiting = order.status in ("CREATED", "PAYER_ACTION_REQUIRED")
        if waiting and self.now() >= order.created + ORDER_APPROVAL_WINDOW:
            order.status = "VOIDED"
            order.updated = order.created + ORDER_APPROVAL_WINDOW
        return order

    def order_view(self, order: _Order) -> dict[str, Any]:
        """The order in Orders v2's shape."""
        unit: dict[str, Any] = {
            "reference_id": order.reference,
            "amount": _money(order.amount, order.currency),
        }
        unit |= _order_ids(order)
        if order.authorization_id is not None:
            authorization = self._authorizations[order.authorization_id]
            payments: dict[str, Any] = {"authorizations": [self.authorization_view(authorization)]}
            captures = [self._captures[c] for c in authorization.capture_ids]
            if captures:
                payments["captures"] = [self.capture_view(c) for c in captures]
            refunds = [self._refunds[r] for c in captures for r in c.refund_ids]
            if refunds:
                payments["refunds"] = [self.refund_view(r) for r in refunds]
            unit["payments"] = payments
        links = [
            {"href": f"{self.base}/v2/checkout/orders/{order.id}", "rel": "self", "method": "GET"}
        ]
        if order.status in ("CREATED", "PAYER_ACTION_REQUIRED"):
            links.append(
                {
                    "href": f"{self.world.public_url}{PREFIX}/checkoutnow?token={order.id}",
                    "rel": "payer-action" if order.with_source else "approve",
                    "method": "GET",
                }
            )
        if order.status == "APPROVED":
            links.append(
                {
                    "href": f"{self.base}/v2/checkout/orders/{order.id}/authorize",
                    "rel": "authorize",
                    "method": "POST",
                }
            )
        view: dict[str, Any] = {
            "id": order.id,
            "intent": "AUTHORIZE",
            "status": order.status,
            "create_time": rfc3339(order.created),
            "update_time": rfc3339(order.updated),
            "purchase_units": [unit],
            "links": links,
        }
        if order.with_source:
            paypal: dict[str, Any] = {}
            if order.payer_id is not None:
                paypal["account_id"] = order.payer_id
            if order.vault_id is not None:
                paypal["attributes"] = {"vault": {"status": "VAULTED"}}
            view["payment_source"] = {"paypal": paypal}
        if order.payer_id is not None:
            view["payer"] = {"payer_id": order.payer_id}
        return view

    async def authorize(
        self, order_id: str, request_id: str | None, mock: str | None
    ) -> tuple[int, dict[str, Any]]:
        """Authorize an approved order (201 with the order); a repeat key replays."""
        return await self._once(
            "authorize",
            request_id,
            lambda: self.order(order_id),
            lambda o: self._authorize(o, mock),
        )

    async def _authorize(self, order: _Order, mock: str | None) -> tuple[int, dict[str, Any]]:
        """The authorization itself, under the order's lock."""
        if order.status != "APPROVED":
            issue = {
                "COMPLETED": "ORDER_ALREADY_AUTHORIZED",
                "VOIDED": "ORDER_EXPIRED",
            }.get(order.status, "ORDER_NOT_APPROVED")
            raise _unprocessable(issue, f"The order is {order.status}.")
        if order.outcome == "_insufficient" or _mocked(mock) == "INSTRUMENT_DECLINED":
            raise _unprocessable(
                "INSTRUMENT_DECLINED",
                "The instrument presented was declined by the processor or bank "
                "(insufficient funds): the payer can fund the payment another way.",
            )
        if order.outcome == "_slow":
            await self.world.slow("paypal", "pay", order.reference)
        now = self.now()
        processor = _DECLINED_AUTHORIZATIONS.get(order.outcome)
        authorization = _Authorization(
            id=_paypal_id(),
            order_id=order.id,
            amount=order.amount,
            currency=order.currency,
            status="DECLINED" if processor else "CREATED",
            created=now,
            updated=now,
            expires=now + AUTHORIZATION_VALIDITY,
            processor=processor,
        )
        self._authorizations[authorization.id] = authorization
        order.authorization_id = authorization.id
        order.status = "COMPLETED"
        order.updated = now
        if processor is None:
            self._record("authorizations", authorization.id, order, order.amount)
            self._notify(
                "PAYMENT.AUTHORIZATION.CREATED",
                "authorization",
                f"Payment authorization for {to_value(order.amount, order.currency)} "
                f"{order.currency} created",
                self.authorization_view(authorization),
                order.reference,
            )
        logger.info(
            "paypal authorization %s %s on order %s reference=%s",
            authorization.id,
            authorization.status,
            order.id,
            order.reference,
        )
        return 201, self.order_view(order)

    # ---- the buyer -----------------------------------------------------------------------

    def decide(self, order_id: str, decision: str) -> str | None:
        """The buyer's decision on the approval page; where to send them, if anywhere."""
        order = self.order(order_id)
        if order.status not in ("CREATED", "PAYER_ACTION_REQUIRED"):
            raise PayPalError(409, "ORDER_NOT_WAITING", f"The order is {order.status}.")
        order.updated = self.now()
        if decision == "approve":
            order.status = "APPROVED"
            order.payer_id = _paypal_id(13)
            self._notify(
                "CHECKOUT.ORDER.APPROVED",
                "checkout-order",
                "An order has been approved by buyer",
                self.order_view(order),
                order.reference,
            )
            logger.info("paypal order %s approved reference=%s", order.id, order.reference)
            if order.return_url is None:
                return None
            return _with_query(order.return_url, token=order.id, PayerID=order.payer_id)
        order.status = "VOIDED"
        logger.info("paypal order %s cancelled by the buyer", order.id)
        if order.cancel_url is None:
            return None
        return _with_query(order.cancel_url, token=order.id)

    # ---- payments ------------------------------------------------------------------------

    def authorization(self, authorization_id: str) -> _Authorization:
        """An authorization by id, expired first when its 29 days are over."""
        authorization = _known(self._authorizations, "authorization", authorization_id)
        if authorization.status == "CREATED" and self.now() >= authorization.expires:
            authorization.status = "EXPIRED"
            authorization.updated = authorization.expires
        return authorization

    def authorization_view(self, authorization: _Authorization) -> dict[str, Any]:
        """The authorization in Payments v2's shape."""
        return self._payment_view(
            authorization,
            "authorizations",
            {"expiration_time": rfc3339(authorization.expires)},
            actions=("capture", "void"),
            related={},
            up=f"/v2/checkout/orders/{authorization.order_id}",
        )

    def _payment_view(
        self,
        payment: _Payment,
        kind: str,
        own: dict[str, Any],
        *,
        actions: tuple[str, ...],
        related: dict[str, str],
        up: str,
    ) -> dict[str, Any]:
        """A payment in Payments v2's shape: `own` are its kind's fields, `actions` the POST
        links it offers, `related` its ids beside the order's, `up` the path of its parent."""
        order = self._orders[payment.order_id]
        base = f"{self.base}/v2/payments/{kind}/{payment.id}"
        view: dict[str, Any] = {
            "id": payment.id,
            "status": payment.status,
            "amount": _money(payment.amount, payment.currency),
            **own,
            "create_time": rfc3339(payment.created),
            "update_time": rfc3339(payment.updated),
            "supplementary_data": {"related_ids": {"order_id": order.id, **related}},
            "links": [
                {"href": base, "rel": "self", "method": "GET"},
                *({"href": f"{base}/{a}", "rel": a, "method": "POST"} for a in actions),
                {"href": f"{self.base}{up}", "rel": "up", "method": "GET"},
            ],
        }
        return view | _order_ids(order) | _processor_fields(payment.processor)

    async def capture(
        self, authorization_id: str, request_id: str | None, raw: bytes, mock: str | None
    ) -> tuple[int, dict[str, Any]]:
        """Capture an authorization in full; a repeat key replays the first capture."""
        return await self._once(
            "capture",
            request_id,
            lambda: self.authorization(authorization_id),
            lambda a: self._capture(a, raw, mock),
        )

    async def _capture(
        self, authorization: _Authorization, raw: bytes, mock: str | None
    ) -> tuple[int, dict[str, Any]]:
        """The capture itself, under the order's lock."""
        order = self._orders[authorization.order_id]
        body = _parse(_CaptureRequest, raw or b"{}")
        if body.amount is not None and (
            body.amount.currency_code != authorization.currency
            or to_minor(body.amount.value, body.amount.currency_code) != authorization.amount
        ):
            raise _unprocessable(
                "PARTIAL_CAPTURE_NOT_SUPPORTED",
                "This sandbox captures an authorization in full only.",
            )
        _check_open(authorization)
        if _mocked(mock) == "INSTRUMENT_DECLINED":
            raise _unprocessable("INSTRUMENT_DECLINED", "The instrument presented was declined.")
        if order.outcome == "_slow":
            await self.world.slow("paypal", "capture", order.reference)
        now = self.now()
        declined = _mocked(mock) == "DECLINED"
        capture = _Capture(
            id=_paypal_id(),
            authorization_id=authorization.id,
            order_id=order.id,
            amount=authorization.amount,
            currency=authorization.currency,
            status="DECLINED" if declined else "COMPLETED",
            created=now,
            updated=now,
            processor=("0500", "DO_NOT_HONOR") if declined else None,
        )
        self._captures[capture.id] = capture
        authorization.capture_ids.append(capture.id)
        if not declined:
            authorization.status = "CAPTURED"
            authorization.updated = now
            self._record("captures", capture.id, order, capture.amount, authorization.id)
        answer = self.capture_view(capture)
        self._notify(
            "PAYMENT.CAPTURE.DECLINED" if declined else "PAYMENT.CAPTURE.COMPLETED",
            "capture",
            f"Payment capture for {to_value(capture.amount, capture.currency)} "
            f"{capture.currency} {'declined' if declined else 'completed'}",
            answer,
            order.reference,
        )
        logger.info(
            "paypal capture %s %s of authorization %s reference=%s",
            capture.id,
            capture.status,
            authorization.id,
            order.reference,
        )
        return 201, answer

    def capture_record(self, capture_id: str) -> _Capture:
        """A capture by id."""
        return _known(self._captures, "capture", capture_id)

    def capture_view(self, capture: _Capture) -> dict[str, Any]:
        """The capture in Payments v2's shape."""
        return self._payment_view(
            capture,
            "captures",
            {"final_capture": True},
            actions=("refund",),
            related={"authorization_id": capture.authorization_id},
            up=f"/v2/payments/authorizations/{capture.authorization_id}",
        )

    async def void(self, authorization_id: str, request_id: str | None) -> tuple[int, Any]:
        """Void an authorization (204, as PayPal answers without `Prefer`)."""
        return await self._once(
            "void", request_id, lambda: self.authorization(authorization_id), self._void
        )

    async def _void(self, authorization: _Authorization) -> tuple[int, None]:
        """The void itself, under the order's lock."""
        order = self._orders[authorization.order_id]
        _check_open(authorization)
        authorization.status = "VOIDED"
        authorization.updated = self.now()
        self._record(
            "voids", f"void_{authorization.id}", order, authorization.amount, authorization.id
        )
        view = self.authorization_view(authorization)
        self._notify(
            "PAYMENT.AUTHORIZATION.VOIDED",
            "authorization",
            f"A payment authorization for {to_value(order.amount, order.currency)} "
            f"{order.currency} was voided",
            view,
            order.reference,
        )
        logger.info(
            "paypal authorization %s voided reference=%s", authorization.id, order.reference
        )
        return 204, None

    async def refund(
        self, capture_id: str, request_id: str | None, raw: bytes
    ) -> tuple[int, dict[str, Any]]:
        """Refund a capture, in full or in part; a repeat key replays the first refund."""
        return await self._once(
            "refund",
            request_id,
            lambda: self.capture_record(capture_id),
            lambda c: self._refund(c, raw),
        )

    async def _refund(self, capture: _Capture, raw: bytes) -> tuple[int, dict[str, Any]]:
        """The refund itself, under the order's lock."""
        order = self._orders[capture.order_id]
        body = _parse(_RefundRequest, raw or b"{}")
        if capture.status not in ("COMPLETED", "PARTIALLY_REFUNDED"):
            raise _unprocessable(
                "CAPTURE_FULLY_REFUNDED" if capture.status == "REFUNDED" else "INVALID_RESOURCE_ID",
                f"The capture is {capture.status}.",
            )
        left = capture.amount - sum(self._refunds[r].amount for r in capture.refund_ids)
        amount = left
        if body.amount is not None:
            if body.amount.currency_code != capture.currency:
                raise _unprocessable(
                    "REFUND_CURRENCY_MISMATCH", "Refund in the capture's currency."
                )
            amount = to_minor(body.amount.value, body.amount.currency_code)
        if amount > left:
            raise _unprocessable(
                "REFUND_AMOUNT_EXCEEDED",
                f"{to_value(left, capture.currency)} {capture.currency} is left to refund.",
            )
        now = self.now()
        refund = _Refund(
            id=_paypal_id(),
            capture_id=capture.id,
            amount=amount,
            currency=capture.currency,
            created=now,
        )
        self._refunds[refund.id] = refund
        capture.refund_ids.append(refund.id)
        capture.status = "REFUNDED" if amount == left else "PARTIALLY_REFUNDED"
        capture.updated = now
        self._record("refunds", refund.id, order, amount, capture.id)
        answer = self.refund_view(refund)
        self._notify(
            "PAYMENT.CAPTURE.REFUNDED",
            "refund",
            f"A {to_value(amount, capture.currency)} {capture.currency} capture payment "
            "was refunded",
            answer,
            order.reference,
        )
        logger.info(
            "paypal refund %s of capture %s reference=%s", refund.id, capture.id, order.reference
        )
        return 201, answer

    def refund_record(self, refund_id: str) -> _Refund:
        """A refund by id."""
        return _known(self._refunds, "refund", refund_id)

    def refund_view(self, refund: _Refund) -> dict[str, Any]:
        """The refund in Payments v2's shape."""
        order = self._orders[self._captures[refund.capture_id].order_id]
        view: dict[str, Any] = {
            "id": refund.id,
            "status": "COMPLETED",
            "amount": _money(refund.amount, refund.currency),
            "create_time": rfc3339(refund.created),
            "update_time": rfc3339(refund.created),
            "links": [
                {
                    "href": f"{self.base}/v2/payments/refunds/{refund.id}",
                    "rel": "self",
                    "method": "GET",
                },
                {
                    "href": f"{self.base}/v2/payments/captures/{refund.capture_id}",
                    "rel": "up",
                    "method": "GET",
                },
            ],
        }
        if order.custom_id is not None:
            view["custom_id"] = order.custom_id
        return view

    # ---- reporting -----------------------------------------------------------------------

    def transactions(self, start: str | None, end: str | None) -> dict[str, Any]:
        """Transaction Search: the ledger's PayPal captures and refunds between two dates."""
        if not start or not end:
            raise _invalid("MISSING_REQUIRED_PARAMETER", "start_date and end_date are required.")
        since, until = _parse_date(start, "start_date"), _parse_date(end, "end_date")
        if until < since:
            raise _invalid("INVALID_DATE_RANGE", "end_date is before start_date.")
        if until - since > timedelta(days=31):
            raise _invalid("INVALID_DATE_RANGE", "The range is at most 31 days.")
        details: list[dict[str, Any]] = []
        kinds: tuple[tuple[Literal["captures", "refunds"], str, int], ...] = (
            ("captures", "T0006", 1),
            ("refunds", "T1107", -1),
        )
        for kind, code, sign in kinds:
            for entry in self.world.ledger.entries(kind):
                if entry.provider != "paypal" or not since <= entry.created_at <= until:
                    continue
                info: dict[str, Any] = {
                    "transaction_id": entry.id,
                    "transaction_event_code": code,
                    "transaction_initiation_date": rfc3339(entry.created_at),
                    "transaction_updated_date": rfc3339(entry.created_at),
                    "transaction_amount": {
                        "currency_code": entry.currency,
                        "value": ("-" if sign < 0 else "") + to_value(entry.amount, entry.currency),
                    },
                    "transaction_status": "S",
                    "custom_field": entry.reference,
                }
                if entry.charge_id is not None:
                    info["paypal_reference_id"] = entry.charge_id
                    info["paypal_reference_id_type"] = "TXN"
                details.append({"transaction_info": info})
        details.sort(key=lambda d: str(d["transaction_info"]["transaction_initiation_date"]))
        return {
            "transaction_details": details,
            "account_number": "SANDBOXMERCHANT",
            "start_date": rfc3339(since),
            "end_date": rfc3339(until),
            "last_refreshed_datetime": rfc3339(self.now()),
            "page": 1,
            "total_items": len(details),
            "total_pages": 1,
        }

    # ---- webhooks ------------------------------------------------------------------------

    def signature(self, transmission_id: str, time: str, webhook_id: str, body: bytes) -> str:
        """The sandbox's signature over PayPal's signed string."""
        signed = f"{transmission_id}|{time}|{webhook_id}|{zlib.crc32(body)}".encode()
        return base64.b64encode(
            hmac.new(self._signing_key, signed, hashlib.sha256).digest()
        ).decode()

    @property
    def cert_url(self) -> str:
        """Where the PAYPAL-CERT-URL header points."""
        return f"{self.base}/v1/notifications/certs/CERT-sandbox"

    def verify(self, raw: bytes) -> dict[str, str]:
        """verify-webhook-signature: SUCCESS for a call this sandbox sent to the webhook id."""
        body = _parse(_VerifyRequest, raw)
        expected = self.signature(
            body.transmission_id,
            body.transmission_time,
            self.settings.webhook_id,
            canonical(body.webhook_event),
        )
        genuine = (
            body.webhook_id == self.settings.webhook_id
            and body.auth_algo == "SHA256withRSA"
            and body.cert_url == self.cert_url
            and hmac.compare_digest(body.transmission_sig, expected)
        )
        return {"verification_status": "SUCCESS" if genuine else "FAILURE"}

    def _notify(
        self,
        event_type: str,
        resource_type: str,
        summary: str,
        resource: dict[str, Any],
        reference: str,
    ) -> None:
        base_url = self.world.webhook_base_url
        if not base_url:
            return
        event_id = f"WH-{_paypal_id(17)}-{_paypal_id(17)}"
        now = self.now()
        event = {
            "id": event_id,
            "event_version": "1.0",
            "create_time": rfc3339(now),
            "resource_type": resource_type,
            "resource_version": "2.0",
            "event_type": event_type,
            "summary": summary,
            "resource": resource,
            "links": [
                {
                    "href": f"{self.base}/v1/notifications/webhooks-events/{event_id}",
                    "rel": "self",
                    "method": "GET",
                }
            ],
        }
        body = canonical(event)
        transmission_id = str(uuid.uuid4())
        time = rfc3339(now)
        headers = {
            "Content-Type": "application/json",
            "PAYPAL-TRANSMISSION-ID": transmission_id,
            "PAYPAL-TRANSMISSION-TIME": time,
            "PAYPAL-TRANSMISSION-SIG": self.signature(
                transmission_id, time, self.settings.webhook_id, body
            ),
            "PAYPAL-CERT-URL": self.cert_url,
            "PAYPAL-AUTH-ALGO": "SHA256withRSA",
        }
        self.world.deliveries.send(
            id=event_id,
            provider="paypal",
            url=f"{base_url}/webhooks/paypal",
            event=event_type,
            body=body,
            headers=headers,
            waits=[w * self.settings.redelivery_scale for w in REDELIVERY_WAITS_S],
            reference=reference,
        )

    def _record(
        self, kind: "Kind", id: str, order: _Order, amount: int, charge_id: str | None = None
    ) -> None:
        """A ledger entry of PayPal's, under the order it belongs to."""
        self.world.ledger.record(
            kind,
            id=id,
            reference=order.reference,
            method="paypal",
            amount=amount,
            currency=order.currency,
            provider="paypal",
            provider_reference=order.id,
            charge_id=charge_id,
        )

    # ---- idempotency ---------------------------------------------------------------------

    async def _once(
        self,
        operation: str,
        request_id: str | None,
        find: Callable[[], _Held],
        act: Callable[[_Held], Awaitable[tuple[int, Any]]],
    ) -> tuple[int, Any]:
        """Do `act` on what `find` finds, under its order's lock, once per PayPal-Request-Id.

        A repeat answers what the first success answered (waiting for it while it runs); a
        failure is not remembered, so a repeat tries again.
        """
        replay = self._replay(operation, request_id)
        if replay is not None:
            return replay
        held = find()
        order = held if isinstance(held, _Order) else self._orders[held.order_id]
        async with order.lock:
            replay = self._replay(operation, request_id)
            if replay is not None:
                return replay
            status, body = await act(held)
            self._remember(operation, request_id, status, body)
        return status, body

    def _replay(self, operation: str, request_id: str | None) -> tuple[int, Any] | None:
        if request_id is None:
            return None
        replay = self._replays.get((operation, request_id))
        return None if replay is None else (replay.status, replay.body)

    def _remember(
        self, operation: str, request_id: str | None, status: int, body: dict[str, Any] | None
    ) -> None:
        if request_id is not None:
            self._replays[(operation, request_id)] = _Replay(status, body)

    def reset(self) -> None:
        """Forget every order, payment and request id (tokens stay valid)."""
        self._orders.clear()
        self._authorizations.clear()
        self._captures.clear()
        self._refunds.clear()
        self._replays.clear()
        self._create_keys.clear()
        self._flaky_attempts.clear()


_M = TypeVar("_M", bound=BaseModel)


class _OAuthError(Exception):
    """OAuth's own error shape (`error`, `error_description`), not the REST APIs'."""


def canonical(document: dict[str, Any]) -> bytes:
    """One JSON serialization of an event, the one signed and sent."""
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


def _parse(model: type[_M], raw: bytes) -> _M:
    try:
        document = json.loads(raw or b"null")
    except ValueError:
        raise PayPalError(
            400,
            "INVALID_REQUEST",
            "Request is not well-formed.",
            "MALFORMED_REQUEST_JSON",
            "The request JSON is not well formed.",
        ) from None
    try:
        return model.model_validate(document)
    except ValidationError as error:
        first = error.errors()[0]
        where = "/".join(str(p) for p in first["loc"]) or "body"
        issue = (
            "MISSING_REQUIRED_PARAMETER"
            if first["type"] == "missing"
            else "INVALID_PARAMETER_VALUE"
        )
        raise _invalid(issue, f"{where}: {first['msg']}") from None


def _parse_date(value: str, name: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _invalid("INVALID_PARAMETER_SYNTAX", f"{name} {value!r} is not ISO 8601.") from None
    if moment.tzinfo is None:
        raise _invalid("INVALID_PARAMETER_SYNTAX", f"{name} needs a time zone.")
    return moment


def _mocked(header: str | None) -> str | None:
    """The `mock_application_codes` of PayPal's negative-testing header, if any."""
    if not header:
        return None
    try:
        document = json.loads(header)
    except ValueError:
        return None
    code = document.get("mock_application_codes") if isinstance(document, dict) else None
    return code if isinstance(code, str) else None


def _with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = f"{parts.query}&{urlencode(params)}" if parts.query else urlencode(params)
    return urlunsplit(parts._replace(query=query))


_PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title></head>
<body>
<main>
<h1>{title}</h1>
{content}
</main>
</body>
</html>
"""


def _page(title: str, content: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(_PAGE.format(title=html.escape(title), content=content), status)


def _approval_page(sandbox: PayPalSandbox, order: _Order) -> HTMLResponse:
    amount = f"{to_value(order.amount, order.currency)} {order.currency}"
    action = f"{PREFIX}/checkoutnow?token={html.escape(order.id)}"
    content = f"""<p id="summary">Pay <strong>{html.escape(amount)}</strong> with PayPal
(reference <code>{html.escape(order.reference)}</code>).</p>
<form method="post" action="{action}" aria-describedby="summary">
<fieldset>
<legend>Do you approve this payment?</legend>
<button type="submit" name="decision" value="approve">Approve and continue</button>
<button type="submit" name="decision" value="cancel">Cancel and return to the merchant</button>
</fieldset>
</form>"""
    return _page("Approve your PayPal payment", content)


RequestId = Annotated[str | None, Header(alias="PayPal-Request-Id")]
"""The key that makes a create, authorize, capture, void or refund idempotent."""
MockResponse = Annotated[str | None, Header(alias="PayPal-Mock-Response")]
"""PayPal's negative-testing header (`{"mock_application_codes": ...}`)."""


def mount(app: FastAPI, world: "World", settings: PayPalSandboxSettings | None = None) -> None:
    """Add PayPal's API under `/paypal` (settings from PAYMENT_SANDBOX_PAYPAL_* by default)."""
    sandbox = PayPalSandbox(world, settings or PayPalSandboxSettings.from_env())
    app.state.paypal = sandbox
    router = APIRouter(prefix=PREFIX, tags=["paypal"])

    def authenticated(request: Request) -> None:
        """Every REST call but the token's carries a bearer token the sandbox issued."""
        sandbox.authenticate(request.headers.get("authorization"))

    api = APIRouter(prefix=PREFIX, tags=["paypal"], dependencies=[Depends(authenticated)])

    async def paypal_error(_: Request, error: Exception) -> Response:
        assert isinstance(error, PayPalError)
        return JSONResponse(error.body(), error.status)

    async def oauth_error(_: Request, error: Exception) -> Response:
        return JSONResponse({"error": "invalid_client", "error_description": str(error)}, 401)

    app.add_exception_handler(PayPalError, paypal_error)
    app.add_exception_handler(_OAuthError, oauth_error)

    def json_answer(answer: tuple[int, Any]) -> Response:
        status, body = answer
        if body is None:
            return Response(status_code=status)
        return JSONResponse(body, status)

    @router.post("/v1/oauth2/token")
    async def token(request: Request) -> JSONResponse:
        """Client credentials (Basic auth, `grant_type=client_credentials`) → access token."""
        form = parse_qs((await request.body()).decode(errors="replace"))
        if form.get("grant_type") != ["client_credentials"]:
            return JSONResponse(
                {"error": "unsupported_grant_type", "error_description": "Grant Type is NULL"},
                400,
            )
        return JSONResponse(sandbox.issue_token(request.headers.get("authorization")))

    @api.post("/v2/checkout/orders")
    async def create_order(request: Request, request_id: RequestId = None) -> Response:
        """Create an order (201), or return the one made under the same PayPal-Request-Id."""
        return json_answer(await sandbox.create_order(request_id, await request.body()))

    @api.get("/v2/checkout/orders/{order_id}")
    async def get_order(order_id: str) -> JSONResponse:
        """An order as it stands."""
        return JSONResponse(sandbox.order_view(sandbox.order(order_id)))

    @api.post("/v2/checkout/orders/{order_id}/authorize")
    async def authorize(
        order_id: str, request_id: RequestId = None, mock: MockResponse = None
    ) -> Response:
        """Authorize an approved order."""
        return json_answer(await sandbox.authorize(order_id, request_id, mock))

    @api.get("/v2/payments/authorizations/{authorization_id}")
    async def get_authorization(authorization_id: str) -> JSONResponse:
        """An authorization as it stands."""
        return JSONResponse(sandbox.authorization_view(sandbox.authorization(authorization_id)))

    @api.post("/v2/payments/authorizations/{authorization_id}/capture")
    async def capture(
        authorization_id: str,
        request: Request,
        request_id: RequestId = None,
        mock: MockResponse = None,
    ) -> Response:
        """Capture an authorization."""
        body = await request.body()
        return json_answer(await sandbox.capture(authorization_id, request_id, body, mock))

    @api.post("/v2/payments/authorizations/{authorization_id}/void")
    async def void(
        authorization_id: str, request_id: RequestId = None, prefer: Annotated[str, Header()] = ""
    ) -> Response:
        """Void an authorization: 204, or 200 with it under `Prefer: return=representation`."""
        status, _ = await sandbox.void(authorization_id, request_id)
        if "return=representation" in prefer:
            view = sandbox.authorization_view(sandbox.authorization(authorization_id))
            return JSONResponse(view, 200)
        return Response(status_code=status)

    @api.get("/v2/payments/captures/{capture_id}")
    async def get_capture(capture_id: str) -> JSONResponse:
        """A capture as it stands."""
        return JSONResponse(sandbox.capture_view(sandbox.capture_record(capture_id)))

    @api.post("/v2/payments/captures/{capture_id}/refund")
    async def refund(capture_id: str, request: Request, request_id: RequestId = None) -> Response:
        """Refund a capture."""
        return json_answer(await sandbox.refund(capture_id, request_id, await request.body()))

    @api.get("/v2/payments/refunds/{refund_id}")
    async def get_refund(refund_id: str) -> JSONResponse:
        """A refund."""
        return JSONResponse(sandbox.refund_view(sandbox.refund_record(refund_id)))

    @api.get("/v1/reporting/transactions")
    async def transactions(
        start_date: str | None = None, end_date: str | None = None
    ) -> JSONResponse:
        """Transaction Search over captures and refunds."""
        return JSONResponse(sandbox.transactions(start_date, end_date))

    @api.post("/v1/notifications/verify-webhook-signature")
    async def verify(request: Request) -> JSONResponse:
        """Tell whether a webhook call is genuine."""
        return JSONResponse(sandbox.verify(await request.body()))

    @router.get("/v1/notifications/certs/{name}")
    async def cert(name: str) -> Response:
        """What PAYPAL-CERT-URL points at: the sandbox signs without a certificate."""
        return Response(
            "The payment sandbox signs PayPal webhooks with a key of its own; verify them with "
            "POST /paypal/v1/notifications/verify-webhook-signature.\n",
            media_type="text/plain",
        )

    @router.get("/checkoutnow", response_class=HTMLResponse)
    async def approval_page(token: str = "") -> HTMLResponse:
        """The buyer's page: approve or cancel the order named by `token`."""
        try:
            order = sandbox.order(token)
        except PayPalError:
            return _page("Payment not found", "<p>There is no such payment.</p>", 404)
        if order.status not in ("CREATED", "PAYER_ACTION_REQUIRED"):
            return _page(
                "Nothing to approve",
                f"<p>This payment is {html.escape(order.status.lower())}: there is nothing "
                "to approve.</p>",
                409,
            )
        return _approval_page(sandbox, order)

    @router.post("/checkoutnow", response_model=None)
    async def decide(request: Request, token: str = "") -> Response:
        """The buyer's decision (`decision` = approve|cancel): 303 back to the merchant."""
        form = parse_qs((await request.body()).decode(errors="replace"))
        decision = (form.get("decision") or [""])[0]
        if decision not in ("approve", "cancel"):
            return _page(
                "Choose approve or cancel",
                "<p>The form field <code>decision</code> must be approve or cancel.</p>",
                400,
            )
        try:
            target = sandbox.decide(token, decision)
        except PayPalError as error:
            status = 404 if error.status == 404 else 409
            return _page("Nothing to approve", f"<p>{html.escape(error.description)}</p>", status)
        if target is None:
            word = "approved" if decision == "approve" else "cancelled"
            return _page(
                f"Payment {word}", f"<p>The payment is {word}. You may close this page.</p>"
            )
        return RedirectResponse(target, status_code=303)

    app.include_router(router)
    app.include_router(api)
