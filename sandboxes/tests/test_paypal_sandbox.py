"""The payment sandbox's PayPal API, through PayPal's own server SDK on one real server."""

import asyncio
import base64
import json
import os
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi import FastAPI, Request, Response
from paypalserversdk.configuration import Configuration, Server
from paypalserversdk.exceptions.error_exception import ErrorException
from paypalserversdk.http.auth.o_auth_2 import ClientCredentialsAuthCredentials
from paypalserversdk.paypal_serversdk_client import PaypalServersdkClient
from sandboxes.payment import PaymentSandboxSettings, create_app
from sandboxes.providers.paypal import PayPalSandboxSettings
from sandboxes.threaded import free_port, serving

SLOW_DELAY = 0.3
CLIENT_ID = PayPalSandboxSettings.client_id
SECRET = PayPalSandboxSettings.secret
WEBHOOK_ID = PayPalSandboxSettings.webhook_id


class Receiver:
    """Billing's stand-in: keeps every PayPal webhook; fails the first `fail_first` of each."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, str], bytes]] = []
        self.fail_times: dict[str, int] = {}
        """By reference: how many times each event about it is answered 500 first."""
        self._failed: dict[str, int] = {}

    def answer(self, body: bytes) -> int:
        event_id = json.loads(body)["id"]
        for reference, times in self.fail_times.items():
            if reference.encode() in body and self._failed.get(event_id, 0) < times:
                self._failed[event_id] = self._failed.get(event_id, 0) + 1
                return 500
        return 200

    def events(self, reference: str | None = None) -> list[dict[str, Any]]:
        events = [json.loads(body) for _, body in self.calls]
        if reference is None:
            return events
        return [e for e in events if reference in json.dumps(e)]


class Sandbox:
    """The running sandbox: its URL, the receiver, and a plain HTTP client."""

    def __init__(self, url: str, receiver: Receiver, http: httpx.AsyncClient) -> None:
        self.url = url
        self.receiver = receiver
        self.http = http

    async def token(self) -> str:
        response = await self.http.post(
            "/paypal/v1/oauth2/token",
            data={"grant_type": "client_credentials"},
            auth=(CLIENT_ID, SECRET),
        )
        assert response.status_code == 200
        token: str = response.json()["access_token"]
        return token

    async def ledger(self, reference: str) -> dict[str, list[dict[str, Any]]]:
        response = await self.http.get("/sandbox/ledger", params={"reference": reference})
        result: dict[str, list[dict[str, Any]]] = response.json()
        return result


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, Receiver]]:
    """One sandbox on a free port for the whole file, its webhooks sent to a receiver in it."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    receiver = Receiver()
    settings = PaymentSandboxSettings(
        host="127.0.0.1", port=port, slow_delay=SLOW_DELAY, webhook_base_url=f"{url}/receiver"
    )
    with mock.patch.dict(os.environ, {"PAYMENT_SANDBOX_PAYPAL_REDELIVERY_SCALE": "0.001"}):
        app = create_app(settings)
    add_receiver(app, receiver)
    with serving(app, port):
        yield url, receiver


def add_receiver(app: FastAPI, receiver: Receiver) -> None:
    @app.post("/receiver/webhooks/paypal")
    async def receive(request: Request) -> Response:
        body = await request.body()
        receiver.calls.append((dict(request.headers), body))
        return Response(status_code=receiver.answer(body))


@pytest.fixture
async def sandbox(server: tuple[str, Receiver]) -> AsyncIterator[Sandbox]:
    url, receiver = server
    async with httpx.AsyncClient(base_url=url) as http:
        yield Sandbox(url, receiver, http)


class _Configuration(Configuration):  # type: ignore[misc]  # the SDK ships no type hints
    def __init__(self, base_uri: str, **kwargs: Any) -> None:
        self._base_uri = base_uri
        super().__init__(**kwargs)

    def get_base_uri(self, server: Server = Server.DEFAULT) -> str:
        return self._base_uri


@pytest.fixture
def sdk(server: tuple[str, Receiver]) -> PaypalServersdkClient:
    """PayPal's SDK pointed at the sandbox."""
    url, _ = server
    return PaypalServersdkClient(
        config=_Configuration(
            f"{url}/paypal",
            timeout=10,
            client_credentials_auth_credentials=ClientCredentialsAuthCredentials(
                o_auth_client_id=CLIENT_ID, o_auth_client_secret=SECRET
            ),
        )
    )


def unique(name: str) -> str:
    return f"{name}-{time.monotonic_ns()}"


