"""`make fuzz`: schemathesis against the four running services (`make run`), signed in.

Accounts is fuzzed with a fresh traveller's access token; billing, provisioning and notifier
with the operator token (OPERATOR_TOKEN, else var/operator.token where `make run` wrote one).
Every check runs except positive_data_acceptance (the API may refuse data the schema allows,
e.g. an unknown card). Exits non-zero when schemathesis finds anything.

Addresses: ACCOUNTS_URL, BILLING_URL, PROVISIONING_URL, NOTIFIER_URL (default the local run's).
FUZZ_EXAMPLES (default 50) is the most test cases per operation; FUZZ_SEED makes a run repeatable.
"""

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
SERVICES = {"accounts": 8000, "billing": 8001, "provisioning": 8002, "notifier": 8003}
PASSWORD = "fuzzing password 1"


def url_of(service: str) -> str:
    port = os.environ.get(f"{service.upper()}_HTTP_PORT", str(SERVICES[service]))
    return os.environ.get(f"{service.upper()}_URL", f"http://127.0.0.1:{port}").rstrip("/")


def operator_token() -> str | None:
    token = os.environ.get("OPERATOR_TOKEN", "").strip()
    if token:
        return token
    path = ROOT / "var" / "operator.token"
    return path.read_text().strip() if path.exists() else None


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


def fuzz(service: str, base: str, token: str | None) -> int:
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
    return subprocess.run(command, check=False).returncode  # noqa: S603 (our own argv)


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
    failed = []
    for service in SERVICES:
        base = url_of(service)
        # A fresh access token per service: each outlives one service's run.
        token = traveller_token(url_of("accounts")) if service == "accounts" else operator
        if fuzz(service, base, token) != 0:
            failed.append(service)
    if failed:
        print(f"==> make fuzz: FAILED ({', '.join(failed)})", file=sys.stderr)
        return 1
    print("==> make fuzz: PASSED (no failures in any of the four services)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
