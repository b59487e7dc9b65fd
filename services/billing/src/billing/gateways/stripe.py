"""StripeGateway: the `card` method over Stripe's PaymentIntents, through the official library.

`pay` creates and confirms a PaymentIntent with `capture_method=manual`, so the money is held
(`requires_capture`) until billing captures it after activation, or the buyer is sent through
3-D Secure first (`requires_action`). Each charge attempt is a PaymentIntent of its own under
its own key: `charge:<renewal>` first, `charge:<renewal>:<n>` for the n-th charge, made only
after a recorded decline (the dunning schedule). Stripe replays the first answer to a repeated
key (`Idempotent-Replayed: true`), a decline too, so a dunning charge under the first key would
never reach the card. A replayed answer may also be old (the buyer approved since), so a
replayed PaymentIntent is retrieved again to report where it stands now.

The library is `stripe` (`StripeClient` with its async methods over an aiohttp client of the
adapter's, `_TimedAiohttpClient`), pointed at
another address by `base_url` alone (`base_addresses={"api": ...}`), which is how the payment
sandbox stands in for Stripe. It does not retry by itself (`max_network_retries=0`): billing's
loops decide when to try again, always under the same key.

Nothing here logs the API key, the webhook secret or the payment method; the library's own
`stripe` logger writes request bodies at DEBUG and Stripe's error messages at INFO, so the
adapter keeps it at WARNING or above.
"""

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn
from urllib.parse import urlsplit

import aiohttp
import stripe
from esim_core.observability.tracing import TRACEPARENT
from esim_core.outside.transport import outside_call
from stripe.params import PaymentIntentCreateParams, RefundCreateParams

from billing.gateways import port

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.stripe.com"
SYSTEM = "stripe"
"""The `system` label of Stripe's calls in `esim_outside_call_seconds`."""
CAPTURE_WINDOW = timedelta(days=7)
"""How long Stripe holds an online card authorization; `capture_before` counts it from the
PaymentIntent's creation, which is never later than the authorization itself."""
ACTION_WINDOW = timedelta(hours=1)
"""How long billing lets the buyer take for 3-D Secure before it asks and gives up (Stripe sets
no expiry on `requires_action`; billing cancels the PaymentIntent itself)."""
KEY_RETENTION = timedelta(hours=24)
"""Stripe keeps an idempotency key for at least 24 hours: older payments cannot be replayed."""
WEBHOOK_TOLERANCE_S = 300
AUTHENTICATION_FAILED = "payment_intent_authentication_failure"
IDEMPOTENCY_METADATA = "idempotency_key"
"""The metadata entry that carries the key a PaymentIntent was created under, so `look_up` can
find the payment a lost call made without repeating that call."""


def billing_decline(decline_code: str | None, code: str | None) -> tuple[str, bool]:
    """Billing's decline code for Stripe's, and whether a later attempt may succeed.

    Args:
        decline_code: The issuer's reason (`insufficient_funds`, `generic_decline`, ...).
        code: Stripe's error code (`card_declined`, `expired_card`, ...).
    """
    if decline_code == "insufficient_funds":
        return "insufficient_funds", True
    if "expired_card" in (decline_code, code):
        return "expired_method", False
    if code == AUTHENTICATION_FAILED:
        return "not_approved", False
    return "declined", False


def _moment(unix: int | None) -> datetime | None:
    return None if unix is None else datetime.fromtimestamp(unix, UTC)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    wanted = name.lower()
    return next((v for k, v in headers.items() if k.lower() == wanted), None)


def _charge_id(intent: stripe.PaymentIntent) -> str | None:
    charge = intent.latest_charge
    if charge is None or isinstance(charge, str):
        return charge
    return charge.id


