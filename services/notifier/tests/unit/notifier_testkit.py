"""Test kit: a notifier wired to a FakeMailer and a SQLite file, and event builders."""

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

from esim_core.consumer import MessageInfo
from esim_schemas import (
    CardBound,
    EventData,
    Money,
    PaymentFailed,
    PaymentRefunded,
    ProfileActivated,
    RenewalRejected,
    luhn_valid,
    new_event,
)
from notifier import bootstrap
from notifier.mail import OutgoingMail
from notifier.settings import NotifierSettings
from notifier.sms import OutgoingSms
from notifier.store import Contact, Notification
from sqlmodel import col, select

NOW = datetime(2026, 11, 23, 10, 15, 30, tzinfo=UTC)


def make_iccid(seed: int) -> str:
    """A 19-digit ICCID with a valid Luhn check digit."""
    body = f"894450010219{seed:06d}"
    return next(body + digit for digit in "0123456789" if luhn_valid(body + digit))


ICCID = make_iccid(830482)


class FakeMailer:
    """Keeps what it is given; raises the queued failures first."""

    def __init__(self) -> None:
        self.sent: list[OutgoingMail] = []
        self.failures: list[Exception] = []
        self.calls = 0

    async def send(self, mail: OutgoingMail) -> None:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        self.sent.append(mail)


class FakeSms:
    """Keeps the text messages it is given; raises the queued failures first."""

    def __init__(self) -> None:
        self.sent: list[OutgoingSms] = []
        self.failures: list[Exception] = []

    async def send(self, sms: OutgoingSms) -> None:
        if self.failures:
            raise self.failures.pop(0)
        self.sent.append(sms)


class Harness:
    """The wired notifier, driven the way Kafka and the send loop drive it."""

    def __init__(self, notifier: bootstrap.Notifier, mailer: FakeMailer) -> None:
        self.notifier = notifier
        self.runtime = notifier.runtime
        self.mailer = mailer

    async def publish(
        self, data: EventData, *, event_id: str | None = None, time: datetime | None = None
    ) -> str:
        """Hand an event to the consumer of its topic, as the broker would; returns its id."""
        event = new_event(data, source="/tests", event_id=event_id, time=time)
        topic = self.runtime.topics.for_event(type(data))
        consumer = self.runtime.subscribe()
        assert consumer is not None
        key = (data.subject() or "").encode()
        await consumer.handle(event.to_json(), MessageInfo(topic, 0, 0, key))
        return event.id

    async def send(self) -> int:
        """One round of the send loop."""
        return await self.notifier.sender.send_due()

    async def notifications(self, iccid: str = ICCID) -> list[Notification]:
        async with self.runtime.database.session() as session:
            query = select(Notification).where(col(Notification.iccid) == iccid)
            return list((await session.exec(query)).all())

    async def contact(self, iccid: str = ICCID) -> Contact | None:
        async with self.runtime.database.session() as session:
            return await session.get(Contact, iccid)

    async def update(self, key: str, **values: Any) -> None:
        """Change a stored notification, e.g. to pretend time has passed."""
        async with self.runtime.database.session() as session:
            row = await session.get(Notification, key)
            assert row is not None
            for name, value in values.items():
                setattr(row, name, value)
            session.add(row)


def settings_for(tmp_path: Path, **overrides: Any) -> NotifierSettings:
    values: dict[str, Any] = {
        "database_url": f"sqlite+aiosqlite:///{tmp_path}/notifier.sqlite",
        "smtp_retry_wait_s": 0.001,
        **overrides,
    }
    return NotifierSettings(**values)


def card_bound(
    locale: str = "en", *, iccid: str = ICCID, user_id: str = "user-1", email: str = ""
) -> CardBound:
    return CardBound(
        user_id=user_id,
        iccid=iccid,
        email=email or f"{user_id}@example.com",
        phone="+8613800000000",
        locale=locale,  # type: ignore[arg-type]
    )


def profile_activated(
    renewal_id: UUID | None = None, *, bundle_state: str = "active", iccid: str = ICCID
) -> ProfileActivated:
    return ProfileActivated(
        renewal_id=renewal_id or uuid4(),
        iccid=iccid,
        plan_code="JP-30D-10GB",
        data_mb=10240,
        valid_from=NOW,
        valid_until=NOW + timedelta(days=30),
        bundle_state=bundle_state,  # type: ignore[arg-type]
        platform_reference="bundle-1",
        activated_at=NOW,
    )


def payment_failed(renewal_id: UUID | None = None, *, reason: str = "declined") -> PaymentFailed:
    return PaymentFailed(
        renewal_id=renewal_id or uuid4(),
        payment_id="pay-1",
        iccid=ICCID,
        reason=reason,  # type: ignore[arg-type]
        attempts=1,
        failed_at=NOW,
    )


def payment_refunded(renewal_id: UUID | None = None) -> PaymentRefunded:
    return PaymentRefunded(
        renewal_id=renewal_id or uuid4(),
        payment_id="pay-1",
        refund_id="refund-7",
        iccid=ICCID,
        price=Money(amount=9900, currency="CNY"),
        refunded_at=NOW,
    )


def renewal_rejected(
    renewal_id: UUID | None = None, *, user_id: str | None = "user-1", reason: str = "unknown_plan"
) -> RenewalRejected:
    return RenewalRejected(
        renewal_id=renewal_id or uuid4(),
        iccid=ICCID,
        user_id=user_id,
        reason=reason,  # type: ignore[arg-type]
        detail="plan XX-1D-1GB is not in the catalogue",
    )
