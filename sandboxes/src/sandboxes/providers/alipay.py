# Alipay's trade bill is written with full-width punctuation, kept as Alipay writes it.
# ruff: noqa: RUF001
"""Alipay's open platform in the payment sandbox: `gateway.do`, RSA2 both ways, the cashier.

What a merchant's Alipay client sees at `<sandbox>/alipay/gateway.do`, in Alipay's own shapes:

- **Common parameters** (`app_id`, `method`, `format`, `charset`, `sign_type=RSA2`, `timestamp`
  in Beijing time, `version`, `notify_url`, `return_url`, `biz_content` JSON, `sign`) in the
  query string, a form body, or both. Every request is verified with the merchant's public key
  (`PAYMENT_SANDBOX_ALIPAY_APP_PUBLIC_KEY[_FILE]`): all parameters but `sign`, non-empty,
  sorted, `k=v` joined by `&`, SHA256withRSA. Every answer is `{"<method>_response": {...},
  "sign": ...}` signed over the exact text of the inner object with the sandbox's private key
  (`PAYMENT_SANDBOX_ALIPAY_PRIVATE_KEY[_FILE]`), always HTTP 200, `code` 10000 on success,
  10003 waiting for the buyer, 20000 unavailable (transient), 40001/40002 a bad request and
  40004 a business failure with `sub_code` (`ACQ.TRADE_NOT_EXIST`, ...). Without both keys the
  gateway answers every call `40002 isv.sandbox-keys-missing` (the rest of the payment sandbox
  works as before).
- **`alipay.trade.page.pay`**: the buyer's browser opens the signed gateway URL and gets the
  cashier (plain accessible HTML, no external assets). Opening it creates the trade
  (`WAIT_BUYER_PAY`); until then `alipay.trade.query` answers `ACQ.TRADE_NOT_EXIST`, as at
  Alipay. `POST <same url>` with `decision` = `approve` or `cancel` answers 303 to `return_url`
  with Alipay's signed return parameters; approve makes the trade `TRADE_SUCCESS` (a capture in
  the ledger), cancel `TRADE_CLOSED` (the contract's sandbox rule; Alipay itself just lets the
  trade time out). Either way a signed notify goes out (`TRADE_CLOSED` notifies are the ones
  Alipay sends when the merchant turns them on; a trade closed by its expiry or by
  `trade.close`, and a refund, send none here). `time_expire` (absolute) and
  `timeout_express` (from the trade's creation) close an unpaid trade when they pass, checked
  whenever the trade is touched.
- **`alipay.trade.pay`** with a saved source (`agreement_params.agreement_no`, or `auth_code`
  with `scene`) pays at once, its suffix deciding as the contract's table says: `_ok` paid,
  `_declined` `ACQ.PAYMENT_FAIL`, `_insufficient` `ACQ.BUYER_BALANCE_NOT_ENOUGH` every time,
  `_flaky` two `20000` answers (per `out_trade_no`) then paid, `_slow` paid after the slow
  delay, `_action` `10003` with the trade `WAIT_BUYER_PAY` (the buyer pays it at the cashier:
  page pay with the same `out_trade_no` and amount), `_expired` `ACQ.AGREEMENT_INVALID`; any
  other source `ACQ.AGREEMENT_NOT_EXIST`. A declined source leaves no trade, so a later attempt
  under the same `out_trade_no` is judged afresh; a paid or closed one answers
  `ACQ.TRADE_HAS_SUCCESS` / `ACQ.TRADE_HAS_CLOSE`.
- **`alipay.trade.query`**, **`alipay.trade.refund`** (`out_request_no` is the idempotency
  key: a repeat answers the same with `fund_change` `N`; a full refund closes the trade, as at
  Alipay), **`alipay.trade.close`** (an unpaid trade; closing a closed one again succeeds).
- **Notifies** (form-encoded, `notify_type=trade_status_sync`, `notify_id`, signed over all
  fields but `sign` and `sign_type`) go to the request's own `notify_url`, or else to
  `<webhook_base_url>/webhooks/alipay` (Alipay's console default), or nowhere when both are
  empty. They are redelivered until the answer's body is the literal `success`, 8 attempts on
  Alipay's schedule (4m, 10m, 10m, 1h, 2h, 6h, 15h after the first) multiplied by
  `PAYMENT_SANDBOX_ALIPAY_NOTIFY_SCALE`.
- **Reconciliation**: `alipay.data.dataservice.bill.downloadurl.query` (`bill_type=trade`,
  `bill_date` `yyyy-MM-dd` or `yyyy-MM`, Beijing days) answers a `bill_download_url` of a CSV
  in Alipay's trade-bill layout (`#` header lines, one row per payment (业务类型 交易) and per
  refund (退款), `#` totals), made from the ledger's Alipay captures and refunds, planted ones
  included. Unlike Alipay the file is plain UTF-8 CSV rather than a zipped GBK one, and today's
  bill is already there (Alipay has it from the next day).

`out_trade_no` is the renewal id the merchant sends; the ledger records captures and refunds
under it as `reference`.
"""

import asyncio
import base64
import binascii
import html
import json
import logging
import re
import secrets
import string
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Self
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from sandboxes.outbound import Reply
from sandboxes.providers.ledger import Entry
from sandboxes.serving import env_float, env_str

if TYPE_CHECKING:  # the package imports this module to list its mount
    from sandboxes.providers import Mount, World

logger = logging.getLogger("sandboxes.payment.alipay")

BEIJING = timezone(timedelta(hours=8), "CST")
"""Alipay's timestamps, notify times and bill days are Beijing time."""

