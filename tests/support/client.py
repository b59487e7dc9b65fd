"""What a frontend, a carrier and an operator do in the tests: HTTP calls and plain Kafka."""

import csv
import email
import email.policy
import itertools
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from tests.support.infra import ROOT, Platform, wait_until

TERMINAL = {"ACTIVATED", "PAYMENT_FAILED", "REFUNDED", "REJECTED", "TIMED_OUT", "CANCELLED"}


def _demo_cards() -> Iterator[tuple[str, str]]:
    with (ROOT / "deploy/local/cards.csv").open() as handle:
        rows = [(row["iccid"], row["activation_code"]) for row in csv.DictReader(handle)]
    return iter(rows)


# One pass over the inventory per platform: a session may run one on SQLite and one on PostgreSQL.
_cards: dict[Path, Iterator[tuple[str, str]]] = {}
_cards_lock = threading.Lock()


def next_card(platform: Platform) -> tuple[str, str]:
    """A demo card no other test has used on this platform."""
    with _cards_lock:
        return next(_cards.setdefault(platform.workdir, _demo_cards()))


@dataclass
class Traveller:
    """A registered user with an access token, talking to the accounts API."""

    platform: Platform
    email: str
    user_id: str
    token: str

    @classmethod
    def register(cls, platform: Platform, locale: str = "en") -> "Traveller":
        """Register a new user and log in."""
        base = platform.url("accounts")
        email = f"traveller-{uuid.uuid4().hex[:10]}@example.com"
        created = httpx.post(
            f"{base}/v1/users",
            json={"email": email, "password": "correct horse 1", "locale": locale},
        )
        assert created.status_code == 201, created.text
        token = httpx.post(
            f"{base}/v1/auth/token", data={"username": email, "password": "correct horse 1"}
        )
        assert token.status_code == 200, token.text
        return cls(platform, email, created.json()["id"], token.json()["access_token"])

    @property
    def headers(self) -> dict[str, str]:
        """The bearer authorization header."""
        return {"Authorization": f"Bearer {self.token}"}

    def get(self, path: str) -> httpx.Response:
        """GET on the accounts API as this user."""
        return httpx.get(f"{self.platform.url('accounts')}{path}", headers=self.headers)

    def choose_sms(self) -> str:
        """Give the account a new phone number and choose SMS (and e-mail); returns the number.

        The notifier learns a card's phone from CardBound: choose before binding the card.
        """
        phone = f"+86139{uuid.uuid4().int % 10**8:08d}"
        response = httpx.patch(
            f"{self.platform.url('accounts')}/v1/users/me",
            json={"phone": phone, "notify": {"email": True, "sms": True}},
            headers=self.headers,
        )
        assert response.status_code == 200, response.text
        assert response.json()["phone"] == phone
        return phone

    def bind_new_card(self) -> str:
        """Bind an unused demo card; returns its ICCID."""
        iccid, code = next_card(self.platform)
        response = httpx.post(
            f"{self.platform.url('accounts')}/v1/cards",
            json={"iccid": iccid, "activation_code": code},
            headers=self.headers,
        )
        assert response.status_code == 201, response.text
        return iccid

    def renew(
        self,
        iccid: str,
        token: str = "card_ok",
        *,
        plan_code: str = "JP-30D-10GB",
        start: str = "now",
        key: str | None = None,
    ) -> httpx.Response:
        """Ask for a renewal over HTTP."""
        method = token.split("_", 1)[0]
        headers = dict(self.headers)
        if key is not None:
            headers["Idempotency-Key"] = key
        return httpx.post(
            f"{self.platform.url('accounts')}/v1/cards/{iccid}/renewals",
            json={
                "plan_code": plan_code,
                "payment": {"method": method, "token": token},
                "start": start,
            },
            headers=headers,
        )

    def wait_for_status(
        self, renewal_id: str, *statuses: str, timeout: float = 60
    ) -> dict[str, Any]:
        """Poll the renewal until it reaches one of `statuses` (or any terminal one)."""
        wanted = set(statuses) or TERMINAL

        def reached() -> dict[str, Any] | None:
            response = self.get(f"/v1/renewals/{renewal_id}")
            if response.status_code != 200:
                return None
            body: dict[str, Any] = response.json()
            if body["status"] in wanted or (body["status"] in TERMINAL and not statuses):
                return body
            if body["status"] in TERMINAL - wanted:
                raise AssertionError(f"renewal ended in {body['status']}, wanted {wanted}: {body}")
            return None

        result: dict[str, Any] = wait_until(reached, timeout=timeout, what=f"renewal {wanted}")
        return result


def ledger(platform: Platform, sandbox: str, **filters: str) -> dict[str, Any]:
    """What a sandbox recorded (captures and refunds, or bundle orders)."""
    response = httpx.get(f"{platform.url(sandbox)}/sandbox/ledger", params=filters)
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def captures_of(platform: Platform, renewal_id: str, timeout: float = 30.0) -> list[dict[str, Any]]:
    """A renewal's captures at the payment sandbox, once there is one.

    A card or PayPal payment is held first and captured after `ProfileActivated`, so its
    capture may come just after the saga shows ACTIVATED.
    """
    from tests.support.infra import wait_until

    captures: list[dict[str, Any]] = wait_until(
        lambda: ledger(platform, "payment", reference=renewal_id)["captures"],
        timeout=timeout,
        what=f"the capture of renewal {renewal_id}",
    )
    return captures


