"""The send loop: claims due notifications, finds their contact (and a receipt's payment),
renders and sends them."""

import logging
from collections.abc import Awaitable, Callable
from dataclasses import KW_ONLY, dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar

from esim_core.clock import as_utc, utcnow
from esim_core.duework.backoff import backoff
from esim_core.duework.loop import work_due
from esim_core.outside.retry import TryPolicy, within_round
from esim_core.persistence.db import Database
from esim_core.persistence.driver import Target
from esim_core.sealing import Sealer, SealError
from esim_schemas import PaymentAuthorized, PaymentSettled
from prometheus_client import Counter

from notifier.domain import (
    ACCOUNT_KINDS,
    HOLD_WAIT,
    PAYMENT_WAIT,
    Channel,
    NotificationKind,
    NotificationStatus,
    contact_recheck_s,
    event_of,
    message_id,
    refund_cause,
)
from notifier.mail import Mailer, OutgoingMail, PermanentMailError, TransientMailError
from notifier.messages import (
    RenderedMail,
    RenderError,
    TemplateMissingError,
    render_mail,
    render_sms,
    sms_segments,
    supported_locale,
)
from notifier.settings import NotifierSettings
from notifier.sms import OutgoingSms, PermanentSmsError, SmsGateway, TransientSmsError
from notifier.store import (
    Notification,
    contact_and_payments,
    kinds_told_of,
    write_notification,
)

logger = logging.getLogger(__name__)

NOTIFICATIONS = Counter(
    "esim_notifications_total",
    "Notifications that reached an outcome of a send round, by kind and outcome",
    ["kind", "outcome"],
)


