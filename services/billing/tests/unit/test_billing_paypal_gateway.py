"""PayPalGateway against the payment sandbox's PayPal API, served for real on a free port."""

import asyncio
import json
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from billing import gateways
from billing.gateways.paypal import PayPalGateway
from fastapi import FastAPI, Request, Response
from gateway_kit import authorized, capture_of, lookup_of, payment_request, wait_for
from prometheus_client import REGISTRY
from sandboxes.payment import PaymentSandboxSettings, create_app
from sandboxes.providers.paypal import PayPalSandboxSettings
from sandboxes.threaded import free_port, serving

SLOW_DELAY = 0.5
RETURN_URL = "https://travel.example/renewals/done"
SETTINGS = PayPalSandboxSettings()


class Sandbox:
    """The running payment sandbox, the webhooks it sent, and a plain HTTP client."""

    def __init__(self, url: str, webhooks: list[tuple[dict[str, str], bytes]]) -> None:
        self.url = url
        self.webhooks = webhooks

    def gateway(self, timeout_s: float = 5.0, **overrides: Any) -> PayPalGateway:
        values: dict[str, Any] = {
            "client_id": SETTINGS.client_id,
            "secret": SETTINGS.secret,
            "base_url": f"{self.url}/paypal",
            "webhook_id": SETTINGS.webhook_id,
            "timeout_s": timeout_s,
        }
        return PayPalGateway(**(values | overrides))

    async def ledger(self, reference: str) -> dict[str, list[dict[str, Any]]]:
        async with httpx.AsyncClient(base_url=self.url) as http:
            response = await http.get("/sandbox/ledger", params={"reference": reference})
        result: dict[str, list[dict[str, Any]]] = response.json()
        return result

    async def decide(self, url: str, decision: str) -> httpx.Response:
        async with httpx.AsyncClient() as http:
            return await http.post(url, data={"decision": decision})

    def webhooks_about(self, reference: str) -> list[tuple[dict[str, str], bytes]]:
        return [(h, b) for h, b in self.webhooks if reference.encode() in b]


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    """One payment sandbox for the file; its PayPal webhooks land in a list."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    webhooks: list[tuple[dict[str, str], bytes]] = []
    settings = PaymentSandboxSettings(
        host="127.0.0.1", port=port, slow_delay=SLOW_DELAY, webhook_base_url=f"{url}/billing"
    )
    with mock.patch.dict(os.environ, {"PAYMENT_SANDBOX_PAYPAL_REDELIVERY_SCALE": "0.001"}):
        app = create_app(settings)
    add_receiver(app, webhooks)
    with serving(app, port):
        yield Sandbox(url, webhooks)


def add_receiver(app: FastAPI, webhooks: list[tuple[dict[str, str], bytes]]) -> None:
    @app.post("/billing/webhooks/paypal")
    async def receive(request: Request) -> Response:
        webhooks.append((dict(request.headers), await request.body()))
        return Response(status_code=200)


@pytest.fixture
async def gateway(sandbox: Sandbox) -> AsyncIterator[PayPalGateway]:
    built = sandbox.gateway()
    yield built
    await built.aclose()


def payment(
    token: str | None = "vault_paypal_ok", return_url: str | None = RETURN_URL, **overrides: Any
) -> gateways.PaymentRequest:
    return payment_request("paypal", "USD", token, return_url=return_url, **overrides)


# ---- pay -----------------------------------------------------------------------------------


async def test_a_saved_source_is_authorized_until_the_authorizations_expiry(
    gateway: PayPalGateway, sandbox: Sandbox
) -> None:
    request = payment()

    outcome = await authorized(gateway, request)

    assert (outcome.amount, outcome.currency) == (9900, "USD")
    assert timedelta(days=28) < outcome.capture_before - datetime.now(UTC) <= timedelta(days=29)
    ledger = await sandbox.ledger(request.reference)
    assert [(e["amount"], e["provider_reference"]) for e in ledger["authorizations"]] == [
        (9900, outcome.provider_reference)
    ]
    assert ledger["captures"] == []


async def test_paying_again_under_the_same_key_authorizes_once(
    gateway: PayPalGateway, sandbox: Sandbox
) -> None:
    request = payment()

    first = await authorized(gateway, request)
    second = await authorized(gateway, request)

    assert second == first
    assert len((await sandbox.ledger(request.reference))["authorizations"]) == 1


async def test_without_a_saved_source_the_buyer_approves_then_paying_again_authorizes(
    gateway: PayPalGateway, sandbox: Sandbox
) -> None:
    request = payment(token=None)

    waiting = await gateway.pay(request)
    assert isinstance(waiting, gateways.ActionRequired)
    assert timedelta(hours=2, minutes=59) < waiting.expires_at - datetime.now(UTC)
    assert waiting.expires_at - datetime.now(UTC) <= timedelta(hours=3)
    assert (await gateway.look_up(lookup_of(request, waiting.provider_reference))).standing is (
        gateways.Standing.ACTION_REQUIRED
    )
    decided = await sandbox.decide(waiting.url, "approve")
    assert decided.status_code == 303
    back = urlsplit(decided.headers["location"])
    assert f"{back.scheme}://{back.netloc}{back.path}" == RETURN_URL
    assert parse_qs(back.query)["token"] == [waiting.provider_reference]
    approved = await gateway.look_up(lookup_of(request, waiting.provider_reference))

    outcome = await authorized(gateway, request)

    assert approved.standing is gateways.Standing.APPROVED
    assert outcome.provider_reference == waiting.provider_reference
    assert len((await sandbox.ledger(request.reference))["authorizations"]) == 1


async def test_a_cancelled_approval_looks_cancelled_and_is_not_approved(
    gateway: PayPalGateway, sandbox: Sandbox
) -> None:
    request = payment(token="vault_paypal_action")
    waiting = await gateway.pay(request)
    assert isinstance(waiting, gateways.ActionRequired)

    decided = await sandbox.decide(waiting.url, "cancel")

    back = parse_qs(urlsplit(decided.headers["location"]).query)
    assert back == {"cancelled": ["true"], "token": [waiting.provider_reference]}
    view = await gateway.look_up(lookup_of(request, waiting.provider_reference))
    assert (view.standing, view.reference, view.amount) == (
        gateways.Standing.CANCELLED,
        request.reference,
        9900,
    )
    with pytest.raises(gateways.PaymentDeclinedError) as raised:
        await gateway.pay(request)
    assert (raised.value.code, raised.value.retryable) == ("not_approved", False)
    assert await sandbox.ledger(request.reference) == {
        "authorizations": [],
        "captures": [],
        "voids": [],
        "refunds": [],
    }


async def test_a_payment_with_neither_source_nor_return_url_is_refused(
    gateway: PayPalGateway,
) -> None:
    with pytest.raises(gateways.GatewayRejectedError):
        await gateway.pay(payment(token=None, return_url=None))


@pytest.mark.parametrize(
    ("token", "code", "retryable"),
    [
        ("vault_paypal_declined", "declined", False),
        ("vault_paypal_expired", "expired_method", False),
        ("vault_paypal_insufficient", "insufficient_funds", True),
        ("vault_paypal_unknown", "invalid_token", False),
    ],
)
async def test_declines_are_payment_declined_with_the_reason(
    gateway: PayPalGateway, sandbox: Sandbox, token: str, code: str, retryable: bool
) -> None:
    request = payment(token=token)

    with pytest.raises(gateways.PaymentDeclinedError) as raised:
        await gateway.pay(request)

    assert (raised.value.code, raised.value.retryable) == (code, retryable)
    assert token not in str(raised.value)
    assert (await sandbox.ledger(request.reference))["authorizations"] == []


async def test_a_flaky_provider_is_unavailable_twice_then_authorizes(
    gateway: PayPalGateway,
) -> None:
    request = payment(token="vault_paypal_flaky")

    for _ in range(2):
        with pytest.raises(gateways.GatewayUnavailableError):
            await gateway.pay(request)
    outcome = await gateway.pay(request)

    assert isinstance(outcome, gateways.Authorized)


async def test_an_unreachable_provider_is_unavailable(sandbox: Sandbox) -> None:
    gateway = sandbox.gateway(base_url=f"http://127.0.0.1:{free_port()}/paypal")

    with pytest.raises(gateways.GatewayUnavailableError):
        await gateway.pay(payment())


def calls_timed(operation: str, outcome: str) -> float:
    labels = {"system": "paypal", "operation": operation, "outcome": outcome}
    return REGISTRY.get_sample_value("esim_outside_call_seconds_count", labels) or 0.0


async def test_each_sdk_call_is_timed_with_its_outcome(gateway: PayPalGateway) -> None:
    created, declined = (
        calls_timed("create order", "2xx"),
        calls_timed("authorize", "4xx"),
    )

    with pytest.raises(gateways.PaymentDeclinedError):
        await gateway.pay(payment(token="vault_paypal_insufficient"))

    assert calls_timed("create order", "2xx") == created + 1
    assert calls_timed("authorize", "4xx") == declined + 1


# ---- capture, void, refund -----------------------------------------------------------------


async def test_a_capture_is_made_once_whatever_the_repeats(
    gateway: PayPalGateway, sandbox: Sandbox
) -> None:
    request = payment()
    held = await authorized(gateway, request)

    first = await gateway.capture(capture_of(request, held.provider_reference))
    again = await gateway.capture(capture_of(request, held.provider_reference))
    other_key = await gateway.capture(capture_of(request, held.provider_reference, key="other"))

    assert isinstance(first, gateways.Captured)
    assert (first.amount, first.currency, first.payment_reference) == (
        9900,
        "USD",
        held.provider_reference,
    )
    assert again == first == other_key
    captures = (await sandbox.ledger(request.reference))["captures"]
    assert [c["id"] for c in captures] == [first.provider_reference]
    view = await gateway.look_up(lookup_of(request, held.provider_reference))
    assert (view.standing, view.captured_amount, view.capture_reference) == (
        gateways.Standing.CAPTURED,
        9900,
        first.provider_reference,
    )


async def test_a_declined_capture_under_a_completed_order_is_a_decline(
    gateway: PayPalGateway, sandbox: Sandbox
) -> None:
    request = payment()
    held = await authorized(gateway, request)
    capture = capture_of(request, held.provider_reference)
    # The first try of this capture was declined at PayPal and its answer lost: PayPal's
    # negative testing header makes the sandbox decline it, under the same request id.
    async with httpx.AsyncClient(base_url=f"{sandbox.url}/paypal") as http:
        token = (
            await http.post(
                "/v1/oauth2/token",
                data={"grant_type": "client_credentials"},
                auth=(SETTINGS.client_id, SETTINGS.secret),
            )
        ).json()["access_token"]
        order = (
            await http.get(
                f"/v2/checkout/orders/{held.provider_reference}",
                headers={"Authorization": f"Bearer {token}"},
            )
        ).json()
        authorization_id = order["purchase_units"][0]["payments"]["authorizations"][0]["id"]
        declined = await http.post(
            f"/v2/payments/authorizations/{authorization_id}/capture",
            json={},
            headers={
                "Authorization": f"Bearer {token}",
                "PayPal-Request-Id": capture.idempotency_key,
                "PayPal-Mock-Response": json.dumps({"mock_application_codes": "DECLINED"}),
            },
        )
    assert declined.json()["status"] == "DECLINED"

    with pytest.raises(gateways.PaymentDeclinedError) as raised:
        await gateway.capture(capture)

    assert raised.value.code == "declined"
    view = await gateway.look_up(lookup_of(request, held.provider_reference))
    assert (view.standing, view.decline_code) == (gateways.Standing.DECLINED, "declined")
    assert (await sandbox.ledger(request.reference))["captures"] == []


async def test_a_void_releases_the_authorization_and_nothing_can_be_captured_after(
    gateway: PayPalGateway, sandbox: Sandbox
) -> None:
    request = payment()
    held = await authorized(gateway, request)
    void = gateways.VoidRequest(
        idempotency_key=f"void:{request.reference}",
        reference=request.reference,
        provider_reference=held.provider_reference,
        method="paypal",
    )

    voided = await gateway.void(void)
    again = await gateway.void(void)

    assert voided.provider_reference == again.provider_reference == held.provider_reference
    assert (await gateway.look_up(lookup_of(request, held.provider_reference))).standing is (
        gateways.Standing.VOIDED
    )
    with pytest.raises(gateways.GatewayRejectedError):
        await gateway.capture(capture_of(request, held.provider_reference))
    ledger = await sandbox.ledger(request.reference)
    assert (len(ledger["voids"]), ledger["captures"]) == (1, [])


async def test_voiding_a_payment_still_waiting_for_the_buyer_holds_nothing(
    gateway: PayPalGateway, sandbox: Sandbox
) -> None:
    request = payment(token=None)
    waiting = await gateway.pay(request)
    assert isinstance(waiting, gateways.ActionRequired)

    voided = await gateway.void(
        gateways.VoidRequest(
            idempotency_key=f"void:{request.reference}",
            reference=request.reference,
            provider_reference=waiting.provider_reference,
            method="paypal",
        )
    )

    assert voided.provider_reference == waiting.provider_reference
    assert (await sandbox.ledger(request.reference))["voids"] == []


async def test_a_refund_is_made_once_per_key_and_the_payment_reads_refunded(
    gateway: PayPalGateway, sandbox: Sandbox
) -> None:
    request = payment()
    held = await authorized(gateway, request)
    captured = await gateway.capture(capture_of(request, held.provider_reference))
    refund = gateways.RefundRequest(
        idempotency_key=f"refund:{request.reference}",
        charge_id=captured.provider_reference,
        amount=9900,
        method="paypal",
        reference=request.reference,
    )

    receipt = await gateway.refund(refund)
    again = await gateway.refund(refund)

    assert (receipt.amount, receipt.currency) == (9900, "USD")
    assert again == receipt
    assert len((await sandbox.ledger(request.reference))["refunds"]) == 1
    view = await gateway.look_up(lookup_of(request, held.provider_reference))
    assert (view.standing, view.refunded_amount) == (gateways.Standing.REFUNDED, 9900)
    with pytest.raises(gateways.GatewayRejectedError):
        await gateway.refund(
            gateways.RefundRequest(
                idempotency_key="refund:more",
                charge_id=captured.provider_reference,
                amount=100,
                method="paypal",
                currency="USD",
            )
        )


# ---- asking ------------------------------------------------------------------------------


async def test_a_capture_whose_answer_was_lost_is_found_by_look_up_and_never_made_twice(
    gateway: PayPalGateway, sandbox: Sandbox
) -> None:
    """Waits for the `_slow` source's delay (0.5 s) twice: the lost answer, then the sandbox."""
    request = payment(token="vault_paypal_slow")
    held = await authorized(gateway, request)
    impatient = sandbox.gateway(timeout_s=SLOW_DELAY / 5)
    capture = capture_of(request, held.provider_reference)

    with pytest.raises(gateways.GatewayUnavailableError):
        await impatient.capture(capture)
    await impatient.aclose()

    async def standing_at_paypal() -> gateways.Standing:
        view = await gateway.look_up(lookup_of(request, held.provider_reference))
        return view.standing

    # The lost call may or may not have reached PayPal: on a loaded machine the impatient
    # client can give up before its request is even sent. Asking tells which; give a call that
    # did arrive time to finish (it sleeps the `_slow` delay) before carrying on.
    deadline = time.monotonic() + 10
    while (standing := await standing_at_paypal()) is not gateways.Standing.CAPTURED:
        assert standing is gateways.Standing.AUTHORIZED, standing
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    # Either way the capture under the same key is the one capture there will ever be.
    repeated = await gateway.capture(capture)
    captures = (await sandbox.ledger(request.reference))["captures"]
    assert [c["id"] for c in captures] == [repeated.provider_reference]
    assert await standing_at_paypal() is gateways.Standing.CAPTURED