class _TimedAiohttpClient(stripe.HTTPClient):
    """The library's async HTTP client, over one pooled aiohttp session of its own.

    Each call is timed in `esim_outside_call_seconds{system="stripe"}` and traced (its
    `traceparent` goes out with it), like every other outside call (`esim_core.outside`). The
    library's own `HTTPXClient` spent about a third of a call's CPU in httpx (building the
    request and its headers, the cookie jar, the response), which Stripe's API needs none of;
    its `AIOHTTPClient` lets a timeout while reading the answer escape as no error of its own.
    This client sends the library's requests unchanged and reads each answer whole (Stripe's
    are small JSON documents); anything failing on the way is the library's
    `APIConnectionError`, which the adapter reads as an answer lost.
    """

    name = "aiohttp"

    def __init__(self, timeout_s: float, *, max_connections: int = 100) -> None:
        super().__init__()
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # Made inside the running loop: aiohttp binds a session to the loop it is made in.
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections, keepalive_timeout=15),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def request_async(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any = None
    ) -> tuple[bytes, int, Mapping[str, str]]:
        """Send one request of the library's; its answer's body, status and headers."""
        split = urlsplit(url)
        with outside_call(SYSTEM, method.upper(), split.hostname, split.path) as call:
            sent = dict(headers)
            if call.traceparent is not None:
                sent[TRACEPARENT] = call.traceparent
            try:
                async with self._client().request(
                    method, url, headers=sent, data=post_data, timeout=self._timeout
                ) as response:
                    content = await response.read()
            except (aiohttp.ClientError, TimeoutError) as error:
                if isinstance(error, TimeoutError):
                    call.outcome = "timeout"
                raise stripe.APIConnectionError(  # type: ignore[no-untyped-call]  # unannotated upstream
                    f"Stripe could not be reached: {type(error).__name__}", should_retry=True
                ) from error
            call.answered(response.status)
        return content, response.status, response.headers

    def sleep_async(self, secs: float) -> Awaitable[None]:
        """The library's wait between its own retries (billing asks it for none)."""
        return asyncio.sleep(secs)

    async def request_stream_async(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any = None
    ) -> NoReturn:
        """Not offered: no call of billing's streams."""
        raise NotImplementedError("billing's Stripe client streams nothing")

    async def close_async(self) -> None:
        """Close the pooled connections."""
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None


