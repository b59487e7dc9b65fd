"""Test kit: a notifier wired to a FakeMailer and a SQLite file, and event builders."""

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

from esim_core.messaging.consumer import MessageInfo
from esim_schemas import (
    AutoRenewDisabled,
    BundleCancelled,
    CardBound,
    DataLow,
    EventData,
    Money,
    PaymentFailed,
    PaymentRefunded,
    PaymentSettled,
    PlanExpiring,
    PlanRef,
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

    async def notifications(
        self, iccid: str = ICCID, channel: str | None = "email"
    ) -> list[Notification]:
        """The card's notifications on one channel (e-mail unless told), or on all (None)."""
        async with self.runtime.database.session() as session:
            query = select(Notification).where(col(Notification.iccid) == iccid)
            if channel is not None:
                query = query.where(col(Notification.channel) == channel)
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
    locale: str = "en",
    *,
    iccid: str = ICCID,
    user_id: str = "user-1",
    email: str = "",
    phone: str | None = "+8613800000000",
) -> CardBound:
    """The card's contact; with a phone, so the user chose SMS, unless `phone` is None."""
    return CardBound(
        user_id=user_id,
        iccid=iccid,
        email=email or f"{user_id}@example.com",
        phone=phone,
        locale=locale,  # type: ignore[arg-type]
    )


def profile_activated(
    renewal_id: UUID | None = None,
    *,
    bundle_state: str = "active",
    iccid: str = ICCID,
    replaces: list[str] | None = None,
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
        replaces=replaces,
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


def payment_settled(
    renewal_id: UUID | None = None,
    *,
    amount: int = 8910,
    discount: int | None = 990,
    promo_code: str | None = "WELCOME10",
    iccid: str = ICCID,
) -> PaymentSettled:
    """The payment of a renewal: 89.10 CNY by Alipay after 9.90 off with WELCOME10."""
    return PaymentSettled(
        renewal_id=renewal_id or uuid4(),
        payment_id="pay-1",
        iccid=iccid,
        plan=PlanRef(code="JP-30D-10GB", data_mb=10240, validity_days=30),
        price=Money(amount=amount, currency="CNY"),
        method="alipay",
        provider_reference="ch_3PZ9xK",
        attempts=1,
        settled_at=NOW,
        start="now",
        discount=Money(amount=discount, currency="CNY") if discount is not None else None,
        promo_code=promo_code,
    )


def data_low(
    threshold: int,
    renewal_id: UUID | None = None,
    remaining: int = 1024,
    *,
    plan: str | None = "JP-30D-10GB",
) -> DataLow:
    return DataLow(
        iccid=ICCID,
        renewal_id=renewal_id or uuid4(),
        threshold=threshold,  # type: ignore[arg-type]
        data_remaining_mb=remaining,
        as_of=NOW,
        data_total_mb=10240,
        plan_code=plan,
    )


def plan_expiring(
    days_left: int = 1,
    *,
    auto_renew: bool | None = False,
    renewal_id: UUID | None = None,
    valid_until: datetime | None = None,
) -> PlanExpiring:
    return PlanExpiring(
        iccid=ICCID,
        user_id="user-1",
        plan_code="JP-1D-1GB",
        valid_until=valid_until or NOW + timedelta(days=days_left),
        days_left=days_left,
        renewal_id=renewal_id,
        auto_renew=auto_renew,
    )


def auto_renew_disabled(
    reason: str = "declined",
    *,
    renewal_id: UUID | None = None,
    plan: str | None = "JP-1D-1GB",
) -> AutoRenewDisabled:
    return AutoRenewDisabled(
        iccid=ICCID,
        user_id="user-1",
        reason=reason,  # type: ignore[arg-type]
        renewal_id=renewal_id,
        plan_code=plan,
        disabled_at=NOW,
    )


def bundle_cancelled(
    renewal_id: UUID | None = None,
    *,
    reason: str = "cancelled_by_user",
    replaced_by: UUID | None = None,
) -> BundleCancelled:
    return BundleCancelled(
        renewal_id=renewal_id or uuid4(),
        iccid=ICCID,
        plan_code="JP-30D-10GB",
        reason=reason,  # type: ignore[arg-type]
        cancelled_at=NOW,
        replaced_by=replaced_by,
    )