def order_body(reference: str, *, vault_id: str | None = None, value: str = "99.00") -> Any:
    source: dict[str, Any] = {
        "experience_context": {
            "return_url": "https://shop.example/return?step=paid",
            "cancel_url": "https://shop.example/cancelled",
        }
    }
    if vault_id is not None:
        source = {"vault_id": vault_id}
    return {
        "intent": "AUTHORIZE",
        "purchase_units": [
            {
                "reference_id": reference,
                "custom_id": reference,
                "amount": {"currency_code": "USD", "value": value},
            }
        ],
        "payment_source": {"paypal": source},
    }


def body(response: Any) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(response.text)
    return result


def sdk_call(endpoint: Any, options: dict[str, Any]) -> dict[str, Any]:
    return body(endpoint(options))


async def wait_for(condition: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.02)


# ---- OAuth ---------------------------------------------------------------------------------


async def test_wrong_client_credentials_get_oauths_invalid_client(sandbox: Sandbox) -> None:
    response = await sandbox.http.post(
        "/paypal/v1/oauth2/token",
        data={"grant_type": "client_credentials"},
        auth=(CLIENT_ID, "wrong"),
    )

    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


async def test_an_api_call_without_a_token_is_an_authentication_failure(sandbox: Sandbox) -> None:
    response = await sandbox.http.get("/paypal/v2/checkout/orders/NOPE")

    assert response.status_code == 401
    assert response.json()["name"] == "AUTHENTICATION_FAILURE"
    assert {"name", "message", "debug_id"} <= response.json().keys()


# ---- a saved source ------------------------------------------------------------------------


async def test_saved_source_is_approved_authorized_captured_and_refunded_through_the_sdk(
    sandbox: Sandbox, sdk: PaypalServersdkClient
) -> None:
    reference = unique("renewal")
    order = sdk_call(
        sdk.orders.create_order,
        {"body": order_body(reference, vault_id="vault_paypal_ok"), "paypal_request_id": reference},
    )
    assert order["status"] == "APPROVED"

    authorized = sdk_call(
        sdk.orders.authorize_order, {"id": order["id"], "paypal_request_id": f"{reference}:a"}
    )
    assert authorized["status"] == "COMPLETED"
    authorization = authorized["purchase_units"][0]["payments"]["authorizations"][0]
    assert authorization["status"] == "CREATED"
    expires = datetime.fromisoformat(authorization["expiration_time"].replace("Z", "+00:00"))
    assert timedelta(days=28) < expires - datetime.now(UTC) <= timedelta(days=29)

    capture_options = {
        "authorization_id": authorization["id"],
        "paypal_request_id": f"{reference}:c",
    }
    capture = sdk_call(sdk.payments.capture_authorized_payment, capture_options)
    again = sdk_call(sdk.payments.capture_authorized_payment, capture_options)
    assert capture["status"] == "COMPLETED"
    assert again["id"] == capture["id"]

    refund = sdk_call(
        sdk.payments.refund_captured_payment,
        {
            "capture_id": capture["id"],
            "paypal_request_id": f"{reference}:r",
            "body": {"amount": {"currency_code": "USD", "value": "40.00"}},
        },
    )
    assert refund["status"] == "COMPLETED"
    ledger = await sandbox.ledger(reference)
    assert [(e["method"], e["amount"], e["currency"]) for e in ledger["authorizations"]] == [
        ("paypal", 9900, "USD")
    ]
    assert [e["id"] for e in ledger["captures"]] == [capture["id"]]
    assert [e["amount"] for e in ledger["refunds"]] == [4000]
    captured = sdk_call(sdk.payments.get_captured_payment, {"capture_id": capture["id"]})
    assert captured["status"] == "PARTIALLY_REFUNDED"


async def test_a_repeated_request_id_returns_the_same_order_with_200(
    sdk: PaypalServersdkClient,
) -> None:
    reference = unique("renewal")
    options = {"body": order_body(reference, vault_id="v_ok"), "paypal_request_id": reference}

    first = sdk.orders.create_order(options)
    second = sdk.orders.create_order(options)

    assert (first.status_code, second.status_code) == (201, 200)
    assert body(first)["id"] == body(second)["id"]


async def test_a_zero_decimal_currency_takes_whole_amounts_only(sdk: PaypalServersdkClient) -> None:
    order = order_body(unique("renewal"), vault_id="v_ok")
    order["purchase_units"][0]["amount"] = {"currency_code": "JPY", "value": "1200.50"}

    with pytest.raises(ErrorException) as raised:
        sdk.orders.create_order({"body": order})

    assert raised.value.response_code == 400
    assert raised.value.details[0].issue == "DECIMAL_PRECISION"