NOTIFY_WAITS_S = (240.0, 600.0, 600.0, 3600.0, 7200.0, 21600.0, 54000.0)
"""Alipay's waits between notify attempts: 8 attempts over about 25 hours."""

FLAKY_FAILURES = 2
"""How many `alipay.trade.pay` calls per `out_trade_no` a `_flaky` source fails before paying."""

DEFAULT_APP_ID = "2021000000000001"
DEFAULT_SELLER_ID = "2088000000000001"
DEFAULT_TIMEOUT = timedelta(days=15)
"""How long an unpaid trade stays open when the request names no expiry."""

TradeStatus = Literal["WAIT_BUYER_PAY", "TRADE_SUCCESS", "TRADE_CLOSED", "TRADE_FINISHED"]

_MESSAGES = {
    "10000": "Success",
    "10003": "order success pay inprocess",
    "20000": "Service Currently Unavailable",
    "40001": "Missing Required Arguments",
    "40002": "Invalid Arguments",
    "40004": "Business Failed",
}
_METHODS = frozenset(
    {
        "alipay.trade.page.pay",
        "alipay.trade.pay",
        "alipay.trade.query",
        "alipay.trade.refund",
        "alipay.trade.close",
        "alipay.data.dataservice.bill.downloadurl.query",
    }
)
_OUT_TRADE_NO = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
_AMOUNT = re.compile(r"^\d{1,9}(\.\d{1,2})?$")
_TIMEOUT = re.compile(r"^(\d{1,5})([mhdc])$")
_SAFE_URL = ("http://", "https://")


@dataclass(frozen=True)
class AlipaySandboxSettings:
    """The keys and identities the sandbox's Alipay uses, and how fast it redelivers notifies."""

    app_id: str = DEFAULT_APP_ID
    """The one merchant app the sandbox knows; requests from another are refused."""
    seller_id: str = DEFAULT_SELLER_ID
    private_key_pem: str = field(default="", repr=False)
    """The sandbox's (Alipay's) private key: signs answers, return parameters and notifies."""
    app_public_key_pem: str = ""
    """The merchant app's public key: verifies requests."""
    notify_scale: float = 0.01
    """Multiplies Alipay's notify schedule (1.0: the real 25 hours)."""

    @classmethod
    def from_env(cls) -> Self:
        """Read PAYMENT_SANDBOX_ALIPAY_APP_ID, _SELLER_ID, _PRIVATE_KEY[_FILE],
        _APP_PUBLIC_KEY[_FILE] and _NOTIFY_SCALE (a key's text wins over its file)."""
        return cls(
            app_id=env_str("PAYMENT_SANDBOX_ALIPAY_APP_ID", cls.app_id),
            seller_id=env_str("PAYMENT_SANDBOX_ALIPAY_SELLER_ID", cls.seller_id),
            private_key_pem=_key_setting("PAYMENT_SANDBOX_ALIPAY_PRIVATE_KEY"),
            app_public_key_pem=_key_setting("PAYMENT_SANDBOX_ALIPAY_APP_PUBLIC_KEY"),
            notify_scale=env_float("PAYMENT_SANDBOX_ALIPAY_NOTIFY_SCALE", cls.notify_scale),
        )


def _key_setting(name: str) -> str:
    text = env_str(name, "")
    if text:
        return text
    path = env_str(f"{name}_FILE", "")
    if not path:
        return ""
    try:
        return Path(path).read_text(encoding="ascii")
    except OSError as error:
        raise ValueError(f"{name}_FILE: cannot read {path}: {error.strerror}") from None


# The key reading and RSA2 signing below are written apart from billing's own
# (`billing.gateways.alipay`) on purpose: the sandbox stands for Alipay, so a mistake in the
# merchant's signing must fail against it rather than be shared by both sides and pass. The
# sandboxes also depend on no package of the platform, so nothing could be shared but by copy.
def load_private_key(text: str) -> rsa.RSAPrivateKey:
    """An RSA private key from PEM (PKCS#1 or PKCS#8) or Alipay's bare base64 DER.

    Raises:
        ValueError: not an RSA private key (the message never contains the key).
    """
    key = _read_key(
        text,
        "private",
        partial(serialization.load_pem_private_key, password=None),
        partial(serialization.load_der_private_key, password=None),
    )
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("the private key is not an RSA key")
    return key


def load_public_key(text: str) -> rsa.RSAPublicKey:
    """An RSA public key from PEM or Alipay's bare base64 DER.

    Raises:
        ValueError: not an RSA public key.
    """
    key = _read_key(
        text, "public", serialization.load_pem_public_key, serialization.load_der_public_key
    )
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("the public key is not an RSA key")
    return key


def _read_key(
    text: str, which: str, from_pem: Callable[[bytes], object], from_der: Callable[[bytes], object]
) -> object:
    """A `which` key read from PEM by `from_pem`, or from Alipay's bare base64 DER by `from_der`."""
    try:
        if "-----BEGIN" in text:
            return from_pem(text.encode("ascii"))
        return from_der(base64.b64decode("".join(text.split()), validate=True))
    except (ValueError, TypeError, binascii.Error, UnicodeEncodeError):
        raise ValueError(f"not a readable RSA {which} key (PEM or base64 DER)") from None


def sign_content(params: Mapping[str, str], *, leave_out: tuple[str, ...] = ("sign",)) -> str:
    """Alipay's string to sign: non-empty parameters but `leave_out`, sorted, `k=v&...`."""
    return "&".join(f"{k}={params[k]}" for k in sorted(params) if k not in leave_out and params[k])


def rsa2_sign(key: rsa.RSAPrivateKey, content: str) -> str:
    """SHA256withRSA (PKCS#1 v1.5) of `content`, base64."""
    signature = key.sign(content.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256())
    return base64.b64encode(signature).decode("ascii")


