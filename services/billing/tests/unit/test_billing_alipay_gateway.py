"""AlipayGateway against the real payment sandbox on a local port: what billing sees of Alipay.

The sandbox runs once for the module (uvicorn in a thread, on a free port) with key pairs made
here; its notifies go to a route on the same server that keeps them, as billing's
`/webhooks/alipay` would receive them.
"""

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import pytest
from billing import gateways
from billing.gateways.alipay import AlipayGateway, bill_periods
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI, Request, Response
from gateway_kit import lookup_of, payment_request, wait_for
from sandboxes.payment import PaymentSandboxSettings, create_app
from sandboxes.providers.alipay import DEFAULT_APP_ID
from sandboxes.threaded import free_port, serving

RETURN_URL = "https://travel.example/renewals/back"


def _pair() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public.decode()


@dataclass
class Sandbox:
    base: str
    app_private: str
    alipay_private: str
    alipay_public: str
    notifies: dict[str, list[bytes]] = field(default_factory=dict)

    @property
    def gateway_url(self) -> str:
        return f"{self.base}/alipay/gateway.do"

    @property
    def notify_url(self) -> str:
        return f"{self.base}/billing/webhooks/alipay"

    def ledger(self, reference: str) -> dict[str, list[dict[str, Any]]]:
        result: dict[str, list[dict[str, Any]]] = httpx.get(
            f"{self.base}/sandbox/ledger", params={"reference": reference}
        ).json()
        return result


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    app_private, app_public = _pair()
    alipay_private, alipay_public = _pair()
    port = free_port()
    world = Sandbox(f"http://127.0.0.1:{port}", app_private, alipay_private, alipay_public)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PAYMENT_SANDBOX_ALIPAY_PRIVATE_KEY", alipay_private)
        env.setenv("PAYMENT_SANDBOX_ALIPAY_APP_PUBLIC_KEY", app_public)
        app = create_app(PaymentSandboxSettings(port=port, slow_delay=0.2))
    _add_receiver(app, world)
    with serving(app, port):
        yield world


def _add_receiver(app: FastAPI, world: Sandbox) -> None:
    async def receive(request: Request) -> Response:
        body = await request.body()
        reference = dict(parse_qsl(body.decode())).get("out_trade_no", "")
        world.notifies.setdefault(reference, []).append(body)
        return Response("success", media_type="text/plain")

    app.add_api_route("/billing/webhooks/alipay", receive, methods=["POST"])


def _gateway(
    sandbox: Sandbox, transport: httpx.AsyncBaseTransport | None = None, **overrides: Any
) -> AlipayGateway:
    values: dict[str, Any] = {
        "app_id": DEFAULT_APP_ID,
        "app_private_key": sandbox.app_private,
        "alipay_public_key": sandbox.alipay_public,
        "gateway_url": sandbox.gateway_url,
        "notify_url": sandbox.notify_url,
        "timeout_s": 5.0,
        "transport": transport,
    }
    return AlipayGateway(**(values | overrides))


@pytest.fixture
async def gateway(sandbox: Sandbox) -> AsyncIterator[AlipayGateway]:
    gateway = _gateway(sandbox)
    yield gateway
    await gateway.aclose()


def payment(token: str | None = None, amount: int = 9900) -> gateways.PaymentRequest:
    return payment_request("alipay", "CNY", token, return_url=RETURN_URL, amount=amount)


async def buyer(url: str, decision: str | None = None) -> httpx.Response:
    """The buyer's browser: opens the cashier, then approves or cancels there."""
    async with httpx.AsyncClient(timeout=5) as browser:
        page = await browser.get(url)
        assert page.status_code == 200
        if decision is None:
            return page
        return await browser.post(url, data={"decision": decision})


async def test_a_saved_source_is_paid_at_once_and_a_repeat_returns_the_same_trade(
    gateway: AlipayGateway, sandbox: Sandbox
) -> None:
    request = payment("alipay_ok")

    first = await gateway.pay(request)
    again = await gateway.pay(request)

    assert isinstance(first, gateways.Captured)
    assert (first.amount, first.currency) == (9900, "CNY")
    assert again == first
    assert [c["provider_reference"] for c in sandbox.ledger(request.reference)["captures"]] == [
        first.provider_reference
    ]


async def test_a_price_in_another_currency_is_paid_in_it_as_a_cross_border_merchant_is(
    gateway: AlipayGateway, sandbox: Sandbox
) -> None:
    request = replace(payment("alipay_ok", amount=1400), currency="USD")

    captured = await gateway.pay(request)
    view = await gateway.look_up(lookup_of(request))

    assert isinstance(captured, gateways.Captured)
    assert (captured.amount, captured.currency) == (1400, "USD")
    assert (view.amount, view.currency) == (1400, "USD")
    [entry] = sandbox.ledger(request.reference)["captures"]
    assert (entry["amount"], entry["currency"]) == (1400, "USD")


