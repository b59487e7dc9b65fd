"""Messages from the Jinja2 templates in `notifier/templates/`, with money, data and times per
locale by Babel.

Each message kind has four templates per locale, `<locale>/<kind>.subject`, `.txt`, `.html`
(autoescaped) and `.sms`; `common/` holds what every locale shares. Undefined names are errors
(StrictUndefined), so a template that uses a value its context lacks fails loudly in the tests
instead of mailing a blank.
"""

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import cache, lru_cache
from typing import Any

from babel import Locale
from babel.dates import (
    format_datetime,
    format_skeleton,
    format_time,
    format_timedelta,
    get_datetime_format,
    get_timezone,
)
from babel.numbers import format_currency, get_currency_precision
from babel.units import format_unit
from esim_schemas import Money
from jinja2 import (
    ChoiceLoader,
    Environment,
    PackageLoader,
    StrictUndefined,
    TemplateError,
    TemplateNotFound,
    pass_context,
    select_autoescape,
)
from jinja2.runtime import Context

LOCALES = ("en", "zh-CN")
DEFAULT_LOCALE = "en"
DEFAULT_ZONE = "UTC"
PARTS = ("subject", "txt", "html", "sms")
_BLANK_LINES = re.compile(r"\n{3,}")


class TemplateMissingError(LookupError):
    """No template exists for a notification kind (a bug, not a delivery problem)."""


class RenderError(ValueError):
    """A template could not be filled: it uses a value its context lacks, or a wrong one."""


@dataclass(frozen=True)
class RenderedMail:
    """An e-mail in the recipient's language: its subject, plain-text and HTML parts."""

    subject: str
    text: str
    html: str


def supported_locale(locale: str | None) -> str:
    """The locale to write in: the given one where templates exist, else the default."""
    return locale if locale in LOCALES else DEFAULT_LOCALE


@cache
def babel_locale(locale: str) -> Locale:
    """Babel's locale for one of ours (`zh-CN` is `zh_Hans_CN`)."""
    return Locale.parse(supported_locale(locale), sep="-")


def _money(value: Money | Mapping[str, Any]) -> Money:
    return value if isinstance(value, Money) else Money.model_validate(value)


def format_money(value: Money | Mapping[str, Any], locale: str) -> str:
    """An amount in minor units as the locale writes it: 9900 CNY is `CN¥99.00` in en.

    The currency's minor units come from Babel's ISO 4217 data (JPY none, KWD three).
    """
    money = _money(value)
    return _formatted_money(money.amount, money.currency, locale)


# A message writes the same few amounts and times in its text and its HTML part, and a busy
# hour writes the same plan prices again and again: Babel's formatting is worth keeping.
@lru_cache(maxsize=4096)
def _formatted_money(amount: int, currency: str, locale: str) -> str:
    digits = get_currency_precision(currency)
    major = Decimal(amount).scaleb(-digits)
    return str(format_currency(major, currency, locale=babel_locale(locale)))


def format_data(data_mb: int, locale: str) -> str:
    """A data allowance: whole or fractional gigabytes from 1024 MB on, megabytes below."""
    if data_mb >= 1024:
        amount = Decimal(data_mb) / 1024
        return str(
            format_unit(amount, "digital-gigabyte", "short", "#,##0.#", babel_locale(locale))
        )
    return str(format_unit(data_mb, "digital-megabyte", "short", locale=babel_locale(locale)))


def as_moment(value: datetime | str) -> datetime:
    """A timestamp from an event (a datetime, or its RFC 3339 text), with a zone."""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


@lru_cache(maxsize=4096)
def format_moment(value: datetime | str, locale: str, zone: str = DEFAULT_ZONE) -> str:
    """A date and time as the locale writes them, in `zone`, with the zone named.

    The notifier knows no traveller's time zone, so messages say UTC; `zone` is the one place
    a known zone would go.
    """
    where = get_timezone(zone)
    language = babel_locale(locale)
    moment = as_moment(value)
    day = format_skeleton("yMMMd", moment, tzinfo=where, locale=language)
    clock = format_time(moment, "short", tzinfo=where, locale=language)
    named = format_datetime(moment, "z", tzinfo=where, locale=language)
    pattern = get_datetime_format("medium", locale=language)
    return str(pattern).replace("{1}", str(day)).replace("{0}", f"{clock} {named}")


