"""AlipayGateway: `alipay` payments over Alipay's open platform (`gateway.do`, RSA2).

Why a small signer of our own on `HttpAdapter` rather than `python-alipay-sdk`: the SDK is
synchronous (urllib under a blocking call, so every call would need a worker thread), keeps its
gateway URL in a private attribute (pointing it at the sandbox means reaching into it), brings
pycryptodomex for what `cryptography` (already a dependency) does, and would bypass the shared
adapter base: its pooled aiohttp transport, the whole-call timeout, the `esim_outside_call_seconds`
metric and the client span. What it would save is small: Alipay's signing is a sorted `k=v&...`
string signed SHA256withRSA, and verifying an answer is the same over the exact text of its
`<method>_response` object. So this module does both in a few lines, async, configured by
`gateway_url` alone (`https://openapi.alipay.com/gateway.do` in production).

How the port maps onto Alipay:

- `pay` first asks `alipay.trade.query` by `out_trade_no` (the renewal id), so a repeat never
  makes a second trade: `TRADE_SUCCESS` is `Captured`, `WAIT_BUYER_PAY` `ActionRequired` again,
  `TRADE_CLOSED` unpaid raises `PaymentDeclinedError("not_approved", False)` (the buyer
  cancelled, or the trade expired: billing ends the saga `not_approved`). With no trade yet, a
  saved source (`token`, an agreement number) is paid at once by `alipay.trade.pay`
  (`GENERAL_WITHHOLDING`), which answers `Captured`, a decline, or `10003` (the buyer must pay
  at the cashier: `ActionRequired`); without a token, `pay` returns the signed page-pay URL of
  `alipay.trade.page.pay` with `timeout_express` = `page_timeout` (30m) and `time_expire` at
  the same instant, which is the `expires_at` it reports. Opening that URL is what creates the
  trade at Alipay, so no call is made for it.
- `capture` never applies (Alipay takes the money when the buyer pays): it raises
  `GatewayRejectedError`. `void` closes a trade still waiting for the buyer (`trade.close`); a
  trade Alipay does not know (the buyer never opened the cashier) is `GatewayRejectedError` 404:
  nothing can be taken once `expires_at` has passed, since the URL stops working then.
- `refund` is `alipay.trade.refund` with `out_request_no` = the idempotency key (a repeat
  answers the same refund); `look_up` is `trade.query` (`ACQ.TRADE_NOT_EXIST` is
  `Standing.NOT_FOUND`; a closed trade that was paid was refunded in full); `list_payments`
  reads the daily trade bills (`alipay.data.dataservice.bill.downloadurl.query`, then the CSV).
- `read_webhook` verifies a notify's RSA2 signature (all fields but `sign` and `sign_type`)
  and its `app_id`; its `notify_id` is the event id and the answer is the literal `success`.

A timeout, a connection error, a 5xx, an answer that is not JSON or whose signature does not
verify, code `20000` and `ACQ.SYSTEM_ERROR` are `GatewayUnavailableError`: whether the call took
effect is unknown, and `look_up` tells. Keys are never logged nor put in an error.
"""

import base64
import binascii
import csv
import io
import json
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from esim_core.outside.adapter import HttpAdapter, is_transient

from billing.gateways import port

BEIJING = timezone(timedelta(hours=8), "CST")
"""Alipay writes every time in Beijing time, without an offset."""

_TIME = "%Y-%m-%d %H:%M:%S"
_UNAVAILABLE_SUB_CODES = frozenset({"ACQ.SYSTEM_ERROR", "isp.unknow-error", "aop.ACQ.SYSTEM_ERROR"})
_DECLINES: dict[str, tuple[str, bool]] = {
    "ACQ.BUYER_BALANCE_NOT_ENOUGH": ("insufficient_funds", True),
    "ACQ.BUYER_BANKCARD_BALANCE_NOT_ENOUGH": ("insufficient_funds", True),
    "ACQ.AGREEMENT_INVALID": ("expired_method", False),
    "ACQ.AGREEMENT_STATUS_NOT_NORMAL": ("expired_method", False),
    "ACQ.AGREEMENT_NOT_EXIST": ("invalid_token", False),
    "ACQ.PAYMENT_AUTH_CODE_INVALID": ("invalid_token", False),
}
"""Alipay's decline sub-codes that mean more than a plain `declined`."""
_SUBJECT_UNSAFE = re.compile(r"[/=&\x00-\x1f]")
_AMOUNT = re.compile(r"^-?\d{1,12}(\.\d{1,2})?$")


