"""StripeGateway against the payment sandbox's Stripe, served over HTTP for the whole module.

The adapter goes through the official `stripe` library, so the sandbox listens on a free port
(one server for the module); it also serves billing's `/webhooks/stripe` itself as a recorder,
so the signed events it sends come back here for `read_webhook`. Each test pays under its own
renewal id.
"""

import asyncio
import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from billing import gateways
from billing.gateways.stripe import StripeGateway
from fastapi import Request, Response
from gateway_kit import authorized, capture_of, lookup_of, payment_request
from prometheus_client import REGISTRY
from sandboxes.payment import PaymentSandboxSettings, create_app
from sandboxes.threaded import free_port, serving

API_KEY = "sk_test_sandbox"
WEBHOOK_SECRET = "whsec_sandbox"
SLOW_DELAY = 0.6
RETURN_URL = "https://travel.example/renewals/return"


@dataclass
class Sandbox:
    url: str
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    app = create_app(PaymentSandboxSettings(port=port, slow_delay=SLOW_DELAY, webhook_base_url=url))
    served = Sandbox(url)

    @app.post("/webhooks/stripe")
    async def receive(request: Request) -> Response:
        served.received.append((dict(request.headers), await request.body()))
        return Response(status_code=200)

    with serving(app, port):
        yield served


@pytest.fixture(scope="module")
async def stripe_gateway(sandbox: Sandbox) -> AsyncIterator[StripeGateway]:
    gateway = StripeGateway(
        api_key=API_KEY,
        webhook_secret=WEBHOOK_SECRET,
        base_url=f"{sandbox.url}/stripe",
        timeout_s=5.0,
    )
    yield gateway
    await gateway.aclose()


@pytest.fixture
async def web(sandbox: Sandbox) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sandbox.url) as web:
        yield web


def payment(token: str, renewal: str | None = None, attempt: int = 1) -> gateways.PaymentRequest:
    renewal = renewal or str(uuid.uuid4())
    key = f"charge:{renewal}:{attempt}"
    return payment_request("card", "CNY", token, return_url=RETURN_URL, renewal=renewal, key=key)


async def ledger(web: httpx.AsyncClient, reference: str) -> dict[str, list[dict[str, Any]]]:
    response = await web.get("/sandbox/ledger", params={"reference": reference})
    assert response.status_code == 200
    body: dict[str, list[dict[str, Any]]] = response.json()
    return body


async def test_a_visa_card_is_held_until_the_capture_window_closes(
    stripe_gateway: StripeGateway, web: httpx.AsyncClient
) -> None:
    request = payment("pm_card_visa")

    outcome = await authorized(stripe_gateway, request)

    assert outcome.provider_reference.startswith("pi_")
    assert (outcome.amount, outcome.currency) == (9900, "CNY")
    expected = datetime.now(UTC) + timedelta(days=7)
    assert abs(outcome.capture_before - expected) < timedelta(minutes=1)
    held = await ledger(web, request.reference)
    assert [e["provider_reference"] for e in held["authorizations"]] == [outcome.provider_reference]
    assert held["captures"] == []


async def test_each_call_is_timed_at_the_outside_call_histogram(
    stripe_gateway: StripeGateway,
) -> None:
    def timed() -> float:
        # The operation is the path's first two segments: here under the sandbox's /stripe.
        labels = {"system": "stripe", "operation": "POST /stripe/v1", "outcome": "2xx"}
        return REGISTRY.get_sample_value("esim_outside_call_seconds_count", labels) or 0.0

    before = timed()

    await authorized(stripe_gateway, payment("pm_card_visa"))

    assert timed() == before + 1


