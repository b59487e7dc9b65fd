"""The payment sandbox's Alipay, over HTTP on one real server: gateway.do, cashier, notifies.

Requests are signed here with a merchant key pair the test makes, answers and notifies verified
with the sandbox's pair, both made with `cryptography`, as a merchant's own code would.
"""

import base64
import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from fastapi import FastAPI, Request, Response
from sandboxes.payment import PaymentSandboxSettings, create_app
from sandboxes.providers.alipay import BEIJING, DEFAULT_APP_ID
from sandboxes.threaded import free_port, serving

SLOW_DELAY = 0.3
NOTIFY_SCALE = 0.001
"""Alipay's 4m, 10m, 10m, ... become 0.24 s, 0.6 s, 0.6 s, ...: four attempts in 1.5 s."""

_ANSWER = re.compile(r'^\{"(\w+)":(.*),"sign":"([^"]+)"\}$', re.S)


def _pair() -> tuple[rsa.RSAPrivateKey, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return key, public.decode()


def _pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _content(params: dict[str, str], leave_out: tuple[str, ...]) -> bytes:
    return "&".join(
        f"{k}={params[k]}" for k in sorted(params) if k not in leave_out and params[k]
    ).encode()


def _sign(key: rsa.RSAPrivateKey, content: bytes) -> str:
    return base64.b64encode(key.sign(content, padding.PKCS1v15(), hashes.SHA256())).decode()


def _verify(key: rsa.RSAPublicKey, content: bytes, sign: str) -> None:
    key.verify(base64.b64decode(sign), content, padding.PKCS1v15(), hashes.SHA256())


@dataclass
class Receiver:
    """Billing's stand-in: keeps every notify; answers `success` unless told otherwise."""

    calls: dict[str, list[dict[str, str]]] = field(default_factory=dict)

    def got(self, out_trade_no: str) -> list[dict[str, str]]:
        return self.calls.get(out_trade_no, [])


@dataclass
class Sandbox:
    base: str
    http: httpx.Client
    app_key: rsa.RSAPrivateKey
    alipay_public: rsa.RSAPublicKey
    receiver: Receiver

    def params(
        self,
        method: str,
        biz: dict[str, Any],
        key: rsa.RSAPrivateKey | None = None,
        extra: dict[str, str] | None = None,
    ) -> dict[str, str]:
        params = {
            "app_id": DEFAULT_APP_ID,
            "method": method,
            "format": "JSON",
            "charset": "utf-8",
            "sign_type": "RSA2",
            "timestamp": datetime.now(BEIJING).strftime("%Y-%m-%d %H:%M:%S"),
            "version": "1.0",
            "biz_content": json.dumps(biz, separators=(",", ":"), ensure_ascii=False),
            **(extra or {}),
        }
        params["sign"] = _sign(key or self.app_key, _content(params, ("sign",)))
        return params

    def call(self, method: str, biz: dict[str, Any], **extra: str) -> dict[str, Any]:
        """One API call; the answer's signature must verify, and its inner object is returned."""
        params = self.params(method, biz, extra=extra)
        body = {"biz_content": params.pop("biz_content")}
        response = self.http.post("/alipay/gateway.do", params=params, data=body)
        assert response.status_code == 200
        match = _ANSWER.match(response.text)
        assert match is not None, response.text
        assert match[1] == method.replace(".", "_") + "_response"
        _verify(self.alipay_public, match[2].encode(), match[3])
        inner: dict[str, Any] = json.loads(match[2])
        return inner

    def page_url(self, biz: dict[str, Any], **extra: str) -> str:
        params = self.params("alipay.trade.page.pay", biz, extra=extra)
        return f"{self.base}/alipay/gateway.do?{urlencode(params)}"

    def ledger(self, reference: str) -> dict[str, list[dict[str, Any]]]:
        result: dict[str, list[dict[str, Any]]] = self.http.get(
            "/sandbox/ledger", params={"reference": reference}
        ).json()
        return result

    def verify_signed(self, fields: dict[str, str]) -> None:
        """Return parameters and notifies: signed over all but `sign` and `sign_type`."""
        assert fields["sign_type"] == "RSA2"
        _verify(self.alipay_public, _content(fields, ("sign", "sign_type")), fields["sign"])


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    app_key, app_public = _pair()
    alipay_key, alipay_public = _pair()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    receiver = Receiver()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PAYMENT_SANDBOX_ALIPAY_PRIVATE_KEY", _pem(alipay_key))
        env.setenv("PAYMENT_SANDBOX_ALIPAY_APP_PUBLIC_KEY", app_public)
        env.setenv("PAYMENT_SANDBOX_ALIPAY_NOTIFY_SCALE", str(NOTIFY_SCALE))
        app = create_app(
            PaymentSandboxSettings(
                port=port, slow_delay=SLOW_DELAY, webhook_base_url=f"{base}/billing"
            )
        )
    _add_receiver(app, receiver)
    public = serialization.load_pem_public_key(alipay_public.encode())
    assert isinstance(public, rsa.RSAPublicKey)
    with serving(app, port), httpx.Client(base_url=base, timeout=10) as http:
        yield Sandbox(base, http, app_key, public, receiver)


def _add_receiver(app: FastAPI, receiver: Receiver) -> None:
    async def receive(request: Request) -> Response:
        fields = dict(parse_qsl((await request.body()).decode()))
        receiver.calls.setdefault(fields.get("out_trade_no", ""), []).append(fields)
        answer = "fail" if "refuse" in request.url.path else "success"
        return Response(answer, media_type="text/plain")

    app.add_api_route("/billing/webhooks/alipay", receive, methods=["POST"])
    app.add_api_route("/notify/refuse", receive, methods=["POST"])


def wait_for(check: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {check}")


def order(total: str = "99.00", **extra: Any) -> dict[str, Any]:
    return {
        "out_trade_no": f"renewal-{uuid.uuid4()}",
        "total_amount": total,
        "subject": "JP 10 GB monthly",
        **extra,
    }


def page_order(**extra: Any) -> dict[str, Any]:
    return order(product_code="FAST_INSTANT_TRADE_PAY", timeout_express="30m", **extra)


def saved(token: str, **extra: Any) -> dict[str, Any]:
    return order(
        product_code="GENERAL_WITHHOLDING", agreement_params={"agreement_no": token}, **extra
    )


RETURN_URL = "https://shop.example/renewals/done?from=alipay"


def test_page_pay_is_unknown_until_opened_then_approve_pays_once_and_notifies(
    sandbox: Sandbox,
) -> None:
    biz = page_order()
    url = sandbox.page_url(biz, return_url=RETURN_URL)
    no = biz["out_trade_no"]

    before = sandbox.call("alipay.trade.query", {"out_trade_no": no})
    page = sandbox.http.get(url)
    waiting = sandbox.call("alipay.trade.query", {"out_trade_no": no})
    approved = sandbox.http.post(url, data={"decision": "approve"})
    again = sandbox.http.post(url, data={"decision": "approve"})
    paid = sandbox.call("alipay.trade.query", {"out_trade_no": no})

    assert (before["code"], before["sub_code"]) == ("40004", "ACQ.TRADE_NOT_EXIST")
    assert page.status_code == 200
    assert 'value="approve">Approve payment</button>' in page.text
    assert 'value="cancel">Cancel payment</button>' in page.text
    assert "¥99.00" in page.text
    assert not re.search(r"<script|<link|src=|href=", page.text)
    assert (waiting["code"], waiting["trade_status"]) == ("10000", "WAIT_BUYER_PAY")
    assert approved.status_code == 303 and again.status_code == 303
    target = urlsplit(approved.headers["location"])
    assert f"{target.scheme}://{target.netloc}{target.path}" == RETURN_URL.split("?")[0]
    returned = dict(parse_qsl(target.query))
    sandbox.verify_signed({k: v for k, v in returned.items() if k != "from"})
    assert returned["from"] == "alipay"
    assert (returned["out_trade_no"], returned["total_amount"]) == (no, "99.00")
    assert returned["method"] == "alipay.trade.page.pay.return"
    assert (paid["trade_status"], paid["trade_no"]) == ("TRADE_SUCCESS", returned["trade_no"])
    captures = sandbox.ledger(no)["captures"]
    assert [(c["amount"], c["currency"], c["method"]) for c in captures] == [
        (9900, "CNY", "alipay")
    ]
    notify = wait_for(lambda: sandbox.receiver.got(no))[0]
    sandbox.verify_signed(notify)
    assert notify["notify_type"] == "trade_status_sync"
    assert (notify["trade_status"], notify["trade_no"]) == ("TRADE_SUCCESS", paid["trade_no"])
    assert notify["notify_id"] and notify["app_id"] == DEFAULT_APP_ID


def test_cancel_at_the_cashier_closes_the_trade_takes_nothing_and_notifies(
    sandbox: Sandbox,
) -> None:
    biz = page_order()
    url = sandbox.page_url(biz, return_url=RETURN_URL)
    no = biz["out_trade_no"]

    cancelled = sandbox.http.post(url, data={"decision": "cancel"})
    late_approve = sandbox.http.post(url, data={"decision": "approve"})
    closed = sandbox.call("alipay.trade.query", {"out_trade_no": no})

    assert cancelled.status_code == 303
    assert late_approve.status_code == 409 and "nothing was taken" in late_approve.text
    assert closed["trade_status"] == "TRADE_CLOSED"
    assert closed["buyer_pay_amount"] == "0.00"
    assert sandbox.ledger(no)["captures"] == []
    notify = wait_for(lambda: sandbox.receiver.got(no))[0]
    assert notify["trade_status"] == "TRADE_CLOSED"


def test_a_decision_other_than_approve_or_cancel_is_refused(sandbox: Sandbox) -> None:
    biz = page_order()

    response = sandbox.http.post(sandbox.page_url(biz), data={"decision": "maybe"})

    assert response.status_code == 400
    assert sandbox.call("alipay.trade.query", biz)["trade_status"] == "WAIT_BUYER_PAY"


def test_a_page_pay_link_past_its_time_expire_cannot_be_paid(sandbox: Sandbox) -> None:
    past = (datetime.now(BEIJING) - timedelta(minutes=1)).strftime("%Y-%m-%d %H:%M:%S")
    biz = page_order(time_expire=past)

    page = sandbox.http.get(sandbox.page_url(biz))

    assert page.status_code == 400 and "ACQ.TRADE_HAS_CLOSE" in page.text
    assert sandbox.call("alipay.trade.query", biz)["sub_code"] == "ACQ.TRADE_NOT_EXIST"


def test_forged_requests_are_refused_in_alipays_shape(sandbox: Sandbox) -> None:
    stranger, _ = _pair()
    forged = sandbox.params("alipay.trade.query", {"out_trade_no": "x"}, key=stranger)
    other_app = sandbox.params("alipay.trade.query", {"out_trade_no": "x"})
    other_app["app_id"] = "2021999999999999"

    answers = [sandbox.http.post("/alipay/gateway.do", data=p).json() for p in (forged, other_app)]
    cashier = sandbox.http.get(
        "/alipay/gateway.do",
        params=sandbox.params("alipay.trade.page.pay", page_order(), key=stranger),
    )

    inner = [a["alipay_trade_query_response"] for a in answers]
    assert [(i["code"], i["sub_code"]) for i in inner] == [
        ("40002", "isv.invalid-signature"),
        ("40002", "isv.invalid-app-id"),
    ]
    assert cashier.status_code == 400 and "isv.invalid-signature" in cashier.text


def test_an_unknown_method_answers_error_response(sandbox: Sandbox) -> None:
    params = sandbox.params("alipay.trade.unheard", {})

    answer = sandbox.http.post("/alipay/gateway.do", data=params).json()

    assert answer["error_response"]["sub_code"] == "isv.invalid-method"


@pytest.mark.parametrize(
    ("token", "sub_code"),
    [
        ("alipay_declined", "ACQ.PAYMENT_FAIL"),
        ("alipay_insufficient", "ACQ.BUYER_BALANCE_NOT_ENOUGH"),
        ("alipay_expired", "ACQ.AGREEMENT_INVALID"),
        ("alipay_whatever", "ACQ.AGREEMENT_NOT_EXIST"),
    ],
)
def test_a_declined_saved_source_pays_nothing_every_time(
    sandbox: Sandbox, token: str, sub_code: str
) -> None:
    biz = saved(token)

    answers = [sandbox.call("alipay.trade.pay", biz) for _ in range(2)]

    assert [(a["code"], a["sub_code"]) for a in answers] == [("40004", sub_code)] * 2
    assert sandbox.call("alipay.trade.query", biz)["sub_code"] == "ACQ.TRADE_NOT_EXIST"
    assert sandbox.ledger(biz["out_trade_no"])["captures"] == []


def test_an_ok_source_pays_at_once_and_a_repeat_is_told_it_is_paid(sandbox: Sandbox) -> None:
    biz = saved("alipay_ok")

    paid = sandbox.call("alipay.trade.pay", biz)
    repeat = sandbox.call("alipay.trade.pay", biz)

    assert (paid["code"], paid["total_amount"]) == ("10000", "99.00")
    assert repeat["sub_code"] == "ACQ.TRADE_HAS_SUCCESS"
    assert len(sandbox.ledger(biz["out_trade_no"])["captures"]) == 1
    notify = wait_for(lambda: sandbox.receiver.got(biz["out_trade_no"]))[0]
    assert notify["trade_status"] == "TRADE_SUCCESS"


def test_a_flaky_source_is_unavailable_twice_then_pays_once(sandbox: Sandbox) -> None:
    biz = saved("alipay_flaky")

    codes = [sandbox.call("alipay.trade.pay", biz)["code"] for _ in range(4)]

    assert codes == ["20000", "20000", "10000", "40004"]
    assert len(sandbox.ledger(biz["out_trade_no"])["captures"]) == 1


def test_a_slow_source_pays_after_the_slow_delay(sandbox: Sandbox) -> None:
    started = time.monotonic()
    paid = sandbox.call("alipay.trade.pay", saved("alipay_slow"))

    assert paid["code"] == "10000"
    assert time.monotonic() - started >= SLOW_DELAY


def test_an_action_source_waits_for_the_buyer_who_pays_at_the_cashier(sandbox: Sandbox) -> None:
    biz = saved("alipay_action")

    waiting = sandbox.call("alipay.trade.pay", biz)
    page_biz = {k: biz[k] for k in ("out_trade_no", "total_amount", "subject")}
    approved = sandbox.http.post(sandbox.page_url(page_biz), data={"decision": "approve"})

    assert (waiting["code"], waiting["out_trade_no"]) == ("10003", biz["out_trade_no"])
    assert approved.status_code == 200 and "You paid ¥99.00" in approved.text
    assert sandbox.call("alipay.trade.query", biz)["trade_status"] == "TRADE_SUCCESS"
    assert len(sandbox.ledger(biz["out_trade_no"])["captures"]) == 1


def test_refunds_once_per_out_request_no_and_a_full_refund_closes_the_trade(
    sandbox: Sandbox,
) -> None:
    biz = saved("alipay_ok")
    paid = sandbox.call("alipay.trade.pay", biz)
    no = biz["out_trade_no"]

    first = sandbox.call(
        "alipay.trade.refund",
        {"out_trade_no": no, "refund_amount": "40.00", "out_request_no": "r1"},
    )
    repeat = sandbox.call(
        "alipay.trade.refund",
        {"out_trade_no": no, "refund_amount": "40.00", "out_request_no": "r1"},
    )
    reused = sandbox.call(
        "alipay.trade.refund", {"out_trade_no": no, "refund_amount": "1.00", "out_request_no": "r1"}
    )
    too_much = sandbox.call(
        "alipay.trade.refund",
        {"out_trade_no": no, "refund_amount": "60.00", "out_request_no": "r2"},
    )
    rest = sandbox.call(
        "alipay.trade.refund",
        {"trade_no": paid["trade_no"], "refund_amount": "59.00", "out_request_no": "r3"},
    )

    assert (first["fund_change"], first["refund_fee"]) == ("Y", "40.00")
    assert (repeat["fund_change"], repeat["refund_fee"]) == ("N", "40.00")
    assert reused["sub_code"] == "ACQ.INVALID_PARAMETER"
    assert too_much["sub_code"] == "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL"
    assert (rest["fund_change"], rest["refund_fee"]) == ("Y", "99.00")
    refunds = sandbox.ledger(no)["refunds"]
    assert [r["amount"] for r in refunds] == [4000, 5900]
    assert {r["charge_id"] for r in refunds} == {paid["trade_no"]}
    assert sandbox.call("alipay.trade.query", biz)["trade_status"] == "TRADE_CLOSED"


def test_close_ends_an_unpaid_trade_but_never_a_paid_one(sandbox: Sandbox) -> None:
    waiting = page_order()
    url = sandbox.page_url(waiting)
    sandbox.http.get(url)
    paid = saved("alipay_ok")
    sandbox.call("alipay.trade.pay", paid)

    closed = sandbox.call("alipay.trade.close", {"out_trade_no": waiting["out_trade_no"]})
    closed_again = sandbox.call("alipay.trade.close", {"out_trade_no": waiting["out_trade_no"]})
    refused = sandbox.call("alipay.trade.close", {"out_trade_no": paid["out_trade_no"]})
    unknown = sandbox.call("alipay.trade.close", {"out_trade_no": "renewal-never-seen"})
    approve = sandbox.http.post(url, data={"decision": "approve"})

    assert closed["code"] == closed_again["code"] == "10000"
    assert refused["sub_code"] == "ACQ.TRADE_STATUS_ERROR"
    assert unknown["sub_code"] == "ACQ.TRADE_NOT_EXIST"
    assert approve.status_code == 409
    assert sandbox.ledger(waiting["out_trade_no"])["captures"] == []


def test_a_notify_is_redelivered_on_alipays_schedule_until_answered_success(
    sandbox: Sandbox,
) -> None:
    """Takes about 1.5 s: Alipay's first three waits, scaled down a thousandfold."""
    biz = saved("alipay_ok")

    sandbox.call("alipay.trade.pay", biz, notify_url=f"{sandbox.base}/notify/refuse")

    calls = wait_for(lambda: len(sandbox.receiver.got(biz["out_trade_no"])) >= 4 or None)
    assert calls
    got = sandbox.receiver.got(biz["out_trade_no"])
    assert len({n["notify_id"] for n in got}) == 1
    record = sandbox.http.get(
        "/sandbox/deliveries", params={"reference": biz["out_trade_no"]}
    ).json()
    assert [r["delivered"] for r in record] == [False]


def test_the_trade_bill_lists_payments_refunds_and_planted_captures(sandbox: Sandbox) -> None:
    biz = saved("alipay_ok")
    paid = sandbox.call("alipay.trade.pay", biz)
    sandbox.call(
        "alipay.trade.refund",
        {"out_trade_no": biz["out_trade_no"], "refund_amount": "9.00", "out_request_no": "r1"},
    )
    planted = f"renewal-{uuid.uuid4()}"
    sandbox.http.post(
        "/sandbox/ledger/plant",
        json={"method": "alipay", "reference": planted, "amount": 1234, "currency": "CNY"},
    )
    today = datetime.now(UTC).astimezone(BEIJING)

    answer = sandbox.call(
        "alipay.data.dataservice.bill.downloadurl.query",
        {"bill_type": "trade", "bill_date": today.strftime("%Y-%m-%d")},
    )
    later = sandbox.call(
        "alipay.data.dataservice.bill.downloadurl.query",
        {"bill_type": "trade", "bill_date": (today + timedelta(days=2)).strftime("%Y-%m-%d")},
    )
    bill = httpx.get(answer["bill_download_url"]).text

    rows = [line.split(",") for line in bill.splitlines() if not line.startswith("#")]
    header, body = rows[0], rows[1:]
    assert header[:3] == ["支付宝交易号", "商户订单号", "业务类型"]
    mine = {(r[1], r[2], r[header.index("订单金额（元）")]) for r in body}  # noqa: RUF001
    assert (biz["out_trade_no"], "交易", "99.00") in mine
    assert (biz["out_trade_no"], "退款", "-9.00") in mine
    assert (planted, "交易", "12.34") in mine
    assert paid["trade_no"] in {r[0] for r in body}
    assert later["sub_code"] == "isp.bill_not_exist"


async def test_without_keys_the_gateway_says_which_settings_are_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("PRIVATE_KEY", "PRIVATE_KEY_FILE", "APP_PUBLIC_KEY", "APP_PUBLIC_KEY_FILE"):
        monkeypatch.delenv(f"PAYMENT_SANDBOX_ALIPAY_{name}", raising=False)
    app = create_app(PaymentSandboxSettings())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://payment") as client:
        response = await client.post("/alipay/gateway.do", data={"method": "alipay.trade.query"})

    inner = response.json()["alipay_trade_query_response"]
    assert inner["sub_code"] == "isv.sandbox-keys-missing"
    assert "PAYMENT_SANDBOX_ALIPAY_PRIVATE_KEY_FILE" in inner["sub_msg"]


def test_a_waiting_trade_closes_when_the_page_pay_link_for_it_has_expired(
    sandbox: Sandbox,
) -> None:
    biz = saved("alipay_action", timeout_express="30m")
    sandbox.call("alipay.trade.pay", biz)
    past = (datetime.now(BEIJING) - timedelta(minutes=1)).strftime("%Y-%m-%d %H:%M:%S")
    link = {k: biz[k] for k in ("out_trade_no", "total_amount", "subject")} | {"time_expire": past}

    page = sandbox.http.post(sandbox.page_url(link), data={"decision": "approve"})

    assert page.status_code == 409 and "nothing was taken" in page.text
    assert sandbox.call("alipay.trade.query", biz)["trade_status"] == "TRADE_CLOSED"
    assert sandbox.ledger(biz["out_trade_no"])["captures"] == []