async def test_page_pay_approved_at_the_cashier_is_captured_and_its_notify_verifies(
    gateway: AlipayGateway, sandbox: Sandbox
) -> None:
    request = payment()
    started = datetime.now(UTC)
    action = await gateway.pay(request)
    answered = datetime.now(UTC)
    assert isinstance(action, gateways.ActionRequired)
    before_opening = await gateway.look_up(lookup_of(request))
    await buyer(action.url)
    opened = await gateway.look_up(lookup_of(request))
    still_waiting = await gateway.pay(request)
    back = await buyer(action.url, "approve")
    after = await gateway.look_up(lookup_of(request))
    paid = await gateway.pay(request)

    # 30 minutes from the call, in Alipay's whole seconds: the call began after `started`, so a
    # second's boundary can fall between the two.
    assert started + timedelta(minutes=29) < action.expires_at <= answered + timedelta(minutes=30)
    assert action.provider_reference == request.reference
    query = dict(parse_qsl(urlsplit(action.url).query))
    assert '"timeout_express":"30m"' in query["biz_content"]
    assert before_opening.standing is gateways.Standing.NOT_FOUND
    assert opened.standing is gateways.Standing.ACTION_REQUIRED
    assert isinstance(still_waiting, gateways.ActionRequired)
    assert back.status_code == 303 and back.headers["location"].startswith(RETURN_URL + "?")
    assert after.standing is gateways.Standing.CAPTURED
    assert (after.captured_amount, after.reference) == (9900, request.reference)
    assert (
        isinstance(paid, gateways.Captured) and paid.provider_reference == after.provider_reference
    )
    body = (await wait_for(lambda: sandbox.notifies.get(request.reference)))[0]
    notice = await gateway.read_webhook({"content-type": "application/x-www-form-urlencoded"}, body)
    assert notice.answer == "success" and notice.method == "alipay"
    assert notice.provider_event_id == dict(parse_qsl(body.decode()))["notify_id"]
    assert notice.view.standing is gateways.Standing.CAPTURED
    assert notice.view.provider_reference == after.provider_reference
    assert len(sandbox.ledger(request.reference)["captures"]) == 1


async def test_a_cancel_at_the_cashier_ends_not_approved_with_nothing_taken(
    gateway: AlipayGateway, sandbox: Sandbox
) -> None:
    request = payment()
    action = await gateway.pay(request)
    assert isinstance(action, gateways.ActionRequired)

    await buyer(action.url, "cancel")
    view = await gateway.look_up(lookup_of(request))
    with pytest.raises(gateways.PaymentDeclinedError) as declined:
        await gateway.pay(request)

    assert view.standing is gateways.Standing.CANCELLED
    assert (declined.value.code, declined.value.retryable) == ("not_approved", False)
    assert sandbox.ledger(request.reference)["captures"] == []
    body = (await wait_for(lambda: sandbox.notifies.get(request.reference)))[0]
    notice = await gateway.read_webhook({}, body)
    assert notice.view.standing is gateways.Standing.CANCELLED


async def test_void_closes_a_trade_waiting_for_the_buyer_and_refuses_an_unknown_one(
    gateway: AlipayGateway, sandbox: Sandbox
) -> None:
    request = payment()
    action = await gateway.pay(request)
    assert isinstance(action, gateways.ActionRequired)
    await buyer(action.url)
    never_opened = payment()

    voided = await gateway.void(
        gateways.VoidRequest(
            idempotency_key=f"void:{request.reference}",
            reference=request.reference,
            provider_reference=action.provider_reference,
            method="alipay",
        )
    )
    with pytest.raises(gateways.GatewayRejectedError) as unknown:
        await gateway.void(
            gateways.VoidRequest(
                idempotency_key="void:x",
                reference=never_opened.reference,
                provider_reference=never_opened.reference,
                method="alipay",
            )
        )
    approve = await buyer(action.url, "approve")

    assert isinstance(voided, gateways.Voided)
    assert unknown.value.status == 404
    assert (await gateway.look_up(lookup_of(request))).standing is gateways.Standing.CANCELLED
    assert approve.status_code == 409
    assert sandbox.ledger(request.reference)["captures"] == []


