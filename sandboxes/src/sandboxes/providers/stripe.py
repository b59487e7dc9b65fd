"""The payment sandbox's Stripe: PaymentIntents, refunds, 3-D Secure and signed webhooks.

Served under `/stripe`, so the official `stripe` client with
`base_addresses={"api": "http://<sandbox>/stripe"}` works against it: form-encoded bodies
(`metadata[reference]=...`), `Authorization: Bearer sk_...`, `Idempotency-Key` with Stripe's
replay (the first answer again, `Idempotent-Replayed: true`) and `idempotency_error` for a key
reused with other parameters, and Stripe's error shape (`{"error": {"type": "card_error",
"code": "card_declined", "decline_code": ...}}`).

What a payment method does:

| payment method | outcome |
| --- | --- |
| `pm_card_visa`, `..._ok` | `requires_capture` (`succeeded` with automatic capture) |
| `pm_card_chargeDeclined`, `..._declined` | `card_declined` / `generic_decline` |
| `pm_card_chargeDeclinedInsufficientFunds`, `..._insufficient` | `insufficient_funds` |
| `..._expired` | `expired_card` |
| `pm_card_authenticationRequired`, `..._action` | 3-D Secure first (`requires_action`) |
| `..._flaky` | two 503s under one Idempotency-Key, then as `_ok` |
| `..._slow` | as `_ok`, after the sandbox's `slow_delay` |

The 3-D Secure page (`next_action.redirect_to_url.url`) takes `POST` with the form field
`decision` = `approve` or `cancel` and answers 303 to the PaymentIntent's `return_url` with
Stripe's own query parameters. An authorization can be captured for `CAPTURE_WINDOW` (Stripe's
seven days for online card payments). Webhooks go to `<webhook_base_url>/webhooks/stripe`,
signed like Stripe's (`Stripe-Signature: t=...,v1=...`) and redelivered on Stripe's three-day
schedule multiplied by `PAYMENT_SANDBOX_STRIPE_RETRY_SCALE`.
"""

import asyncio
import functools
import hashlib
import hmac
import html
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from sandboxes.idempotency import REPLAYED_HEADER
from sandboxes.serving import EnvSettings

if TYPE_CHECKING:  # the package imports this module to list it in MOUNTS
    from sandboxes.providers import World
    from sandboxes.providers.ledger import Entry, Kind

logger = logging.getLogger("sandboxes.payment.stripe")

PREFIX = "/stripe"
CAPTURE_WINDOW = timedelta(days=7)
"""How long Stripe holds an online card authorization before it lapses."""
FLAKY_FAILURES = 2
"""How many requests under one Idempotency-Key a `_flaky` method fails before it works."""
RETRY_SCHEDULE_S: tuple[float, ...] = (
    60,
    300,
    1800,
    3600,
    3 * 3600,
    6 * 3600,
    12 * 3600,
    12 * 3600,
    12 * 3600,
    12 * 3600,
    12 * 3600,
)
"""Waits between webhook attempts, after the first: Stripe's exponential back-off over about
three days (its documented span for live mode), before the sandbox's scale is applied."""
API_VERSION = "2026-09-30.clover"
MAX_KEY_LENGTH = 255


@dataclass(frozen=True)
class StripeSettings(EnvSettings):
    """The sandbox's Stripe account: its secret key, webhook secret and retry scale."""

    env_prefix: ClassVar[str] = "PAYMENT_SANDBOX_STRIPE_"

    api_key: str = "sk_test_sandbox"
    webhook_secret: str = "whsec_sandbox"
    retry_scale: float = 0.001
    """Stripe's three days of webhook retries times this: 0.001 makes them about 4.3 minutes
    (first retry after 0.06 s), so a test sees several attempts and a local run recovers soon.
    Every attempt carries the first one's signature (the shared `Deliveries` resends the same
    headers), so the whole schedule must stay within the receiver's 300 s tolerance: at 0.001
    the last attempt comes about 254 s after the first; above about 0.0011 late ones go stale."""


