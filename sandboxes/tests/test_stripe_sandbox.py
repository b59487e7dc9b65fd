"""The payment sandbox's Stripe, driven through the official `stripe` library over HTTP.

One sandbox serves the whole module on a free port (the library needs a real address); each
test pays under its own reference and keys, so tests do not see each other's payments. The
sandbox also serves billing's webhook route itself (a recorder), so its signed events come back
to this module.
"""

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import stripe
from fastapi import Request, Response
from sandboxes.payment import PaymentSandboxSettings, create_app
from sandboxes.threaded import free_port, serving

SLOW_DELAY = 0.3
API_KEY = "sk_test_sandbox"
WEBHOOK_SECRET = "whsec_sandbox"
RETURN_URL = "https://shop.example/return?lang=en"


@dataclass
class Webhooks:
    """What reached the recorder, and how many first attempts it refuses, by reference."""

    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    refuse: dict[str, int] = field(default_factory=dict)


@dataclass
class Sandbox:
    url: str
    webhooks: Webhooks


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    app = create_app(PaymentSandboxSettings(port=port, slow_delay=SLOW_DELAY, webhook_base_url=url))
    webhooks = Webhooks()

    @app.post("/webhooks/stripe")
    async def receive(request: Request) -> Response:
        body = await request.body()
        reference = json.loads(body)["data"]["object"]["metadata"].get("reference")
        if webhooks.refuse.get(reference, 0) > 0:
            webhooks.refuse[reference] -= 1
            return Response(status_code=500)
        webhooks.received.append((dict(request.headers), body))
        return Response(status_code=200)

    with serving(app, port):
        yield Sandbox(url, webhooks)


@pytest.fixture(scope="module")
async def client(sandbox: Sandbox) -> AsyncIterator[stripe.StripeClient]:
    http = stripe.HTTPXClient(timeout=5)
    yield stripe.StripeClient(
        API_KEY,
        base_addresses={"api": f"{sandbox.url}/stripe"},
        http_client=http,
        max_network_retries=0,
    )
    await http.close_async()


@pytest.fixture
async def web(sandbox: Sandbox) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sandbox.url) as web:
        yield web


def reference() -> str:
    return str(uuid.uuid4())


def params(payment_method: str, ref: str, **overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "amount": 9900,
        "currency": "cny",
        "payment_method": payment_method,
        "confirm": True,
        "capture_method": "manual",
        "return_url": RETURN_URL,
        "metadata": {"reference": ref},
        "description": "JP 10 GB monthly",
    }
    return values | overrides


async def pay(
    client: stripe.StripeClient, payment_method: str, ref: str, key: str | None = None, **kw: Any
) -> stripe.PaymentIntent:
    return await client.v1.payment_intents.create_async(
        params(payment_method, ref, **kw),
        {"idempotency_key": key or f"pay:{ref}"},
    )


async def ledger(web: httpx.AsyncClient, ref: str) -> dict[str, list[dict[str, Any]]]:
    response = await web.get("/sandbox/ledger", params={"reference": ref})
    assert response.status_code == 200
    body: dict[str, list[dict[str, Any]]] = response.json()
    return body


async def test_a_visa_card_is_authorized_and_held_in_the_ledger(
    client: stripe.StripeClient, web: httpx.AsyncClient
) -> None:
    ref = reference()
    intent = await pay(client, "pm_card_visa", ref)

    assert intent.status == "requires_capture"
    assert (intent.amount, intent.amount_capturable, intent.currency) == (9900, 9900, "cny")
    assert intent.metadata["reference"] == ref
    again = await client.v1.payment_intents.retrieve_async(intent.id)
    assert again.status == "requires_capture"
    held = await ledger(web, ref)
    assert [(e["method"], e["amount"], e["currency"]) for e in held["authorizations"]] == [
        ("card", 9900, "CNY")
    ]
    assert held["captures"] == []


async def test_a_repeated_key_replays_the_first_answer_and_other_params_are_refused(
    client: stripe.StripeClient, web: httpx.AsyncClient
) -> None:
    ref = reference()
    first = await pay(client, "pm_card_visa", ref)
    second = await pay(client, "pm_card_visa", ref)

    assert second.id == first.id
    assert second.last_response is not None
    assert second.last_response.headers["idempotent-replayed"] == "true"
    with pytest.raises(stripe.IdempotencyError):
        await pay(client, "pm_card_visa", ref, amount=100)
    assert len((await ledger(web, ref))["authorizations"]) == 1