async def test_a_refund_is_made_once_under_its_key_and_the_trade_reads_refunded(
    gateway: AlipayGateway, sandbox: Sandbox
) -> None:
    request = payment("alipay_ok")
    captured = await gateway.pay(request)
    assert isinstance(captured, gateways.Captured)
    refund = gateways.RefundRequest(
        idempotency_key=f"refund:{request.reference}",
        charge_id=captured.provider_reference,
        amount=9900,
        method="alipay",
        reason="activation_failed",
        reference=request.reference,
        currency="CNY",
    )

    first = await gateway.refund(refund)
    again = await gateway.refund(refund)
    view = await gateway.look_up(lookup_of(request))

    assert first == again
    assert (first.amount, first.currency) == (9900, "CNY")
    assert [r["amount"] for r in sandbox.ledger(request.reference)["refunds"]] == [9900]
    assert (view.standing, view.refunded_amount) == (gateways.Standing.REFUNDED, 9900)


async def test_a_refund_of_an_unknown_trade_or_beyond_the_payment_is_rejected(
    gateway: AlipayGateway,
) -> None:
    request = payment("alipay_ok")
    captured = await gateway.pay(request)
    assert isinstance(captured, gateways.Captured)

    with pytest.raises(gateways.GatewayRejectedError) as too_much:
        await gateway.refund(
            gateways.RefundRequest(
                idempotency_key="refund:too-much",
                charge_id=captured.provider_reference,
                amount=10000,
                method="alipay",
            )
        )
    with pytest.raises(gateways.GatewayRejectedError) as unknown:
        await gateway.refund(
            gateways.RefundRequest(
                idempotency_key="refund:unknown", charge_id="2026000000", amount=1, method="alipay"
            )
        )

    assert (too_much.value.status, unknown.value.status) == (409, 404)


@pytest.mark.parametrize(
    ("token", "code", "retryable"),
    [
        ("alipay_declined", "declined", False),
        ("alipay_insufficient", "insufficient_funds", True),
        ("alipay_expired", "expired_method", False),
        ("alipay_unheard_of", "invalid_token", False),
    ],
)
async def test_declines_keep_their_meaning_and_take_nothing(
    gateway: AlipayGateway, sandbox: Sandbox, token: str, code: str, retryable: bool
) -> None:
    request = payment(token)

    for _ in range(2):
        with pytest.raises(gateways.PaymentDeclinedError) as declined:
            await gateway.pay(request)
        assert (declined.value.code, declined.value.retryable) == (code, retryable)
        assert token not in str(declined.value)
    assert sandbox.ledger(request.reference)["captures"] == []


async def test_a_flaky_source_is_unavailable_twice_then_paid_once(
    gateway: AlipayGateway, sandbox: Sandbox
) -> None:
    request = payment("alipay_flaky")

    for _ in range(2):
        with pytest.raises(gateways.GatewayUnavailableError):
            await gateway.pay(request)
    paid = await gateway.pay(request)

    assert isinstance(paid, gateways.Captured)
    assert len(sandbox.ledger(request.reference)["captures"]) == 1


async def test_an_action_source_sends_the_buyer_to_the_cashier_then_is_captured(
    gateway: AlipayGateway,
) -> None:
    request = payment("alipay_action")

    action = await gateway.pay(request)
    assert isinstance(action, gateways.ActionRequired)
    await buyer(action.url, "approve")
    paid = await gateway.pay(request)

    assert isinstance(paid, gateways.Captured) and paid.amount == 9900