class StripeApiError(Exception):
    """An answer in Stripe's error shape: `{"error": {"type", "code", "message", ...}}`."""

    def __init__(
        self,
        status: int,
        type_: str,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        decline_code: str | None = None,
        payment_intent: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {"type": type_, "message": message}
        for name, value in (
            ("code", code),
            ("param", param),
            ("decline_code", decline_code),
            ("payment_intent", payment_intent),
        ):
            if value is not None:
                self.body[name] = value

    def response(self, headers: dict[str, str] | None = None) -> JSONResponse:
        """The JSON answer Stripe would give."""
        return JSONResponse({"error": self.body}, status_code=self.status, headers=headers)


def invalid(message: str, *, param: str | None = None, code: str | None = None) -> StripeApiError:
    """A 400 `invalid_request_error`, naming the parameter at fault."""
    return StripeApiError(400, "invalid_request_error", message, param=param, code=code)


def missing(kind: str, id_: str, param: str = "id", status: int = 404) -> StripeApiError:
    """Stripe's answer for an object that does not exist (404 by path, 400 by parameter)."""
    return StripeApiError(
        status,
        "invalid_request_error",
        f"No such {kind}: '{id_}'",
        code="resource_missing",
        param=param,
    )


@dataclass(frozen=True)
class _Decline:
    code: str
    decline_code: str
    message: str


_DECLINES = {
    "generic_decline": _Decline("card_declined", "generic_decline", "Your card was declined."),
    "insufficient_funds": _Decline(
        "card_declined", "insufficient_funds", "Your card has insufficient funds."
    ),
    "expired_card": _Decline("expired_card", "expired_card", "Your card has expired."),
}


@dataclass(frozen=True)
class _Behaviour:
    """What confirming with a payment method does."""

    decline: _Decline | None = None
    action: bool = False
    flaky: bool = False
    slow: bool = False
    funded_later: bool = False
    """`insufficient_funds` on the first PaymentIntent of a reference, authorized on a later
    one (the buyer's account has money by the dunning charge); a replay of the first key
    still answers the decline, as at Stripe."""


_TEST_METHODS = {
    "pm_card_visa": _Behaviour(),
    "pm_card_mastercard": _Behaviour(),
    "pm_card_chargeDeclined": _Behaviour(decline=_DECLINES["generic_decline"]),
    "pm_card_chargeDeclinedInsufficientFunds": _Behaviour(decline=_DECLINES["insufficient_funds"]),
    "pm_card_chargeDeclinedExpiredCard": _Behaviour(decline=_DECLINES["expired_card"]),
    "pm_card_authenticationRequired": _Behaviour(action=True),
}
_SUFFIXES = {
    "_ok": _Behaviour(),
    "_declined": _Behaviour(decline=_DECLINES["generic_decline"]),
    "_insufficient": _Behaviour(decline=_DECLINES["insufficient_funds"]),
    "_insufficient_once": _Behaviour(funded_later=True),
    "_expired": _Behaviour(decline=_DECLINES["expired_card"]),
    "_flaky": _Behaviour(flaky=True),
    "_slow": _Behaviour(slow=True),
    "_action": _Behaviour(action=True),
}


def behaviour_of(payment_method: str) -> _Behaviour | None:
    """What a payment method does here: Stripe's test methods, then the legacy suffixes."""
    if payment_method in _TEST_METHODS:
        return _TEST_METHODS[payment_method]
    return next((b for s, b in _SUFFIXES.items() if payment_method.endswith(s)), None)


def _new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


@dataclass
class _Intent:
    id: str
    amount: int
    currency: str
    capture_method: str
    created: int
    metadata: dict[str, str]
    description: str | None
    payment_method: str | None
    return_url: str | None
    client_secret: str
    status: str = "requires_payment_method"
    amount_capturable: int = 0
    amount_received: int = 0
    latest_charge: str | None = None
    authorization_id: str | None = None
    last_payment_error: dict[str, Any] | None = None
    action_url: str | None = None
    canceled_at: int | None = None
    cancellation_reason: str | None = None
    refunded: int = 0

    @property
    def reference(self) -> str:
        return self.metadata.get("reference") or self.id

    def to_json(self) -> dict[str, Any]:
        next_action = None
        if self.status == "requires_action" and self.action_url:
            next_action = {
                "type": "redirect_to_url",
                "redirect_to_url": {"url": self.action_url, "return_url": self.return_url},
            }
        return {
            "id": self.id,
            "object": "payment_intent",
            "amount": self.amount,
            "amount_capturable": self.amount_capturable,
            "amount_received": self.amount_received,
            "canceled_at": self.canceled_at,
            "cancellation_reason": self.cancellation_reason,
            "capture_method": self.capture_method,
            "client_secret": self.client_secret,
            "confirmation_method": "automatic",
            "created": self.created,
            "currency": self.currency,
            "description": self.description,
            "last_payment_error": self.last_payment_error,
            "latest_charge": self.latest_charge,
            "livemode": False,
            "metadata": dict(self.metadata),
            "next_action": next_action,
            "payment_method": self.payment_method,
            "payment_method_types": ["card"],
            "status": self.status,
        }

    def charge_json(self) -> dict[str, Any]:
        return {
            "id": self.latest_charge,
            "object": "charge",
            "amount": self.amount,
            "amount_captured": self.amount_received,
            "amount_refunded": self.refunded,
            "captured": self.amount_received > 0,
            "created": self.created,
            "currency": self.currency,
            "livemode": False,
            "metadata": dict(self.metadata),
            "paid": True,
            "payment_intent": self.id,
            "refunded": self.amount_received > 0 and self.refunded >= self.amount_received,
            "status": "succeeded",
        }


@dataclass
class _Refund:
    id: str
    amount: int
    currency: str
    payment_intent: str
    charge: str | None
    created: int
    reason: str | None
    metadata: dict[str, str]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "refund",
            "amount": self.amount,
            "charge": self.charge,
            "created": self.created,
            "currency": self.currency,
            "metadata": dict(self.metadata),
            "payment_intent": self.payment_intent,
            "reason": self.reason,
            "status": "succeeded",
        }