@pytest.mark.parametrize(
    ("payment_method", "code", "decline_code"),
    [
        ("pm_card_chargeDeclined", "card_declined", "generic_decline"),
        ("pm_card_chargeDeclinedInsufficientFunds", "card_declined", "insufficient_funds"),
        ("card_tok_declined", "card_declined", "generic_decline"),
        ("card_tok_insufficient", "card_declined", "insufficient_funds"),
        ("card_tok_expired", "expired_card", "expired_card"),
    ],
)
async def test_a_declined_card_is_a_card_error_with_the_intent_left_unpaid(
    client: stripe.StripeClient,
    web: httpx.AsyncClient,
    payment_method: str,
    code: str,
    decline_code: str,
) -> None:
    ref = reference()
    with pytest.raises(stripe.CardError) as raised:
        await pay(client, payment_method, ref)

    error = raised.value
    assert error.http_status == 402
    assert error.code == code
    assert error.error is not None
    assert error.error.decline_code == decline_code
    assert error.error.payment_intent is not None
    assert error.error.payment_intent.status == "requires_payment_method"
    # Stripe keeps the decline under the key: asking again gives the same answer.
    with pytest.raises(stripe.CardError):
        await pay(client, payment_method, ref)
    assert (await ledger(web, ref))["authorizations"] == []


async def test_a_card_funded_later_is_declined_replayed_under_its_key_then_authorized_anew(
    client: stripe.StripeClient, web: httpx.AsyncClient
) -> None:
    ref = reference()
    with pytest.raises(stripe.CardError) as raised:
        await pay(client, "card_tok_insufficient_once", ref, key=f"charge:{ref}")
    error = raised.value.error
    assert error is not None and error.payment_intent is not None
    assert error.decline_code == "insufficient_funds"
    # The first key keeps its decline, as at Stripe: a dunning charge under it never reaches
    # the card, however much money the account has since.
    with pytest.raises(stripe.CardError):
        await pay(client, "card_tok_insufficient_once", ref, key=f"charge:{ref}")

    intent = await pay(client, "card_tok_insufficient_once", ref, key=f"charge:{ref}:2")

    assert intent.status == "requires_capture"
    assert intent.id != error.payment_intent.id
    assert len((await ledger(web, ref))["authorizations"]) == 1
    # Another renewal on the same card starts over: its first charge is declined too.
    with pytest.raises(stripe.CardError):
        await pay(client, "card_tok_insufficient_once", reference())


async def test_a_flaky_card_fails_twice_under_one_key_then_is_authorized(
    client: stripe.StripeClient, web: httpx.AsyncClient
) -> None:
    ref = reference()
    for _ in range(2):
        with pytest.raises(stripe.APIError) as raised:
            await pay(client, "card_tok_flaky", ref)
        assert raised.value.http_status == 503

    intent = await pay(client, "card_tok_flaky", ref)

    assert intent.status == "requires_capture"
    assert len((await ledger(web, ref))["authorizations"]) == 1


async def test_a_slow_card_answers_after_the_sandbox_delay(client: stripe.StripeClient) -> None:
    started = time.monotonic()
    intent = await pay(client, "card_tok_slow", reference())

    assert intent.status == "requires_capture"
    assert time.monotonic() - started >= SLOW_DELAY


async def test_a_second_request_while_the_first_runs_under_its_key_is_a_conflict(
    client: stripe.StripeClient, web: httpx.AsyncClient
) -> None:
    ref = reference()
    first = asyncio.create_task(pay(client, "card_tok_slow", ref))
    await asyncio.sleep(SLOW_DELAY / 3)

    with pytest.raises(stripe.APIError) as raised:
        await pay(client, "card_tok_slow", ref)

    assert raised.value.http_status == 409
    assert raised.value.error is not None
    assert raised.value.error.code == "idempotency_key_in_use"
    assert (await first).status == "requires_capture"
    assert (await pay(client, "card_tok_slow", ref)).id == (await first).id
    assert len((await ledger(web, ref))["authorizations"]) == 1


async def test_an_unknown_payment_method_is_an_invalid_request_naming_it(
    client: stripe.StripeClient,
) -> None:
    with pytest.raises(stripe.InvalidRequestError) as raised:
        await pay(client, "pm_nothing_like_it", reference())

    assert raised.value.code == "resource_missing"
    assert raised.value.param == "payment_method"


async def test_an_unknown_path_answers_in_stripes_error_shape(
    sandbox: Sandbox, web: httpx.AsyncClient
) -> None:
    response = await web.get("/stripe/v1/customers", headers={"Authorization": f"Bearer {API_KEY}"})

    assert response.status_code == 404
    assert response.json()["error"]["type"] == "invalid_request_error"


