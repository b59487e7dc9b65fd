"""What a notification is, its states, and how one becomes an e-mail's subject and body."""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from uuid import NAMESPACE_URL, uuid5

from notifier import templates


class NotificationKind(StrEnum):
    """What happened that a person hears about."""

    PROFILE_ACTIVATED = "profile_activated"
    PAYMENT_FAILED = "payment_failed"
    PAYMENT_REFUNDED = "payment_refunded"
    RENEWAL_REJECTED = "renewal_rejected"
    DATA_LOW = "data_low"
    DATA_USED_UP = "data_used_up"
    PASSWORD_RESET = "password_reset"
    PASSWORD_CHANGED = "password_changed"


# Kinds about the account, not a card: the recipient comes with the event, not from a contact.
ACCOUNT_KINDS = frozenset({NotificationKind.PASSWORD_RESET, NotificationKind.PASSWORD_CHANGED})


class NotificationStatus(StrEnum):
    """Where a notification stands; all but `pending` are final."""

    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"
    UNDELIVERABLE = "undeliverable"


class Channel(StrEnum):
    """How a notification travels."""

    EMAIL = "email"
    SMS = "sms"


class TemplateMissingError(LookupError):
    """No template exists for a notification kind (a bug, not a delivery problem)."""


@dataclass(frozen=True)
class RenderedMail:
    """An e-mail's subject and plain-text body, in the recipient's language."""

    subject: str
    body: str


_IDS = uuid5(NAMESPACE_URL, "https://esim.example/notifier/notifications")

# ISO 4217 minor units that differ from the usual two decimals.
_ZERO_DECIMALS = "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX VND VUV XAF XOF XPF"
_THREE_DECIMALS = "BHD IQD JOD KWD LYD OMR TND"
_MINOR_UNITS = {
    **dict.fromkeys(_ZERO_DECIMALS.split(), 0),
    **dict.fromkeys(_THREE_DECIMALS.split(), 3),
}


def notification_id(
    kind: NotificationKind, channel: Channel, *, renewal_id: str | None, event_id: str
) -> str:
    """A stable id for one notification, so a duplicate event maps onto the same row.

    Within a renewal there is one notification per kind and channel, whatever the event id of
    the (possibly re-published) event; without a renewal the event id decides.
    """
    cause = f"renewal:{renewal_id}" if renewal_id is not None else f"event:{event_id}"
    return str(uuid5(_IDS, f"{kind}:{channel}:{cause}"))


def message_id(notification: str, domain: str) -> str:
    """The e-mail's Message-ID; the same for every resend of one notification."""
    return f"<{notification}@{domain}>"


def supported_locale(locale: str | None) -> str:
    """The locale to write in: the given one where templates exist, else the default."""
    return locale if locale in templates.LOCALES else templates.DEFAULT_LOCALE


def format_money(amount: int, currency: str) -> str:
    """Render an amount in minor units with its currency: 9900 CNY is `99.00 CNY`."""
    digits = _MINOR_UNITS.get(currency, 2)
    if digits == 0:
        return f"{amount} {currency}"
    units, minor = divmod(amount, 10**digits)
    return f"{units}.{minor:0{digits}d} {currency}"


def format_data(data_mb: int) -> str:
    """Render a data allowance: whole gigabytes as GB, the rest in MB."""
    if data_mb >= 1024 and data_mb % 1024 == 0:
        return f"{data_mb // 1024} GB"
    if data_mb >= 1024:
        return f"{data_mb / 1024:.1f} GB"
    return f"{data_mb} MB"


def format_moment(value: datetime | str, locale: str) -> str:
    """Render a timestamp in UTC the way the locale writes dates."""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return templates.DATE_FORMATS[supported_locale(locale)].format(
        year=moment.year,
        month=moment.month,
        month_name=templates.MONTHS_EN[moment.month - 1],
        day=moment.day,
        hour=moment.hour,
        minute=moment.minute,
    )


def _phrase(table: Mapping[str, Mapping[str, str]], locale: str, code: str) -> str:
    words = table[locale]
    return words.get(code, words["other"])


