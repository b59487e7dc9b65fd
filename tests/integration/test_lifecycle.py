"""The plan lifecycle over the real broker, Redis and sandboxes, with two accounts replicas:
a reminder and an auto-renewal once each (and not again after a restart), auto-renew off after
a hard decline (told once by mail and SMS), and a WELCOME10 renewal capturing exactly the
quoted total."""

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.integration.test_usage import events_of
from tests.support.client import (
    PlainKafka,
    Traveller,
    captures_of,
    mail_parts,
    mails_to,
    notifications,
    texts_to,
)
from tests.support.infra import Platform, free_port, http_ok, wait_until

pytestmark = pytest.mark.integration

PLAN = "JP-30D-10GB"
THIRTY_DAYS_S = 30 * 86400
# Leads just short of a 30-day plan's length: its reminder falls due about 3 s after it starts
# and its auto-renewal about 9 s after; the 1-day lead is far off. The auto-renewal must come
# after the reminder (a plan with a later plan queued is not reminded of), with room for the due
# loop's idle wait (at most 2 s) and a loaded machine; each second more is a second of waiting.
# (Shortening a live plan at the sandbox, POST /sandbox/validity, would not do instead:
# provisioning takes the new end on its bundle, but no event carries it to accounts, whose plan
# watch keeps the 30-day end.)
LEADS = {
    "ACCOUNTS_REMINDER_LEADS": f"{THIRTY_DAYS_S - 3}s,1d",
    "ACCOUNTS_AUTO_RENEW_LEAD": f"{THIRTY_DAYS_S - 9}s",
}


@pytest.fixture(scope="module")
def lifecycle(platform: Platform) -> Iterator[Platform]:
    """The session's platform with accounts on short leads, and a second accounts replica on the
    same database; accounts goes back to the usual leads when the module is done.

    Only accounts reads the leads, so only accounts is started again: a platform of its own
    (a second broker, Redis, sandboxes and services) cost this module about a minute and a half.
    """
    platform.processes["accounts"].stop()
    platform.service_env.update(LEADS)
    try:
        platform.restart("accounts")
        replica = platform.service_process("accounts")
        port = free_port()
        replica.name = "accounts-2"
        replica.env = {**replica.env, "ACCOUNTS_HTTP_PORT": str(port)}
        replica.log_path = platform.workdir / "accounts-2.log"
        replica.ready = http_ok(f"http://127.0.0.1:{port}/health/ready")
        platform.processes["accounts-2"] = replica.start()
        yield platform
    finally:
        if "accounts-2" in platform.processes:
            platform.processes.pop("accounts-2").stop()
        platform.processes["accounts"].stop()
        for name in LEADS:
            platform.service_env.pop(name, None)
        platform.restart("accounts")


@pytest.fixture(scope="module")
def kafka(lifecycle: Platform) -> Iterator[PlainKafka]:
    client = PlainKafka(lifecycle.kafka)
    yield client
    client.close()


def of_card(
    kafka: PlainKafka, platform: Platform, topic: str, iccid: str, **data: Any
) -> list[dict[str, Any]]:
    """A card's events on a topic with these data values, one per event id (at least one)."""
    # At least once: a re-publication keeps its id, and consumers take one event per id.
    found = events_of(kafka, platform, topic, iccid, **data)
    return list({event["id"]: event for event in found}.values())