async def test_3d_secure_sends_the_buyer_to_the_page_and_after_approval_it_is_authorized(
    stripe_gateway: StripeGateway, web: httpx.AsyncClient
) -> None:
    request = payment("pm_card_authenticationRequired")

    outcome = await stripe_gateway.pay(request)

    assert isinstance(outcome, gateways.ActionRequired)
    assert outcome.expires_at > datetime.now(UTC)
    waiting = await stripe_gateway.look_up(lookup_of(request, outcome.provider_reference))
    assert waiting.standing is gateways.Standing.ACTION_REQUIRED
    assert waiting.action_url == outcome.url
    answer = await web.post(outcome.url, data={"decision": "approve"})
    assert answer.status_code == 303
    assert answer.headers["location"].startswith(f"{RETURN_URL}?payment_intent=")

    view = await stripe_gateway.look_up(lookup_of(request, outcome.provider_reference))

    assert view.standing is gateways.Standing.AUTHORIZED
    assert view.reference == request.reference
    assert view.capture_before is not None
    # Paying again under the key replays Stripe's first answer; the adapter reports now.
    again = await authorized(stripe_gateway, request)
    assert again.provider_reference == outcome.provider_reference
    assert len((await ledger(web, request.reference))["authorizations"]) == 1


async def test_3d_secure_cancelled_by_the_buyer_is_not_approved_and_holds_nothing(
    stripe_gateway: StripeGateway, web: httpx.AsyncClient
) -> None:
    request = payment("card_tok_action")
    outcome = await stripe_gateway.pay(request)
    assert isinstance(outcome, gateways.ActionRequired)

    await web.post(outcome.url, data={"decision": "cancel"})

    view = await stripe_gateway.look_up(lookup_of(request, outcome.provider_reference))
    assert view.standing is gateways.Standing.CANCELLED
    with pytest.raises(gateways.PaymentDeclinedError) as raised:
        await stripe_gateway.pay(request)
    assert (raised.value.code, raised.value.retryable) == ("not_approved", False)
    assert (await ledger(web, request.reference))["authorizations"] == []


async def test_a_capture_is_taken_once_whatever_key_repeats_it(
    stripe_gateway: StripeGateway, web: httpx.AsyncClient
) -> None:
    request = payment("pm_card_visa")
    held = await authorized(stripe_gateway, request)

    first = await stripe_gateway.capture(capture_of(request, held.provider_reference))
    repeated = await stripe_gateway.capture(capture_of(request, held.provider_reference))
    other_key = await stripe_gateway.capture(
        capture_of(request, held.provider_reference, key=f"capture-again:{request.reference}")
    )

    assert isinstance(first, gateways.Captured)
    assert first == repeated == other_key
    assert (first.amount, first.currency) == (9900, "CNY")
    assert first.payment_reference == held.provider_reference
    assert len((await ledger(web, request.reference))["captures"]) == 1
    view = await stripe_gateway.look_up(lookup_of(request, held.provider_reference))
    assert (view.standing, view.captured_amount) == (gateways.Standing.CAPTURED, 9900)


async def test_a_void_releases_the_hold_and_nothing_can_be_captured_after(
    stripe_gateway: StripeGateway, web: httpx.AsyncClient
) -> None:
    request = payment("pm_card_visa")
    held = await authorized(stripe_gateway, request)
    void = gateways.VoidRequest(
        idempotency_key=f"void:{request.reference}",
        reference=request.reference,
        provider_reference=held.provider_reference,
        method="card",
    )

    assert await stripe_gateway.void(void) == gateways.Voided(held.provider_reference)
    assert await stripe_gateway.void(void) == gateways.Voided(held.provider_reference)

    view = await stripe_gateway.look_up(lookup_of(request, held.provider_reference))
    assert view.standing is gateways.Standing.VOIDED
    with pytest.raises(gateways.GatewayRejectedError) as refused:
        await stripe_gateway.capture(capture_of(request, held.provider_reference))
    assert refused.value.status == 400
    assert "canceled: nothing to capture" in str(refused.value)
    entries = await ledger(web, request.reference)
    assert (len(entries["voids"]), entries["captures"]) == (1, [])


