"""The one place where the notifier's adapters are chosen and wired to its runtime."""

from dataclasses import dataclass

from esim_core.consumer import Route
from esim_core.migrations import service_migrations
from esim_core.service import ServiceRuntime
from esim_schemas import (
    CardBound,
    DataLow,
    PaymentFailed,
    PaymentRefunded,
    ProfileActivated,
    RenewalRejected,
)

from notifier import handlers
from notifier.mail import Mailer
from notifier.mail.smtp import SmtpMailer
from notifier.sender import NotificationSender
from notifier.settings import NotifierSettings
from notifier.store import TABLES, Notification

# services/notifier/migrations: the Alembic scripts applied at start.
MIGRATIONS = service_migrations(__file__)


@dataclass(frozen=True)
class Notifier:
    """The wired service: its runtime, and the parts tests drive directly."""

    runtime: ServiceRuntime
    mailer: Mailer
    sender: NotificationSender


def smtp_mailer(settings: NotifierSettings) -> SmtpMailer:
    """The SMTP adapter configured from settings."""
    password = settings.smtp_password
    return SmtpMailer(
        host=settings.smtp_host,
        port=settings.smtp_port,
        mail_from=settings.mail_from,
        username=settings.smtp_username,
        password=password.get_secret_value() if password is not None else None,
        starttls=settings.smtp_starttls,
        use_tls=settings.smtp_use_tls,
        timeout_s=settings.smtp_timeout_s,
        connections=settings.smtp_connections,
    )


def build(settings: NotifierSettings, *, mailer: Mailer | None = None) -> Notifier:
    """Wire the notifier: consumers for each event it mails about, and the send loop.

    Args:
        settings: the service's settings.
        mailer: where e-mail goes; SMTP to `NOTIFIER_SMTP_HOST` unless a test passes a fake.
    """
    runtime = ServiceRuntime("notifier", settings, tables=TABLES, migrations=MIGRATIONS)
    topics = runtime.topics
    chosen: Mailer = mailer if mailer is not None else smtp_mailer(settings)
    sender = NotificationSender(runtime.database, chosen, settings)

    runtime.consume(topics.card_bound, [Route(CardBound, handlers.on_card_bound)])
    runtime.consume(
        topics.profile_activated, [Route(ProfileActivated, handlers.on_profile_activated)]
    )
    runtime.consume(topics.payment_failed, [Route(PaymentFailed, handlers.on_payment_failed)])
    runtime.consume(topics.payment_refunded, [Route(PaymentRefunded, handlers.on_payment_refunded)])
    runtime.consume(topics.renewal_rejected, [Route(RenewalRejected, handlers.on_renewal_rejected)])
    runtime.consume(
        topics.data_low, [Route(DataLow, handlers.on_data_low_with(settings.renew_url))]
    )
    runtime.due_work(
        Notification,
        sender.deliver,
        what=sender.what,
        concurrency=settings.send_batch,
        lease_s=settings.send_lease_s,
    )
    return Notifier(runtime=runtime, mailer=chosen, sender=sender)