def format_days(days: int, locale: str) -> str:
    """A number of days in words: `3 days`, `3天`."""
    return str(
        format_timedelta(
            timedelta(days=days), granularity="day", threshold=math.inf, locale=babel_locale(locale)
        )
    )


def before_discount(price: Money, discount: Money | None) -> Money | None:
    """The price before a discount, where there was one in the same currency."""
    if discount is None or discount.currency != price.currency:
        return None
    return Money(amount=price.amount + discount.amount, currency=price.currency)


@pass_context
def _moment_filter(context: Context, value: datetime | str) -> str:
    return format_moment(value, context["locale"], context.get("zone") or DEFAULT_ZONE)


@cache
def environment(locale: str) -> Environment:
    """The template environment of one locale, its filters writing in that locale."""
    language = supported_locale(locale)
    env = Environment(
        loader=ChoiceLoader(
            [
                PackageLoader("notifier", f"templates/{language}"),
                PackageLoader("notifier", "templates/common"),
            ]
        ),
        autoescape=select_autoescape(enabled_extensions=("html",), default=False),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        # Package data does not change while the service runs: no stat() per message, and a
        # plain dict of the few templates (-1) instead of an LRU whose every lookup takes a
        # lock and reorders a queue (6 % of the notifier's CPU under load).
        auto_reload=False,
        cache_size=-1,
    )
    env.filters["money"] = lambda value: format_money(value, language)
    env.filters["data"] = lambda value: format_data(int(value), language)
    env.filters["days"] = lambda value: format_days(int(value), language)
    env.filters["moment"] = _moment_filter
    env.globals["locale"] = language
    env.globals["before_discount"] = before_discount
    return env


def _render(kind: str, part: str, locale: str, context: Mapping[str, Any]) -> str:
    env = environment(locale)
    try:
        template = env.get_template(f"{kind}.{part}")
    except TemplateNotFound as error:
        raise TemplateMissingError(
            f"no {supported_locale(locale)} template {kind}.{part}"
        ) from error
    try:
        return template.render({"zone": DEFAULT_ZONE, **context})
    except TemplateError as error:
        raise RenderError(f"{template.name}: {error}") from error


def render_mail(kind: str, locale: str | None, context: Mapping[str, Any]) -> RenderedMail:
    """The e-mail for a notification of `kind` in `locale`, filled from `context`.

    Raises:
        TemplateMissingError: the kind has no template.
        RenderError: a template uses a value `context` lacks.
    """
    language = supported_locale(locale)
    return RenderedMail(
        subject=" ".join(_render(kind, "subject", language, context).split()),
        # Blocks of facts each end in a blank line; two in a row say nothing more.
        text=_BLANK_LINES.sub("\n\n", _render(kind, "txt", language, context)),
        html=_render(kind, "html", language, context),
    )


def render_sms(kind: str, locale: str | None, context: Mapping[str, Any]) -> str:
    """The text message for a notification of `kind`, in `locale`, on one line.

    Runs of white space, Babel's no-break spaces included, become one plain space: a single
    character outside the GSM alphabet would make the whole message UCS-2, half as long per
    segment.

    Raises:
        TemplateMissingError: the kind has no text message.
        RenderError: the template uses a value `context` lacks.
    """
    return " ".join(_render(kind, "sms", supported_locale(locale), context).split())


# GSM 03.38: the default alphabet, and the extension table whose characters take two septets.
_GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXTENDED = frozenset("^{}\\[~]|€\f")


def sms_segments(text: str) -> int:
    """How many SMS segments a text takes: GSM-7 where it can, else UCS-2."""
    if all(char in _GSM_BASIC or char in _GSM_EXTENDED for char in text):
        septets = len(text) + sum(char in _GSM_EXTENDED for char in text)
        return 1 if septets <= 160 else math.ceil(septets / 153)
    units = len(text.encode("utf-16-le")) // 2
    return 1 if units <= 70 else math.ceil(units / 67)