async def test_a_refund_gives_back_what_was_captured_and_no_more(
    stripe_gateway: StripeGateway, web: httpx.AsyncClient
) -> None:
    request = payment("pm_card_visa")
    held = await authorized(stripe_gateway, request)
    captured = await stripe_gateway.capture(capture_of(request, held.provider_reference))

    def refund(amount: int, n: int) -> gateways.RefundRequest:
        return gateways.RefundRequest(
            idempotency_key=f"refund:{request.reference}:{n}",
            charge_id=captured.provider_reference,
            amount=amount,
            method="card",
            reason="activation_failed",
            reference=request.reference,
        )

    part = await stripe_gateway.refund(refund(4000, 1))
    assert (part.amount, part.currency) == (4000, "CNY")
    assert await stripe_gateway.refund(refund(4000, 1)) == part
    view = await stripe_gateway.look_up(lookup_of(request, held.provider_reference))
    assert (view.standing, view.refunded_amount) == (gateways.Standing.CAPTURED, 4000)
    with pytest.raises(gateways.GatewayRejectedError):
        await stripe_gateway.refund(refund(9000, 2))
    await stripe_gateway.refund(refund(5900, 3))

    view = await stripe_gateway.look_up(lookup_of(request, held.provider_reference))
    assert (view.standing, view.refunded_amount) == (gateways.Standing.REFUNDED, 9900)
    assert sorted(e["amount"] for e in (await ledger(web, request.reference))["refunds"]) == [
        4000,
        5900,
    ]


@pytest.mark.parametrize(
    ("token", "code", "retryable"),
    [
        ("pm_card_chargeDeclined", "declined", False),
        ("pm_card_chargeDeclinedInsufficientFunds", "insufficient_funds", True),
        ("card_tok_insufficient", "insufficient_funds", True),
        ("card_tok_expired", "expired_method", False),
        ("card_tok_declined", "declined", False),
    ],
)
async def test_a_decline_maps_to_billings_code_and_look_up_reports_it(
    stripe_gateway: StripeGateway, token: str, code: str, retryable: bool
) -> None:
    request = payment(token)

    with pytest.raises(gateways.PaymentDeclinedError) as raised:
        await stripe_gateway.pay(request)

    assert (raised.value.code, raised.value.retryable) == (code, retryable)
    assert token not in str(raised.value)
    view = await stripe_gateway.look_up(lookup_of(request))
    assert (view.standing, view.decline_code) == (gateways.Standing.DECLINED, code)


async def test_a_dunning_charge_under_its_own_key_reaches_the_card_and_each_is_found_by_key(
    stripe_gateway: StripeGateway, web: httpx.AsyncClient
) -> None:
    first = payment("card_tok_insufficient_once")
    with pytest.raises(gateways.PaymentDeclinedError) as raised:
        await stripe_gateway.pay(first)
    assert (raised.value.code, raised.value.retryable) == ("insufficient_funds", True)
    # Under the same key Stripe replays the decline: the card is never asked again.
    with pytest.raises(gateways.PaymentDeclinedError):
        await stripe_gateway.pay(first)

    second = payment("card_tok_insufficient_once", renewal=first.reference, attempt=2)
    outcome = await authorized(stripe_gateway, second)

    # Each attempt is its own PaymentIntent, found by its key and naming it.
    declined = await stripe_gateway.look_up(lookup_of(first))
    held = await stripe_gateway.look_up(lookup_of(second))
    assert (declined.standing, declined.idempotency_key) == (
        gateways.Standing.DECLINED,
        first.idempotency_key,
    )
    assert (held.standing, held.idempotency_key) == (
        gateways.Standing.AUTHORIZED,
        second.idempotency_key,
    )
    assert held.provider_reference == outcome.provider_reference != declined.provider_reference
    assert len((await ledger(web, first.reference))["authorizations"]) == 1


async def test_a_flaky_provider_is_unavailable_twice_then_authorizes_once(
    stripe_gateway: StripeGateway, web: httpx.AsyncClient
) -> None:
    request = payment("card_tok_flaky")
    for _ in range(2):
        with pytest.raises(gateways.GatewayUnavailableError):
            await stripe_gateway.pay(request)

    await authorized(stripe_gateway, request)

    assert len((await ledger(web, request.reference))["authorizations"]) == 1


async def test_a_lost_answer_is_resolved_by_asking_and_never_pays_twice(
    sandbox: Sandbox, stripe_gateway: StripeGateway, web: httpx.AsyncClient
) -> None:
    """Waits out the sandbox's slow delay (0.6 s) after the client gave up at 0.2 s."""
    impatient = StripeGateway(
        api_key=API_KEY,
        webhook_secret=WEBHOOK_SECRET,
        base_url=f"{sandbox.url}/stripe",
        timeout_s=0.2,
    )
    request = payment("card_tok_slow")
    with pytest.raises(gateways.GatewayUnavailableError):
        await impatient.pay(request)
    await impatient.aclose()
    # While the first call still runs at Stripe, a repeat under its key is not an answer.
    with pytest.raises(gateways.GatewayUnavailableError):
        await stripe_gateway.pay(request)
    await asyncio.sleep(SLOW_DELAY)

    view = await stripe_gateway.look_up(lookup_of(request))

    assert view.standing is gateways.Standing.AUTHORIZED
    assert view.reference == request.reference
    again = await authorized(stripe_gateway, request)
    assert again.provider_reference == view.provider_reference
    assert len((await ledger(web, request.reference))["authorizations"]) == 1


