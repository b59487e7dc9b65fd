"""The renewal saga end to end over the real broker: HTTP, plain Kafka, failures, poison."""

import email
import email.policy
import uuid
from collections.abc import Iterator
from datetime import datetime
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest
from notifier.messages import format_money

from tests.support.client import (
    PlainKafka,
    Traveller,
    captures_of,
    cloudevent,
    ledger,
    renewal_requested_event,
)
from tests.support.infra import Platform, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def kafka_client(platform: Platform) -> Iterator[PlainKafka]:
    client = PlainKafka(platform.kafka)
    yield client
    client.close()


def mails_about(platform: Platform, iccid: str) -> list[str]:
    """The mails in the SMTP sink's folder that mention a card."""
    texts = [
        path.read_text(errors="replace") for path in sorted(Path(platform.mail_dir).glob("*.eml"))
    ]
    return [text for text in texts if iccid in text]


def receipts_about(platform: Platform, iccid: str) -> list[EmailMessage]:
    """The parsed mails of the SMTP sink about a card."""
    found = []
    for path in sorted(Path(platform.mail_dir).glob("*.eml")):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        plain = message.get_body(("plain",))
        if plain is not None and iccid in plain.get_content():
            found.append(message)
    return found


@pytest.mark.parametrize(
    ("locale", "token", "words"),
    [
        ("en", "card_ok", ("Amount paid: ", "Payment method: credit card", "Provider reference: ")),
        ("zh-CN", "alipay_ok", ("实付金额：", "支付方式：支付宝", "支付流水号：")),  # noqa: RUF001
    ],
)
def test_the_confirmation_is_a_receipt_in_the_travellers_language(
    platform: Platform, locale: str, token: str, words: tuple[str, str, str]
) -> None:
    traveller = Traveller.register(platform, locale=locale)
    iccid = traveller.bind_new_card()
    renewal_id = traveller.renew(iccid, token).json()["renewal_id"]
    traveller.wait_for_status(renewal_id, "ACTIVATED")
    # A card is captured once the plan is active: the capture may follow the activation.
    [capture] = wait_until(
        lambda: ledger(platform, "payment", reference=renewal_id)["captures"], what="a capture"
    )

    [mail] = wait_until(lambda: receipts_about(platform, iccid), what="the receipt")

    assert mail.get_content_type() == "multipart/alternative"
    plain, html = mail.get_body(("plain",)), mail.get_body(("html",))
    assert plain is not None and html is not None
    text, page = plain.get_content(), html.get_content()
    paid = format_money({"amount": capture["amount"], "currency": capture["currency"]}, locale)
    assert f"{words[0]}{paid}" in text and paid in page
    assert words[1] in text
    assert f"{words[2]}{capture['id']}" in text and capture["id"] in page
    assert "JP-30D-10GB" in text and renewal_id in text and renewal_id in page
    assert f'<html lang="{locale}">' in page


def activated_events(
    kafka: PlainKafka, platform: Platform, renewal_id: str, at_least: int = 1
) -> list[dict]:
    records = kafka.records(
        platform.topic("esim.profile.activated"),
        lambda r: cloudevent(r).get("renewalid") == renewal_id,
        at_least=at_least,
    )
    return [cloudevent(r) | {"_key": r.key.decode()} for r in records]


def test_http_renewal_is_activated_published_and_confirmed(
    platform: Platform, kafka_client: PlainKafka
) -> None:
    traveller = Traveller.register(platform)
    iccid = traveller.bind_new_card()
    before = traveller.get(f"/v1/cards/{iccid}").json()

    accepted = traveller.renew(iccid, "card_ok")
    assert accepted.status_code == 202, accepted.text
    renewal_id = accepted.json()["renewal_id"]

    saga = traveller.wait_for_status(renewal_id, "ACTIVATED")
    steps = [step["step"] for step in saga["timeline"]]
    assert steps[:3] == ["requested", "payment_requested", "payment_authorized"]
    assert "profile_activated" in steps

    [event] = activated_events(kafka_client, platform, renewal_id)
    assert event["type"] == "esim.profile.activated.v1"
    assert event["specversion"] == "1.0"
    assert event["_key"] == iccid and event["subject"] == iccid
    assert event["data"]["bundle_state"] == "active"

    after = traveller.get(f"/v1/cards/{iccid}").json()
    assert before["valid_until"] is None
    assert after["plan_code"] == "JP-30D-10GB"
    valid_until = datetime.fromisoformat(after["valid_until"])
    assert (valid_until - datetime.fromisoformat(after["valid_from"])).days == 30

    payments = wait_until(
        lambda: (found := ledger(platform, "payment", reference=renewal_id))["captures"] and found,
        what="the capture after activation",
    )
    assert len(payments["authorizations"]) == 1 and len(payments["captures"]) == 1
    mails = wait_until(lambda: mails_about(platform, iccid), what="a confirmation mail")
    assert len(mails) == 1
    assert traveller.email in mails[0]