@dataclass
class _KeyRecord:
    fingerprint: str
    attempts: int = 0
    answer: tuple[int, dict[str, Any]] | None = None


Params = dict[str, str]


def _form(body: bytes) -> Params:
    try:
        pairs = parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise invalid("The request body is not valid UTF-8 form data.") from None
    return dict(pairs)


def _nested(params: Params, name: str) -> dict[str, str]:
    """`metadata[reference]=x` → {"reference": "x"}."""
    prefix = f"{name}["
    return {
        k[len(prefix) : -1]: v for k, v in params.items() if k.startswith(prefix) and k[-1:] == "]"
    }


def _int(params: Params, name: str, *, required: bool = False, minimum: int = 0) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        if required:
            raise invalid(f"Missing required param: {name}.", param=name, code="parameter_missing")
        return None
    try:
        value = int(raw)
    except ValueError:
        raise invalid(
            f"Invalid integer: {raw}", param=name, code="parameter_invalid_integer"
        ) from None
    if value < minimum:
        raise invalid(
            f"This value must be greater than or equal to {minimum}.",
            param=name,
            code="parameter_invalid_integer",
        )
    return value


def _bool(params: Params, name: str) -> bool:
    raw = params.get(name, "false").lower()
    if raw not in ("true", "false"):
        raise invalid(f"Invalid boolean: {raw}", param=name)
    return raw == "true"


def _sign(secret: str, timestamp: int, body: bytes) -> str:
    payload = f"{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