def template_name(kind: str, payload: Mapping[str, Any]) -> str:
    """Which template a notification uses; an activation depends on its bundle state."""
    if kind == NotificationKind.PROFILE_ACTIVATED:
        state = "queued" if payload.get("bundle_state") == "queued" else "active"
        return f"{kind}.{state}"
    return kind


def template_fields(kind: str, payload: Mapping[str, Any], locale: str) -> dict[str, str]:
    """The values a kind's template is filled with, from the event data it was created from."""
    fields = {
        "iccid": str(payload.get("iccid", "")),
        "renewal_id": str(payload.get("renewal_id", "")),
    }
    if kind == NotificationKind.PROFILE_ACTIVATED:
        fields |= {
            "plan_code": str(payload["plan_code"]),
            "data": format_data(int(payload["data_mb"])),
            "valid_from": format_moment(payload["valid_from"], locale),
            "valid_until": format_moment(payload["valid_until"], locale),
        }
    elif kind == NotificationKind.PAYMENT_FAILED:
        fields["reason"] = _phrase(
            templates.PAYMENT_FAILURE_REASONS, locale, str(payload["reason"])
        )
    elif kind == NotificationKind.PAYMENT_REFUNDED:
        price = payload["price"]
        fields |= {
            "amount": format_money(int(price["amount"]), str(price["currency"])),
            "refund_id": str(payload["refund_id"]),
        }
    elif kind in (NotificationKind.DATA_LOW, NotificationKind.DATA_USED_UP):
        fields |= {
            "plan_code": str(payload.get("plan_code") or "-"),
            "remaining": format_data(int(payload.get("data_remaining_mb", 0))),
            "threshold": str(payload.get("threshold", "")),
            "renew_url": str(payload.get("renew_url", "")),
        }
    elif kind == NotificationKind.RENEWAL_REJECTED:
        fields |= {
            "reason": _phrase(templates.REJECTION_REASONS, locale, str(payload["reason"])),
            "detail": str(payload.get("detail", "")),
        }
    elif kind == NotificationKind.PASSWORD_RESET:
        fields["expires_at"] = format_moment(payload["code_expires_at"], locale)
    elif kind == NotificationKind.PASSWORD_CHANGED:
        fields["changed_at"] = format_moment(payload["changed_at"], locale)
    return fields


def render(
    kind: str,
    locale: str | None,
    payload: Mapping[str, Any],
    secrets: Mapping[str, str] | None = None,
) -> RenderedMail:
    """The e-mail for a notification of `kind`, in `locale`, about the event data `payload`.

    `secrets` (a reset code) fill the body only, never the subject that the send log keeps.

    Raises:
        TemplateMissingError: the kind has no template.
    """
    language = supported_locale(locale)
    name = template_name(kind, payload)
    try:
        template = templates.TEMPLATES[name][language]
    except KeyError as error:
        raise TemplateMissingError(f"no {language} template {name!r}") from error
    fields = template_fields(kind, payload, language)
    return RenderedMail(
        subject=template.subject.format_map(fields),
        body=template.body.format_map({**fields, **(secrets or {})}),
    )


def render_sms(kind: str, locale: str | None, secrets: Mapping[str, str] | None = None) -> str:
    """The text message for a notification of `kind`, in `locale`.

    Raises:
        TemplateMissingError: the kind has no text message.
    """
    language = supported_locale(locale)
    try:
        template = templates.SMS_TEMPLATES[kind][language]
    except KeyError as error:
        raise TemplateMissingError(f"no {language} text message {kind!r}") from error
    return template.format_map(dict(secrets or {}))


def send_backoff_s(rounds: int, base_s: float, max_s: float) -> float:
    """The pause after `rounds` failed send rounds: doubling from `base_s`, at most `max_s`."""
    return float(min(max_s, base_s * 2 ** max(0, rounds - 1)))


def contact_recheck_s(waited_s: float, max_s: float) -> float:
    """The pause before looking for a missing contact again: half the time waited so far.

    Early looks are frequent, because the CardBound is usually a moment behind; a CardBound
    also wakes waiting notifications at once, so the cap only bounds a missed wake-up.
    """
    return min(max_s, max(1.0, waited_s / 2))