async def test_an_unknown_order_is_not_found(gateway: PayPalGateway) -> None:
    request = payment()

    view = await gateway.look_up(lookup_of(request, "NOSUCHORDER000000"))

    assert view.standing is gateways.Standing.NOT_FOUND


async def test_the_provider_list_has_captures_refunds_and_planted_captures(
    gateway: PayPalGateway, sandbox: Sandbox
) -> None:
    since = datetime.now(UTC) - timedelta(seconds=5)
    request = payment()
    held = await authorized(gateway, request)
    captured = await gateway.capture(capture_of(request, held.provider_reference))
    async with httpx.AsyncClient(base_url=sandbox.url) as http:
        await http.post(
            "/sandbox/ledger/plant",
            json={
                "method": "paypal",
                "reference": request.reference,
                "amount": 700,
                "currency": "USD",
            },
        )

    views = [v for v in await gateway.list_payments(since) if v.reference == request.reference]

    assert sorted((v.standing, v.captured_amount) for v in views) == [
        (gateways.Standing.CAPTURED, 700),
        (gateways.Standing.CAPTURED, 9900),
    ]
    assert captured.provider_reference in {v.capture_reference for v in views}


# ---- webhooks ----------------------------------------------------------------------------


async def test_a_genuine_webhook_is_read_and_a_forged_one_rejected(
    gateway: PayPalGateway, sandbox: Sandbox
) -> None:
    request = payment()
    held = await authorized(gateway, request)
    await gateway.capture(capture_of(request, held.provider_reference))
    await wait_for(lambda: len(sandbox.webhooks_about(request.reference)) == 2)
    headers, body = sandbox.webhooks_about(request.reference)[-1]

    notice = await gateway.read_webhook(headers, body)

    assert notice.provider_event_id == json.loads(body)["id"]
    assert notice.method == "paypal"
    assert (notice.view.standing, notice.view.reference, notice.view.provider_reference) == (
        gateways.Standing.CAPTURED,
        request.reference,
        held.provider_reference,
    )
    assert notice.view.captured_amount == 9900
    forged = body.replace(b'"value":"99.00"', b'"value":"1.00"')
    assert forged != body
    with pytest.raises(gateways.WebhookRejectedError):
        await gateway.read_webhook(headers, forged)
    with pytest.raises(gateways.WebhookRejectedError):
        await gateway.read_webhook(
            {k: v for k, v in headers.items() if k != "paypal-transmission-sig"}, body
        )
    with pytest.raises(gateways.WebhookRejectedError):
        await gateway.read_webhook(headers, b"{not json")
    other = sandbox.gateway(webhook_id="ANOTHERWEBHOOKID")
    with pytest.raises(gateways.WebhookRejectedError):
        await other.read_webhook(headers, body)
    await other.aclose()