class StripeSandbox:
    """The Stripe account's state: intents, refunds, idempotency keys, and what it sends."""

    def __init__(self, world: "World", settings: StripeSettings) -> None:
        self.world = world
        self.settings = settings
        self.intents: dict[str, _Intent] = {}
        self.refunds: dict[str, _Refund] = {}
        self._keys: dict[str, _KeyRecord] = {}
        self._key_locks: dict[str, asyncio.Lock] = {}
        self._declined_once: set[tuple[str, str]] = set()
        """(payment method, reference) pairs a `_insufficient_once` method has declined."""

    def now(self) -> int:
        """The account's clock in Unix seconds, as Stripe's objects carry it."""
        return int(self.world.clock().timestamp())

    def reset(self) -> None:
        """Forget every intent, refund and idempotency key."""
        self.intents.clear()
        self.refunds.clear()
        self._keys.clear()
        self._key_locks.clear()
        self._declined_once.clear()

    # Idempotency -------------------------------------------------------------------------

    async def idempotent(
        self,
        request: Request,
        params: Params,
        act: Callable[[], Awaitable[tuple[int, dict[str, Any]]]],
        *,
        flaky: Callable[[], bool] = lambda: False,
    ) -> Response:
        """Run `act` once per Idempotency-Key and replay its first answer after that.

        A `_flaky` method's 503s are not kept (as at Stripe, where a request that never ran is
        not saved), so the third try under the key runs for real; a key reused with other
        parameters or on another endpoint is an `idempotency_error`, and a request while
        another under its key still runs is a 409 `idempotency_key_in_use`.
        """
        key = request.headers.get("idempotency-key")
        if key is None:
            return self._answer(await self._run(act))
        if not key.strip() or len(key) > MAX_KEY_LENGTH:
            raise invalid(f"Idempotency keys must be 1 to {MAX_KEY_LENGTH} characters long.")
        canonical = json.dumps([request.method, request.url.path, sorted(params.items())])
        digest = hashlib.sha256(canonical.encode()).hexdigest()
        lock = self._key_locks.setdefault(key, asyncio.Lock())
        if lock.locked():
            # Stripe does not queue a second request behind one still running under its key.
            raise StripeApiError(
                409,
                "invalid_request_error",
                "There is currently another in-progress request using this Idempotent Key "
                "(that probably means you submitted twice, and the other request is still "
                "going through). Please try again later.",
                code="idempotency_key_in_use",
            )
        async with lock:
            record = self._keys.setdefault(key, _KeyRecord(digest))
            if record.fingerprint != digest:
                raise StripeApiError(
                    400,
                    "idempotency_error",
                    "Keys for idempotent requests can only be used with the same parameters "
                    "they were first used with. Try using a key other than "
                    f"'{key}' if you meant to execute a different request.",
                )
            if record.answer is not None:
                status, body = record.answer
                return JSONResponse(
                    body,
                    status_code=status,
                    headers={REPLAYED_HEADER: "true", "Idempotency-Key": key},
                )
            record.attempts += 1
            if flaky() and record.attempts <= FLAKY_FAILURES:
                logger.info("stripe request unavailable (attempt %d)", record.attempts)
                raise StripeApiError(
                    503, "api_error", "The sandbox's Stripe is temporarily unavailable."
                )
            record.answer = await self._run(act)
            return self._answer(record.answer, {"Idempotency-Key": key})

    @staticmethod
    async def _run(
        act: Callable[[], Awaitable[tuple[int, dict[str, Any]]]],
    ) -> tuple[int, dict[str, Any]]:
        try:
            return await act()
        except StripeApiError as error:
            if error.status >= 500:
                raise
            return error.status, {"error": error.body}

    @staticmethod
    def _answer(
        answer: tuple[int, dict[str, Any]], headers: dict[str, str] | None = None
    ) -> Response:
        return JSONResponse(answer[1], status_code=answer[0], headers=headers)

    # PaymentIntents ----------------------------------------------------------------------

    def intent(self, intent_id: str, param: str = "intent") -> _Intent:
        found = self.intents.get(intent_id)
        if found is None:
            raise missing("payment_intent", intent_id, param)
        return found

    async def create_intent(self, params: Params) -> tuple[int, dict[str, Any]]:
        amount = _int(params, "amount", required=True, minimum=1)
        assert amount is not None
        currency = params.get("currency", "").lower()
        if len(currency) != 3 or not currency.isalpha():
            raise invalid("Missing or invalid currency.", param="currency")
        capture_method = params.get("capture_method", "automatic")
        if capture_method not in ("automatic", "automatic_async", "manual"):
            raise invalid(f"Invalid capture_method: {capture_method}", param="capture_method")
        confirm = _bool(params, "confirm")
        payment_method = params.get("payment_method") or None
        behaviour = None
        if payment_method is not None:
            behaviour = behaviour_of(payment_method)
            if behaviour is None:
                raise missing("PaymentMethod", payment_method, "payment_method", 400)
            if behaviour.slow:
                reference = _nested(params, "metadata").get("reference", "")
                await self.world.slow("stripe", "pay", reference)
        return_url = params.get("return_url") or None
        if return_url is not None and urlsplit(return_url).scheme not in ("http", "https"):
            raise invalid("return_url must be an http or https URL.", param="return_url")
        if return_url is not None and not confirm:
            raise invalid(
                "You can only pass in return_url if confirm is set to true.", param="return_url"
            )
        intent_id = _new_id("pi")
        intent = _Intent(
            id=intent_id,
            amount=amount,
            currency=currency,
            capture_method="manual" if capture_method == "manual" else "automatic",
            created=self.now(),
            metadata=_nested(params, "metadata"),
            description=params.get("description") or None,
            payment_method=payment_method,
            return_url=return_url,
            client_secret=f"{intent_id}_secret_{secrets.token_hex(12)}",
        )
        if payment_method is not None:
            intent.status = "requires_confirmation"
        self.intents[intent.id] = intent
        if confirm and behaviour is not None:
            self._confirm(intent, behaviour)
        elif confirm:
            raise invalid(
                "You cannot confirm this PaymentIntent because it's missing a payment method.",
                param="payment_method",
                code="payment_intent_unexpected_state",
            )
        return 200, intent.to_json()

    def _confirm(self, intent: _Intent, behaviour: _Behaviour) -> None:
        decline = behaviour.decline
        if behaviour.funded_later:
            first = (intent.payment_method or "", intent.reference)
            if first not in self._declined_once:
                self._declined_once.add(first)
                decline = _DECLINES["insufficient_funds"]
        if decline is not None:
            self._fail(intent, decline)
            raise StripeApiError(
                402,
                "card_error",
                decline.message,
                code=decline.code,
                decline_code=decline.decline_code,
                payment_intent=intent.to_json(),
            )
        if behaviour.action:
            if intent.return_url is None:
                raise invalid(
                    "This PaymentIntent requires a return_url to handle 3-D Secure.",
                    param="return_url",
                )
            intent.status = "requires_action"
            intent.action_url = f"{self.world.public_url}{PREFIX}/3ds/{intent.id}"
            logger.info("stripe %s requires action reference=%s", intent.id, intent.reference)
            return
        self._authorize(intent)

    def _fail(self, intent: _Intent, decline: _Decline) -> None:
        intent.status = "requires_payment_method"
        intent.last_payment_error = {
            "type": "card_error",
            "code": decline.code,
            "decline_code": decline.decline_code,
            "message": decline.message,
            "payment_method": {"id": intent.payment_method, "object": "payment_method"},
        }
        logger.info(
            "stripe %s declined: %s reference=%s", intent.id, decline.decline_code, intent.reference
        )
        self.emit("payment_intent.payment_failed", intent.to_json(), intent.reference)

    def _authorize(self, intent: _Intent) -> None:
        intent.latest_charge = _new_id("ch")
        intent.last_payment_error = None
        entry = self._record("authorizations", intent.latest_charge, intent, intent.amount, None)
        intent.authorization_id = entry.id
        if intent.capture_method == "manual":
            intent.status = "requires_capture"
            intent.amount_capturable = intent.amount
            logger.info("stripe %s authorized reference=%s", intent.id, intent.reference)
            self.emit(
                "payment_intent.amount_capturable_updated", intent.to_json(), intent.reference
            )
        else:
            self._capture(intent, intent.amount)

    def _capture(self, intent: _Intent, amount: int) -> None:
        intent.status = "succeeded"
        intent.amount_capturable = 0
        intent.amount_received = amount
        charge = intent.latest_charge or _new_id("ch")
        self._record("captures", charge, intent, amount, intent.authorization_id)
        logger.info("stripe %s captured %d reference=%s", intent.id, amount, intent.reference)
        self.emit("payment_intent.succeeded", intent.to_json(), intent.reference)

    def capture(self, intent_id: str, params: Params) -> tuple[int, dict[str, Any]]:
        intent = self.intent(intent_id)
        if intent.status != "requires_capture":
            raise invalid(
                "This PaymentIntent could not be captured because it has a status of "
                f"{intent.status}. Only a PaymentIntent with one of the following statuses "
                "may be captured: requires_capture.",
                code="payment_intent_unexpected_state",
                param="intent",
            )
        if intent.created + int(CAPTURE_WINDOW.total_seconds()) < self.now():
            raise invalid(
                "This PaymentIntent's authorization has expired.",
                code="charge_expired_for_capture",
            )
        amount = _int(params, "amount_to_capture", minimum=1)
        if amount is not None and amount > intent.amount_capturable:
            raise invalid(
                f"The amount to capture ({amount}) is greater than what is capturable "
                f"({intent.amount_capturable}).",
                param="amount_to_capture",
                code="amount_too_large",
            )
        self._capture(intent, amount or intent.amount_capturable)
        return 200, intent.to_json()

    def cancel(self, intent_id: str, params: Params) -> tuple[int, dict[str, Any]]:
        intent = self.intent(intent_id)
        if intent.status in ("succeeded", "canceled"):
            raise invalid(
                "You cannot cancel this PaymentIntent because it has a status of "
                f"{intent.status}. Only a PaymentIntent with one of the following statuses "
                "may be canceled: requires_payment_method, requires_capture, "
                "requires_confirmation, requires_action, processing.",
                code="payment_intent_unexpected_state",
                param="intent",
            )
        reason = params.get("cancellation_reason") or None
        if reason not in (None, "duplicate", "fraudulent", "requested_by_customer", "abandoned"):
            raise invalid(f"Invalid cancellation_reason: {reason}", param="cancellation_reason")
        held = intent.status == "requires_capture"
        intent.status = "canceled"
        intent.amount_capturable = 0
        intent.canceled_at = self.now()
        intent.cancellation_reason = reason
        if held:
            self._record("voids", _new_id("void"), intent, intent.amount, intent.authorization_id)
        logger.info("stripe %s canceled (held: %s) reference=%s", intent.id, held, intent.reference)
        self.emit("payment_intent.canceled", intent.to_json(), intent.reference)
        return 200, intent.to_json()

    def decide(self, intent: _Intent, approve: bool) -> None:
        """The buyer's answer on the 3-D Secure page; a second answer changes nothing."""
        if intent.status != "requires_action":
            return
        if approve:
            self._authorize(intent)
            return
        intent.status = "requires_payment_method"
        intent.last_payment_error = {
            "type": "invalid_request_error",
            "code": "payment_intent_authentication_failure",
            "decline_code": None,
            "message": "The provided PaymentMethod has failed authentication. You can provide "
            "payment_method_data or a new PaymentMethod to attempt to fulfill this "
            "PaymentIntent again.",
            "payment_method": {"id": intent.payment_method, "object": "payment_method"},
        }
        logger.info("stripe %s authentication failed reference=%s", intent.id, intent.reference)
        self.emit("payment_intent.payment_failed", intent.to_json(), intent.reference)

    # Refunds -----------------------------------------------------------------------------

    def refund(self, params: Params) -> tuple[int, dict[str, Any]]:
        intent_id = params.get("payment_intent")
        charge_id = params.get("charge")
        if not intent_id and charge_id:
            intent_id = next(
                (i.id for i in self.intents.values() if i.latest_charge == charge_id), None
            )
            if intent_id is None:
                raise missing("charge", charge_id, "charge", 400)
        if not intent_id:
            raise invalid(
                "One of the following params should be provided for this request: "
                "payment_intent or charge.",
                param="payment_intent",
                code="parameter_missing",
            )
        intent = self.intent(intent_id, "payment_intent")
        left = intent.amount_received - intent.refunded
        if intent.status != "succeeded":
            raise invalid(
                f"This PaymentIntent ({intent.id}) does not have a successful charge to refund.",
                param="payment_intent",
                code="charge_not_refundable",
            )
        if left <= 0:
            raise invalid(
                f"Charge {intent.latest_charge} has already been refunded.",
                code="charge_already_refunded",
            )
        amount = _int(params, "amount", minimum=1)
        if amount is not None and amount > left:
            raise invalid(
                f"Refund amount ({amount}) is greater than unrefunded amount on charge ({left})",
                param="amount",
                code="amount_too_large",
            )
        refund = _Refund(
            id=_new_id("re"),
            amount=amount or left,
            currency=intent.currency,
            payment_intent=intent.id,
            charge=intent.latest_charge,
            created=self.now(),
            reason=params.get("reason") or None,
            metadata=_nested(params, "metadata"),
        )
        self.refunds[refund.id] = refund
        intent.refunded += refund.amount
        self._record("refunds", refund.id, intent, refund.amount, intent.latest_charge)
        logger.info(
            "stripe refund %s of %d on %s reference=%s",
            refund.id,
            refund.amount,
            intent.id,
            intent.reference,
        )
        self.emit("charge.refunded", intent.charge_json(), intent.reference)
        return 200, refund.to_json()

    # Webhooks ----------------------------------------------------------------------------

    def _record(
        self, kind: "Kind", id: str, intent: _Intent, amount: int, charge_id: str | None
    ) -> "Entry":
        """A ledger entry of Stripe's, under the PaymentIntent it belongs to."""
        return self.world.ledger.record(
            kind,
            id=id,
            reference=intent.reference,
            method="card",
            amount=amount,
            currency=intent.currency.upper(),
            provider="stripe",
            provider_reference=intent.id,
            charge_id=charge_id,
        )

    def emit(self, type_: str, obj: dict[str, Any], reference: str) -> None:
        """Send one event to billing, signed, redelivered until a 2xx; nothing without a URL."""
        if not self.world.webhook_base_url:
            return
        event_id = _new_id("evt")
        now = self.now()
        event = {
            "id": event_id,
            "object": "event",
            "api_version": API_VERSION,
            "created": now,
            "data": {"object": obj},
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": type_,
        }
        body = json.dumps(event, separators=(",", ":")).encode()
        self.world.deliveries.send(
            id=event_id,
            provider="stripe",
            url=f"{self.world.webhook_base_url}/webhooks/stripe",
            event=type_,
            body=body,
            headers={
                "Content-Type": "application/json; charset=utf-8",
                "Stripe-Signature": _sign(self.settings.webhook_secret, now, body),
            },
            waits=[w * self.settings.retry_scale for w in RETRY_SCHEDULE_S],
            reference=reference,
            # Stripe signs every attempt with the time it is sent, so a late redelivery is
            # not stale at the receiver's 300 s tolerance.
            resign=lambda raw: {
                "Stripe-Signature": _sign(self.settings.webhook_secret, self.now(), raw)
            },
        )