# ---- declines ------------------------------------------------------------------------------


@pytest.mark.parametrize(("suffix", "code"), [("_declined", "0500"), ("_expired", "5400")])
async def test_a_declined_source_completes_the_order_with_a_declined_authorization(
    sandbox: Sandbox, sdk: PaypalServersdkClient, suffix: str, code: str
) -> None:
    reference = unique("renewal")
    order = sdk_call(
        sdk.orders.create_order, {"body": order_body(reference, vault_id=f"v{suffix}")}
    )

    authorized = sdk_call(sdk.orders.authorize_order, {"id": order["id"]})

    assert authorized["status"] == "COMPLETED"
    authorization = authorized["purchase_units"][0]["payments"]["authorizations"][0]
    assert authorization["status"] == "DECLINED"
    assert authorization["processor_response"]["response_code"] == code
    assert (await sandbox.ledger(reference))["authorizations"] == []


async def test_insufficient_funds_is_instrument_declined_at_every_authorize(
    sdk: PaypalServersdkClient,
) -> None:
    order = sdk_call(
        sdk.orders.create_order, {"body": order_body(unique("r"), vault_id="v_insufficient")}
    )

    for _ in range(2):
        with pytest.raises(ErrorException) as raised:
            sdk.orders.authorize_order({"id": order["id"]})
        assert raised.value.response_code == 422
        assert raised.value.name == "UNPROCESSABLE_ENTITY"
        assert raised.value.debug_id
        assert raised.value.details[0].issue == "INSTRUMENT_DECLINED"
    assert sdk_call(sdk.orders.get_order, {"id": order["id"]})["status"] == "APPROVED"


async def test_a_capture_can_be_declined_under_a_completed_order(
    sandbox: Sandbox, sdk: PaypalServersdkClient
) -> None:
    reference = unique("renewal")
    order = sdk_call(sdk.orders.create_order, {"body": order_body(reference, vault_id="v_ok")})
    authorized = sdk_call(sdk.orders.authorize_order, {"id": order["id"]})
    authorization = authorized["purchase_units"][0]["payments"]["authorizations"][0]

    capture = sdk_call(
        sdk.payments.capture_authorized_payment,
        {
            "authorization_id": authorization["id"],
            "paypal_mock_response": json.dumps({"mock_application_codes": "DECLINED"}),
        },
    )

    assert capture["status"] == "DECLINED"
    assert sdk_call(sdk.orders.get_order, {"id": order["id"]})["status"] == "COMPLETED"
    assert (await sandbox.ledger(reference))["captures"] == []


async def test_an_unknown_vault_id_cannot_be_verified(sdk: PaypalServersdkClient) -> None:
    with pytest.raises(ErrorException) as raised:
        sdk.orders.create_order({"body": order_body(unique("r"), vault_id="v_unknown")})

    assert raised.value.response_code == 422
    assert raised.value.details[0].issue == "PAYMENT_SOURCE_INFO_CANNOT_BE_VERIFIED"


# ---- transient and slow --------------------------------------------------------------------


async def test_flaky_source_fails_twice_per_request_id_then_creates(
    sdk: PaypalServersdkClient,
) -> None:
    options = {
        "body": order_body(unique("r"), vault_id="v_flaky"),
        "paypal_request_id": unique("k"),
    }
    statuses = []
    for _ in range(2):
        with pytest.raises(ErrorException) as raised:
            sdk.orders.create_order(options)
        statuses.append(raised.value.response_code)

    order = sdk_call(sdk.orders.create_order, options)

    assert statuses == [503, 503]
    assert order["status"] == "APPROVED"


async def test_slow_source_authorizes_after_the_slow_delay(sdk: PaypalServersdkClient) -> None:
    order = sdk_call(sdk.orders.create_order, {"body": order_body(unique("r"), vault_id="v_slow")})
    started = time.monotonic()

    authorized = sdk_call(sdk.orders.authorize_order, {"id": order["id"]})

    assert time.monotonic() - started >= SLOW_DELAY
    assert authorized["status"] == "COMPLETED"


# ---- the buyer -----------------------------------------------------------------------------