class StripeGateway:
    """`PaymentGateway` for `card`: Stripe PaymentIntents, authorize then capture.

    Errors: a `card_error` is a `PaymentDeclinedError` (`insufficient_funds` retryable,
    `expired_card` as `expired_method`, anything else `declined`); timeouts, connection errors,
    409 (a request under the same key still running), 429 and 5xx are
    `GatewayUnavailableError` (the outcome is unknown: ask); any other refusal
    (`idempotency_error`, `invalid_request_error`, a wrong key) is `GatewayRejectedError`.
    """

    method = "card"

    def __init__(
        self,
        *,
        api_key: str,
        webhook_secret: str,
        base_url: str = DEFAULT_BASE_URL,
        timeout_s: float = 10.0,
        capture_window: timedelta = CAPTURE_WINDOW,
        action_window: timedelta = ACTION_WINDOW,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """Build the adapter.

        Args:
            api_key: Stripe's secret key (`sk_...`); never logged.
            webhook_secret: The webhook endpoint's signing secret (`whsec_...`); never logged.
            base_url: Stripe's API address, or the sandbox's `http://<host>/stripe`.
            timeout_s: How long one call may take before its outcome counts as unknown.
            capture_window: How long an authorization can be captured.
            action_window: How long the buyer has for 3-D Secure.
            clock: The time `look_up` counts Stripe's key retention back from.
        """
        if not api_key:
            raise ValueError("the Stripe API key is empty")
        if not webhook_secret:
            raise ValueError("the Stripe webhook secret is empty")
        self._webhook_secret = webhook_secret
        self._capture_window = capture_window
        self._action_window = action_window
        self._clock = clock
        self._http = _TimedAiohttpClient(timeout_s)
        self._client = stripe.StripeClient(
            api_key,
            base_addresses={"api": base_url.rstrip("/")},
            http_client=self._http,
            max_network_retries=0,
        )
        self._api_key = api_key
        # The library logs request bodies (the payment method) at DEBUG and Stripe's error
        # messages (which can name the payment method) at INFO; it writes nothing above that.
        library = logging.getLogger("stripe")
        library.setLevel(max(logging.WARNING, library.getEffectiveLevel()))

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._http.close_async()

    # Payments ----------------------------------------------------------------------------

    async def pay(self, request: port.PaymentRequest) -> port.PayOutcome:
        """Create and confirm a manual-capture PaymentIntent; see `PaymentGateway.pay`."""
        if not request.token:
            raise port.GatewayRejectedError(
                400, "a card payment needs a payment method saved at Stripe (token)"
            )
        params: PaymentIntentCreateParams = {
            "amount": request.amount,
            "currency": request.currency.lower(),
            "payment_method": request.token,
            "confirm": True,
            "capture_method": "manual",
            "metadata": {
                "reference": request.reference,
                IDEMPOTENCY_METADATA: request.idempotency_key,
            },
        }
        if request.return_url is not None:
            params["return_url"] = request.return_url
        if request.description is not None:
            params["description"] = request.description
        with self._calling(request.token):
            intent = await self._client.v1.payment_intents.create_async(
                params,
                {"idempotency_key": request.idempotency_key},
            )
            if _replayed(intent):
                # The first answer may be old: the buyer may have approved or cancelled since.
                intent = await self._client.v1.payment_intents.retrieve_async(intent.id)
        return self._outcome(intent)

    def _outcome(self, intent: stripe.PaymentIntent) -> port.PayOutcome:
        view = self._view(intent)
        match view.standing:
            case port.Standing.AUTHORIZED:
                assert view.capture_before is not None
                return port.Authorized(
                    intent.id,
                    intent.amount_capturable,
                    intent.currency.upper(),
                    view.capture_before,
                )
            case port.Standing.ACTION_REQUIRED if view.action_url and view.action_expires_at:
                return port.ActionRequired(intent.id, view.action_url, view.action_expires_at)
            case port.Standing.CAPTURED | port.Standing.REFUNDED:
                return self._captured(intent)
            case port.Standing.DECLINED | port.Standing.CANCELLED if intent.status != "canceled":
                error = intent.last_payment_error
                code, retryable = (
                    billing_decline(_attr(error, "decline_code"), _attr(error, "code"))
                    if error is not None
                    else ("declined", False)
                )
                raise port.PaymentDeclinedError(code, retryable, f"PaymentIntent {intent.id}")
        raise port.GatewayRejectedError(
            409, f"PaymentIntent {intent.id} is {intent.status}: nothing to pay"
        )

    async def capture(self, request: port.CaptureRequest) -> port.Captured:
        """Capture the held amount once; see `PaymentGateway.capture`.

        A capture already made (under this key or, after a lost answer, any other) is returned
        as it is: Stripe refuses a second capture of a PaymentIntent, so money is taken once.
        """
        with self._calling():
            intent, captured = await self._or_as_it_stands(
                request.provider_reference,
                lambda: self._client.v1.payment_intents.capture_async(
                    request.provider_reference,
                    {"amount_to_capture": request.amount},
                    {"idempotency_key": request.idempotency_key},
                ),
            )
        if intent.status != "succeeded" and not captured:
            raise port.GatewayRejectedError(
                400, f"PaymentIntent {intent.id} is {intent.status}: nothing to capture"
            )
        if intent.status != "succeeded":
            raise port.GatewayRejectedError(
                409, f"PaymentIntent {intent.id} is {intent.status} after its capture"
            )
        return self._captured(intent)

    async def void(self, request: port.VoidRequest) -> port.Voided:
        """Cancel the PaymentIntent, releasing its hold; see `PaymentGateway.void`."""
        with self._calling():
            intent, _ = await self._or_as_it_stands(
                request.provider_reference,
                lambda: self._client.v1.payment_intents.cancel_async(
                    request.provider_reference,
                    {"cancellation_reason": "abandoned"},
                    {"idempotency_key": request.idempotency_key},
                ),
            )
        if intent.status != "canceled":
            raise port.GatewayRejectedError(
                409, f"PaymentIntent {intent.id} is {intent.status}: it cannot be released"
            )
        return port.Voided(intent.id)

    async def refund(self, request: port.RefundRequest) -> port.RefundReceipt:
        """Refund a capture (by its charge or PaymentIntent id); see `PaymentGateway.refund`."""
        target = "payment_intent" if request.charge_id.startswith("pi_") else "charge"
        # Stripe's own `reason` takes three values; billing's reason travels as metadata.
        metadata = {
            name: value
            for name, value in (("reason", request.reason), ("reference", request.reference))
            if value is not None
        }
        params: RefundCreateParams = {"amount": request.amount, "metadata": metadata}
        if target == "payment_intent":
            params["payment_intent"] = request.charge_id
        else:
            params["charge"] = request.charge_id
        with self._calling():
            refund = await self._client.v1.refunds.create_async(
                params,
                {"idempotency_key": request.idempotency_key},
            )
        return port.RefundReceipt(refund.id, refund.amount, refund.currency.upper())

    # Asking ------------------------------------------------------------------------------

    async def look_up(self, request: port.LookupRequest) -> port.PaymentView:
        """Where the payment stands; retrieves and lists, never creates or confirms.

        With the PaymentIntent's id it is retrieved. Without one (the answer to `pay` was lost)
        the PaymentIntents of Stripe's key-retention window are listed and the one created
        under `request.idempotency_key` (kept in its metadata) is the answer; none means the
        call never arrived. That asks without acting: repeating the create would need the
        very same parameters (a payment method billing does not hand to `look_up`) and, with
        any other, Stripe answers `idempotency_error` or, had the first call never arrived,
        makes a new PaymentIntent. Repeating `pay` itself under the same key stays safe (Stripe
        replays the first answer, and `pay` retrieves where it stands now); only a new key
        could pay twice.
        """
        with self._calling():
            if request.provider_reference is not None:
                try:
                    intent = await self._client.v1.payment_intents.retrieve_async(
                        request.provider_reference
                    )
                except stripe.InvalidRequestError as error:
                    if error.code == "resource_missing":
                        return port.PaymentView(
                            port.Standing.NOT_FOUND, reference=request.reference
                        )
                    raise
                return await self._full_view(intent)
            since = self._clock() - KEY_RETENTION
            async for intent in self._intents_since(since):
                if intent.metadata.to_dict().get(IDEMPOTENCY_METADATA) == request.idempotency_key:
                    return await self._full_view(intent)
        return port.PaymentView(
            port.Standing.NOT_FOUND, reference=request.reference, method=self.method
        )

    async def list_payments(self, since: datetime) -> list[port.PaymentView]:
        """Every PaymentIntent created since `since`, with what was refunded of each."""
        with self._calling():
            refunded: dict[str, int] = {}
            listed = await self._client.v1.refunds.list_async(
                {"created": {"gte": int(since.timestamp())}, "limit": 100}
            )
            async for refund in listed.auto_paging_iter():
                intent_id = refund.payment_intent
                if isinstance(intent_id, str) and refund.status == "succeeded":
                    refunded[intent_id] = refunded.get(intent_id, 0) + refund.amount
            return [
                self._view(intent, refunded.get(intent.id, 0))
                async for intent in self._intents_since(since)
            ]

    async def _intents_since(self, since: datetime) -> AsyncIterator[stripe.PaymentIntent]:
        page = await self._client.v1.payment_intents.list_async(
            {"created": {"gte": int(since.timestamp())}, "limit": 100}
        )
        async for intent in page.auto_paging_iter():
            yield intent

    async def _full_view(self, intent: stripe.PaymentIntent) -> port.PaymentView:
        if intent.status != "succeeded":
            return self._view(intent)
        refunds = await self._client.v1.refunds.list_async(
            {"payment_intent": intent.id, "limit": 100}
        )
        amounts = [r.amount async for r in refunds.auto_paging_iter() if r.status == "succeeded"]
        refunded = sum(amounts)
        return self._view(intent, refunded)

    def _view(self, intent: stripe.PaymentIntent, refunded: int = 0) -> port.PaymentView:
        """What a PaymentIntent says, in the port's terms."""
        error = intent.last_payment_error
        decline_code = None
        standing: port.Standing
        match intent.status:
            case "requires_capture":
                standing = port.Standing.AUTHORIZED
            case "requires_action":
                standing = port.Standing.ACTION_REQUIRED
            case "succeeded":
                received = intent.amount_received
                standing = (
                    port.Standing.REFUNDED
                    if refunded and refunded >= received
                    else port.Standing.CAPTURED
                )
            case "canceled":
                # A PaymentIntent cancelled after it was authorized released a hold.
                held = _charge_id(intent) is not None and error is None
                standing = port.Standing.VOIDED if held else port.Standing.CANCELLED
            case "requires_payment_method" if error is not None:
                if _attr(error, "code") == AUTHENTICATION_FAILED:
                    standing = port.Standing.CANCELLED
                else:
                    standing = port.Standing.DECLINED
                    decline_code = billing_decline(
                        _attr(error, "decline_code"), _attr(error, "code")
                    )[0]
            case "processing":
                raise port.GatewayUnavailableError(f"PaymentIntent {intent.id} is still processing")
            case _:
                # Created but never confirmed: nothing was, or will be, taken under it.
                standing = port.Standing.CANCELLED
        created = _moment(intent.created)
        assert created is not None
        action_url = None
        expires_at = None
        if standing is port.Standing.ACTION_REQUIRED:
            redirect = intent.next_action.redirect_to_url if intent.next_action else None
            action_url = redirect.url if redirect else None
            expires_at = created + self._action_window
        return port.PaymentView(
            standing=standing,
            reference=intent.metadata.to_dict().get("reference"),
            provider_reference=intent.id,
            idempotency_key=intent.metadata.to_dict().get(IDEMPOTENCY_METADATA),
            amount=intent.amount,
            currency=intent.currency.upper(),
            captured_amount=intent.amount_received,
            refunded_amount=refunded,
            capture_reference=_charge_id(intent) if intent.amount_received else None,
            capture_before=created + self._capture_window
            if standing is port.Standing.AUTHORIZED
            else None,
            action_url=action_url,
            action_expires_at=expires_at,
            decline_code=decline_code,
            method=self.method,
            at=created,
        )

    def _captured(self, intent: stripe.PaymentIntent) -> port.Captured:
        return port.Captured(
            provider_reference=_charge_id(intent) or intent.id,
            amount=intent.amount_received,
            currency=intent.currency.upper(),
            payment_reference=intent.id,
        )

    # Webhooks ----------------------------------------------------------------------------

    async def read_webhook(self, headers: Mapping[str, str], body: bytes) -> port.WebhookNotice:
        """Verify `Stripe-Signature` (300 s tolerance) and read the event's payment.

        The library's `construct_event` would parse the body again and build the whole event
        as objects (its request, its data, the object); only `data.object` is read here, so
        only it is built (330 to 155 us an event, in process), from the body parsed once, and
        only after the signature over that body verified.

        Raises:
            WebhookRejectedError: no or a wrong signature, a stale timestamp, a body that is
                not an event, or an event about something other than a card payment.
        """
        signature = _header(headers, "Stripe-Signature")
        if signature is None:
            raise port.WebhookRejectedError("no Stripe-Signature header")
        try:
            document = json.loads(body)
        except ValueError as error:
            raise port.WebhookRejectedError(f"the body is not a Stripe event: {error}") from None
        if not isinstance(document, dict):
            raise port.WebhookRejectedError("the body is not a Stripe event: not a JSON object")
        try:
            stripe.WebhookSignature.verify_header(
                body, signature, self._webhook_secret, WEBHOOK_TOLERANCE_S
            )
        except stripe.SignatureVerificationError as error:
            raise port.WebhookRejectedError(f"Stripe-Signature does not verify: {error}") from None
        event_id, kind, what = document.get("id"), document.get("type"), document.get("object")
        if what != "event" or not isinstance(event_id, str):
            raise port.WebhookRejectedError(
                f"the body is not a Stripe snapshot event with an id (its object: {what!r})"
            )
        data = document.get("data")
        obj = data.get("object") if isinstance(data, dict) else None
        if not isinstance(obj, dict):
            raise port.WebhookRejectedError(f"a malformed Stripe event: {kind} has no data.object")
        return port.WebhookNotice(event_id, self.method, self._event_view(kind, obj))

    def _event_view(self, kind: object, obj: dict[str, Any]) -> port.PaymentView:
        """What the event's object says of its payment: a PaymentIntent's or a Charge's view."""
        what = obj.get("object")
        try:
            if what == "payment_intent":
                return self._view(stripe.PaymentIntent.construct_from(obj, None))
            if what == "charge":
                return _charge_view(stripe.Charge.construct_from(obj, None))
        except (AttributeError, KeyError, TypeError, ValueError) as error:
            raise port.WebhookRejectedError(f"a malformed Stripe event: {error}") from None
        raise port.WebhookRejectedError(f"{kind} events ({what}) are not card payments")

    async def _or_as_it_stands(
        self, reference: str, act: Callable[[], Awaitable[stripe.PaymentIntent]]
    ) -> tuple[stripe.PaymentIntent, bool]:
        """`act` on a PaymentIntent or, when Stripe says its state forbids that, read it.

        A capture or cancel that an earlier call (whose answer was lost) already made finds the
        intent moved on; what it is now tells whether the money went the way asked.

        Returns:
            The PaymentIntent, and whether `act` went through (False: it was read instead).
        """
        try:
            return await act(), True
        except stripe.InvalidRequestError as error:
            if error.code != "payment_intent_unexpected_state":
                raise
        return await self._client.v1.payment_intents.retrieve_async(reference), False

    # Errors ------------------------------------------------------------------------------

    @contextmanager
    def _calling(self, token: str | None = None) -> Iterator[None]:
        """Turn the library's errors into the port's, with the key and payment method kept out."""
        secrets = (self._api_key, token) if token else (self._api_key,)
        try:
            yield
        except stripe.CardError as error:
            details = error.error
            code, retryable = billing_decline(details.decline_code if details else None, error.code)
            raise port.PaymentDeclinedError(code, retryable, _said(error, secrets)) from None
        except (stripe.APIConnectionError, stripe.RateLimitError) as error:
            _unavailable(error, secrets)
        except stripe.StripeError as error:
            status = error.http_status
            # 409: another request under the key is still running (`idempotency_key_in_use`) or
            # Stripe timed out on a lock: the outcome is not known yet, as after a timeout.
            if status is None or status >= 500 or status in (409, 429):
                _unavailable(error, secrets)
            raise port.GatewayRejectedError(status, _said(error, secrets)) from None


def _unavailable(error: stripe.StripeError, secrets: tuple[str, ...]) -> NoReturn:
    raise port.GatewayUnavailableError(
        f"Stripe: {type(error).__name__} {error.http_status or ''} {_said(error, secrets)}".strip()
    ) from None


def _said(error: stripe.StripeError, secrets: tuple[str, ...]) -> str:
    message = error.user_message or type(error).__name__
    if error.code:
        message = f"{error.code}: {message}"
    for secret in secrets:
        message = message.replace(secret, "***")
    return message


def _attr(obj: object, name: str) -> str | None:
    """A field Stripe may leave out (a StripeObject raises AttributeError for those)."""
    value = getattr(obj, name, None)
    return value if isinstance(value, str) else None


def _replayed(intent: stripe.PaymentIntent) -> bool:
    response = intent.last_response
    return response is not None and response.headers.get("idempotent-replayed") == "true"


def _charge_view(charge: stripe.Charge) -> port.PaymentView:
    """What a Charge event says (`charge.refunded`; other charge events if subscribed)."""
    intent = charge.payment_intent
    standing = port.Standing.CAPTURED
    if charge.status == "failed":
        standing = port.Standing.DECLINED
    elif charge.refunded:
        standing = port.Standing.REFUNDED
    elif not charge.captured:
        # `charge.succeeded` comes at authorization too, with nothing captured yet.
        standing = port.Standing.AUTHORIZED
    return port.PaymentView(
        standing=standing,
        reference=charge.metadata.to_dict().get("reference"),
        provider_reference=intent if isinstance(intent, str) else getattr(intent, "id", None),
        amount=charge.amount,
        currency=charge.currency.upper(),
        captured_amount=charge.amount_captured,
        refunded_amount=charge.amount_refunded,
        capture_reference=charge.id if charge.captured else None,
        method="card",
        at=_moment(charge.created),
    )