def _listing(url: str, items: list[dict[str, Any]], params: Params) -> dict[str, Any]:
    """Stripe's list: newest first, `limit` (1-100, default 10) after `starting_after`."""
    limit = _int(params, "limit", minimum=1) or 10
    if limit > 100:
        raise invalid("This value must be less than or equal to 100.", param="limit")
    items = sorted(items, key=lambda o: (o["created"], o["id"]), reverse=True)
    after = params.get("starting_after")
    if after:
        ids = [o["id"] for o in items]
        if after not in ids:
            raise missing("object", after, "starting_after", 400)
        items = items[ids.index(after) + 1 :]
    return {
        "object": "list",
        "data": items[:limit],
        "has_more": len(items) > limit,
        "url": url,
    }


def _created_filter(params: Params) -> Callable[[int], bool]:
    bounds = _nested(params, "created")
    if "created" in params:
        bounds["eq"] = params["created"]
    checks: dict[str, Callable[[int, int], bool]] = {
        "gt": lambda c, b: c > b,
        "gte": lambda c, b: c >= b,
        "lt": lambda c, b: c < b,
        "lte": lambda c, b: c <= b,
        "eq": lambda c, b: c == b,
    }
    parsed: list[tuple[Callable[[int, int], bool], int]] = []
    for name, raw in bounds.items():
        if name not in checks:
            raise invalid(f"Received unknown parameter: created[{name}]", param="created")
        try:
            parsed.append((checks[name], int(raw)))
        except ValueError:
            raise invalid(f"Invalid integer: {raw}", param=f"created[{name}]") from None
    return lambda created: all(check(created, bound) for check, bound in parsed)


_PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Confirm your payment</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body>
<main>
<h1>Confirm your payment</h1>
<p>Your bank asks you to confirm a payment of <strong>{amount}</strong> {what}.</p>
<form method="post" action="{action}">
<button type="submit" name="decision" value="approve">Approve payment</button>
<button type="submit" name="decision" value="cancel">Cancel payment</button>
</form>
</main>
</body>
</html>
"""


def _page(message: str, status: int) -> HTMLResponse:
    body = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>3-D Secure</title>'
        f"</head><body><main><p>{html.escape(message)}</p></main></body></html>"
    )
    return HTMLResponse(body, status_code=status)


def _with_query(url: str, extra: dict[str, str]) -> str:
    parts = urlsplit(url)
    query = urlencode([*parse_qsl(parts.query, keep_blank_values=True), *extra.items()])
    return urlunsplit(parts._replace(query=query))


def mount(app: FastAPI, world: "World") -> None:
    """Serve the sandbox's Stripe under `/stripe`, configured by PAYMENT_SANDBOX_STRIPE_*."""
    mount_with(app, world, StripeSettings.from_env())


def mount_with(app: FastAPI, world: "World", settings: StripeSettings) -> StripeSandbox:
    """Serve the sandbox's Stripe under `/stripe` with the given settings."""
    stripe = StripeSandbox(world, settings)
    app.state.stripe = stripe
    api = APIRouter(prefix=f"{PREFIX}/v1", include_in_schema=False)
    expected = f"Bearer {settings.api_key}".encode()

    async def guarded(
        request: Request, handler: Callable[[Params], Awaitable[Response]]
    ) -> Response:
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            return StripeApiError(
                401,
                "invalid_request_error",
                "Invalid API Key provided." if given else "You did not provide an API key.",
            ).response()
        try:
            if request.method == "GET":
                params = dict(request.query_params)
            else:
                params = _form(await request.body())
            return await handler(params)
        except StripeApiError as error:
            return error.response()

    @api.post("/payment_intents")
    async def create_intent(request: Request) -> Response:
        async def handle(params: Params) -> Response:
            method = params.get("payment_method") or ""
            behaviour = behaviour_of(method)
            return await stripe.idempotent(
                request,
                params,
                lambda: stripe.create_intent(params),
                flaky=lambda: behaviour is not None and behaviour.flaky,
            )

        return await guarded(request, handle)

    @api.get("/payment_intents")
    async def list_intents(request: Request) -> Response:
        async def handle(params: Params) -> Response:
            keep = _created_filter(params)
            items = [i.to_json() for i in stripe.intents.values() if keep(i.created)]
            return JSONResponse(_listing("/v1/payment_intents", items, params))

        return await guarded(request, handle)

    @api.get("/payment_intents/{intent_id}")
    async def retrieve_intent(intent_id: str, request: Request) -> Response:
        async def handle(params: Params) -> Response:
            return JSONResponse(stripe.intent(intent_id).to_json())

        return await guarded(request, handle)

    def once_per_key(
        request: Request, act: Callable[[Params], tuple[int, dict[str, Any]]]
    ) -> Callable[[Params], Awaitable[Response]]:
        """A handler that runs `act` once per Idempotency-Key (see `StripeSandbox.idempotent`)."""

        async def handle(params: Params) -> Response:
            async def run() -> tuple[int, dict[str, Any]]:
                return act(params)

            return await stripe.idempotent(request, params, run)

        return handle

    @api.post("/payment_intents/{intent_id}/capture")
    async def capture_intent(intent_id: str, request: Request) -> Response:
        capture = functools.partial(stripe.capture, intent_id)
        return await guarded(request, once_per_key(request, capture))

    @api.post("/payment_intents/{intent_id}/cancel")
    async def cancel_intent(intent_id: str, request: Request) -> Response:
        cancel = functools.partial(stripe.cancel, intent_id)
        return await guarded(request, once_per_key(request, cancel))

    @api.post("/refunds")
    async def create_refund(request: Request) -> Response:
        return await guarded(request, once_per_key(request, stripe.refund))

    @api.get("/refunds")
    async def list_refunds(request: Request) -> Response:
        async def handle(params: Params) -> Response:
            wanted = params.get("payment_intent")
            keep = _created_filter(params)
            items = [
                r.to_json()
                for r in stripe.refunds.values()
                if wanted in (None, r.payment_intent) and keep(r.created)
            ]
            return JSONResponse(_listing("/v1/refunds", items, params))

        return await guarded(request, handle)

    @api.get("/refunds/{refund_id}")
    async def retrieve_refund(refund_id: str, request: Request) -> Response:
        async def handle(params: Params) -> Response:
            refund = stripe.refunds.get(refund_id)
            if refund is None:
                raise missing("refund", refund_id)
            return JSONResponse(refund.to_json())

        return await guarded(request, handle)

    pages = APIRouter(prefix=f"{PREFIX}/3ds", include_in_schema=False)

    @pages.get("/{intent_id}")
    async def challenge(intent_id: str) -> Response:
        intent = stripe.intents.get(intent_id)
        if intent is None:
            return _page("There is no such payment to confirm.", 404)
        if intent.status != "requires_action":
            return _page("This payment no longer needs your confirmation.", 409)
        what = f"to {html.escape(intent.description)}" if intent.description else ""
        amount = f"{intent.amount} {intent.currency.upper()} (minor units)"
        return HTMLResponse(
            _PAGE.format(amount=html.escape(amount), what=what, action=f"{PREFIX}/3ds/{intent.id}")
        )

    @pages.post("/{intent_id}")
    async def answer(intent_id: str, request: Request) -> Response:
        intent = stripe.intents.get(intent_id)
        if intent is None:
            return _page("There is no such payment to confirm.", 404)
        decision = _form(await request.body()).get("decision")
        if decision not in ("approve", "cancel"):
            return _page("The form field decision must be approve or cancel.", 400)
        stripe.decide(intent, decision == "approve")
        if intent.return_url is None:
            return _page("Your answer was recorded.", 200)
        status = "succeeded" if intent.status in ("requires_capture", "succeeded") else "failed"
        target = _with_query(
            intent.return_url,
            {
                "payment_intent": intent.id,
                "payment_intent_client_secret": intent.client_secret,
                "redirect_status": status,
            },
        )
        return RedirectResponse(target, status_code=303)

    @api.api_route("/{rest:path}", methods=["GET", "POST", "DELETE"])
    async def unrecognized(rest: str, request: Request) -> Response:
        async def handle(params: Params) -> Response:
            raise StripeApiError(
                404,
                "invalid_request_error",
                f"Unrecognized request URL ({request.method}: /v1/{rest}). The sandbox serves "
                "payment_intents and refunds.",
            )

        return await guarded(request, handle)

    app.include_router(api)
    app.include_router(pages)
    return stripe