async def test_asking_about_a_call_that_never_arrived_finds_nothing(
    stripe_gateway: StripeGateway,
) -> None:
    view = await stripe_gateway.look_up(lookup_of(payment("pm_card_visa")))

    assert view.standing is gateways.Standing.NOT_FOUND
    missing = await stripe_gateway.look_up(lookup_of(payment("pm_card_visa"), "pi_nothing"))
    assert missing.standing is gateways.Standing.NOT_FOUND


async def test_an_unreachable_provider_or_a_wrong_key_is_told_apart(sandbox: Sandbox) -> None:
    nowhere = StripeGateway(
        api_key=API_KEY,
        webhook_secret=WEBHOOK_SECRET,
        base_url=f"http://127.0.0.1:{free_port()}/stripe",
        timeout_s=1.0,
    )
    wrong_key = StripeGateway(
        api_key="sk_test_wrong", webhook_secret=WEBHOOK_SECRET, base_url=f"{sandbox.url}/stripe"
    )
    request = payment("pm_card_visa")

    with pytest.raises(gateways.GatewayUnavailableError):
        await nowhere.pay(request)
    with pytest.raises(gateways.GatewayRejectedError) as raised:
        await wrong_key.pay(request)
    assert raised.value.status == 401
    assert "sk_test_wrong" not in str(raised.value)
    await nowhere.aclose()
    await wrong_key.aclose()


async def test_the_payments_list_has_everything_since_a_moment(
    stripe_gateway: StripeGateway,
) -> None:
    since = datetime.now(UTC) - timedelta(seconds=1)
    request = payment("pm_card_visa")
    held = await authorized(stripe_gateway, request)

    listed = await stripe_gateway.list_payments(since)

    mine = [v for v in listed if v.provider_reference == held.provider_reference]
    assert [(v.standing, v.reference, v.amount) for v in mine] == [
        (gateways.Standing.AUTHORIZED, request.reference, 9900)
    ]
    assert await stripe_gateway.list_payments(datetime.now(UTC) + timedelta(hours=1)) == []


async def _event_about(sandbox: Sandbox, reference: str, kind: str) -> tuple[dict[str, str], bytes]:
    for _ in range(3000):
        for headers, body in sandbox.received:
            event = json.loads(body)
            if (event["type"], event["data"]["object"]["metadata"].get("reference")) == (
                kind,
                reference,
            ):
                return headers, body
        await asyncio.sleep(0.01)
    raise AssertionError(f"no {kind} event about {reference}")