def auto_renew(traveller: Traveller, iccid: str, token: str, **body: Any) -> dict[str, Any]:
    method = token.split("_", 1)[0]
    response = httpx.put(
        f"{traveller.platform.url('accounts')}/v1/cards/{iccid}/auto-renew",
        json={"enabled": True, "plan_code": PLAN, "payment": {"method": method, "token": token}}
        | body,
        headers=traveller.headers,
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def renewals(traveller: Traveller, iccid: str) -> list[dict[str, Any]]:
    response = traveller.get(f"/v1/cards/{iccid}/renewals")
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def test_one_reminder_and_one_auto_renewal_with_two_replicas_and_a_restart(
    lifecycle: Platform, kafka: PlainKafka
) -> None:
    """Some 30 s: it waits for the plan's reminder and auto-renewal leads (3 s and 9 s after it
    starts), the auto-renewal's round trip, a restart of accounts and one more renewal."""
    traveller = Traveller.register(lifecycle)
    iccid = traveller.bind_new_card()
    auto_renew(traveller, iccid, "card_ok", monthly_cap={"amount": 5000, "currency": "USD"})
    first = traveller.renew(iccid, "card_ok", plan_code=PLAN).json()["renewal_id"]
    traveller.wait_for_status(first, "ACTIVATED")

    [reminder] = of_card(kafka, lifecycle, "esim.plan.expiring", iccid)
    assert reminder["data"]["renewal_id"] == first
    assert reminder["data"]["days_left"] == 30 and reminder["data"]["auto_renew"] is True

    def auto_renewed() -> dict[str, Any] | None:
        found = [item for item in renewals(traveller, iccid) if item["channel"] == "auto_renew"]
        return found[0] if found and found[0]["status"] == "ACTIVATED" else None

    renewal = wait_until(auto_renewed, timeout=120, what="the auto-renewal activated")
    assert renewal["start"] == "after_current" and renewal["plan_code"] == PLAN
    status = traveller.get(f"/v1/cards/{iccid}").json()
    [queued] = status["queued"]
    assert queued["renewal_id"] == renewal["renewal_id"]
    assert queued["valid_from"] == status["valid_until"]

    # A restart of one replica: it looks at every due plan again, and owes nothing more.
    lifecycle.processes["accounts"].stop()
    lifecycle.restart("accounts")
    later = Traveller.register(lifecycle)
    other = later.bind_new_card()
    traveller_renewal = later.renew(other, "card_ok", plan_code=PLAN).json()["renewal_id"]
    later.wait_for_status(traveller_renewal, "ACTIVATED")
    of_card(kafka, lifecycle, "esim.plan.expiring", other)  # the restarted platform's sweep ran

    assert len(of_card(kafka, lifecycle, "esim.plan.expiring", iccid)) == 1
    requested = of_card(kafka, lifecycle, "esim.renewal.requested", iccid, channel="auto_renew")
    assert {e["data"]["renewal_id"] for e in requested} == {renewal["renewal_id"]}
    captures = [*captures_of(lifecycle, first), *captures_of(lifecycle, renewal["renewal_id"])]
    assert len(captures) == 2


def test_a_hard_decline_turns_auto_renew_off_and_tells_the_user_once(
    lifecycle: Platform, kafka: PlainKafka
) -> None:
    """About 15 s: the declined auto-renewal is tried only when its lead falls due, 9 s after the
    plan starts, and then both notices go out."""
    traveller = Traveller.register(lifecycle)
    phone = traveller.choose_sms()
    iccid = traveller.bind_new_card()
    first = traveller.renew(iccid, "card_ok", plan_code=PLAN).json()["renewal_id"]
    traveller.wait_for_status(first, "ACTIVATED")
    auto_renew(traveller, iccid, "card_declined")

    [disabled] = of_card(kafka, lifecycle, "esim.card.auto-renew-disabled", iccid)
    assert disabled["data"]["reason"] == "declined"
    [failed] = [item for item in renewals(traveller, iccid) if item["channel"] == "auto_renew"]
    assert failed["status"] == "PAYMENT_FAILED"
    assert disabled["data"]["renewal_id"] == failed["renewal_id"]
    assert traveller.get(f"/v1/cards/{iccid}").json()["auto_renew"] is False

    # Told by mail and, having chosen SMS, by text; the failed payment is told of too. Both are
    # sent before the counts are taken, so a second notice of either would have been seen.
    def told(kind: str) -> bool:
        return notifications(lifecycle, iccid, kind) == {"email": ["sent"], "sms": ["sent"]}

    wait_until(lambda: told("auto_renew_disabled") and told("payment_failed"), what="the notices")
    mails = mails_to(lifecycle, traveller.email)
    [mail] = [m for m in mails if "Auto-renew is off" in str(m["Subject"])]
    assert str(mail["Subject"]) == "Auto-renew is off for your eSIM"
    text, html = mail_parts(mail)
    assert "your bank or payment provider declined the payment" in text
    assert PLAN in text and iccid in text and failed["renewal_id"] in text
    assert "/docs#/renewals" in text and "/docs#/renewals" in html
    assert "<strong>auto-renew off</strong>" in html
    [sms] = [t for t in texts_to(lifecycle, phone) if "auto-renew is off" in t]
    assert sms.startswith("eSIM: auto-renew is off: your bank or payment provider declined")


def test_a_welcome10_renewal_captures_the_quoted_total(
    lifecycle: Platform, kafka: PlainKafka
) -> None:
    traveller = Traveller.register(lifecycle)
    iccid = traveller.bind_new_card()
    base = lifecycle.url("accounts")
    quote = httpx.post(
        f"{base}/v1/cards/{iccid}/quote",
        json={"plan_code": PLAN, "start": "now", "promo_code": "WELCOME10"},
        headers=traveller.headers,
    )
    assert quote.status_code == 200, quote.text
    quoted = quote.json()
    assert quoted["discount"]["amount"] > 0
    assert quoted["forfeits"] == {"data_mb": 0, "days": 0}
    body = {
        "plan_code": PLAN,
        "payment": {"method": "card", "token": "card_ok"},
        "start": "now",
        "promo_code": "WELCOME10",
    }
    accepted = httpx.post(f"{base}/v1/cards/{iccid}/renewals", json=body, headers=traveller.headers)
    assert accepted.status_code == 202, accepted.text
    renewal_id = accepted.json()["renewal_id"]
    shown = traveller.wait_for_status(renewal_id, "ACTIVATED")
    assert shown["price"] == quoted["total"] and shown["discount"] == quoted["discount"]
    [capture] = captures_of(lifecycle, renewal_id)
    assert capture["amount"] == quoted["total"]["amount"]
    [settled] = of_card(kafka, lifecycle, "esim.payment.settled", iccid)
    assert settled["data"]["discount"] == quoted["discount"]
    assert settled["data"]["promo_code"] == "WELCOME10"
    again = httpx.post(f"{base}/v1/cards/{iccid}/renewals", json=body, headers=traveller.headers)
    assert again.status_code == 409
    assert again.json()["type"].endswith("/promo-used")