def rsa2_verify(key: rsa.RSAPublicKey, content: str, sign: str) -> bool:
    """Tell whether `sign` is a SHA256withRSA signature of `content` by `key`."""
    try:
        signature = base64.b64decode(sign, validate=True)
        key.verify(signature, content.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


def beijing(moment: datetime) -> str:
    """`yyyy-MM-dd HH:mm:ss` in Beijing time, as every Alipay time is written."""
    return moment.astimezone(BEIJING).strftime("%Y-%m-%d %H:%M:%S")


def _yuan(minor: int) -> str:
    return f"{minor // 100}.{minor % 100:02d}"


class AlipayError(Exception):
    """An answer other than success, in Alipay's codes."""

    def __init__(self, code: str, sub_code: str, sub_msg: str) -> None:
        super().__init__(f"{code} {sub_code}: {sub_msg}")
        self.code = code
        self.sub_code = sub_code
        self.sub_msg = sub_msg


def _missing(name: str) -> AlipayError:
    return AlipayError("40001", f"isv.missing-{name.replace('_', '-')}", f"{name} is required")


def _business(sub_code: str, sub_msg: str) -> AlipayError:
    return AlipayError("40004", sub_code, sub_msg)


@dataclass
class Refund:
    """One refund of a trade, under the merchant's `out_request_no`."""

    out_request_no: str
    amount: int
    at: datetime
    entry_id: str


@dataclass
class Trade:
    """One trade, by the merchant's `out_trade_no`."""

    out_trade_no: str
    trade_no: str
    amount: int
    subject: str
    status: TradeStatus
    created_at: datetime
    expires_at: datetime
    notify_url: str
    paid_at: datetime | None = None
    refunds: dict[str, Refund] = field(default_factory=dict)
    currency: str = "CNY"
    """The price's currency: `trans_currency` of a cross-border merchant, else CNY."""

    @property
    def refunded(self) -> int:
        """How much of the trade was given back."""
        return sum(r.amount for r in self.refunds.values())


@dataclass
class _Call:
    """A verified request: its method, parameters and parsed `biz_content`."""

    method: str
    params: dict[str, str]
    biz: dict[str, Any]


_CASHIER = string.Template("""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title · Alipay cashier (sandbox)</title>
<style>
body { font-family: system-ui, sans-serif; margin: 0; padding: 1rem; background: #f5f7fa; }
main { max-width: 28rem; margin: 0 auto; background: #fff; padding: 1.5rem;
       border-radius: .5rem; border: 1px solid #d0d7de; }
dl { display: grid; grid-template-columns: auto 1fr; gap: .5rem 1rem; }
dt { color: #444; } dd { margin: 0; font-weight: 600; }
.actions { display: flex; gap: 1rem; flex-wrap: wrap; margin-top: 1.5rem; }
button { font-size: 1rem; padding: .75rem 1.25rem; border-radius: .375rem; cursor: pointer; }
button[value=approve] { background: #1677ff; color: #fff; border: 2px solid #0b4fb3; }
button[value=cancel] { background: #fff; color: #222; border: 2px solid #666; }
button:focus-visible { outline: 3px solid #222; outline-offset: 2px; }
</style>
</head>
<body>
<main>
<h1>$title</h1>
<p>$message</p>
$body
</main>
</body>
</html>
""")

_FORM = string.Template("""<dl>
<dt>Merchant</dt><dd>$merchant</dd>
<dt>Order</dt><dd>$subject</dd>
<dt>Merchant order number</dt><dd>$out_trade_no</dd>
<dt>Amount</dt><dd>¥$amount CNY</dd>
<dt>Pay before</dt><dd><time datetime="$expires_iso">$expires</time> (Beijing time)</dd>
</dl>
<form method="post" action="$action">
<div class="actions">
<button type="submit" name="decision" value="approve">Approve payment</button>
<button type="submit" name="decision" value="cancel">Cancel payment</button>
</div>
</form>
""")


class AlipaySandbox:
    """The sandbox's Alipay: its trades, bills and keys, and the answers it gives."""

    def __init__(self, world: "World", settings: AlipaySandboxSettings) -> None:
        self._world = world
        self._settings = settings
        self._private_key: rsa.RSAPrivateKey | None = None
        self._app_public_key: rsa.RSAPublicKey | None = None
        if settings.private_key_pem and settings.app_public_key_pem:
            self._private_key = load_private_key(settings.private_key_pem)
            self._app_public_key = load_public_key(settings.app_public_key_pem)
        else:
            logger.warning(
                "alipay: no keys (PAYMENT_SANDBOX_ALIPAY_PRIVATE_KEY_FILE and "
                "PAYMENT_SANDBOX_ALIPAY_APP_PUBLIC_KEY_FILE): gateway.do refuses every call"
            )
        self._trades: dict[str, Trade] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._flaky: dict[str, int] = {}
        self._bills: dict[str, str] = {}

    def reset(self) -> None:
        """Forget every trade, bill and `_flaky` count (for the sandbox's `/sandbox/reset`)."""
        self._trades.clear()
        self._locks.clear()
        self._flaky.clear()
        self._bills.clear()

    # --- the gateway ---------------------------------------------------------------------

    def verify(self, params: dict[str, str]) -> _Call:
        """Check the common parameters and the signature; parse `biz_content`.

        Raises:
            AlipayError: 40001 / 40002 as Alipay answers them.
        """
        if self._private_key is None or self._app_public_key is None:
            raise AlipayError(
                "40002",
                "isv.sandbox-keys-missing",
                "the sandbox has no Alipay keys: set PAYMENT_SANDBOX_ALIPAY_PRIVATE_KEY_FILE and "
                "PAYMENT_SANDBOX_ALIPAY_APP_PUBLIC_KEY_FILE",
            )
        for name in ("method", "app_id", "sign_type", "sign", "timestamp", "version"):
            if not params.get(name):
                raise _missing(name)
        method = params["method"]
        if method not in _METHODS:
            raise AlipayError("40002", "isv.invalid-method", f"unknown method {method[:80]!r}")
        if params["app_id"] != self._settings.app_id:
            raise AlipayError("40002", "isv.invalid-app-id", "no such app_id")
        if params["sign_type"] != "RSA2":
            raise AlipayError("40002", "isv.invalid-signature-type", "sign_type must be RSA2")
        if params.get("charset", "utf-8").lower() != "utf-8":
            raise AlipayError("40002", "isv.invalid-charset", "only charset utf-8 is served here")
        if params.get("format", "JSON").upper() != "JSON":
            raise AlipayError("40002", "isv.invalid-format", "format must be JSON")
        if params["version"] != "1.0":
            raise AlipayError("40002", "isv.invalid-version", "version must be 1.0")
        try:
            datetime.strptime(params["timestamp"], "%Y-%m-%d %H:%M:%S")
        except ValueError:
            raise AlipayError(
                "40002", "isv.invalid-timestamp", "timestamp must be yyyy-MM-dd HH:mm:ss"
            ) from None
        if not rsa2_verify(self._app_public_key, sign_content(params), params["sign"]):
            raise AlipayError(
                "40002", "isv.invalid-signature", "the signature does not match the app's key"
            )
        try:
            biz = json.loads(params.get("biz_content") or "{}")
        except ValueError:
            raise AlipayError(
                "40002", "isv.invalid-biz-content", "biz_content is not JSON"
            ) from None
        if not isinstance(biz, dict):
            raise AlipayError("40002", "isv.invalid-biz-content", "biz_content is not an object")
        return _Call(method, params, biz)

    def answer(self, method: str | None, payload: dict[str, Any]) -> Response:
        """Alipay's answer: `{"<method>_response": payload, "sign": ...}`, signed when it can be."""
        key = f"{method.replace('.', '_')}_response" if method in _METHODS else "error_response"
        inner = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        body = f'{{"{key}":{inner}'
        if self._private_key is not None:
            body += f',"sign":"{rsa2_sign(self._private_key, inner)}"'
        body += "}"
        return Response(body, media_type="application/json;charset=utf-8")

    async def call(self, params: dict[str, str]) -> Response:
        """Serve one API call (everything but the cashier)."""
        method = params.get("method")
        try:
            call = self.verify(params)
            if call.method == "alipay.trade.page.pay":
                raise AlipayError(
                    "40002", "isv.invalid-method", "page pay is opened by the buyer's browser"
                )
            handler = {
                "alipay.trade.pay": self.trade_pay,
                "alipay.trade.query": self.trade_query,
                "alipay.trade.refund": self.trade_refund,
                "alipay.trade.close": self.trade_close,
                "alipay.data.dataservice.bill.downloadurl.query": self.bill_url,
            }[call.method]
            result = await handler(call)
            code = result.pop("code", "10000")
            payload = {"code": code, "msg": _MESSAGES[code], **result}
        except AlipayError as error:
            payload = {
                "code": error.code,
                "msg": _MESSAGES[error.code],
                "sub_code": error.sub_code,
                "sub_msg": error.sub_msg,
            }
            logger.info("alipay %s: %s %s", method, error.code, error.sub_code)
        return self.answer(method, payload)

    # --- trades --------------------------------------------------------------------------

    def _lock(self, out_trade_no: str) -> asyncio.Lock:
        return self._locks.setdefault(out_trade_no, asyncio.Lock())

    def _find(self, biz: Mapping[str, Any]) -> Trade:
        out_trade_no = biz.get("out_trade_no")
        trade_no = biz.get("trade_no")
        if not out_trade_no and not trade_no:
            raise _business("ACQ.INVALID_PARAMETER", "out_trade_no or trade_no is required")
        trade = self._trades.get(str(out_trade_no)) if out_trade_no else None
        if trade is None and trade_no:
            trade = next((t for t in self._trades.values() if t.trade_no == trade_no), None)
        if trade is None or (trade_no and trade.trade_no != trade_no):
            raise _business("ACQ.TRADE_NOT_EXIST", "trade not exist")
        self._expire(trade)
        return trade

    def _expire(self, trade: Trade) -> None:
        if trade.status == "WAIT_BUYER_PAY" and self._world.clock() >= trade.expires_at:
            trade.status = "TRADE_CLOSED"
            logger.info("alipay trade %s closed: not paid in time", trade.out_trade_no)

    def _order(self, biz: Mapping[str, Any]) -> tuple[str, int, str]:
        out_trade_no = biz.get("out_trade_no")
        if not isinstance(out_trade_no, str) or not _OUT_TRADE_NO.match(out_trade_no):
            raise _business(
                "ACQ.INVALID_PARAMETER",
                "out_trade_no must be 1-64 letters, digits, '_' or '-'",
            )
        amount = _minor(biz.get("total_amount"), "total_amount")
        subject = biz.get("subject")
        if not isinstance(subject, str) or not subject.strip():
            raise _business("ACQ.INVALID_PARAMETER", "subject is required")
        return out_trade_no, amount, subject[:256]

    @staticmethod
    def _currency(biz: Mapping[str, Any]) -> str:
        """`trans_currency` (a cross-border merchant prices in its own currency), else CNY."""
        currency = biz.get("trans_currency", "CNY")
        if not isinstance(currency, str) or not re.fullmatch(r"[A-Z]{3}", currency):
            raise _business("ACQ.INVALID_PARAMETER", "trans_currency must be like USD")
        return currency

    def _deadline(self, biz: Mapping[str, Any], now: datetime) -> datetime:
        deadline = now + DEFAULT_TIMEOUT
        timeout = biz.get("timeout_express")
        if timeout is not None:
            match = _TIMEOUT.match(str(timeout))
            if match is None:
                raise _business("ACQ.INVALID_PARAMETER", "timeout_express must be like 30m")
            count, unit = int(match[1]), match[2]
            if unit == "c":  # the end of the day the trade was created on
                day = now.astimezone(BEIJING).date() + timedelta(days=1)
                deadline = datetime(day.year, day.month, day.day, tzinfo=BEIJING)
            else:
                deadline = now + timedelta(minutes=count * {"m": 1, "h": 60, "d": 1440}[unit])
        time_expire = biz.get("time_expire")
        if time_expire is not None:
            try:
                absolute = datetime.strptime(str(time_expire), "%Y-%m-%d %H:%M:%S")
            except ValueError:
                raise _business(
                    "ACQ.INVALID_PARAMETER", "time_expire must be yyyy-MM-dd HH:mm:ss"
                ) from None
            deadline = min(deadline, absolute.replace(tzinfo=BEIJING))
        return deadline

    def _notify_url(self, params: Mapping[str, str]) -> str:
        own = params.get("notify_url", "")
        if own:
            if not own.startswith(_SAFE_URL):
                raise AlipayError("40002", "isv.invalid-notify-url", "notify_url must be http(s)")
            return own
        base = self._world.webhook_base_url
        return f"{base}/webhooks/alipay" if base else ""

    def _new_trade(
        self, params: Mapping[str, str], biz: Mapping[str, Any], status: TradeStatus
    ) -> Trade:
        out_trade_no, amount, subject = self._order(biz)
        now = self._world.clock()
        trade = Trade(
            out_trade_no=out_trade_no,
            trade_no=f"{now.astimezone(BEIJING):%Y%m%d}2200{secrets.randbelow(10**16):016d}",
            amount=amount,
            subject=subject,
            status=status,
            created_at=now,
            expires_at=self._deadline(biz, now),
            notify_url=self._notify_url(params),
            currency=self._currency(biz),
        )
        self._trades[out_trade_no] = trade
        return trade

    def _pay(self, trade: Trade) -> None:
        trade.status = "TRADE_SUCCESS"
        trade.paid_at = self._world.clock()
        self._world.ledger.record(
            "captures",
            id=trade.trade_no,
            reference=trade.out_trade_no,
            method="alipay",
            amount=trade.amount,
            currency=trade.currency,
            provider="alipay",
            provider_reference=trade.trade_no,
        )
        logger.info(
            "alipay trade %s paid %s %s out_trade_no=%s",
            trade.trade_no,
            _yuan(trade.amount),
            trade.currency,
            trade.out_trade_no,
        )
        self._notify(trade)

    def _trade_fields(self, trade: Trade) -> dict[str, Any]:
        paid = trade.paid_at is not None
        fields: dict[str, Any] = {
            "trade_no": trade.trade_no,
            "out_trade_no": trade.out_trade_no,
            "buyer_logon_id": "tra***@example.com",
            "buyer_user_id": "2088000000000099",
            "total_amount": _yuan(trade.amount),
            "buyer_pay_amount": _yuan(trade.amount if paid else 0),
            "receipt_amount": _yuan(trade.amount if paid else 0),
        }
        if trade.currency != "CNY":
            fields["trans_currency"] = trade.currency
        if trade.paid_at is not None:
            fields["send_pay_date"] = beijing(trade.paid_at)
        return fields

    async def trade_pay(self, call: _Call) -> dict[str, Any]:
        """`alipay.trade.pay`: pay at once from a saved source, its suffix deciding."""
        out_trade_no, amount, _ = self._order(call.biz)
        agreement = call.biz.get("agreement_params")
        source = agreement.get("agreement_no") if isinstance(agreement, dict) else None
        source = source or call.biz.get("auth_code")
        if not isinstance(source, str) or not source:
            raise _business(
                "ACQ.INVALID_PARAMETER", "agreement_params.agreement_no or auth_code is required"
            )
        async with self._lock(out_trade_no):
            trade = self._trades.get(out_trade_no)
            if trade is not None:
                self._expire(trade)
                if trade.amount != amount:
                    raise _business("ACQ.CONTEXT_INCONSISTENT", "the trade has another amount")
                if trade.status in ("TRADE_SUCCESS", "TRADE_FINISHED"):
                    raise _business("ACQ.TRADE_HAS_SUCCESS", "the trade is already paid")
                if trade.status == "TRADE_CLOSED":
                    raise _business("ACQ.TRADE_HAS_CLOSE", "the trade is closed")
                return {"code": "10003", **self._trade_fields(trade)}
            if source.endswith("_flaky"):
                failures = self._flaky.get(out_trade_no, 0)
                if failures < FLAKY_FAILURES:
                    self._flaky[out_trade_no] = failures + 1
                    raise AlipayError("20000", "isp.unknow-error", "system busy, try again")
            elif source.endswith("_declined"):
                raise _business("ACQ.PAYMENT_FAIL", "the payment failed")
            elif source.endswith("_insufficient"):
                raise _business("ACQ.BUYER_BALANCE_NOT_ENOUGH", "the buyer's balance is too low")
            elif source.endswith("_expired"):
                raise _business("ACQ.AGREEMENT_INVALID", "the agreement is no longer valid")
            elif source.endswith("_action"):
                trade = self._new_trade(call.params, call.biz, "WAIT_BUYER_PAY")
                return {"code": "10003", **self._trade_fields(trade)}
            elif source.endswith("_slow"):
                await self._world.slow("alipay", "pay", out_trade_no)
            elif not source.endswith("_ok"):
                raise _business("ACQ.AGREEMENT_NOT_EXIST", "no such agreement")
            trade = self._new_trade(call.params, call.biz, "WAIT_BUYER_PAY")
            self._pay(trade)
            assert trade.paid_at is not None
            return {**self._trade_fields(trade), "gmt_payment": beijing(trade.paid_at)}

    async def trade_query(self, call: _Call) -> dict[str, Any]:
        """`alipay.trade.query`: where a trade stands; `ACQ.TRADE_NOT_EXIST` before it exists."""
        trade = self._find(call.biz)
        return {**self._trade_fields(trade), "trade_status": trade.status}

    async def trade_refund(self, call: _Call) -> dict[str, Any]:
        """`alipay.trade.refund`: once per `out_request_no`; a full refund closes the trade."""
        amount = _minor(call.biz.get("refund_amount"), "refund_amount")
        trade = self._find(call.biz)
        request_no = str(call.biz.get("out_request_no") or trade.out_trade_no)[:64]
        async with self._lock(trade.out_trade_no):
            existing = trade.refunds.get(request_no)
            fund_change = "N"
            if existing is not None:
                if existing.amount != amount:
                    raise _business(
                        "ACQ.INVALID_PARAMETER",
                        "out_request_no was already used with another refund_amount",
                    )
            else:
                if trade.status != "TRADE_SUCCESS":
                    raise _business("ACQ.TRADE_STATUS_ERROR", f"the trade is {trade.status}")
                if amount > trade.amount - trade.refunded:
                    raise _business("ACQ.REFUND_AMT_NOT_EQUAL_TOTAL", "more than is left to refund")
                entry = self._world.ledger.record(
                    "refunds",
                    id=f"{trade.trade_no}-{len(trade.refunds) + 1}",
                    reference=trade.out_trade_no,
                    method="alipay",
                    amount=amount,
                    currency=trade.currency,
                    provider="alipay",
                    provider_reference=trade.trade_no,
                    charge_id=trade.trade_no,
                )
                existing = Refund(request_no, amount, self._world.clock(), entry.id)
                trade.refunds[request_no] = existing
                fund_change = "Y"
                if trade.refunded == trade.amount:
                    trade.status = "TRADE_CLOSED"
                logger.info(
                    "alipay refund %s CNY of trade %s out_trade_no=%s",
                    _yuan(amount),
                    trade.trade_no,
                    trade.out_trade_no,
                )
        return {
            "trade_no": trade.trade_no,
            "out_trade_no": trade.out_trade_no,
            "buyer_logon_id": "tra***@example.com",
            "buyer_user_id": "2088000000000099",
            "fund_change": fund_change,
            "refund_fee": _yuan(trade.refunded),
            "send_back_fee": _yuan(existing.amount),
            "gmt_refund_pay": beijing(existing.at),
            "out_request_no": request_no,
        }

    async def trade_close(self, call: _Call) -> dict[str, Any]:
        """`alipay.trade.close`: close an unpaid trade (a closed one: success again)."""
        trade = self._find(call.biz)
        async with self._lock(trade.out_trade_no):
            if trade.status in ("TRADE_SUCCESS", "TRADE_FINISHED"):
                raise _business("ACQ.TRADE_STATUS_ERROR", "a paid trade cannot be closed")
            if trade.status == "WAIT_BUYER_PAY":
                trade.status = "TRADE_CLOSED"
                logger.info("alipay trade %s closed by the merchant", trade.out_trade_no)
        return {"trade_no": trade.trade_no, "out_trade_no": trade.out_trade_no}

    # --- notifies and return parameters --------------------------------------------------

    def _signed(self, fields: dict[str, str]) -> dict[str, str]:
        assert self._private_key is not None
        fields = {k: v for k, v in fields.items() if v}
        fields["sign_type"] = "RSA2"
        content = sign_content(fields, leave_out=("sign", "sign_type"))
        fields["sign"] = rsa2_sign(self._private_key, content)
        return fields

    def _notify(self, trade: Trade) -> None:
        if not trade.notify_url:
            return
        now = self._world.clock()
        notify_id = uuid.uuid4().hex
        fields = {
            "notify_time": beijing(now),
            "notify_type": "trade_status_sync",
            "notify_id": notify_id,
            "app_id": self._settings.app_id,
            "auth_app_id": self._settings.app_id,
            "charset": "utf-8",
            "version": "1.0",
            "trade_no": trade.trade_no,
            "out_trade_no": trade.out_trade_no,
            "trade_status": trade.status,
            "total_amount": _yuan(trade.amount),
            "subject": trade.subject,
            "seller_id": self._settings.seller_id,
            "buyer_id": "2088000000000099",
            "gmt_create": beijing(trade.created_at),
            "gmt_close": beijing(now) if trade.status == "TRADE_CLOSED" else "",
        }
        if trade.currency != "CNY":
            fields["trans_currency"] = trade.currency
        if trade.paid_at is not None:
            fields |= {
                "gmt_payment": beijing(trade.paid_at),
                "receipt_amount": _yuan(trade.amount),
                "buyer_pay_amount": _yuan(trade.amount),
            }
        body = urlencode(self._signed(fields)).encode("ascii")
        self._world.deliveries.send(
            id=notify_id,
            provider="alipay",
            url=trade.notify_url,
            event=f"trade_status_sync:{trade.status}",
            body=body,
            headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
            waits=[w * self._settings.notify_scale for w in NOTIFY_WAITS_S],
            reference=trade.out_trade_no,
            acknowledged=_acknowledged,
        )

    def _return_to(self, return_url: str, trade: Trade) -> str:
        fields = self._signed(
            {
                "charset": "utf-8",
                "out_trade_no": trade.out_trade_no,
                "method": "alipay.trade.page.pay.return",
                "total_amount": _yuan(trade.amount),
                "trade_no": trade.trade_no,
                "auth_app_id": self._settings.app_id,
                "version": "1.0",
                "app_id": self._settings.app_id,
                "seller_id": self._settings.seller_id,
                "timestamp": beijing(self._world.clock()),
            }
        )
        parts = urlsplit(return_url)
        query = parse_qsl(parts.query, keep_blank_values=True) + list(fields.items())
        return urlunsplit(parts._replace(query=urlencode(query)))

    # --- the cashier ---------------------------------------------------------------------

    async def cashier(self, params: dict[str, str], decision: str | None) -> Response:
        """The buyer's page for `alipay.trade.page.pay`: show it, or take the decision."""
        try:
            call = self.verify(params)
            if call.method != "alipay.trade.page.pay":
                raise AlipayError("40002", "isv.invalid-method", "not a page pay")
            if call.biz.get("product_code", "FAST_INSTANT_TRADE_PAY") != ("FAST_INSTANT_TRADE_PAY"):
                raise _business(
                    "ACQ.INVALID_PARAMETER", "page pay takes product_code FAST_INSTANT_TRADE_PAY"
                )
            return_url = params.get("return_url", "")
            if return_url and not return_url.startswith(_SAFE_URL):
                raise AlipayError("40002", "isv.invalid-return-url", "return_url must be http(s)")
            out_trade_no, amount, _ = self._order(call.biz)
            async with self._lock(out_trade_no):
                trade = await self._open(call, out_trade_no, amount)
                if decision is None:
                    return self._page(call, trade)
                if decision not in ("approve", "cancel"):
                    return _page(
                        "Choose approve or cancel",
                        "The form field decision must be approve or cancel.",
                        status=400,
                    )
                if trade.status == "WAIT_BUYER_PAY":
                    if decision == "approve":
                        self._pay(trade)
                    else:
                        trade.status = "TRADE_CLOSED"
                        logger.info("alipay trade %s cancelled by the buyer", out_trade_no)
                        self._notify(trade)
                elif (decision == "approve") != (trade.status == "TRADE_SUCCESS"):
                    return self._page(call, trade, status=409)
        except AlipayError as error:
            return _page(
                "This payment cannot be made",
                f"Alipay refused the request: {error.code} {error.sub_code} ({error.sub_msg}).",
                status=400,
            )
        if not return_url:
            return self._page(call, trade)
        return RedirectResponse(self._return_to(return_url, trade), status_code=303)

    async def _open(self, call: _Call, out_trade_no: str, amount: int) -> Trade:
        trade = self._trades.get(out_trade_no)
        if trade is None:
            deadline = self._deadline(call.biz, self._world.clock())
            if self._world.clock() >= deadline:
                raise _business("ACQ.TRADE_HAS_CLOSE", "the payment link has expired")
            return self._new_trade(call.params, call.biz, "WAIT_BUYER_PAY")
        # A trade made by trade.pay (`_action`) and paid here: the link's own expiry binds too.
        trade.expires_at = min(trade.expires_at, self._deadline(call.biz, trade.created_at))
        self._expire(trade)
        if trade.amount != amount:
            raise _business("ACQ.CONTEXT_INCONSISTENT", "the trade has another amount")
        return trade

    def _page(self, call: _Call, trade: Trade, *, status: int = 200) -> Response:
        if trade.status == "WAIT_BUYER_PAY":
            action = "/alipay/gateway.do?" + urlencode(call.params)
            body = _FORM.substitute(
                merchant=html.escape(self._settings.seller_id),
                subject=html.escape(trade.subject),
                out_trade_no=html.escape(trade.out_trade_no),
                amount=_yuan(trade.amount),
                expires_iso=trade.expires_at.isoformat(),
                expires=beijing(trade.expires_at),
                action=html.escape(action, quote=True),
            )
            return _page("Pay with Alipay", "Approve or cancel this payment.", body, status)
        if trade.status in ("TRADE_SUCCESS", "TRADE_FINISHED"):
            return _page("Paid", f"You paid ¥{_yuan(trade.amount)} CNY.", status=status)
        return _page("Closed", "This payment is closed; nothing was taken.", status=status)

    # --- bills ---------------------------------------------------------------------------

    async def bill_url(self, call: _Call) -> dict[str, Any]:
        """`alipay.data.dataservice.bill.downloadurl.query`: a URL of the trade bill's CSV."""
        bill_type = call.biz.get("bill_type")
        if bill_type not in ("trade", "signcustomer"):
            raise _business("isp.bill_type_error", "bill_type must be trade or signcustomer")
        bill_date = str(call.biz.get("bill_date", ""))
        try:
            first = datetime.strptime(bill_date, "%Y-%m-%d" if len(bill_date) == 10 else "%Y-%m")
        except ValueError:
            raise _business(
                "isp.bill_date_error", "bill_date must be yyyy-MM-dd or yyyy-MM"
            ) from None
        if first.date() > self._world.clock().astimezone(BEIJING).date():
            raise _business("isp.bill_not_exist", "no bill for a day still to come")
        bill_id = secrets.token_urlsafe(16)
        self._bills[bill_id] = bill_date
        return {"bill_download_url": f"{self._world.public_url}/alipay/bills/{bill_id}.csv"}

    def bill(self, bill_id: str) -> Response:
        """The CSV of one bill, in the layout of Alipay's trade bill."""
        period = self._bills.get(bill_id)
        if period is None:
            return Response("no such bill\n", status_code=404, media_type="text/plain")

        def within(entry: Entry) -> bool:
            day = entry.created_at.astimezone(BEIJING).strftime("%Y-%m-%d")
            return entry.provider == "alipay" and day.startswith(period)

        captures = [e for e in self._world.ledger.entries("captures") if within(e)]
        refunds = [e for e in self._world.ledger.entries("refunds") if within(e)]
        subjects = {t.trade_no: t.subject for t in self._trades.values()}
        requests = {
            r.entry_id: r.out_request_no for t in self._trades.values() for r in t.refunds.values()
        }
        lines = [
            "#支付宝业务明细查询",
            f"#账号：[{self._settings.seller_id}]",
            f"#起始日期：[{period}]   终止日期：[{period}]",
            "#-----------------------------------------业务明细列表"
            "----------------------------------------",
            ",".join(_BILL_COLUMNS),
        ]
        for kind, entry in [*(("交易", e) for e in captures), *(("退款", e) for e in refunds)]:
            trade_no = entry.provider_reference or entry.id
            sign = "-" if kind == "退款" else ""
            row = {
                "支付宝交易号": trade_no,
                "商户订单号": entry.reference,
                "业务类型": kind,
                "商品名称": subjects.get(trade_no, ""),
                "创建时间": beijing(entry.created_at),
                "完成时间": beijing(entry.created_at),
                "订单金额（元）": sign + _yuan(entry.amount),
                "商家实收（元）": sign + _yuan(entry.amount),
                "退款批次号/请求号": requests.get(entry.id, ""),
            }
            lines.append(",".join(_csv_cell(row.get(c, "")) for c in _BILL_COLUMNS))
        lines += [
            "#-----------------------------------------业务明细列表结束"
            "------------------------------------",
            f"#交易合计：{len(captures)}笔，商家实收共{_yuan(sum(e.amount for e in captures))}元",
            f"#退款合计：{len(refunds)}笔，商家实收共-{_yuan(sum(e.amount for e in refunds))}元",
            f"#导出时间：[{beijing(self._world.clock())}]",
        ]
        return Response("\n".join(lines) + "\n", media_type="text/csv; charset=utf-8")


_BILL_COLUMNS = (
    "支付宝交易号",
    "商户订单号",
    "业务类型",
    "商品名称",
    "创建时间",
    "完成时间",
    "门店编号",
    "门店名称",
    "操作员",
    "终端号",
    "对方账户",
    "订单金额（元）",
    "商家实收（元）",
    "支付宝红包（元）",
    "集分宝（元）",
    "支付宝优惠（元）",
    "商家优惠（元）",
    "券核销金额（元）",
    "券名称",
    "商家红包消费金额（元）",
    "卡消费金额（元）",
    "退款批次号/请求号",
    "服务费（元）",
    "分润（元）",
    "备注",
)
"""The columns of Alipay's trade bill (业务明细), in its order."""


def _csv_cell(value: str) -> str:
    if any(c in value for c in ',"\n'):
        return '"' + value.replace('"', '""') + '"'
    return value


def _minor(value: Any, name: str) -> int:
    if value is None or value == "":
        raise _business("ACQ.INVALID_PARAMETER", f"{name} is required")
    text = str(value)
    if not _AMOUNT.match(text):
        raise _business("ACQ.INVALID_PARAMETER", f"{name} must be yuan with 2 decimals at most")
    try:
        minor = int(Decimal(text) * 100)
    except InvalidOperation:
        raise _business("ACQ.INVALID_PARAMETER", f"{name} is not a number") from None
    if minor <= 0:
        raise _business("ACQ.INVALID_PARAMETER", f"{name} must be more than 0")
    return minor


def _acknowledged(reply: Reply) -> bool:
    """Alipay's rule: received only when the body is the literal `success`."""
    return reply.status == 200 and reply.body == b"success"


def _page(title: str, message: str, body: str = "", status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        _CASHIER.substitute(title=html.escape(title), message=html.escape(message), body=body),
        status_code=status,
    )


async def _params(request: Request) -> dict[str, str]:
    """The query string and a form body together, as Alipay reads a gateway call."""
    params = dict(request.query_params)
    if request.method == "POST":
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("application/x-www-form-urlencoded"):
            body = (await request.body()).decode("utf-8", errors="replace")
            params |= dict(parse_qsl(body, keep_blank_values=True))
    return params


def mount(app: FastAPI, world: "World") -> None:
    """Add Alipay's gateway, cashier and bills under `/alipay`, keys read from the environment."""
    mount_with(AlipaySandboxSettings.from_env())(app, world)


def mount_with(settings: AlipaySandboxSettings) -> "Mount":
    """A `mount` with the given settings (tests give their own keys)."""

    def _mount(app: FastAPI, world: "World") -> None:
        alipay = AlipaySandbox(world, settings)
        app.state.alipay = alipay
        router = APIRouter(prefix="/alipay", tags=["alipay"])

        @router.api_route("/gateway.do", methods=["GET", "POST"], response_model=None)
        async def gateway(request: Request) -> Response:
            """Alipay's one entry: API calls answer JSON, page pay is the buyer's cashier."""
            params = await _params(request)
            if params.get("method") == "alipay.trade.page.pay":
                decision = params.pop("decision", None) if request.method == "POST" else None
                return await alipay.cashier(params, decision)
            return await alipay.call(params)

        @router.get("/bills/{bill_id}.csv", response_model=None)
        async def bill(bill_id: str) -> Response:
            """A trade bill whose URL `bill.downloadurl.query` gave."""
            return alipay.bill(bill_id)

        app.include_router(router)

    return _mount