async def test_the_authorization_webhook_says_until_when_to_capture(
    gateway: PayPalGateway, sandbox: Sandbox
) -> None:
    request = payment()
    held = await authorized(gateway, request)
    await wait_for(lambda: len(sandbox.webhooks_about(request.reference)) == 1)
    headers, body = sandbox.webhooks_about(request.reference)[0]

    notice = await gateway.read_webhook(headers, body)

    assert notice.view.standing is gateways.Standing.AUTHORIZED
    assert notice.view.capture_before == held.capture_before
    assert notice.view.provider_reference == held.provider_reference


async def test_a_webhook_that_cannot_be_verified_now_is_unavailable_for_a_redelivery(
    sandbox: Sandbox,
) -> None:
    request = payment()
    gateway = sandbox.gateway()
    await authorized(gateway, request)
    await wait_for(lambda: len(sandbox.webhooks_about(request.reference)) == 1)
    headers, body = sandbox.webhooks_about(request.reference)[0]
    unreachable = sandbox.gateway(base_url=f"http://127.0.0.1:{free_port()}/paypal")

    refused = sandbox.gateway(secret="not-the-secret")

    with pytest.raises(gateways.GatewayUnavailableError):
        await unreachable.read_webhook(headers, body)
    with pytest.raises(gateways.GatewayUnavailableError):
        await refused.read_webhook(headers, body)
    for built in (unreachable, refused, gateway):
        await built.aclose()


