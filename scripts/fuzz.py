"""`make fuzz`: schemathesis against the four running services (`make run`), signed in.

Accounts is fuzzed with a fresh traveller's access token; billing, provisioning and notifier
with the operator token (OPERATOR_TOKEN, else var/operator.token where `make run` wrote one).
Every check runs except positive_data_acceptance (the API may refuse data the schema allows,
e.g. an unknown card). Exits non-zero when schemathesis finds anything.

Billing's webhooks (`POST /webhooks/{stripe,paypal,alipay}`) are fuzzed from the shapes its
OpenAPI document gives them, with the hooks of scripts/fuzz_hooks.py: every such call is forged
(the fuzzer cannot sign), so each must be answered 400. Forged calls that look real aim at
three payments set up first, one per provider, each waiting for its buyer (a card needing
3-D Secure, PayPal and Alipay without a token). Then a fixed set of forged, stale and malformed
calls of each provider follows (some signed with the local run's Stripe webhook secret, so
the body's own checks are reached), each to be answered 400; and those three payments must be
untouched (still waiting for the buyer, nothing authorized or captured at the sandbox). They
are cancelled at the end (PayPal's at billing's approval expiry). Each run binds three demo
cards of deploy/local/cards.csv to a new traveller.

Addresses: ACCOUNTS_URL, BILLING_URL, PROVISIONING_URL, NOTIFIER_URL, PAYMENT_SANDBOX_URL
(default the local run's). FUZZ_EXAMPLES (default 50) is the most test cases per operation;
FUZZ_SEED makes a run repeatable.
"""

import base64
import csv
import hashlib
import hmac
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from billing.settings import BillingSettings

ROOT = Path(__file__).resolve().parents[1]
SERVICES = {"accounts": 8000, "billing": 8001, "provisioning": 8002, "notifier": 8003}
PASSWORD = "fuzzing password 1"
HOOKS = Path(__file__).resolve().parent / "fuzz_hooks.py"
CARDS = ROOT / "deploy/local/cards.csv"
PLAN = "JP-30D-10GB"
#: The payment of each webhook's probe renewal: it waits for the buyer at that provider.
PROBE_PAYMENTS: dict[str, dict[str, str]] = {
    "stripe": {"method": "card", "token": "card_action"},
    "paypal": {"method": "paypal"},
    "alipay": {"method": "alipay"},
}
#: Seconds a probe renewal may take to reach PAYMENT_ACTION_REQUIRED.
PROBE_WAIT_S = 60.0
#: A body over billing's limit for a webhook call (256 KiB).
OVERSIZED = b"{" + b" " * (256 * 1024) + b"}"


def url_of(service: str) -> str:
    port = os.environ.get(f"{service.upper()}_HTTP_PORT", str(SERVICES[service]))
    return os.environ.get(f"{service.upper()}_URL", f"http://127.0.0.1:{port}").rstrip("/")


def operator_token() -> str | None:
    token = os.environ.get("OPERATOR_TOKEN", "").strip()
    if token:
        return token
    path = ROOT / "var" / "operator.token"
    return path.read_text().strip() if path.exists() else None


def payment_sandbox_url() -> str:
    port = os.environ.get("PAYMENT_SANDBOX_PORT", "8010")
    return os.environ.get("PAYMENT_SANDBOX_URL", f"http://127.0.0.1:{port}").rstrip("/")


def traveller_token(accounts: str) -> str:
    """Register a new traveller and sign in; its own forwarded address keeps repeated runs
    clear of the registration limit per address (the local run trusts 127.0.0.1 as a proxy)."""
    email = f"fuzz-{uuid.uuid4().hex[:12]}@example.com"
    headers = {"X-Forwarded-For": f"2001:db8:f::{uuid.uuid4().hex[:4]}"}
    created = httpx.post(
        f"{accounts}/v1/users",
        json={"email": email, "password": PASSWORD, "name": "Fuzz"},
        headers=headers,
        timeout=30,
    )
    if created.status_code != 201:
        sys.exit(f"fuzz: registering {email} at {accounts}: {created.status_code} {created.text}")
    login = httpx.post(
        f"{accounts}/v1/auth/token",
        data={"username": email, "password": PASSWORD},
        headers=headers,
        timeout=30,
    )
    if login.status_code != 200:
        sys.exit(f"fuzz: signing in at {accounts}: {login.status_code} {login.text}")
    token: str = login.json()["access_token"]
    return token


def schemathesis() -> str:
    found = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    return found or "schemathesis"


