"""Usage from the eSIM platform over the real broker: card status, alerts once, plan changes."""

import email
import email.policy
import uuid
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.client import PlainKafka, Traveller, cloudevent
from tests.support.infra import Platform, wait_until

pytestmark = pytest.mark.integration

PLAN_MB = 10240  # JP-30D-10GB


@pytest.fixture(scope="module")
def kafka_client(platform: Platform) -> Iterator[PlainKafka]:
    client = PlainKafka(platform.kafka)
    yield client
    client.close()


def read_mail(path: Path) -> tuple[str, str]:
    """The decoded subject and text of a mail the SMTP sink kept."""
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    body = message.get_body(("plain",))
    return str(message["Subject"]), body.get_content() if body is not None else ""


def sandbox(platform: Platform, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(f"{platform.url('esim')}{path}", json=body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def use(platform: Platform, iccid: str, share: int) -> None:
    """Set the card's used data at the platform to `share` per cent of the plan."""
    sandbox(platform, "/sandbox/usage", {"iccid": iccid, "data_used_mb": PLAN_MB * share // 100})


def active_card(platform: Platform, **renewal: Any) -> tuple[Traveller, str, str]:
    traveller = Traveller.register(platform)
    iccid = traveller.bind_new_card()
    renewal_id = traveller.renew(iccid, "card_ok", **renewal).json()["renewal_id"]
    traveller.wait_for_status(renewal_id, "ACTIVATED")
    return traveller, iccid, renewal_id


def events_of(
    kafka: PlainKafka, platform: Platform, topic: str, iccid: str, *, at_least: int = 1, **data: Any
) -> list[dict[str, Any]]:
    """The CloudEvents of a card on a topic whose data has these values, once there are enough."""

    def matches(record: Any) -> bool:
        event = cloudevent(record)
        return event.get("subject") == iccid and all(
            event["data"].get(k) == v for k, v in data.items()
        )

    records = kafka.records(platform.topic(topic), matches, at_least=at_least, timeout=90)
    return [cloudevent(r) for r in records]


def thresholds(kafka: PlainKafka, platform: Platform, iccid: str, *, at_least: int) -> list[int]:
    events = events_of(kafka, platform, "esim.data.low", iccid, at_least=at_least)
    # At least once: a re-publication keeps its id, and consumers take one event per id.
    return sorted({e["id"]: e["data"]["threshold"] for e in events}.values())


def usage_seen(kafka: PlainKafka, platform: Platform, iccid: str, share: int) -> None:
    """Wait until provisioning has published the card's usage at `share` per cent."""
    events_of(kafka, platform, "esim.usage.updated", iccid, data_used_mb=PLAN_MB * share // 100)


def test_usage_set_at_the_sandbox_reaches_the_card_status(platform: Platform) -> None:
    traveller, iccid, _ = active_card(platform)
    use(platform, iccid, 30)

    def measured() -> dict[str, Any] | None:
        card: dict[str, Any] = traveller.get(f"/v1/cards/{iccid}").json()
        return card if card["data_remaining_mb"] == PLAN_MB - PLAN_MB * 30 // 100 else None

    # The test platform polls every 0.5 to 2 s, but a loaded CI machine (five workers on two
    # cores) has taken more than 30 s for the poll, the hop over Kafka and the consumer.
    card = wait_until(measured, timeout=90, what="the card status to show the usage")
    assert card["usage_as_of"] is not None and card["state"] == "active"
    assert card["usage_as_of"].endswith(("Z", "+00:00"))


def test_thresholds_75_and_90_once_each_as_usage_goes_80_82_95(
    platform: Platform, kafka_client: PlainKafka
) -> None:
    _, iccid, renewal_id = active_card(platform)
    use(platform, iccid, 80)
    usage_seen(kafka_client, platform, iccid, 80)
    use(platform, iccid, 82)
    usage_seen(kafka_client, platform, iccid, 82)
    use(platform, iccid, 95)
    usage_seen(kafka_client, platform, iccid, 95)
    assert thresholds(kafka_client, platform, iccid, at_least=2) == [75, 90]
    events = events_of(kafka_client, platform, "esim.data.low", iccid, at_least=2)
    assert {e["data"]["renewal_id"] for e in events} == {renewal_id}
    assert len({e["id"] for e in events}) == 2

    def low_data_mails() -> list[str]:
        mails = [read_mail(path) for path in sorted(platform.mail_dir.glob("*.eml"))]
        return [body for subject, body in mails if iccid in body and "data left" in subject]

    # The notifier writes at 90 % (not at 75 %), with a link back to renewal.
    [mail] = wait_until(low_data_mails, what="the low-data mail")
    assert "/docs#/renewals" in mail


def test_a_jump_from_10_to_100_publishes_75_90_100_once_each(
    platform: Platform, kafka_client: PlainKafka
) -> None:
    traveller, iccid, renewal_id = active_card(platform)
    use(platform, iccid, 10)
    usage_seen(kafka_client, platform, iccid, 10)
    use(platform, iccid, 100)
    [ended] = events_of(kafka_client, platform, "esim.bundle.ended", iccid)
    assert ended["data"]["reason"] == "depleted" and ended["data"]["renewal_id"] == renewal_id
    assert thresholds(kafka_client, platform, iccid, at_least=3) == [75, 90, 100]
    card = wait_until(
        lambda: (c := traveller.get(f"/v1/cards/{iccid}").json())["state"] == "depleted" and c,
        what="the card to read depleted",
    )
    assert card["data_remaining_mb"] == 0


def test_a_callback_with_a_bad_signature_is_refused_and_polling_picks_the_change_up(
    platform: Platform, kafka_client: PlainKafka
) -> None:
    _, iccid, _ = active_card(platform)
    sandbox(platform, "/sandbox/callbacks/mode", {"iccid": iccid, "mode": "bad_signature"})
    use(platform, iccid, 80)
    assert thresholds(kafka_client, platform, iccid, at_least=1) == [75]

    def refused() -> list[dict[str, Any]]:
        log = httpx.get(f"{platform.url('esim')}/sandbox/callbacks", params={"iccid": iccid})
        return [
            c for c in log.json()["callbacks"] if c["type"] == "usage.threshold" and c["statuses"]
        ]

    [callback] = wait_until(refused, what="the threshold callback to be answered")
    assert set(callback["statuses"]) == {401} and callback["delivered"] is False


def test_a_duplicated_callback_is_handled_once(
    platform: Platform, kafka_client: PlainKafka
) -> None:
    _, iccid, _ = active_card(platform)
    # No polls in between would be a stronger test, but polls only ever add the same facts.
    use(platform, iccid, 76)

    def delivered() -> list[dict[str, Any]]:
        log = httpx.get(f"{platform.url('esim')}/sandbox/callbacks", params={"iccid": iccid})
        return [
            c for c in log.json()["callbacks"] if c["type"] == "usage.threshold" and c["delivered"]
        ]

    [callback] = wait_until(delivered, what="the threshold callback to be delivered")
    sandbox(platform, "/sandbox/callbacks/redeliver", {"id": callback["id"]})

    def answered_twice() -> bool:
        log = httpx.get(f"{platform.url('esim')}/sandbox/callbacks", params={"iccid": iccid})
        [again] = [c for c in log.json()["callbacks"] if c["id"] == callback["id"]]
        return bool(again["statuses"] == [200, 200])

    wait_until(answered_twice, what="the repeated callback to be answered")
    # A later change on the same card (same partition) comes after anything the repeat caused.
    use(platform, iccid, 91)
    usage_seen(kafka_client, platform, iccid, 91)
    assert thresholds(kafka_client, platform, iccid, at_least=2) == [75, 90]


def live_plans(kafka: PlainKafka, platform: Platform, iccid: str) -> str | None:
    """A carrier's view from the public topics alone: the renewal whose plan is live on a card.

    Live is the latest-starting bundle announced live (ProfileActivated `active`, or
    BundleStarted) that has not ended (BundleEnded) nor been cancelled or replaced
    (BundleCancelled); topic order does not matter.
    """
    starts: dict[str, str] = {}
    ended: set[str] = set()
    topics = ("esim.profile.activated", "esim.bundle.started", "esim.bundle.ended")
    for topic in (*topics, "esim.bundle.cancelled"):
        records = kafka.records(
            platform.topic(topic), lambda r: cloudevent(r).get("subject") == iccid, at_least=0
        )
        for record in records:
            data = cloudevent(record)["data"]
            if topic in ("esim.bundle.ended", "esim.bundle.cancelled"):
                ended.add(data["renewal_id"])
            elif data.get("bundle_state", "active") == "active":
                starts[data["renewal_id"]] = data["valid_from"]
    live = {renewal: start for renewal, start in starts.items() if renewal not in ended}
    return max(live, key=lambda renewal: live[renewal], default=None)


def test_a_queued_plan_becomes_the_cards_plan_when_the_current_one_ends(
    platform: Platform, kafka_client: PlainKafka
) -> None:
    """About 10 s: two renewals, then the current plan ends at the sandbox and the switch is
    heard at the next usage polls (every 0.5 to 2 s)."""
    traveller, iccid, first = active_card(platform, plan_code="JP-1D-1GB")
    second = traveller.renew(iccid, "card_ok", start="after_current").json()["renewal_id"]
    traveller.wait_for_status(second, "ACTIVATED")
    card = traveller.get(f"/v1/cards/{iccid}").json()
    assert card["plan_code"] == "JP-1D-1GB"
    assert [q["renewal_id"] for q in card["queued"]] == [second]
    assert live_plans(kafka_client, platform, iccid) == first

    sandbox(platform, "/sandbox/validity", {"iccid": iccid, "ends_in_s": 1})
    [started] = events_of(kafka_client, platform, "esim.bundle.started", iccid)
    assert started["data"]["renewal_id"] == second
    events_of(kafka_client, platform, "esim.bundle.ended", iccid, renewal_id=first)

    def switched() -> dict[str, Any] | None:
        shown: dict[str, Any] = traveller.get(f"/v1/cards/{iccid}").json()
        return shown if shown["plan_code"] == "JP-30D-10GB" and not shown["queued"] else None

    card = wait_until(switched, what="the queued plan to become the card's plan")
    assert card["state"] == "active"
    history = traveller.get(f"/v1/cards/{iccid}/plans").json()
    assert [(h["renewal_id"], h["state"]) for h in history] == [
        (second, "active"),
        (first, "expired"),
    ]
    assert live_plans(kafka_client, platform, iccid) == second


def test_provisioning_killed_while_usage_changes_loses_and_doubles_no_threshold(
    platform: Platform, kafka_client: PlainKafka
) -> None:
    """About 20 s: provisioning is killed and started again twice."""
    _, iccid, _ = active_card(platform)
    use(platform, iccid, 50)
    usage_seen(kafka_client, platform, iccid, 50)
    use(platform, iccid, 77)
    platform.processes["provisioning"].kill()
    use(platform, iccid, 92)
    platform.restart("provisioning")
    usage_seen(kafka_client, platform, iccid, 92)
    platform.processes["provisioning"].kill()
    use(platform, iccid, 100)
    platform.restart("provisioning")
    events_of(kafka_client, platform, "esim.bundle.ended", iccid)
    events = events_of(kafka_client, platform, "esim.data.low", iccid, at_least=3)
    # Republished after a crash an event keeps its id; consumers drop the repeat by id.
    by_id = {e["id"]: e["data"]["threshold"] for e in events}
    assert sorted(by_id.values()) == [75, 90, 100]
    assert uuid.UUID(next(iter(by_id)))
