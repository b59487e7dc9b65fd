"""Schemathesis hooks of `make fuzz` (loaded through SCHEMATHESIS_HOOKS by scripts/fuzz.py).

Billing's webhooks (`POST /webhooks/{stripe,paypal,alipay}`) take only calls their provider
signed, and the fuzzer cannot sign: every call it makes there is forged, so each must be
answered 400 (`forged_webhook_refused`), never accepted and never a 500. Where a generated body
has the provider's shape, `map_body` points it at a real payment that waits for its buyer (the
renewal ids in FUZZ_WEBHOOK_TARGETS, a JSON object by provider, that scripts/fuzz.py sets up)
and makes it claim that payment was paid, so a forgery that got through would show: fuzz.py
checks afterwards that those payments are untouched.
"""

import json
import os
from typing import Any

import schemathesis

WEBHOOKS = "/webhooks/"
#: What each forged call claims about its target: the money is there.
CLAIMS = {
    "stripe": {"status": "requires_capture", "object": "payment_intent"},
    "paypal": {"status": "COMPLETED"},
    "alipay": {"trade_status": "TRADE_SUCCESS"},
}


def _targets() -> dict[str, str]:
    raw = os.environ.get("FUZZ_WEBHOOK_TARGETS", "").strip()
    found = json.loads(raw) if raw else {}
    return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}


def _provider(path: str) -> str | None:
    return path.removeprefix(WEBHOOKS) if path.startswith(WEBHOOKS) else None


@schemathesis.hook
def map_body(context: Any, body: Any) -> Any:
    """Aim a well-shaped forged webhook body at a real payment waiting for its buyer."""
    operation = getattr(context, "operation", None)
    provider = _provider(operation.path) if operation is not None else None
    target = _targets().get(provider or "")
    if target is None or not isinstance(body, dict):
        return body
    if provider == "stripe":
        data = body.get("data")
        if isinstance(data, dict) and isinstance(data.get("object"), dict):
            data["object"].update(CLAIMS["stripe"], metadata={"reference": target})
    elif provider == "paypal":
        resource = body.get("resource")
        if isinstance(resource, dict):
            resource.update(
                CLAIMS["paypal"],
                custom_id=target,
                purchase_units=[{"reference_id": target}],
            )
    elif provider == "alipay":
        body.update(CLAIMS["alipay"], out_trade_no=target)
    return body


@schemathesis.check
def forged_webhook_refused(ctx: Any, response: Any, case: Any) -> bool | None:
    """A webhook call the fuzzer made (so not signed by the provider) is answered 400.

    Only POST: another method (the fuzzer tries TRACE, PUT, ...) is answered 405, as it should.
    """
    del ctx  # the response and its case say all
    if _provider(case.path) is None or case.method.upper() != "POST":
        return None
    if response.status_code != 400:
        raise AssertionError(
            f"a forged {case.path} call was answered {response.status_code}, not 400 "
            f"({response.text_lossy()[:200]!r})"
        )
    return None