def test_kafka_request_from_a_plain_client_is_processed_once(
    platform: Platform, kafka_client: PlainKafka
) -> None:
    traveller = Traveller.register(platform)
    iccid = traveller.bind_new_card()
    event = renewal_requested_event(user_id=traveller.user_id, iccid=iccid, token="alipay_ok")
    renewal_id = event["data"]["renewal_id"]
    topic = platform.topic("esim.renewal.requested")

    for _ in range(3):
        kafka_client.send(topic, iccid, event)
    kafka_client.send(topic, iccid, event | {"id": str(uuid.uuid4())})

    traveller.wait_for_status(renewal_id, "ACTIVATED")
    # A later request on the same key (so the same partition) that fails at billing: once it
    # has failed, accounts and billing have handled every duplicate queued before it.
    marker = renewal_requested_event(user_id=traveller.user_id, iccid=iccid, token="card_declined")
    kafka_client.send(topic, iccid, marker)
    traveller.wait_for_status(marker["data"]["renewal_id"], "PAYMENT_FAILED")
    assert len(captures_of(platform, renewal_id)) == 1
    assert len(ledger(platform, "esim", reference=renewal_id)["orders"]) == 1
    events = activated_events(kafka_client, platform, renewal_id)
    assert len({e["id"] for e in events}) == 1


def test_conflicting_duplicate_is_rejected_and_the_original_goes_on(
    platform: Platform, kafka_client: PlainKafka
) -> None:
    traveller = Traveller.register(platform)
    iccid = traveller.bind_new_card()
    event = renewal_requested_event(user_id=traveller.user_id, iccid=iccid, token="card_slow")
    renewal_id = event["data"]["renewal_id"]
    topic = platform.topic("esim.renewal.requested")
    kafka_client.send(topic, iccid, event)
    other = renewal_requested_event(
        user_id=traveller.user_id,
        iccid=iccid,
        token="card_ok",
        renewal_id=renewal_id,
        plan_code="JP-1D-1GB",
    )
    kafka_client.send(topic, iccid, other)

    [rejected] = kafka_client.records(
        platform.topic("esim.renewal.rejected"),
        lambda r: cloudevent(r).get("renewalid") == renewal_id,
    )
    assert cloudevent(rejected)["data"]["reason"] == "conflicting_duplicate"
    saga = traveller.wait_for_status(renewal_id, "ACTIVATED")
    assert saga["plan_code"] == "JP-30D-10GB"
    assert len(captures_of(platform, renewal_id)) == 1


@pytest.mark.parametrize(
    ("token", "reason"),
    [("card_declined", "declined"), ("paypal_insufficient", "insufficient_funds")],
)
def test_declined_payment_fails_without_capture(
    platform: Platform, token: str, reason: str
) -> None:
    traveller = Traveller.register(platform)
    iccid = traveller.bind_new_card()
    renewal_id = traveller.renew(iccid, token).json()["renewal_id"]

    saga = traveller.wait_for_status(renewal_id, "PAYMENT_FAILED")
    assert saga["reason"] == reason
    assert ledger(platform, "payment", reference=renewal_id)["captures"] == []
    assert ledger(platform, "esim", reference=renewal_id)["orders"] == []
    wait_until(lambda: mails_about(platform, iccid), what="a payment failure mail")


def test_flaky_provider_still_captures_once(platform: Platform) -> None:
    traveller = Traveller.register(platform)
    iccid = traveller.bind_new_card()
    renewal_id = traveller.renew(iccid, "paypal_flaky").json()["renewal_id"]

    traveller.wait_for_status(renewal_id, "ACTIVATED")
    assert len(captures_of(platform, renewal_id)) == 1