class LoseFirstPayAnswer(httpx.AsyncBaseTransport):
    """Sends every request, but loses the answer to the first `alipay.trade.pay`."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self.lost = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        if request.url.params.get("method") == "alipay.trade.pay" and not self.lost:
            await response.aread()
            self.lost += 1
            raise httpx.ReadTimeout("the answer was lost", request=request)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


async def test_a_payment_whose_answer_was_lost_is_found_by_asking_never_paid_twice(
    sandbox: Sandbox,
) -> None:
    transport = LoseFirstPayAnswer()
    gateway = _gateway(sandbox, transport)
    request = payment("alipay_ok")

    with pytest.raises(gateways.GatewayUnavailableError):
        await gateway.pay(request)
    view = await gateway.look_up(lookup_of(request))
    again = await gateway.pay(request)
    await gateway.aclose()

    assert transport.lost == 1
    assert view.standing is gateways.Standing.CAPTURED
    assert (
        isinstance(again, gateways.Captured) and again.provider_reference == view.provider_reference
    )
    assert len(sandbox.ledger(request.reference)["captures"]) == 1


async def test_forged_tampered_or_malformed_notifies_are_refused(
    gateway: AlipayGateway, sandbox: Sandbox
) -> None:
    request = payment("alipay_ok")
    await gateway.pay(request)
    body = (await wait_for(lambda: sandbox.notifies.get(request.reference)))[0]
    fields = dict(parse_qsl(body.decode()))
    _, stranger_public = _pair()
    other_app = _gateway(sandbox, app_id="2021999999999999")
    forger = _gateway(sandbox, alipay_public_key=stranger_public)

    tampered = urlencode(fields | {"total_amount": "0.01"}).encode()
    unsigned = urlencode({k: v for k, v in fields.items() if k != "sign"}).encode()
    bad: list[tuple[AlipayGateway, bytes]] = [
        (gateway, tampered),
        (gateway, unsigned),
        (gateway, b"\xff\xfe not a form"),
        (gateway, body + b"&notify_id=again"),
        (other_app, body),
        (forger, body),
    ]
    for reader, payload in bad:
        with pytest.raises(gateways.WebhookRejectedError):
            await reader.read_webhook({}, payload)
    await other_app.aclose()
    await forger.aclose()

    assert (await gateway.read_webhook({}, body)).view.standing is gateways.Standing.CAPTURED


async def test_an_answer_not_signed_by_alipay_is_unavailable_not_believed(
    sandbox: Sandbox,
) -> None:
    _, stranger_public = _pair()
    gateway = _gateway(sandbox, alipay_public_key=stranger_public)

    with pytest.raises(gateways.GatewayUnavailableError, match="signature"):
        await gateway.look_up(lookup_of(payment()))
    await gateway.aclose()


async def test_an_unreachable_gateway_is_unavailable(sandbox: Sandbox) -> None:
    gateway = _gateway(sandbox, gateway_url=f"http://127.0.0.1:{free_port()}/gateway.do")

    with pytest.raises(gateways.GatewayUnavailableError):
        await gateway.pay(payment("alipay_ok"))
    await gateway.aclose()


async def test_capture_is_never_called_for_alipay(gateway: AlipayGateway) -> None:
    with pytest.raises(gateways.GatewayRejectedError, match="nothing to capture"):
        await gateway.capture(
            gateways.CaptureRequest(
                idempotency_key="capture:x",
                reference="x",
                provider_reference="x",
                amount=1,
                currency="CNY",
                method="alipay",
            )
        )


async def test_the_list_for_reconciliation_has_payments_refunds_and_planted_captures(
    gateway: AlipayGateway, sandbox: Sandbox
) -> None:
    since = datetime.now(UTC) - timedelta(minutes=1)
    request = payment("alipay_ok")
    captured = await gateway.pay(request)
    assert isinstance(captured, gateways.Captured)
    await gateway.refund(
        gateways.RefundRequest(
            idempotency_key=f"refund:{request.reference}",
            charge_id=captured.provider_reference,
            amount=900,
            method="alipay",
            reference=request.reference,
        )
    )
    planted = str(uuid.uuid4())
    httpx.post(
        f"{sandbox.base}/sandbox/ledger/plant",
        json={"method": "alipay", "reference": planted, "amount": 1234, "currency": "CNY"},
    ).raise_for_status()

    views = {v.reference: v for v in await gateway.list_payments(since)}

    mine = views[request.reference]
    assert (mine.standing, mine.captured_amount, mine.refunded_amount) == (
        gateways.Standing.CAPTURED,
        9900,
        900,
    )
    assert mine.provider_reference == captured.provider_reference
    assert views[planted].captured_amount == 1234


def test_keys_that_cannot_be_read_are_refused_without_quoting_them(sandbox: Sandbox) -> None:
    garbled = sandbox.app_private.replace("A", "*")

    with pytest.raises(ValueError, match="private key") as refused:
        _gateway(sandbox, app_private_key=garbled)

    assert garbled not in str(refused.value)
    assert "PRIVATE" not in repr(_gateway(sandbox))


@pytest.mark.parametrize(
    ("status", "body"),
    [(502, b"Bad Gateway"), (200, b"<html>maintenance</html>"), (200, b'{"sign":"x"}')],
)
async def test_a_5xx_or_an_answer_that_is_not_alipays_is_unavailable(
    sandbox: Sandbox, status: int, body: bytes
) -> None:
    transport = httpx.MockTransport(lambda _: httpx.Response(status, content=body))
    gateway = _gateway(sandbox, transport)

    with pytest.raises(gateways.GatewayUnavailableError):
        await gateway.pay(payment("alipay_ok"))
    await gateway.aclose()


def test_reconciliation_reads_whole_past_months_as_monthly_bills_and_other_days_daily() -> None:
    now = datetime(2026, 12, 3, 1, 0, tzinfo=UTC)  # 09:00 on 3 December in Beijing

    periods = bill_periods(datetime(2026, 9, 29, 17, 0, tzinfo=UTC), now)

    assert periods == ["2026-09-30", "2026-10", "2026-11", "2026-12-01", "2026-12-02", "2026-12-03"]
    assert bill_periods(now, now) == ["2026-12-03"]