async def test_the_buyer_approves_on_an_accessible_page_and_returns_with_token_and_payer_id(
    sandbox: Sandbox, sdk: PaypalServersdkClient
) -> None:
    reference = unique("renewal")
    order = sdk_call(sdk.orders.create_order, {"body": order_body(reference)})
    assert order["status"] == "PAYER_ACTION_REQUIRED"
    link = next(x["href"] for x in order["links"] if x["rel"] == "payer-action")

    page = await sandbox.http.get(link)
    decided = await sandbox.http.post(link, data={"decision": "approve"})

    assert page.status_code == 200
    assert '<html lang="en">' in page.text
    assert "<legend>Do you approve this payment?</legend>" in page.text
    assert 'name="decision" value="approve">Approve' in page.text
    assert 'name="decision" value="cancel">Cancel' in page.text
    assert "http" not in page.text.split("<body>")[1].replace(sandbox.url, "")
    assert decided.status_code == 303
    target = urlsplit(decided.headers["location"])
    assert target.netloc == "shop.example"
    assert target.path == "/return"
    query = parse_qs(target.query)
    assert query["token"] == [order["id"]]
    assert query["step"] == ["paid"]
    assert query["PayerID"][0]
    approved = sdk_call(sdk.orders.get_order, {"id": order["id"]})
    assert approved["status"] == "APPROVED"
    assert approved["payer"]["payer_id"] == query["PayerID"][0]
    authorized = sdk_call(sdk.orders.authorize_order, {"id": order["id"]})
    assert authorized["status"] == "COMPLETED"


async def test_the_buyer_cancels_and_returns_to_the_cancel_url_and_the_order_is_voided(
    sandbox: Sandbox, sdk: PaypalServersdkClient
) -> None:
    order = sdk_call(sdk.orders.create_order, {"body": order_body(unique("r"))})
    link = f"{sandbox.url}/paypal/checkoutnow?token={order['id']}"

    decided = await sandbox.http.post(link, data={"decision": "cancel"})
    again = await sandbox.http.post(link, data={"decision": "approve"})

    assert decided.status_code == 303
    assert decided.headers["location"] == f"https://shop.example/cancelled?token={order['id']}"
    assert again.status_code == 409
    assert sdk_call(sdk.orders.get_order, {"id": order["id"]})["status"] == "VOIDED"
    with pytest.raises(ErrorException) as raised:
        sdk.orders.authorize_order({"id": order["id"]})
    assert raised.value.response_code == 422


async def test_an_order_cannot_be_authorized_before_the_buyer_approves(
    sdk: PaypalServersdkClient,
) -> None:
    order = sdk_call(sdk.orders.create_order, {"body": order_body(unique("r"))})

    with pytest.raises(ErrorException) as raised:
        sdk.orders.authorize_order({"id": order["id"]})

    assert raised.value.details[0].issue == "ORDER_NOT_APPROVED"


async def test_a_decision_other_than_approve_or_cancel_is_refused(
    sandbox: Sandbox, sdk: PaypalServersdkClient
) -> None:
    order = sdk_call(sdk.orders.create_order, {"body": order_body(unique("r"))})

    response = await sandbox.http.post(
        f"/paypal/checkoutnow?token={order['id']}", data={"decision": "maybe"}
    )

    assert response.status_code == 400
    assert sdk_call(sdk.orders.get_order, {"id": order["id"]})["status"] == "PAYER_ACTION_REQUIRED"


# ---- void ----------------------------------------------------------------------------------


async def test_a_voided_authorization_cannot_be_captured(
    sandbox: Sandbox, sdk: PaypalServersdkClient
) -> None:
    reference = unique("renewal")
    order = sdk_call(sdk.orders.create_order, {"body": order_body(reference, vault_id="v_ok")})
    authorized = sdk_call(sdk.orders.authorize_order, {"id": order["id"]})
    authorization_id = authorized["purchase_units"][0]["payments"]["authorizations"][0]["id"]

    voided = sdk.payments.void_payment({"authorization_id": authorization_id})

    assert voided.status_code == 204
    with pytest.raises(ErrorException) as raised:
        sdk.payments.capture_authorized_payment({"authorization_id": authorization_id})
    assert raised.value.details[0].issue == "AUTHORIZATION_VOIDED"
    ledger = await sandbox.ledger(reference)
    assert [e["charge_id"] for e in ledger["voids"]] == [authorization_id]
    assert ledger["captures"] == []


# ---- reporting -----------------------------------------------------------------------------