async def test_a_wrong_api_key_is_refused(sandbox: Sandbox) -> None:
    http = stripe.HTTPXClient(timeout=5)
    wrong = stripe.StripeClient(
        "sk_test_wrong", base_addresses={"api": f"{sandbox.url}/stripe"}, http_client=http
    )
    with pytest.raises(stripe.AuthenticationError):
        await wrong.v1.payment_intents.retrieve_async("pi_any")
    await http.close_async()


@pytest.mark.parametrize("payment_method", ["pm_card_authenticationRequired", "card_tok_action"])
async def test_3d_secure_approved_on_the_page_leaves_the_money_held(
    client: stripe.StripeClient, web: httpx.AsyncClient, payment_method: str
) -> None:
    ref = reference()
    intent = await pay(client, payment_method, ref)

    assert intent.status == "requires_action"
    assert intent.next_action is not None
    redirect = intent.next_action.redirect_to_url
    assert redirect is not None and redirect.url is not None
    assert redirect.return_url == RETURN_URL
    assert (await ledger(web, ref))["authorizations"] == []
    page = await web.get(redirect.url)
    assert page.status_code == 200
    assert 'value="approve">Approve payment</button>' in page.text
    assert 'value="cancel">Cancel payment</button>' in page.text
    assert "<script" not in page.text and "http" not in page.text.split("<body>")[1]

    answer = await web.post(redirect.url, data={"decision": "approve"})

    assert answer.status_code == 303
    back = httpx.URL(answer.headers["location"])
    assert (back.host, back.path) == ("shop.example", "/return")
    assert back.params["lang"] == "en"
    assert back.params["payment_intent"] == intent.id
    assert back.params["payment_intent_client_secret"] == intent.client_secret
    assert back.params["redirect_status"] == "succeeded"
    now = await client.v1.payment_intents.retrieve_async(intent.id)
    assert now.status == "requires_capture"
    assert len((await ledger(web, ref))["authorizations"]) == 1


async def test_3d_secure_cancelled_fails_authentication_and_holds_nothing(
    client: stripe.StripeClient, web: httpx.AsyncClient
) -> None:
    ref = reference()
    intent = await pay(client, "pm_card_authenticationRequired", ref)
    assert intent.next_action is not None and intent.next_action.redirect_to_url is not None
    url = intent.next_action.redirect_to_url.url
    assert url is not None

    answer = await web.post(url, data={"decision": "cancel"})

    assert answer.status_code == 303
    assert httpx.URL(answer.headers["location"]).params["redirect_status"] == "failed"
    now = await client.v1.payment_intents.retrieve_async(intent.id)
    assert now.status == "requires_payment_method"
    assert now.last_payment_error is not None
    assert now.last_payment_error.code == "payment_intent_authentication_failure"
    assert (await ledger(web, ref))["authorizations"] == []
    assert (await web.post(url, data={"decision": "maybe"})).status_code == 400


async def test_a_capture_is_made_once_and_a_repeat_under_its_key_replays_it(
    client: stripe.StripeClient, web: httpx.AsyncClient
) -> None:
    ref = reference()
    intent = await pay(client, "pm_card_visa", ref)

    first = await client.v1.payment_intents.capture_async(
        intent.id, options={"idempotency_key": f"capture:{ref}"}
    )
    second = await client.v1.payment_intents.capture_async(
        intent.id, options={"idempotency_key": f"capture:{ref}"}
    )

    assert first.status == second.status == "succeeded"
    assert first.amount_received == 9900
    with pytest.raises(stripe.InvalidRequestError) as raised:
        await client.v1.payment_intents.capture_async(
            intent.id, options={"idempotency_key": f"other:{ref}"}
        )
    assert raised.value.code == "payment_intent_unexpected_state"
    assert [c["amount"] for c in (await ledger(web, ref))["captures"]] == [9900]


async def test_a_cancelled_authorization_is_voided_in_the_ledger(
    client: stripe.StripeClient, web: httpx.AsyncClient
) -> None:
    ref = reference()
    intent = await pay(client, "pm_card_visa", ref)

    canceled = await client.v1.payment_intents.cancel_async(
        intent.id, options={"idempotency_key": f"void:{ref}"}
    )

    assert canceled.status == "canceled"
    held = await ledger(web, ref)
    assert len(held["voids"]) == 1 and held["captures"] == []
    with pytest.raises(stripe.InvalidRequestError):
        await client.v1.payment_intents.capture_async(intent.id)


