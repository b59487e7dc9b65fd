"""The one place where the notifier's adapters are chosen and wired to its runtime."""

from dataclasses import dataclass

from esim_core.persistence.migrations import service_migrations
from esim_core.service import ServiceRuntime

from notifier import handlers
from notifier.mail import Mailer
from notifier.mail.smtp import SmtpMailer
from notifier.sender import NotificationSender
from notifier.settings import NotifierSettings
from notifier.sms import SmsGateway
from notifier.sms.http import HttpSmsGateway
from notifier.store import TABLES, Notification

# services/notifier/migrations: the Alembic scripts applied at start.
MIGRATIONS = service_migrations(__file__)


@dataclass(frozen=True)
class Notifier:
    """The wired service: its runtime, and the parts tests drive directly."""

    runtime: ServiceRuntime
    mailer: Mailer
    sms: SmsGateway
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


def http_sms_gateway(settings: NotifierSettings) -> HttpSmsGateway:
    """The HTTP SMS provider adapter configured from settings."""
    password = settings.sms_password
    return HttpSmsGateway(
        settings.sms_gateway_url,
        sender=settings.sms_sender,
        username=settings.sms_username,
        password=password.get_secret_value() if password is not None else None,
        timeout_s=settings.sms_timeout_s,
    )


def build(
    settings: NotifierSettings, *, mailer: Mailer | None = None, sms: SmsGateway | None = None
) -> Notifier:
    """Wire the notifier: consumers for each event it mails about, and the send loop.

    Args:
        settings: the service's settings.
        mailer: where e-mail goes; SMTP to `NOTIFIER_SMTP_HOST` unless a test passes a fake.
        sms: where text messages go; HTTP to `NOTIFIER_SMS_GATEWAY_URL` unless a test passes one.
    """
    runtime = ServiceRuntime("notifier", settings, tables=TABLES, migrations=MIGRATIONS)
    chosen: Mailer = runtime.adapter(mailer, lambda: smtp_mailer(settings))
    texts: SmsGateway = runtime.adapter(sms, lambda: http_sms_gateway(settings))
    sender = NotificationSender(
        runtime.database,
        chosen,
        settings,
        sms=texts,
        sealer=settings.reset_code_sealer(),
    )

    runtime.consume_each(handlers.routes(receipt_payment_wait_s=settings.receipt_payment_wait_s))
    runtime.due_work(
        Notification,
        sender.deliver,
        what=sender.what,
        concurrency=settings.send_batch,
        lease_s=settings.send_lease_s,
        rows=True,
        # Woken by a commit that queued or woke a notification due now, not by every one (a
        # PaymentAuthorized kept, a receipt queued to wait for its payment: nothing to send).
        woken_by_commits=False,
    )
    return Notifier(runtime=runtime, mailer=chosen, sms=texts, sender=sender)