async def test_every_step_of_a_payment_reads_from_its_webhook(
    gateway: PayPalGateway, sandbox: Sandbox
) -> None:
    request = payment(token=None)
    waiting = await gateway.pay(request)
    assert isinstance(waiting, gateways.ActionRequired)
    await sandbox.decide(waiting.url, "approve")
    held = await authorized(gateway, request)
    captured = await gateway.capture(capture_of(request, held.provider_reference))
    await gateway.refund(
        gateways.RefundRequest(
            idempotency_key=f"refund:{request.reference}",
            charge_id=captured.provider_reference,
            amount=2500,
            method="paypal",
            currency="USD",
        )
    )
    await wait_for(lambda: len(sandbox.webhooks_about(request.reference)) == 4)

    notices = [
        await gateway.read_webhook(h, b) for h, b in sandbox.webhooks_about(request.reference)
    ]

    assert [n.view.standing for n in notices] == [
        gateways.Standing.APPROVED,
        gateways.Standing.AUTHORIZED,
        gateways.Standing.CAPTURED,
        gateways.Standing.REFUNDED,
    ]
    assert {n.view.reference for n in notices} == {request.reference}
    assert notices[0].view.provider_reference == held.provider_reference
    assert (notices[3].view.refunded_amount, notices[3].view.capture_reference) == (
        2500,
        captured.provider_reference,
    )
    assert len({n.provider_event_id for n in notices}) == 4