# The payment sandbox signs and verifies with code of its own (`sandboxes.providers.alipay`),
# not this: as the stand-in for Alipay it must catch a mistake here, not share it.
def load_private_key(text: str) -> rsa.RSAPrivateKey:
    """The app's RSA private key from PEM (PKCS#1 or PKCS#8) or Alipay's bare base64.

    Raises:
        ValueError: not an RSA private key (the message never quotes the key).
    """
    try:
        if "-----BEGIN" in text:
            key = serialization.load_pem_private_key(text.encode("ascii"), password=None)
        else:
            der = base64.b64decode("".join(text.split()), validate=True)
            key = serialization.load_der_private_key(der, password=None)
    except (ValueError, TypeError, binascii.Error, UnicodeEncodeError):
        raise ValueError("the Alipay app private key is not a readable RSA key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("the Alipay app private key is not an RSA key")
    return key


def load_public_key(text: str) -> rsa.RSAPublicKey:
    """Alipay's RSA public key from PEM or the bare base64 Alipay's console shows.

    Raises:
        ValueError: not an RSA public key.
    """
    try:
        if "-----BEGIN" in text:
            key = serialization.load_pem_public_key(text.encode("ascii"))
        else:
            der = base64.b64decode("".join(text.split()), validate=True)
            key = serialization.load_der_public_key(der)
    except (ValueError, TypeError, binascii.Error, UnicodeEncodeError):
        raise ValueError("the Alipay public key is not a readable RSA key") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("the Alipay public key is not an RSA key")
    return key


def content_to_sign(params: Mapping[str, str], leave_out: tuple[str, ...] = ("sign",)) -> str:
    """Alipay's string to sign: non-empty parameters but `leave_out`, sorted, `k=v&...`."""
    return "&".join(f"{k}={params[k]}" for k in sorted(params) if k not in leave_out and params[k])


def _verifies(key: rsa.RSAPublicKey, content: str, sign: str) -> bool:
    try:
        signature = base64.b64decode(sign, validate=True)
        key.verify(signature, content.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


def _yuan(minor: int) -> str:
    return f"{minor // 100}.{minor % 100:02d}"


def _minor(text: object) -> int | None:
    """Yuan as Alipay writes them ("99.00") in fen; None when absent or garbled."""
    if not isinstance(text, str) or not _AMOUNT.match(text.strip()):
        return None
    try:
        return int(Decimal(text.strip()) * 100)
    except InvalidOperation:
        return None


def _beijing_time(text: object) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.strptime(text.strip(), _TIME).replace(tzinfo=BEIJING).astimezone(UTC)
    except ValueError:
        return None


def _utc_now() -> datetime:
    return datetime.now(UTC)


class AlipayGateway(HttpAdapter):
    """Alipay's open platform behind the `PaymentGateway` port (see the module's docstring).

    Args:
        app_id: the merchant app's id at Alipay.
        app_private_key: the app's RSA private key, PEM or base64 text (billing's settings read
            a file into it); signs every request.
        alipay_public_key: Alipay's RSA public key, PEM or base64 text; verifies answers and
            notifies.
        gateway_url: `https://openapi.alipay.com/gateway.do`, or the sandbox's
            `http://127.0.0.1:8010/alipay/gateway.do`.
        notify_url: where Alipay sends notifies (billing's `/webhooks/alipay`); empty: the
            app's default in Alipay's console.
        timeout_s: the bound on one call.
        page_timeout: how long the buyer has at the cashier (`timeout_express`).
        transport: tests only; by default the shared aiohttp pool.
        clock: the time requests are stamped with and expiries computed from.

    Raises:
        ValueError: a key that cannot be read, or a gateway URL that is not http(s).
    """

    system = "alipay"
    called = "Alipay"
    unavailable = port.GatewayUnavailableError

    def __init__(
        self,
        app_id: str,
        app_private_key: str,
        alipay_public_key: str,
        gateway_url: str,
        notify_url: str = "",
        *,
        timeout_s: float = 10.0,
        page_timeout: timedelta = timedelta(minutes=30),
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        if not gateway_url.startswith(("https://", "http://")):
            raise ValueError("the Alipay gateway URL must be http(s)")
        if not app_id:
            raise ValueError("the Alipay app id is empty")
        if page_timeout < timedelta(minutes=1) or page_timeout.total_seconds() % 60:
            raise ValueError("the Alipay page timeout must be whole minutes, 1 at least")
        super().__init__(
            gateway_url,
            timeout_s=timeout_s,
            transport=transport,
            headers={"User-Agent": "esim-billing"},
        )
        self._app_id = app_id
        self._private_key = load_private_key(app_private_key)
        self._alipay_key = load_public_key(alipay_public_key)
        self._gateway_url = gateway_url
        self._notify_url = notify_url
        self._page_timeout = page_timeout
        self._timeout_express = f"{int(page_timeout.total_seconds() // 60)}m"
        self._clock = clock

    def __repr__(self) -> str:
        return f"AlipayGateway(app_id={self._app_id!r}, gateway_url={self._gateway_url!r})"

    # --- requests and answers ------------------------------------------------------------

    def _signed(
        self, method: str, biz: Mapping[str, Any], *, notify: bool, return_url: str | None = None
    ) -> dict[str, str]:
        params = {
            "app_id": self._app_id,
            "method": method,
            "format": "JSON",
            "charset": "utf-8",
            "sign_type": "RSA2",
            "timestamp": self._clock().astimezone(BEIJING).strftime(_TIME),
            "version": "1.0",
            "biz_content": json.dumps(biz, ensure_ascii=False, separators=(",", ":")),
        }
        if notify and self._notify_url:
            params["notify_url"] = self._notify_url
        if return_url:
            params["return_url"] = return_url
        signature = self._private_key.sign(
            content_to_sign(params).encode("utf-8"), padding.PKCS1v15(), hashes.SHA256()
        )
        params["sign"] = base64.b64encode(signature).decode("ascii")
        return params

    async def _api(
        self, method: str, biz: Mapping[str, Any], *, notify: bool = False
    ) -> dict[str, Any]:
        """One call; its verified `<method>_response` object, raising on transient answers."""
        params = self._signed(method, biz, notify=notify)
        form = {"biz_content": params.pop("biz_content")}
        response = await self.call("POST", self._gateway_url, params=params, data=form)
        if is_transient(response.status_code):
            raise port.GatewayUnavailableError(f"HTTP {response.status_code} from Alipay")
        if not response.is_success:
            raise port.GatewayRejectedError(response.status_code, "Alipay refused the call")
        inner = self._verified(response, method)
        code = str(inner.get("code", ""))
        if code == "20000" or inner.get("sub_code") in _UNAVAILABLE_SUB_CODES:
            raise port.GatewayUnavailableError(f"Alipay {_said(inner)}")
        if code in ("40001", "40002", "40003", "40006", "20001"):
            raise port.GatewayRejectedError(400, f"Alipay {_said(inner)}")
        return inner

    def _verified(self, response: httpx.Response, method: str) -> dict[str, Any]:
        """The answer's response object, its signature checked over its exact text."""
        text = response.text
        document = self.document(response)
        key = f"{method.replace('.', '_')}_response"
        if key not in document:
            key = "error_response"
        inner = document.get(key)
        if not isinstance(inner, dict):
            raise port.GatewayUnavailableError(f"an Alipay answer without {key}")
        sign = document.get("sign")
        if isinstance(sign, str) and sign:
            if not _verifies(self._alipay_key, _raw_object(text, key), sign):
                raise port.GatewayUnavailableError(
                    "an Alipay answer whose signature does not verify with the Alipay public key"
                )
        elif inner.get("code") in ("10000", "10003"):
            # An error may come unsigned; money moving never may.
            raise port.GatewayUnavailableError("an unsigned Alipay answer")
        return inner

    # --- the port ------------------------------------------------------------------------

    async def pay(self, request: port.PaymentRequest) -> port.PayOutcome:
        """Pay, or say where the trade already stands; see the module's docstring."""
        self._check(request.method, request.currency, request.amount)
        trade = await self._query(request.reference)
        if trade is not None:
            return self._outcome(trade, request)
        if request.token is None:
            return self._page_pay(request)
        biz = {
            "out_trade_no": request.reference,
            "total_amount": _yuan(request.amount),
            "subject": self._subject(request),
            "product_code": "GENERAL_WITHHOLDING",
            "agreement_params": {"agreement_no": request.token},
            **_priced_in(request.currency),
            # Where Alipay answers 10003 (the buyer must confirm at the cashier), the trade
            # closes when the page-pay URL handed out for it does.
            "timeout_express": self._timeout_express,
        }
        inner = await self._api("alipay.trade.pay", biz, notify=True)
        code = inner.get("code")
        if code == "10000":
            return self._captured(inner, request)
        if code == "10003":
            return self._page_pay(request)
        sub_code = str(inner.get("sub_code", ""))
        if sub_code == "ACQ.TRADE_HAS_SUCCESS":
            trade = await self._query(request.reference)
            if trade is None:
                raise port.GatewayUnavailableError(
                    "Alipay says the trade is paid but cannot find it"
                )
            return self._outcome(trade, request)
        if sub_code == "ACQ.TRADE_HAS_CLOSE":
            raise port.PaymentDeclinedError("not_approved", False, "the Alipay trade is closed")
        code_, retryable = _DECLINES.get(sub_code, ("declined", False))
        message = _said(inner).replace(request.token, "***")
        raise port.PaymentDeclinedError(code_, retryable, message)

    async def capture(self, request: port.CaptureRequest) -> port.Captured:
        """Never applies: Alipay takes the money when the buyer pays.

        Raises:
            GatewayRejectedError: always.
        """
        raise port.GatewayRejectedError(
            409, "Alipay takes the money when the buyer pays: there is nothing to capture"
        )

    async def void(self, request: port.VoidRequest) -> port.Voided:
        """Close a trade still waiting for the buyer (`alipay.trade.close`)."""
        inner = await self._api("alipay.trade.close", {"out_trade_no": request.reference})
        if inner.get("code") == "10000":
            return port.Voided(provider_reference=str(inner.get("trade_no") or request.reference))
        sub_code = inner.get("sub_code")
        if sub_code == "ACQ.TRADE_NOT_EXIST":
            raise port.GatewayRejectedError(
                404,
                "ACQ.TRADE_NOT_EXIST: the buyer never opened the cashier; the page-pay URL "
                "stops working at its expires_at",
            )
        if sub_code == "ACQ.TRADE_STATUS_ERROR":
            raise port.GatewayRejectedError(409, "the Alipay trade is paid: refund it instead")
        raise port.GatewayRejectedError(400, _said(inner))

    async def refund(self, request: port.RefundRequest) -> port.RefundReceipt:
        """Refund under `out_request_no` = the idempotency key; a repeat answers the same."""
        if request.amount <= 0:
            raise port.GatewayRejectedError(422, "a refund must be more than 0")
        biz: dict[str, Any] = {
            "trade_no": request.charge_id,
            "refund_amount": _yuan(request.amount),
            "out_request_no": request.idempotency_key,
        }
        if request.reference:
            biz["out_trade_no"] = request.reference
        if request.reason:
            biz["refund_reason"] = request.reason[:256]
        inner = await self._api("alipay.trade.refund", biz)
        if inner.get("code") == "10000":
            return port.RefundReceipt(
                refund_id=request.idempotency_key,
                amount=request.amount,
                currency=request.currency or "CNY",
            )
        sub_code = str(inner.get("sub_code", ""))
        status = {
            "ACQ.TRADE_NOT_EXIST": 404,
            "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL": 409,
            "ACQ.TRADE_STATUS_ERROR": 409,
            "ACQ.INVALID_PARAMETER": 422,
        }.get(sub_code, 400)
        raise port.GatewayRejectedError(status, _said(inner))

    async def look_up(self, request: port.LookupRequest) -> port.PaymentView:
        """Where the trade stands (`alipay.trade.query` by `out_trade_no`)."""
        trade = await self._query(request.reference)
        if trade is None:
            return port.PaymentView(
                standing=port.Standing.NOT_FOUND, reference=request.reference, method="alipay"
            )
        return _view(trade)

    async def list_payments(self, since: datetime) -> list[port.PaymentView]:
        """Every payment in Alipay's trade bills from `since`'s day (Beijing) to today.

        A whole month before this one is read as its monthly bill, other days one by one.
        """
        rows: list[dict[str, str]] = []
        for period in bill_periods(since, self._clock()):
            rows += await self._bill(period)
        return [v for v in _bill_views(rows) if v.at is None or v.at >= since]

    async def read_webhook(self, headers: Mapping[str, str], body: bytes) -> port.WebhookNotice:
        """Verify a notify (RSA2 over all fields but `sign` and `sign_type`, and `app_id`)."""
        try:
            pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=True)
        except (UnicodeDecodeError, ValueError):
            raise port.WebhookRejectedError("an Alipay notify that is not a utf-8 form") from None
        fields = dict(pairs)
        if len(fields) != len(pairs):
            raise port.WebhookRejectedError("an Alipay notify with a field given twice")
        for name in ("sign", "sign_type", "notify_id", "app_id", "out_trade_no", "trade_status"):
            if not fields.get(name):
                raise port.WebhookRejectedError(f"an Alipay notify without {name}")
        if fields["sign_type"] != "RSA2":
            raise port.WebhookRejectedError("an Alipay notify not signed RSA2")
        if fields.get("charset", "utf-8").lower() != "utf-8":
            raise port.WebhookRejectedError("an Alipay notify in a charset other than utf-8")
        content = content_to_sign(fields, ("sign", "sign_type"))
        if not _verifies(self._alipay_key, content, fields["sign"]):
            raise port.WebhookRejectedError("an Alipay notify whose signature does not verify")
        if fields["app_id"] != self._app_id:
            raise port.WebhookRejectedError("an Alipay notify for another app")
        if fields["trade_status"] not in _STANDINGS:
            raise port.WebhookRejectedError("an Alipay notify with an unknown trade_status")
        return port.WebhookNotice(
            provider_event_id=fields["notify_id"],
            method="alipay",
            view=_view(fields),
            answer="success",
        )

    # --- helpers -------------------------------------------------------------------------

    @staticmethod
    def _check(method: str, currency: str, amount: int) -> None:
        if method != "alipay":
            raise port.GatewayRejectedError(422, f"the Alipay gateway does not take {method!r}")
        if len(currency) != 3 or not currency.isalpha() or not currency.isupper():
            raise port.GatewayRejectedError(
                422, f"not a currency Alipay can price in: {currency!r}"
            )
        if amount <= 0:
            raise port.GatewayRejectedError(422, "an Alipay payment must be more than 0")

    @staticmethod
    def _subject(request: port.PaymentRequest) -> str:
        subject = _SUBJECT_UNSAFE.sub(" ", request.description or "eSIM data plan").strip()
        return subject[:256] or "eSIM data plan"

    async def _query(self, out_trade_no: str) -> dict[str, Any] | None:
        inner = await self._api("alipay.trade.query", {"out_trade_no": out_trade_no})
        if inner.get("code") == "10000":
            return inner
        if inner.get("sub_code") == "ACQ.TRADE_NOT_EXIST":
            return None
        raise port.GatewayRejectedError(400, _said(inner))

    def _outcome(self, trade: Mapping[str, Any], request: port.PaymentRequest) -> port.PayOutcome:
        status = trade.get("trade_status")
        if status in ("TRADE_SUCCESS", "TRADE_FINISHED"):
            return self._captured(trade, request)
        if status == "WAIT_BUYER_PAY":
            return self._page_pay(request)
        if status == "TRADE_CLOSED":
            if _paid(trade):
                raise port.GatewayRejectedError(
                    409, "the Alipay trade was paid and refunded in full"
                )
            raise port.PaymentDeclinedError(
                "not_approved", False, "the buyer cancelled, or the payment expired, at Alipay"
            )
        raise port.GatewayUnavailableError(f"Alipay answered trade_status {str(status)[:40]!r}")

    @staticmethod
    def _captured(answer: Mapping[str, Any], request: port.PaymentRequest) -> port.Captured:
        trade_no = answer.get("trade_no")
        if not isinstance(trade_no, str) or not trade_no:
            raise port.GatewayUnavailableError("an Alipay payment answer without trade_no")
        amount = _minor(answer.get("total_amount"))
        return port.Captured(
            provider_reference=trade_no,
            amount=request.amount if amount is None else amount,
            currency=str(answer.get("trans_currency") or "CNY"),
        )

    def _page_pay(self, request: port.PaymentRequest) -> port.ActionRequired:
        expires_at = self._clock() + self._page_timeout
        biz = {
            "out_trade_no": request.reference,
            "total_amount": _yuan(request.amount),
            "subject": self._subject(request),
            "product_code": "FAST_INSTANT_TRADE_PAY",
            **_priced_in(request.currency),
            "timeout_express": self._timeout_express,
            "time_expire": expires_at.astimezone(BEIJING).strftime(_TIME),
        }
        params = self._signed(
            "alipay.trade.page.pay", biz, notify=True, return_url=request.return_url
        )
        separator = "&" if "?" in self._gateway_url else "?"
        return port.ActionRequired(
            provider_reference=request.reference,
            url=f"{self._gateway_url}{separator}{urlencode(params)}",
            # Alipay's time_expire has whole seconds: the page closes no later than this.
            expires_at=expires_at.replace(microsecond=0),
        )

    async def _bill(self, bill_date: str) -> list[dict[str, str]]:
        inner = await self._api(
            "alipay.data.dataservice.bill.downloadurl.query",
            {"bill_type": "trade", "bill_date": bill_date},
        )
        if inner.get("sub_code") == "isp.bill_not_exist":
            return []
        url = inner.get("bill_download_url")
        if inner.get("code") != "10000" or not isinstance(url, str) or not url:
            raise port.GatewayRejectedError(400, _said(inner))
        response = await self.call("GET", url)
        if is_transient(response.status_code):
            raise port.GatewayUnavailableError(f"HTTP {response.status_code} for an Alipay bill")
        if not response.is_success:
            raise port.GatewayRejectedError(response.status_code, "Alipay's bill could not be read")
        return _bill_rows(response.text)


def bill_periods(since: datetime, now: datetime) -> list[str]:
    """The bills (`yyyy-MM` for a whole month before `now`'s, else `yyyy-MM-dd`) that cover
    `since`'s day to `now`'s, in Beijing days."""
    day = since.astimezone(BEIJING).date()
    today = now.astimezone(BEIJING).date()
    this_month = today.replace(day=1)
    periods: list[str] = []
    while day <= today:
        next_month = (day.replace(day=28) + timedelta(days=4)).replace(day=1)
        if day.day == 1 and next_month <= this_month:
            periods.append(day.strftime("%Y-%m"))
            day = next_month
        else:
            periods.append(day.isoformat())
            day += timedelta(days=1)
    return periods


_STANDINGS = {
    "WAIT_BUYER_PAY": port.Standing.ACTION_REQUIRED,
    "TRADE_SUCCESS": port.Standing.CAPTURED,
    "TRADE_FINISHED": port.Standing.CAPTURED,
    "TRADE_CLOSED": port.Standing.CANCELLED,
}


def _paid(trade: Mapping[str, Any]) -> bool:
    """A closed trade that had been paid (then refunded in full), not one the buyer left."""
    return bool(trade.get("gmt_payment") or trade.get("send_pay_date")) or bool(
        _minor(trade.get("buyer_pay_amount"))
    )


def _priced_in(currency: str) -> dict[str, str]:
    """A cross-border merchant prices in its own currency (`trans_currency`); CNY needs none."""
    return {} if currency == "CNY" else {"trans_currency": currency}


def _view(trade: Mapping[str, Any]) -> port.PaymentView:
    """A trade, as `trade.query` or a notify tells it."""
    status = str(trade.get("trade_status"))
    standing = _STANDINGS.get(status, port.Standing.NOT_FOUND)
    amount = _minor(trade.get("total_amount"))
    paid = _paid(trade)
    refunded = _minor(trade.get("refund_fee")) or 0
    if standing is port.Standing.CANCELLED and paid:
        standing = port.Standing.REFUNDED
        refunded = refunded or (amount or 0)
    paid_at = _beijing_time(trade.get("gmt_payment") or trade.get("send_pay_date"))
    trade_no = trade.get("trade_no")
    return port.PaymentView(
        standing=standing,
        reference=str(trade.get("out_trade_no") or "") or None,
        provider_reference=trade_no if isinstance(trade_no, str) and trade_no else None,
        amount=amount,
        currency=str(trade.get("trans_currency") or "CNY"),
        captured_amount=(amount or 0) if paid else 0,
        refunded_amount=refunded,
        capture_reference=trade_no if paid and isinstance(trade_no, str) else None,
        method="alipay",
        at=paid_at,
    )


def _raw_object(text: str, key: str) -> str:
    """The exact text of `"key": {...}`'s value in `text`, which Alipay signs."""
    start = text.find(f'"{key}"')
    colon = text.find(":", start + len(key) + 2)
    if start < 0 or colon < 0:
        return ""
    begin = colon + 1
    while begin < len(text) and text[begin] in " \t\r\n":
        begin += 1
    try:
        _, end = json.JSONDecoder().raw_decode(text, begin)
    except ValueError:
        return ""
    return text[begin:end]


def _said(inner: Mapping[str, Any]) -> str:
    """What an Alipay answer says, in one line."""
    parts = [str(inner.get(k)) for k in ("code", "sub_code", "sub_msg") if inner.get(k)]
    return " ".join(parts)[:300] or "an Alipay answer without a code"


def _bill_rows(text: str) -> list[dict[str, str]]:
    """The rows of a trade bill CSV (lines starting `#` are its header and totals)."""
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    reader = csv.reader(io.StringIO("\n".join(lines)))
    header = [cell.strip() for cell in next(reader, [])]
    return [dict(zip(header, (c.strip() for c in row), strict=False)) for row in reader]


def _bill_views(rows: list[dict[str, str]]) -> list[port.PaymentView]:
    """One view per trade in the bill rows: what was paid and what was refunded."""
    trades: dict[str, dict[str, Any]] = {}
    for row in rows:
        trade_no = row.get("支付宝交易号", "")
        amount = _minor(row.get("订单金额（元）"))  # noqa: RUF001 (Alipay's column name)
        if not trade_no or amount is None:
            continue
        trade = trades.setdefault(
            trade_no, {"reference": row.get("商户订单号"), "paid": 0, "refunded": 0, "at": None}
        )
        if row.get("业务类型") == "退款":
            trade["refunded"] += abs(amount)
        else:
            trade["paid"] += amount
            trade["at"] = _beijing_time(row.get("完成时间"))
    views = []
    for trade_no, trade in trades.items():
        paid, refunded = trade["paid"], trade["refunded"]
        fully = paid and refunded >= paid
        views.append(
            port.PaymentView(
                standing=port.Standing.REFUNDED if fully else port.Standing.CAPTURED,
                reference=trade["reference"] or None,
                provider_reference=trade_no,
                amount=paid or None,
                currency="CNY",
                captured_amount=paid,
                refunded_amount=refunded,
                capture_reference=trade_no,
                method="alipay",
                at=trade["at"],
            )
        )
    return views