async def test_transaction_search_lists_captures_refunds_and_planted_captures(
    sandbox: Sandbox, sdk: PaypalServersdkClient
) -> None:
    reference = unique("renewal")
    since = datetime.now(UTC) - timedelta(minutes=1)
    order = sdk_call(sdk.orders.create_order, {"body": order_body(reference, vault_id="v_ok")})
    authorized = sdk_call(sdk.orders.authorize_order, {"id": order["id"]})
    authorization_id = authorized["purchase_units"][0]["payments"]["authorizations"][0]["id"]
    capture = sdk_call(
        sdk.payments.capture_authorized_payment, {"authorization_id": authorization_id}
    )
    sdk_call(sdk.payments.refund_captured_payment, {"capture_id": capture["id"]})
    planted = await sandbox.http.post(
        "/sandbox/ledger/plant",
        json={"method": "paypal", "reference": reference, "amount": 500, "currency": "USD"},
    )

    found = sdk_call(
        sdk.transaction_search.search_transactions,
        {
            "start_date": since.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "end_date": (datetime.now(UTC) + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
    )

    mine = [
        d["transaction_info"]
        for d in found["transaction_details"]
        if d["transaction_info"]["custom_field"] == reference
    ]
    assert sorted(
        (t["transaction_event_code"], t["transaction_amount"]["value"]) for t in mine
    ) == [
        ("T0006", "5.00"),
        ("T0006", "99.00"),
        ("T1107", "-99.00"),
    ]
    assert planted.json()["id"] in {t["transaction_id"] for t in mine}


async def test_transaction_search_needs_both_dates(sandbox: Sandbox) -> None:
    response = await sandbox.http.get(
        "/paypal/v1/reporting/transactions",
        headers={"Authorization": f"Bearer {await sandbox.token()}"},
    )

    assert response.status_code == 400
    assert response.json()["details"][0]["issue"] == "MISSING_REQUIRED_PARAMETER"


# ---- webhooks ------------------------------------------------------------------------------


async def verify(sandbox: Sandbox, headers: dict[str, str], event: Any, **override: Any) -> str:
    request = {
        "auth_algo": headers["paypal-auth-algo"],
        "cert_url": headers["paypal-cert-url"],
        "transmission_id": headers["paypal-transmission-id"],
        "transmission_sig": headers["paypal-transmission-sig"],
        "transmission_time": headers["paypal-transmission-time"],
        "webhook_id": WEBHOOK_ID,
        "webhook_event": event,
    } | override
    response = await sandbox.http.post(
        "/paypal/v1/notifications/verify-webhook-signature",
        json=request,
        headers={"Authorization": f"Bearer {await sandbox.token()}"},
    )
    assert response.status_code == 200
    status: str = response.json()["verification_status"]
    return status


async def test_each_step_sends_a_signed_webhook_that_verifies_and_a_forged_one_does_not(
    sandbox: Sandbox, sdk: PaypalServersdkClient
) -> None:
    reference = unique("renewal")
    order = sdk_call(sdk.orders.create_order, {"body": order_body(reference)})
    await sandbox.http.post(
        f"/paypal/checkoutnow?token={order['id']}", data={"decision": "approve"}
    )
    authorized = sdk_call(sdk.orders.authorize_order, {"id": order["id"]})
    authorization_id = authorized["purchase_units"][0]["payments"]["authorizations"][0]["id"]
    sdk_call(sdk.payments.capture_authorized_payment, {"authorization_id": authorization_id})

    await wait_for(lambda: len(sandbox.receiver.events(reference)) == 3)
    calls = [(h, b) for h, b in sandbox.receiver.calls if reference.encode() in b]
    # Each call is sent on its own, so they may arrive in any order, as PayPal's may.
    by_type = {json.loads(b)["event_type"]: (h, b) for h, b in calls}
    assert sorted(by_type) == [
        "CHECKOUT.ORDER.APPROVED",
        "PAYMENT.AUTHORIZATION.CREATED",
        "PAYMENT.CAPTURE.COMPLETED",
    ]
    headers, raw = by_type["PAYMENT.CAPTURE.COMPLETED"]
    event = json.loads(raw)
    assert event["id"].startswith("WH-")
    assert event["resource"]["supplementary_data"]["related_ids"]["order_id"] == order["id"]
    assert headers["paypal-auth-algo"] == "SHA256withRSA"
    assert await verify(sandbox, headers, event) == "SUCCESS"
    forged = event | {
        "resource": event["resource"] | {"amount": {"currency_code": "USD", "value": "1.00"}}
    }
    assert await verify(sandbox, headers, forged) == "FAILURE"
    assert await verify(sandbox, headers, event, webhook_id="ANOTHERWEBHOOK") == "FAILURE"
    signature = base64.b64encode(b"x" * 32).decode()
    assert await verify(sandbox, headers, event, transmission_sig=signature) == "FAILURE"


async def test_an_unacknowledged_webhook_is_redelivered_until_acknowledged(
    sandbox: Sandbox, sdk: PaypalServersdkClient
) -> None:
    reference = unique("renewal")
    order = sdk_call(sdk.orders.create_order, {"body": order_body(reference, vault_id="v_ok")})
    sandbox.receiver.fail_times[reference] = 2

    sdk_call(sdk.orders.authorize_order, {"id": order["id"]})

    await wait_for(lambda: len(sandbox.receiver.events(reference)) == 3)
    records = (
        await sandbox.http.get("/sandbox/deliveries", params={"reference": reference})
    ).json()

    assert [r["event"] for r in records] == ["PAYMENT.AUTHORIZATION.CREATED"]
    assert [a["status"] for a in records[0]["attempts"]] == [500, 500, 200]
    assert records[0]["delivered"] is True
    assert (
        len({json.loads(b)["id"] for _, b in sandbox.receiver.calls if reference.encode() in b})
        == 1
    )


# ---- time ----------------------------------------------------------------------------------


class Clock:
    """A clock a test moves by hand."""

    def __init__(self) -> None:
        self.now = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


async def sign_in(http: httpx.AsyncClient) -> None:
    """Get a token now and send it with every later request."""
    token = await http.post(
        "/paypal/v1/oauth2/token",
        data={"grant_type": "client_credentials"},
        auth=(CLIENT_ID, SECRET),
    )
    http.headers["Authorization"] = f"Bearer {token.json()['access_token']}"


@pytest.fixture
async def timed() -> AsyncIterator[tuple[httpx.AsyncClient, Clock]]:
    """The sandbox in process on a clock of the test's own, with a token already issued."""
    clock = Clock()
    app = create_app(PaymentSandboxSettings(slow_delay=0), clock=clock)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://payment") as http:
        await sign_in(http)
        yield http, clock


async def test_an_order_nobody_approves_expires_after_three_hours(
    timed: tuple[httpx.AsyncClient, Clock],
) -> None:
    http, clock = timed
    order = (await http.post("/paypal/v2/checkout/orders", json=order_body("r-expiring"))).json()
    page = f"/paypal/checkoutnow?token={order['id']}"

    clock.now += timedelta(hours=2, minutes=59)
    still = (await http.get(f"/paypal/v2/checkout/orders/{order['id']}")).json()
    clock.now += timedelta(minutes=1)
    expired = (await http.get(f"/paypal/v2/checkout/orders/{order['id']}")).json()

    assert still["status"] == "PAYER_ACTION_REQUIRED"
    assert expired["status"] == "VOIDED"
    assert not [link for link in expired["links"] if link["rel"] == "payer-action"]
    assert (await http.get(page)).status_code == 409
    assert (await http.post(page, data={"decision": "approve"})).status_code == 409


async def test_an_authorization_expires_after_29_days_and_cannot_be_captured(
    timed: tuple[httpx.AsyncClient, Clock],
) -> None:
    http, clock = timed
    created = await http.post(
        "/paypal/v2/checkout/orders", json=order_body("r-held", vault_id="v_ok")
    )
    authorized = (
        await http.post(f"/paypal/v2/checkout/orders/{created.json()['id']}/authorize")
    ).json()
    authorization = authorized["purchase_units"][0]["payments"]["authorizations"][0]
    assert authorization["expiration_time"] == "2027-01-04T09:00:00.000Z"
    clock.now += timedelta(days=29)
    await sign_in(http)

    answer = await http.post(f"/paypal/v2/payments/authorizations/{authorization['id']}/capture")

    assert answer.status_code == 422
    assert answer.json()["details"][0]["issue"] == "AUTHORIZATION_EXPIRED"
    view = await http.get(f"/paypal/v2/payments/authorizations/{authorization['id']}")
    assert view.json()["status"] == "EXPIRED"


async def test_an_access_token_expires_after_nine_hours(
    timed: tuple[httpx.AsyncClient, Clock],
) -> None:
    http, clock = timed
    clock.now += timedelta(hours=9)

    answer = await http.get("/paypal/v2/checkout/orders/ANY")

    assert answer.status_code == 401
    assert answer.json()["name"] == "AUTHENTICATION_FAILURE"
