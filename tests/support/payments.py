"""What the payment tests do at the providers' pages and ask of billing and the payment sandbox.

A renewal is paid by `card` (Stripe), `paypal` (PayPal) or `alipay` (Alipay); the sandbox's
tokens and Stripe's test payment methods decide the outcome (CONTRACT.md, "Sandbox behaviour").
"""

from typing import Any

import httpx

from tests.support.client import Traveller
from tests.support.infra import Platform

# Alipay takes CNY: its travellers are priced in yuan (zh-CN).
LOCALE = {"card": "en", "paypal": "en", "alipay": "zh-CN"}


def request_renewal(traveller: Traveller, iccid: str, method: str, token: str | None) -> str:
    """Ask for a renewal of `iccid` paid by `method` (with `token` where given); its id."""
    payment: dict[str, Any] = {"method": method}
    if token is not None:
        payment["token"] = token
    accepted = httpx.post(
        f"{traveller.platform.url('accounts')}/v1/cards/{iccid}/renewals",
        json={"plan_code": "JP-30D-10GB", "payment": payment, "start": "now"},
        headers=traveller.headers,
    )
    assert accepted.status_code == 202, accepted.text
    renewal_id: str = accepted.json()["renewal_id"]
    return renewal_id


def ask_the_buyer(platform: Platform, method: str, token: str | None) -> tuple[Traveller, str]:
    """A renewal whose provider needs the buyer; returns it once it waits for them."""
    traveller = Traveller.register(platform, locale=LOCALE[method])
    iccid = traveller.bind_new_card()
    renewal_id = request_renewal(traveller, iccid, method, token)
    traveller.wait_for_status(renewal_id, "PAYMENT_ACTION_REQUIRED")
    return traveller, renewal_id


def answer_at_the_provider(traveller: Traveller, renewal_id: str, decision: str) -> None:
    """The buyer opens the action's page and approves or cancels; the page sends them back."""
    saga = traveller.get(f"/v1/renewals/{renewal_id}").json()
    action = saga["payment_action"]
    assert action["type"] == "redirect" and action["expires_at"].endswith(("Z", "+00:00"))
    page = httpx.get(action["url"], follow_redirects=False)
    assert page.status_code == 200, page.text
    answered = httpx.post(action["url"], data={"decision": decision}, follow_redirects=False)
    assert answered.status_code == 303, answered.text


def held_at_the_end(payments: dict[str, Any]) -> int:
    """Authorizations neither captured nor voided."""
    return len(payments["authorizations"]) - len(payments["captures"]) - len(payments["voids"])


def billing_view(platform: Platform, kind: str, renewal_id: str) -> dict[str, Any]:
    """Billing's operator view of a renewal's payment (`payments`) or refund (`refunds`)."""
    answer = httpx.get(
        f"{platform.url('billing')}/v1/{kind}/{renewal_id}", headers=platform.operator_headers
    )
    assert answer.status_code == 200, answer.text
    view: dict[str, Any] = answer.json()
    return view


def deliveries(platform: Platform, renewal_id: str) -> list[dict[str, Any]]:
    """The webhooks and notifies the payment sandbox sent billing about a renewal."""
    answer = httpx.get(
        f"{platform.url('payment')}/sandbox/deliveries", params={"reference": renewal_id}
    )
    assert answer.status_code == 200, answer.text
    found: list[dict[str, Any]] = answer.json()
    return found


def slow_calls(platform: Platform, renewal_id: str) -> list[dict[str, Any]]:
    """The calls of a `_slow` source the payment sandbox holds for a renewal right now."""
    answer = httpx.get(
        f"{platform.url('payment')}/sandbox/slow-calls", params={"reference": renewal_id}
    )
    assert answer.status_code == 200, answer.text
    found: list[dict[str, Any]] = answer.json()
    return found


def lose_deliveries(platform: Platform, renewal_id: str) -> None:
    """From now on the payment sandbox sends billing none of this renewal's webhooks."""
    lost = httpx.post(
        f"{platform.url('payment')}/sandbox/deliveries/lose", json={"reference": renewal_id}
    )
    assert lost.status_code == 204, lost.text