@pytest.mark.parametrize(
    ("token", "captures", "voids", "refunds"),
    [("card_ok", 0, 1, 0), ("paypal_ok", 0, 1, 0), ("alipay_ok", 1, 0, 1)],
)
def test_failed_activation_releases_the_hold_or_refunds_once(
    platform: Platform, token: str, captures: int, voids: int, refunds: int
) -> None:
    # Alipay takes CNY: its traveller is priced in yuan.
    traveller = Traveller.register(platform, locale="zh-CN" if token == "alipay_ok" else "en")
    iccid = traveller.bind_new_card()
    fault = httpx.post(
        f"{platform.url('esim')}/sandbox/faults", json={"iccid": iccid, "mode": "fail"}
    )
    assert fault.status_code == 200
    renewal_id = traveller.renew(iccid, token).json()["renewal_id"]

    saga = traveller.wait_for_status(renewal_id, "REFUNDED")
    assert "refund_requested" in [step["step"] for step in saga["timeline"]]
    payments = ledger(platform, "payment", reference=renewal_id)
    assert len(payments["captures"]) == captures
    assert len(payments["voids"]) == voids
    assert len(payments["refunds"]) == refunds
    if refunds:
        assert payments["refunds"][0]["amount"] == payments["captures"][0]["amount"]
    card = traveller.get(f"/v1/cards/{iccid}").json()
    assert card["valid_until"] is None
    wait_until(lambda: mails_about(platform, iccid), what="a refund mail")


def test_renewal_of_someone_elses_card_is_rejected(
    platform: Platform, kafka_client: PlainKafka
) -> None:
    owner = Traveller.register(platform)
    iccid = owner.bind_new_card()
    stranger = Traveller.register(platform)
    assert stranger.renew(iccid).status_code == 404

    event = renewal_requested_event(user_id=stranger.user_id, iccid=iccid)
    kafka_client.send(platform.topic("esim.renewal.requested"), iccid, event)
    [rejected] = kafka_client.records(
        platform.topic("esim.renewal.rejected"),
        lambda r: cloudevent(r).get("renewalid") == event["data"]["renewal_id"],
    )
    assert cloudevent(rejected)["data"]["reason"] == "card_not_owned"


def test_poison_message_is_dead_lettered_and_the_partition_moves_on(
    platform: Platform, kafka_client: PlainKafka
) -> None:
    traveller = Traveller.register(platform)
    iccid = traveller.bind_new_card()
    topic = platform.topic("esim.renewal.requested")
    marker = f"not json {uuid.uuid4()}".encode()
    kafka_client.send(topic, iccid, marker)
    invalid = renewal_requested_event(user_id=traveller.user_id, iccid=iccid)
    invalid["data"]["iccid"] = "1234"
    kafka_client.send(topic, iccid, invalid)
    event = renewal_requested_event(user_id=traveller.user_id, iccid=iccid)
    kafka_client.send(topic, iccid, event)

    traveller.wait_for_status(event["data"]["renewal_id"], "ACTIVATED")
    [dead] = kafka_client.records(f"{topic}.dlq", lambda r: r.value == marker)
    headers = {name: value.decode() for name, value in dead.headers}
    assert headers["x-error-type"] == "undecodable"
    assert headers["x-original-topic"] == topic
    assert {"x-error", "x-original-partition", "x-original-offset", "x-failed-at"} <= set(headers)
    [schema_invalid] = kafka_client.records(
        f"{topic}.dlq", lambda r: r.value.startswith(b"{") and cloudevent(r)["id"] == invalid["id"]
    )
    reasons = {name: value.decode() for name, value in schema_invalid.headers}
    assert reasons["x-error-type"] == "schema_invalid"
    assert "iccid" in reasons["x-error"]


def test_operator_lists_and_replays_dead_letters(
    platform: Platform, kafka_client: PlainKafka
) -> None:
    import asyncio

    from esim_core.messaging.dlq import list_dead_letters, replay
    from esim_core.settings import KafkaSettings

    kafka = KafkaSettings(kafka_bootstrap_servers=platform.kafka)

    traveller = Traveller.register(platform)
    iccid = traveller.bind_new_card()
    topic = platform.topic("esim.renewal.requested")
    poison = f"not json {uuid.uuid4()}".encode()
    kafka_client.send(topic, iccid, poison)
    kafka_client.records(f"{topic}.dlq", lambda r: r.value == poison)

    listed = asyncio.run(list_dead_letters(kafka, topic))
    assert any(item["key"] == iccid and item["size"] == len(poison) for item in listed)
    assert asyncio.run(replay(kafka, topic)) >= 1
    # Replayed, it is dead-lettered again (still poison), so it now appears twice.
    kafka_client.records(f"{topic}.dlq", lambda r: r.value == poison, at_least=2)
    assert asyncio.run(replay(kafka, topic)) >= 1