async def test_refunds_give_back_at_most_what_was_captured(
    client: stripe.StripeClient, web: httpx.AsyncClient
) -> None:
    ref = reference()
    intent = await pay(client, "pm_card_visa", ref, capture_method="automatic")
    assert intent.status == "succeeded"

    part = await client.v1.refunds.create_async(
        {"payment_intent": intent.id, "amount": 4000}, {"idempotency_key": f"refund1:{ref}"}
    )
    rest = await client.v1.refunds.create_async(
        {"payment_intent": intent.id}, {"idempotency_key": f"refund2:{ref}"}
    )

    assert (part.amount, rest.amount, rest.status) == (4000, 5900, "succeeded")
    with pytest.raises(stripe.InvalidRequestError) as raised:
        await client.v1.refunds.create_async({"payment_intent": intent.id, "amount": 1})
    assert raised.value.code == "charge_already_refunded"
    listed = await client.v1.refunds.list_async({"payment_intent": intent.id})
    assert sorted(r.amount for r in listed.data) == [4000, 5900]
    assert sorted(r["amount"] for r in (await ledger(web, ref))["refunds"]) == [4000, 5900]


async def test_the_list_pages_newest_first_from_a_creation_time(
    client: stripe.StripeClient,
) -> None:
    since = int(time.time())
    made = [(await pay(client, "pm_card_visa", reference())).id for _ in range(3)]

    first = await client.v1.payment_intents.list_async({"created": {"gte": since}, "limit": 2})
    assert first.has_more is True and len(first.data) == 2
    seen = [intent.id async for intent in first.auto_paging_iter()]

    assert set(made) <= set(seen)
    assert len(seen) == len(set(seen))
    future = await client.v1.payment_intents.list_async({"created": {"gte": since + 3600}})
    assert future.data == [] and future.has_more is False


async def test_events_are_signed_like_stripes_and_redelivered_until_acknowledged(
    client: stripe.StripeClient, sandbox: Sandbox, web: httpx.AsyncClient
) -> None:
    ref = reference()
    sandbox.webhooks.refuse[ref] = 1
    intent = await pay(client, "pm_card_visa", ref)

    events = await _events_for(sandbox, ref, count=1)

    headers, body = events[0]
    event = stripe.Webhook.construct_event(body, headers["stripe-signature"], WEBHOOK_SECRET)
    assert event.type == "payment_intent.amount_capturable_updated"
    assert event.data.object["id"] == intent.id
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(body, headers["stripe-signature"], "whsec_other")
    deliveries = (await web.get("/sandbox/deliveries", params={"reference": ref})).json()
    assert [a["status"] for a in deliveries[0]["attempts"]] == [500, 200]


async def test_capture_cancel_and_refund_each_send_their_event(
    client: stripe.StripeClient, sandbox: Sandbox
) -> None:
    ref = reference()
    intent = await pay(client, "pm_card_visa", ref)
    await client.v1.payment_intents.capture_async(intent.id)
    await client.v1.refunds.create_async({"payment_intent": intent.id})
    failed_ref = reference()
    with pytest.raises(stripe.CardError):
        await pay(client, "pm_card_chargeDeclined", failed_ref)
    voided_ref = reference()
    voided = await pay(client, "pm_card_visa", voided_ref)
    await client.v1.payment_intents.cancel_async(voided.id)

    # Each delivery runs on its own, and Stripe promises no order either: compare as sets.
    kinds = {_type(body) for _, body in await _events_for(sandbox, ref, count=3)}
    assert kinds == {
        "payment_intent.amount_capturable_updated",
        "payment_intent.succeeded",
        "charge.refunded",
    }
    assert [_type(b) for _, b in await _events_for(sandbox, failed_ref, 1)] == [
        "payment_intent.payment_failed"
    ]
    assert {_type(b) for _, b in await _events_for(sandbox, voided_ref, 2)} == {
        "payment_intent.amount_capturable_updated",
        "payment_intent.canceled",
    }


def _type(body: bytes) -> str:
    kind: str = json.loads(body)["type"]
    return kind


async def _events_for(sandbox: Sandbox, ref: str, count: int) -> list[tuple[dict[str, str], bytes]]:
    """The events about one reference, once `count` of them arrived (within 30 s: a loaded
    machine may be slow to deliver)."""
    for _ in range(3000):
        found = [
            (headers, body)
            for headers, body in sandbox.webhooks.received
            if json.loads(body)["data"]["object"]["metadata"].get("reference") == ref
        ]
        if len(found) >= count:
            return found
        await asyncio.sleep(0.01)
    raise AssertionError(f"{count} events about {ref} never arrived")