@dataclass(eq=False, repr=False)  # a service object: equal to itself alone, and no secrets in reprs
class NotificationSender:
    """Sends due notifications once each; a failed round becomes a later due time, not a sleep.

    Each round reads the notification and its contact in one transaction, talks to the mailer
    outside any transaction, then records the outcome and the next due time (or none) in
    another. A crash between the relay's acceptance and that record sends the message again
    on a later round, with the same Message-ID so it is recognisable as a resend.
    """

    database: Database
    mailer: Mailer
    settings: NotifierSettings
    _: KW_ONLY
    sms: SmsGateway | None = None
    sealer: Sealer | None = None
    clock: Callable[[], datetime] = utcnow

    what: ClassVar[str] = "sending notification"

    async def send_due(self) -> int:
        """Claim due notifications once and work each; returns how many it claimed.

        The service runs `deliver` in the core's due-work loop (`ServiceRuntime.due_work`);
        this single round is for tests and tools.
        """
        return await work_due(
            self.database,
            Notification,
            self.deliver,
            what=self.what,
            limit=self.settings.send_batch,
            lease_s=self.settings.send_lease_s,
            rows=True,
        )

    async def deliver(self, row: Notification) -> None:
        """Work one notification as its claim leased it: send it, wait for its contact, or give
        up on it.

        The claim returned the row whole, so a message about the account (its recipient is in
        the event) goes out without a read; a card's message reads its contact (and a receipt
        its payment) in one transaction, which also records a wait or a failure to render.
        """
        key = row.id
        if row.status != NotificationStatus.PENDING:
            _settle(row, row.status)
            await self._write(row, _SETTLED)
            return
        if row.kind in ACCOUNT_KINDS:
            # About the account: the event named the recipient itself.
            field = "phone" if row.channel == Channel.SMS else "email"
            recipient = str(row.payload.get(field) or "")
            locale = supported_locale(row.locale)
            prepared = self._prepare(row, locale, {"event": event_of(row.kind, row.payload)})
        else:
            async with self.database.transaction() as transaction:
                found = await self._look_up(transaction, row)
                if found is None:
                    await write_notification(transaction, key, _columns(row, _SETTLED))
                    return
                recipient, locale, context = found
                prepared = self._prepare(row, locale, context)
                if prepared is None:
                    await write_notification(transaction, key, _columns(row, _SETTLED))
                    return
        if prepared is None:
            await self._write(row, _SETTLED)
            return
        rendered, kind, channel = prepared, row.kind, row.channel
        outcome: Exception | None = None
        try:
            if channel == Channel.SMS:
                await self._send_sms(OutgoingSms(key, recipient, rendered.text))
            else:
                await self._send_with_retries(
                    OutgoingMail(
                        message_id=message_id(key, self.settings.mail_domain),
                        recipient=recipient,
                        subject=rendered.subject,
                        body=rendered.text,
                        html=rendered.html,
                    )
                )
        except (PermanentMailError, PermanentSmsError) as error:
            outcome = error
            await self._record(row, locale, recipient, rendered, error=error, permanent=True)
            logger.warning("%s %s to %s refused for good: %s", kind, key, recipient, error)
        except (TransientMailError, TransientSmsError) as error:
            outcome = error
            await self._record(row, locale, recipient, rendered, error=error, permanent=False)
            logger.warning("%s %s to %s not sent this round: %s", kind, key, recipient, error)
        if outcome is None:
            await self._record(row, locale, recipient, rendered)
            logger.info("sent %s %s by %s to %s", kind, key, channel, recipient)

    async def _look_up(
        self, transaction: Target, row: Notification
    ) -> tuple[str, str, dict[str, Any]] | None:
        """A card's message: its recipient, locale and what its templates are filled with; None
        when it waits (for the contact or a receipt's payment) or cannot go (the row says)."""
        assert row.iccid is not None
        # A receipt (or a cancellation's notice) reads its payment with the contact, at once.
        with_payment = row.kind in _WITH_PAYMENT
        contact, settled, held = await contact_and_payments(
            transaction, row.iccid, row.renewal_id if with_payment else None
        )
        if contact is None:
            self._wait_for_contact(row)
            return None
        recipient = (contact.phone or "") if row.channel == Channel.SMS else contact.email
        locale = supported_locale(row.locale or contact.locale)
        if not recipient:
            # SMS turned off (the phone left the contact) after this was queued.
            _settle(row, NotificationStatus.UNDELIVERABLE, "the contact has no phone now")
            NOTIFICATIONS.labels(row.kind, "undeliverable").inc()
            return None
        try:
            context = await self._context(transaction, row, settled, held)
        except _RENDER_ERRORS as error:
            self._cannot_render(row, error)
            return None
        if context is None:
            return None  # waits for the renewal's payment
        return recipient, locale, context

    def _prepare(
        self, row: Notification, locale: str, context: dict[str, Any]
    ) -> RenderedMail | None:
        """The message rendered, or None when it cannot be (the row is settled as failed)."""
        try:
            return self._compose(row, locale, context)
        except _RENDER_ERRORS as error:
            self._cannot_render(row, error)
            return None

    def _cannot_render(self, row: Notification, error: Exception) -> None:
        logger.error("notification %s cannot be rendered: %r", row.id, error)
        _settle(row, NotificationStatus.FAILED, f"cannot render: {error!r}"[:512])
        NOTIFICATIONS.labels(row.kind, "failed").inc()

    async def _write(self, row: Notification, names: tuple[str, ...]) -> None:
        async with self.database.transaction() as transaction:
            await write_notification(transaction, row.id, _columns(row, names))

    async def _context(
        self,
        transaction: Target,
        row: Notification,
        settled: dict[str, Any] | None,
        held: dict[str, Any] | None,
    ) -> dict[str, Any] | None:
        """What a notification's templates are filled with; None while a receipt waits for
        its payment.

        A receipt waits for the renewal's PaymentSettled at most `receipt_payment_wait_s` from
        when it was queued (a PaymentSettled wakes it at once); after that it goes out without
        the payment's part rather than not at all. A payment held first (PaymentAuthorized:
        card, PayPal) is captured after the activation, so its receipt waits for that capture
        the same way, and says when the money was held and when it was taken (or, past the
        wait, that it is held and taken now that the plan is live).
        """
        context: dict[str, Any] = {"event": event_of(row.kind, row.payload)}
        if row.iccid is not None:
            context["renew_url"] = self.settings.renew_url.replace("{iccid}", row.iccid)
        if row.kind in _WITH_PAYMENT:
            payment = PaymentSettled.model_validate(settled) if settled is not None else None
            hold = PaymentAuthorized.model_validate(held) if held is not None else None
            if payment is None and row.kind == NotificationKind.PROFILE_ACTIVATED:
                if self._wait(row, self.settings.receipt_payment_wait_s):
                    row.detail = HOLD_WAIT if hold is not None else PAYMENT_WAIT
                    return None
                logger.warning(
                    "receipt %s goes without its payment: no PaymentSettled for renewal %s",
                    row.id,
                    row.renewal_id,
                )
            context["payment"] = payment
            context["hold"] = hold
        elif row.kind == NotificationKind.PAYMENT_REFUNDED:
            kinds = await _told(transaction, row.renewal_id)
            context["refund_cause"] = refund_cause(
                cancelled_by_user=NotificationKind.BUNDLE_CANCELLED in kinds,
                confirmed=NotificationKind.PROFILE_ACTIVATED in kinds,
            )
        return context

    def _compose(self, row: Notification, locale: str, context: dict[str, Any]) -> RenderedMail:
        """The message of a notification; a sealed reset code is opened only here."""
        if row.kind == NotificationKind.PASSWORD_RESET:
            sealed = row.payload.get("code_sealed")
            if not isinstance(sealed, str) or self.sealer is None:
                raise ValueError("the reset event carries no code this notifier can open")
            context = context | {"code": self.sealer.open(sealed, str(row.payload["user_id"]))}
        if row.channel == Channel.SMS:
            text = render_sms(row.kind, locale, context)
            if sms_segments(text) > 2:
                logger.warning("text message %s takes %d segments", row.id, sms_segments(text))
            return RenderedMail(subject="", text=text, html="")
        return render_mail(row.kind, locale, context)

    async def _send_sms(self, sms: OutgoingSms) -> None:
        if self.sms is None:
            raise PermanentSmsError("no SMS gateway is configured")
        gateway = self.sms
        await self._with_retries(
            lambda: gateway.send(sms),
            TransientSmsError,
            what=f"sms {sms.message_id}",
            system="SMS gateway",
        )

    async def _send_with_retries(self, mail: OutgoingMail) -> None:
        await self._with_retries(
            lambda: self.mailer.send(mail),
            TransientMailError,
            what=f"mail {mail.message_id}",
            system="SMTP relay",
        )

    async def _with_retries(
        self,
        send: Callable[[], Awaitable[None]],
        transient: type[Exception],
        *,
        what: str,
        system: str,
    ) -> None:
        """A few jittered tries within this round; what still fails waits for a later round."""
        wait = self.settings.smtp_retry_wait_s
        policy = TryPolicy(
            attempts=self.settings.smtp_attempts, wait_multiplier_s=wait, wait_max_s=wait * 8
        )
        await within_round(what, send, policy, transient, system)

    async def _record(
        self,
        row: Notification,
        locale: str,
        recipient: str,
        rendered: RenderedMail,
        *,
        error: Exception | None = None,
        permanent: bool = False,
    ) -> None:
        now = self.clock()
        row.locale = locale
        row.recipient = recipient
        row.subject = rendered.subject[:512] or None
        if error is None:
            row.sent_at = now
            _settle(row, NotificationStatus.SENT)
            NOTIFICATIONS.labels(row.kind, "sent").inc()
        elif permanent:
            _settle(row, NotificationStatus.FAILED, f"relay refused it: {error}"[:512])
            NOTIFICATIONS.labels(row.kind, "failed").inc()
        else:
            row.send_rounds += 1
            if row.send_rounds >= self.settings.max_send_rounds:
                _settle(
                    row,
                    NotificationStatus.FAILED,
                    f"gave up after {row.send_rounds} send rounds: {error}"[:512],
                )
                NOTIFICATIONS.labels(row.kind, "failed").inc()
            else:
                # Jitter spreads the retries of many messages that failed together.
                pause = backoff(
                    row.send_rounds,
                    self.settings.send_backoff_s,
                    self.settings.send_backoff_max_s,
                    jitter=0.2,
                )
                row.due_at = now + timedelta(seconds=pause)
                row.lease_until = None
                row.detail = f"send round {row.send_rounds} failed: {error}"[:512]
                NOTIFICATIONS.labels(row.kind, "retry").inc()
        await self._write(row, _RECORDED)

    def _wait_for_contact(self, row: Notification) -> None:
        if self._wait(row, self.settings.contact_wait_s):
            row.detail = "waiting for the card's contact (CardBound)"
            return
        limit = self.settings.contact_wait_s
        _settle(
            row,
            NotificationStatus.UNDELIVERABLE,
            f"no contact for card {row.iccid}: no CardBound arrived within {limit:g} s",
        )
        NOTIFICATIONS.labels(row.kind, "undeliverable").inc()
        logger.warning(
            "%s %s is undeliverable: no contact for card %s after %g s",
            row.kind,
            row.id,
            row.iccid,
            limit,
        )

    def _wait(self, row: Notification, limit_s: float) -> bool:
        """Look again later, if the row was queued less than `limit_s` ago; tells whether."""
        now = self.clock()
        created = as_utc(row.created_at)
        waited = (now - created).total_seconds()
        if waited >= limit_s:
            return False
        pause = timedelta(seconds=contact_recheck_s(waited, self.settings.contact_recheck_max_s))
        row.due_at = min(now + pause, created + timedelta(seconds=limit_s))
        row.lease_until = None
        return True