def mails_to(platform: Platform, address: str) -> list[EmailMessage]:
    """The mails the SMTP sink received for an address, in the order they came."""
    found = []
    # The sink names each file by the UTC time it came.
    for path in sorted(platform.mail_dir.glob("*.eml")):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        if address in str(message["To"]):
            found.append(message)
    return found


def mail_parts(message: EmailMessage) -> tuple[str, str]:
    """The plain-text and the HTML part of a mail (each must be there)."""
    text, html = message.get_body(("plain",)), message.get_body(("html",))
    assert text is not None and html is not None, f"not text and HTML: {message['Subject']}"
    return text.get_content(), html.get_content()


def texts_to(platform: Platform, number: str) -> list[str]:
    """The text messages the SMS sandbox received for a number, oldest first."""
    listed = httpx.get(f"{platform.url('sms')}/sandbox/messages", params={"to": number})
    assert listed.status_code == 200, listed.text
    return [item["text"] for item in listed.json()]


def notifications(platform: Platform, iccid: str, kind: str) -> dict[str, list[str]]:
    """The statuses of the notifier's notifications of one kind about a card, per channel."""
    response = httpx.get(
        f"{platform.url('notifier')}/v1/notifications",
        params={"iccid": iccid},
        headers=platform.operator_headers,
    )
    assert response.status_code == 200, response.text
    found: dict[str, list[str]] = {}
    for item in response.json():
        if item["kind"] == kind:
            found.setdefault(item["channel"], []).append(item["status"])
    return found


def renewal_requested_event(
    *,
    user_id: str,
    iccid: str,
    token: str = "card_ok",
    renewal_id: str | None = None,
    plan_code: str = "JP-30D-10GB",
    event_id: str | None = None,
) -> dict[str, Any]:
    """A RenewalRequested CloudEvent as an upstream frontend would write it, by hand."""
    renewal = renewal_id or str(uuid.uuid4())
    return {
        "specversion": "1.0",
        "id": event_id or str(uuid.uuid4()),
        "source": "/frontends/partner-site",
        "type": "esim.renewal.requested.v1",
        "subject": iccid,
        "time": "2026-11-24T10:00:00.000Z",
        "datacontenttype": "application/json",
        "renewalid": renewal,
        "data": {
            "renewal_id": renewal,
            "user_id": user_id,
            "iccid": iccid,
            "plan_code": plan_code,
            "payment": {"method": token.split("_", 1)[0], "token": token},
            "start": "now",
            "requested_at": "2026-11-24T10:00:00.000Z",
        },
    }


class PlainKafka:
    """A plain kafka-python client, as an outside system would use."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")

    def send(self, topic: str, key: str, value: bytes | dict[str, Any]) -> None:
        """Publish one message and wait for the broker's ack."""
        raw = value if isinstance(value, bytes) else json.dumps(value).encode()
        self.producer.send(topic, key=key.encode(), value=raw).get(timeout=30)

    def records(
        self, topic: str, matches: Callable[[Any], bool], *, at_least: int = 1, timeout: float = 60
    ) -> list[Any]:
        """All records of a topic (from the beginning) that match, once there are `at_least`.

        A record `matches` cannot read (not JSON, or not the shape it expects) does not match:
        tests that share a platform leave poison records on its topics for each other (the
        renewal flow's undecodable and schema-invalid requests), and a test reading a topic from
        its beginning must step over them as the services do.
        """
        consumer = KafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False, consumer_timeout_ms=500
        )
        try:
            partitions = wait_until(
                lambda: consumer.partitions_for_topic(topic), timeout=timeout, what=f"topic {topic}"
            )
            assigned = [TopicPartition(topic, p) for p in partitions]
            found: list[Any] = []

            def enough() -> bool:
                consumer.assign(assigned)
                consumer.seek_to_beginning(*assigned)
                found.clear()
                for _ in itertools.count():
                    batch = consumer.poll(timeout_ms=500)
                    if not batch:
                        break
                    for messages in batch.values():
                        found.extend(m for m in messages if _readable_match(matches, m))
                return len(found) >= at_least

            wait_until(enough, timeout=timeout, interval=0.5, what=f"{at_least} records on {topic}")
            return list(found)
        finally:
            consumer.close()

    def close(self) -> None:
        """Flush and close the producer."""
        self.producer.close()


def _readable_match(matches: Callable[[Any], bool], record: Any) -> bool:
    try:
        return matches(record)
    except (ValueError, KeyError, TypeError):  # JSONDecodeError is a ValueError
        return False


def cloudevent(record: Any) -> dict[str, Any]:
    """The CloudEvent a Kafka record carries."""
    value: dict[str, Any] = json.loads(record.value)
    return value