async def test_a_void_reads_from_its_webhook(gateway: PayPalGateway, sandbox: Sandbox) -> None:
    request = payment()
    held = await authorized(gateway, request)
    await gateway.void(
        gateways.VoidRequest(
            idempotency_key=f"void:{request.reference}",
            reference=request.reference,
            provider_reference=held.provider_reference,
            method="paypal",
        )
    )
    await wait_for(lambda: len(sandbox.webhooks_about(request.reference)) == 2)
    headers, body = sandbox.webhooks_about(request.reference)[-1]

    notice = await gateway.read_webhook(headers, body)

    assert (notice.view.standing, notice.view.provider_reference) == (
        gateways.Standing.VOIDED,
        held.provider_reference,
    )


async def test_neither_the_secret_nor_tokens_reach_the_logs(
    sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    vault = f"vault-{uuid.uuid4().hex}_ok"
    gateway = sandbox.gateway(secret=secret)
    caplog.set_level(logging.DEBUG)

    with pytest.raises(gateways.GatewayUnavailableError):
        await gateway.pay(payment(token=vault))
    right = sandbox.gateway()
    request = payment(token=vault)
    held = await authorized(right, request)
    await right.capture(capture_of(request, held.provider_reference))
    await wait_for(lambda: len(sandbox.webhooks_about(request.reference)) == 2)
    await right.read_webhook(*sandbox.webhooks_about(request.reference)[-1])
    await right.aclose()
    await gateway.aclose()

    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert held.provider_reference in logged
    assert secret not in logged
    assert vault not in logged
    assert SETTINGS.secret not in logged
    assert "A21AA" not in logged