def _signed(body: bytes, at: int, secret: str = WEBHOOK_SECRET) -> dict[str, str]:
    digest = hmac.new(secret.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    return {"Stripe-Signature": f"t={at},v1={digest}"}


async def test_a_genuine_event_is_read_with_its_id_and_payment(
    sandbox: Sandbox, stripe_gateway: StripeGateway
) -> None:
    request = payment("pm_card_visa")
    held = await authorized(stripe_gateway, request)
    headers, body = await _event_about(
        sandbox, request.reference, "payment_intent.amount_capturable_updated"
    )

    notice = await stripe_gateway.read_webhook(headers, body)

    assert notice.provider_event_id == json.loads(body)["id"]
    assert notice.method == "card"
    assert notice.view.standing is gateways.Standing.AUTHORIZED
    assert (notice.view.reference, notice.view.provider_reference) == (
        request.reference,
        held.provider_reference,
    )


async def test_a_refund_event_says_what_was_given_back(
    sandbox: Sandbox, stripe_gateway: StripeGateway
) -> None:
    request = payment("pm_card_visa")
    held = await authorized(stripe_gateway, request)
    captured = await stripe_gateway.capture(capture_of(request, held.provider_reference))
    await stripe_gateway.refund(
        gateways.RefundRequest(
            idempotency_key=f"refund:{request.reference}",
            charge_id=captured.provider_reference,
            amount=9900,
            method="card",
        )
    )
    headers, body = await _event_about(sandbox, request.reference, "charge.refunded")

    notice = await stripe_gateway.read_webhook(headers, body)

    assert notice.view.standing is gateways.Standing.REFUNDED
    assert (notice.view.refunded_amount, notice.view.provider_reference) == (
        9900,
        held.provider_reference,
    )


async def test_forged_stale_replayed_or_malformed_calls_are_refused(
    sandbox: Sandbox, stripe_gateway: StripeGateway
) -> None:
    request = payment("pm_card_visa")
    await authorized(stripe_gateway, request)
    headers, body = await _event_about(
        sandbox, request.reference, "payment_intent.amount_capturable_updated"
    )
    other = payment("pm_card_visa")
    await authorized(stripe_gateway, other)
    other_headers, _ = await _event_about(
        sandbox, other.reference, "payment_intent.amount_capturable_updated"
    )
    now = int(time.time())
    tampered = body.replace(b'"amount":9900', b'"amount":1')
    assert tampered != body

    refused = [
        ({}, body),
        (headers, tampered),
        (_signed(body, now, secret="whsec_forged"), body),
        (_signed(body, now - 301), body),
        (other_headers, body),
        (_signed(b"not json", now), b"not json"),
        (
            _signed(b'{"id": "evt_1", "object": "event"}', now),
            b'{"id": "evt_1", "object": "event"}',
        ),
    ]
    for call_headers, call_body in refused:
        with pytest.raises(gateways.WebhookRejectedError):
            await stripe_gateway.read_webhook(call_headers, call_body)
    # The same body freshly and rightly signed is read: only the signature made the difference.
    assert (await stripe_gateway.read_webhook(_signed(body, now), body)).view.reference == (
        request.reference
    )


@pytest.mark.parametrize(
    "body",
    [
        b"[1, 2]",
        b'"evt_1"',
        b"null",
        b'{"id": "evt_1", "object": "event", "type": "x", "data": null}',
        b'{"id": "evt_1", "object": "event", "type": "x", "data": {"object": "pi_1"}}',
        b'{"id": "evt_1", "object": "event", "type": "x", "data": {"object": []}}',
        b'{"id": "evt_1", "object": "event", "type": "x", '
        b'"data": {"object": {"object": "payment_intent"}}}',
        b'{"id": "evt_1", "object": "event", "type": "x", '
        b'"data": {"object": {"object": "payment_intent", "id": 7, "status": {}, "amount": "x"}}}',
        b'{"id": "evt_1", "object": "event", "type": "charge.succeeded", '
        b'"data": {"object": {"object": "charge"}}}',
        b'{"id": "evt_1", "object": "event", "type": "x", '
        b'"data": {"object": {"object": "customer", "id": "cus_1"}}}',
        # A thin event (Stripe's v2 notifications) names its object and carries none.
        b'{"id": "evt_1", "object": "v2.core.event", "type": "x", '
        b'"data": {"object": {"object": "payment_intent", "id": "pi_1"}}}',
        b'{"object": "event", "type": "x", '
        b'"data": {"object": {"object": "payment_intent", "id": "pi_1"}}}',
    ],
)
async def test_a_rightly_signed_body_that_is_no_payment_event_is_refused(
    stripe_gateway: StripeGateway, body: bytes
) -> None:
    with pytest.raises(gateways.WebhookRejectedError):
        await stripe_gateway.read_webhook(_signed(body, int(time.time())), body)


async def test_neither_the_key_nor_the_payment_method_reaches_logs_or_errors(
    stripe_gateway: StripeGateway, caplog: pytest.LogCaptureFixture
) -> None:
    request = payment("pm_saved_card_4242_unknown_here")

    with caplog.at_level(logging.DEBUG), pytest.raises(gateways.GatewayRejectedError) as raised:
        await stripe_gateway.pay(request)

    assert "pm_saved_card_4242" not in str(raised.value)
    assert "pm_saved_card_4242" not in caplog.text
    assert API_KEY not in caplog.text
    assert "pm_saved_card_4242" not in repr(request)