def fuzz(service: str, base: str, token: str | None, env: dict[str, str] | None = None) -> int:
    command = [
        schemathesis(),
        "run",
        f"{base}/openapi.json",
        "--checks",
        "all",
        "--exclude-checks",
        "positive_data_acceptance",
        "--max-examples",
        os.environ.get("FUZZ_EXAMPLES", "50"),
        "--workers",
        "1",
        "--no-color",
    ]
    if os.environ.get("FUZZ_SEED"):
        command += ["--seed", os.environ["FUZZ_SEED"]]
    if token:
        command += ["--header", f"Authorization: Bearer {token}"]
    print(f"==> schemathesis: {service} at {base}", flush=True)
    return subprocess.run(command, check=False, env=env).returncode  # noqa: S603 (our own argv)


# ---- billing's webhooks ------------------------------------------------------------------


class Probes:
    """Three renewals of a new traveller, one per provider, each waiting for its buyer."""

    def __init__(self, accounts: str, token: str) -> None:
        self.accounts = accounts
        self.headers = {"Authorization": f"Bearer {token}"}
        #: provider -> renewal id
        self.renewals: dict[str, str] = {}
        #: renewal id -> the buyer's page at the provider
        self.pages: dict[str, str] = {}

    def set_up(self) -> None:
        """Bind a card per provider and ask for a renewal on it; wait until each needs the buyer."""
        with httpx.Client(base_url=self.accounts, headers=self.headers, timeout=30) as client:
            cards = self._bind(client, len(PROBE_PAYMENTS))
            for (provider, payment), iccid in zip(PROBE_PAYMENTS.items(), cards, strict=True):
                asked = client.post(
                    f"/v1/cards/{iccid}/renewals",
                    json={"plan_code": PLAN, "payment": payment, "start": "now"},
                    headers={"Idempotency-Key": str(uuid.uuid4())},
                )
                if asked.status_code != 202:
                    sys.exit(f"fuzz: renewing {iccid}: {asked.status_code} {asked.text}")
                self.renewals[provider] = asked.json()["renewal_id"]
            for renewal_id in self.renewals.values():
                saga = self._wait(client, renewal_id)
                self.pages[renewal_id] = saga["payment_action"]["url"]

    def untouched(self, sandbox: str) -> list[str]:
        """What the forged calls changed: a probe no longer waiting, or money taken or held."""
        changed = []
        with httpx.Client(timeout=30) as client:
            for provider, renewal_id in self.renewals.items():
                saga = client.get(
                    f"{self.accounts}/v1/renewals/{renewal_id}", headers=self.headers
                ).json()
                if saga.get("status") != "PAYMENT_ACTION_REQUIRED":
                    changed.append(f"{provider} probe {renewal_id} is {saga.get('status')}")
                ledger = client.get(
                    f"{sandbox}/sandbox/ledger", params={"reference": renewal_id}
                ).json()
                taken = {k: len(ledger.get(k, [])) for k in ("authorizations", "captures")}
                if any(taken.values()):
                    changed.append(f"{provider} probe {renewal_id} at the sandbox: {taken}")
        return changed

    def cancel(self) -> None:
        """The buyer cancels each probe at the provider's page (PayPal's ends at the expiry)."""
        with httpx.Client(timeout=30) as client:
            for page in self.pages.values():
                client.post(page, data={"decision": "cancel"})

    def _bind(self, client: httpx.Client, wanted: int) -> list[str]:
        with CARDS.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        bound: list[str] = []
        for row in rows:
            answer = client.post(
                "/v1/cards", json={"iccid": row["iccid"], "activation_code": row["activation_code"]}
            )
            if answer.status_code == 201:
                bound.append(row["iccid"])
                if len(bound) == wanted:
                    return bound
            elif answer.status_code != 409:  # 409: bound before, by an earlier run
                sys.exit(f"fuzz: binding {row['iccid']}: {answer.status_code} {answer.text}")
        sys.exit(f"fuzz: fewer than {wanted} unbound cards left in {CARDS}")

    def _wait(self, client: httpx.Client, renewal_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + PROBE_WAIT_S
        while time.monotonic() < deadline:
            saga: dict[str, Any] = client.get(f"/v1/renewals/{renewal_id}").json()
            if saga.get("status") == "PAYMENT_ACTION_REQUIRED" and saga.get("payment_action"):
                return saga
            time.sleep(0.5)
        sys.exit(f"fuzz: renewal {renewal_id} did not wait for its buyer within {PROBE_WAIT_S:g} s")


def _stripe_signature(secret: str, body: bytes, at: float) -> str:
    signed = f"{int(at)}.".encode() + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={int(at)},v1={digest}"


#: A forged call: (what it is, headers, body).
Call = tuple[str, dict[str, str], bytes]


def stripe_calls(renewal_id: str) -> list[Call]:
    """Forged, stale and malformed Stripe events about a probe, some signed with the secret."""
    secret = os.environ.get("BILLING_STRIPE_WEBHOOK_SECRET") or (
        BillingSettings.model_fields["stripe_webhook_secret"].default.get_secret_value()
    )
    now = time.time()
    event = {
        "id": f"evt_fuzz{uuid.uuid4().hex[:16]}",
        "object": "event",
        "type": "payment_intent.amount_capturable_updated",
        "created": int(now),
        "data": {
            "object": {
                "id": f"pi_fuzz{uuid.uuid4().hex[:16]}",
                "object": "payment_intent",
                "status": "requires_capture",
                "amount": 9900,
                "amount_capturable": 9900,
                "currency": "cny",
                "metadata": {"reference": renewal_id},
            }
        },
    }
    body = json.dumps(event).encode()
    json_ = {"Content-Type": "application/json"}

    def signed(what: str, payload: bytes) -> Call:
        return (
            what,
            {**json_, "Stripe-Signature": _stripe_signature(secret, payload, now)},
            payload,
        )

    def shaped(**data: object) -> bytes:
        return json.dumps({**event, **data}).encode()

    return [
        ("no Stripe-Signature", json_, body),
        ("a Stripe-Signature that is not one", {**json_, "Stripe-Signature": "v1=zz,t=x"}, body),
        (
            "signed with another secret",
            {**json_, "Stripe-Signature": _stripe_signature("whsec_forger", body, now)},
            body,
        ),
        (
            "signed 10 minutes ago (stale)",
            {**json_, "Stripe-Signature": _stripe_signature(secret, body, now - 600)},
            body,
        ),
        (
            "signed over another body",
            {**json_, "Stripe-Signature": _stripe_signature(secret, b"{}", now)},
            body,
        ),
        signed("signed, not JSON", b"{not json"),
        signed("signed, not UTF-8", b"\xff\xfe{}"),
        signed("signed, a JSON array", b"[1, 2]"),
        signed("signed, without data", shaped(data=None)),
        signed("signed, data.object a string", shaped(data={"object": "pi_x"})),
        signed(
            "signed, a payment intent without fields",
            shaped(data={"object": {"object": "payment_intent"}}),
        ),
        signed(
            "signed, a customer", shaped(data={"object": {"object": "customer", "id": "cus_x"}})
        ),
        signed(
            "signed, a charge without fields",
            shaped(type="charge.succeeded", data={"object": {"object": "charge"}}),
        ),
        signed("signed, too large", OVERSIZED),
    ]


def paypal_calls(renewal_id: str) -> list[Call]:
    """Forged, stale and malformed PayPal events about a probe (PayPal itself verifies)."""
    now = datetime.now(UTC)
    event = {
        "id": f"WH-FUZZ-{uuid.uuid4().hex[:12].upper()}",
        "event_type": "PAYMENT.AUTHORIZATION.CREATED",
        "resource_type": "authorization",
        "create_time": now.isoformat(),
        "resource": {
            "id": f"AUTH{uuid.uuid4().hex[:12].upper()}",
            "status": "CREATED",
            "custom_id": renewal_id,
            "amount": {"currency_code": "CNY", "value": "99.00"},
            "supplementary_data": {"related_ids": {"order_id": "ORDERFUZZ"}},
        },
    }
    body = json.dumps(event).encode()

    def transmission(at: datetime) -> dict[str, str]:
        return {
            "Content-Type": "application/json",
            "PAYPAL-TRANSMISSION-ID": str(uuid.uuid4()),
            "PAYPAL-TRANSMISSION-TIME": at.isoformat(),
            "PAYPAL-TRANSMISSION-SIG": base64.b64encode(os.urandom(256)).decode(),
            "PAYPAL-CERT-URL": "https://api.paypal.com/v1/notifications/certs/CERT-fuzz",
            "PAYPAL-AUTH-ALGO": "SHA256withRSA",
        }

    headers = transmission(now)
    return [
        ("no transmission headers", {"Content-Type": "application/json"}, body),
        ("a forged transmission signature", headers, body),
        ("sent two days ago (stale)", transmission(now - timedelta(days=2)), body),
        ("empty transmission headers", {k: "" for k in headers}, body),
        ("not JSON", headers, b"{not json"),
        ("not UTF-8", headers, b"\xff\xfe{}"),
        ("a JSON array", headers, b"[]"),
        ("without resource", headers, json.dumps({"id": "WH-1", "event_type": "X"}).encode()),
        (
            "an event type nobody subscribed to",
            headers,
            json.dumps({**event, "event_type": "BILLING.PLAN.CREATED"}).encode(),
        ),
        ("too large", headers, OVERSIZED),
    ]


def alipay_calls(renewal_id: str) -> list[Call]:
    """Forged, stale and malformed Alipay notifies about a probe."""
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    fields = {
        "notify_id": uuid.uuid4().hex,
        "notify_time": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S"),
        "notify_type": "trade_status_sync",
        "app_id": BillingSettings.model_fields["alipay_app_id"].default,
        "out_trade_no": renewal_id,
        "trade_no": "2026120622001400000000000001",
        "trade_status": "TRADE_SUCCESS",
        "total_amount": "99.00",
        "charset": "utf-8",
        "sign_type": "RSA2",
        "sign": base64.b64encode(os.urandom(256)).decode(),
    }

    def encoded(**changes: str | None) -> bytes:
        merged = {k: v for k, v in {**fields, **changes}.items() if v is not None}
        return str(httpx.QueryParams(merged)).encode()

    return [
        ("empty", form, b""),
        ("not UTF-8", form, b"sign=\xff\xfe"),
        ("not a form", form, b"&&==&"),
        ("a forged signature", form, encoded()),
        ("a signature that is not base64", form, encoded(sign="not base64!")),
        ("without a signature", form, encoded(sign=None)),
        ("signed RSA (not RSA2)", form, encoded(sign_type="RSA")),
        ("another charset", form, encoded(charset="gbk")),
        ("sent two days ago (stale)", form, encoded(notify_time="2026-01-01 00:00:00")),
        ("a field given twice", form, encoded() + b"&out_trade_no=other"),
        ("an unknown trade status", form, encoded(trade_status="TRADE_WHATEVER")),
        ("too large", form, OVERSIZED),
    ]


def forged_webhooks(billing: str, probes: Probes) -> list[str]:
    """Send every forged call; what was not answered 400."""
    makers: dict[str, Callable[[str], list[Call]]] = {
        "stripe": stripe_calls,
        "paypal": paypal_calls,
        "alipay": alipay_calls,
    }
    wrong: list[str] = []
    sent = 0
    with httpx.Client(base_url=billing, timeout=30) as client:
        for provider, make in makers.items():
            for what, headers, body in make(probes.renewals[provider]):
                sent += 1
                try:
                    answer = client.post(f"/webhooks/{provider}", headers=headers, content=body)
                except httpx.HTTPError as error:
                    wrong.append(f"{provider}: {what}: no answer ({type(error).__name__})")
                    continue
                if answer.status_code != 400:
                    wrong.append(
                        f"{provider}: {what}: answered {answer.status_code} {answer.text[:200]}"
                    )
    print(f"==> webhooks: {sent} forged, stale or malformed calls sent", flush=True)
    return wrong


def main() -> int:
    for service in SERVICES:
        base = url_of(service)
        try:
            httpx.get(f"{base}/health/live", timeout=5).raise_for_status()
        except httpx.HTTPError as error:
            sys.exit(f"fuzz: {service} does not answer at {base} ({error}); start `make run`")
    operator = operator_token()
    if operator is None:
        print("==> no OPERATOR_TOKEN or var/operator.token: operator endpoints without a token")
    accounts = url_of("accounts")
    probes = Probes(accounts, traveller_token(accounts))
    probes.set_up()
    print(f"==> webhook probes waiting for their buyers: {probes.renewals}", flush=True)
    hooked = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": str(HOOKS),
        "FUZZ_WEBHOOK_TARGETS": json.dumps(probes.renewals),
    }
    failed = []
    for service in SERVICES:
        base = url_of(service)
        # A fresh access token per service: each outlives one service's run.
        token = traveller_token(accounts) if service == "accounts" else operator
        if fuzz(service, base, token, env=hooked if service == "billing" else None) != 0:
            failed.append(service)
    try:
        wrong = forged_webhooks(url_of("billing"), probes)
        wrong += probes.untouched(payment_sandbox_url())
    finally:
        probes.cancel()
    for line in wrong:
        print(f"==> webhooks: {line}", file=sys.stderr)
    if wrong:
        failed.append("billing webhooks")
    if failed:
        print(f"==> make fuzz: FAILED ({', '.join(failed)})", file=sys.stderr)
        return 1
    print(
        "==> make fuzz: PASSED (no failures in any of the four services; every forged webhook "
        "answered 400, the payments it named untouched)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