async def _told(transaction: Target, renewal_id: str | None) -> set[str]:
    """The kinds of message queued about a renewal; a cancellation counts when its owner's."""
    if renewal_id is None:
        return set()
    return {
        kind
        for kind, payload in await kinds_told_of(transaction, renewal_id)
        if kind != NotificationKind.BUNDLE_CANCELLED or payload.get("reason") == "cancelled_by_user"
    }


#: What deciding a round without a send may change of a row, and what a send round records.
_SETTLED = ("status", "due_at", "lease_until", "detail")
_RECORDED = (*_SETTLED, "locale", "recipient", "subject", "sent_at", "send_rounds")

#: The kinds whose message tells the renewal's payment (read with the contact).
_WITH_PAYMENT = frozenset({NotificationKind.PROFILE_ACTIVATED, NotificationKind.BUNDLE_CANCELLED})

#: What a notification that cannot be rendered raises (it fails, and the others go on).
_RENDER_ERRORS = (TemplateMissingError, RenderError, SealError, KeyError, TypeError, ValueError)


def _columns(row: Notification, names: tuple[str, ...]) -> dict[str, Any]:
    return {name: getattr(row, name) for name in names}


def _settle(row: Notification, status: str, detail: str | None = None) -> None:
    """Give the row a final status; nothing more is due."""
    row.status = status
    row.due_at = None
    row.lease_until = None
    if status == NotificationStatus.SENT:
        row.detail = None
    elif detail is not None:
        row.detail = detail
