"""Languages of the site: gettext catalogues read with Babel, and dates, money, data per locale.

The catalogues are `locales/<locale>/LC_MESSAGES/messages.po` beside this module (the message
ids are the English text, so English needs none); they are compiled in memory at start, so no
build step or binary file is needed. `messages.pot` is extracted from the templates and the
Python code (`scripts/web-messages.sh`), and a test checks every message has its translation.
"""

import gettext
import io
from collections.abc import Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_datetime, format_skeleton
from babel.lists import format_list
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_currency, get_currency_precision
from babel.units import format_unit

LOCALES = ("en", "zh-CN")
DEFAULT_LOCALE = "en"
#: The names each language is offered under in the switch, in its own words.
LANGUAGE_NAMES = {"en": "English", "zh-CN": "简体中文"}
CATALOGUES = Path(__file__).parent / "locales"

_current: ContextVar[str] = ContextVar("web_locale", default=DEFAULT_LOCALE)


def supported(locale: str | None) -> str | None:
    """One of ours for a locale tag (`zh`, `zh-Hans-CN`, `en-GB` ...), else None."""
    if not locale:
        return None
    tag = locale.strip().replace("_", "-").lower()
    if tag.startswith("zh"):
        return "zh-CN"
    if tag == "en" or tag.startswith("en-"):
        return "en"
    return None


def negotiate(accept_language: str | None) -> str:
    """The best of our locales for an `Accept-Language` header, by its q-values; else English."""
    best: tuple[float, str] | None = None
    for position, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        ours = supported(tag)
        # Earlier tags win ties, as the header lists them by preference.
        if ours and quality > 0 and (best is None or quality > best[0]):
            best = (quality - position * 1e-6, ours)
    return best[1] if best else DEFAULT_LOCALE


@cache
def translations(locale: str) -> gettext.NullTranslations:
    """The compiled catalogue of a locale (English: the message ids themselves)."""
    path = CATALOGUES / locale.replace("-", "_") / "LC_MESSAGES" / "messages.po"
    if locale == DEFAULT_LOCALE or not path.is_file():
        return gettext.NullTranslations()
    with path.open("rb") as po:
        catalog = read_po(po, locale=locale.replace("-", "_"))
    compiled = io.BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    return gettext.GNUTranslations(compiled)


def use_locale(locale: str) -> None:
    """Write in `locale` from here on in this request's context."""
    _current.set(locale if locale in LOCALES else DEFAULT_LOCALE)


def current_locale() -> str:
    """The locale this request writes in."""
    return _current.get()


def gettext_(message: str) -> str:
    """`message` in the current locale."""
    return translations(current_locale()).gettext(message)


def ngettext_(singular: str, plural: str, count: int) -> str:
    """The singular or plural form of a message for `count`, in the current locale."""
    return translations(current_locale()).ngettext(singular, plural, count)


def _(message: str) -> str:
    """Mark and translate a message in Python code (extracted like the templates' `_()`)."""
    return gettext_(message)


@cache
def babel_locale(locale: str) -> Locale:
    """Babel's locale for one of ours (`zh-CN` is `zh_Hans_CN`)."""
    try:
        return Locale.parse(locale, sep="-")
    except (UnknownLocaleError, ValueError):
        return Locale.parse(DEFAULT_LOCALE)


def _moment(value: datetime | str | None) -> datetime | None:
    if value is None or value == "":
        return None
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def format_money(value: Mapping[str, Any] | None) -> str:
    """An API amount {amount (minor units), currency} as the locale writes it (`CN¥99.00`)."""
    if not value:
        return ""
    currency = str(value.get("currency", ""))
    digits = get_currency_precision(currency)
    major = Decimal(int(value.get("amount", 0))).scaleb(-digits)
    return str(format_currency(major, currency, locale=babel_locale(current_locale())))


def format_data(data_mb: int | None) -> str:
    """A data allowance: gigabytes from 1024 MB on, megabytes below."""
    if data_mb is None:
        return ""
    language = babel_locale(current_locale())
    if data_mb >= 1024:
        amount = Decimal(data_mb) / 1024
        return str(format_unit(amount, "digital-gigabyte", "short", "#,##0.#", language))
    return str(format_unit(data_mb, "digital-megabyte", "short", locale=language))


def format_day(value: datetime | str | None) -> str:
    """A date as the locale writes it (`Dec 6, 2026`, `2026年12月6日`), in UTC."""
    moment = _moment(value)
    if moment is None:
        return ""
    return str(format_date(moment.astimezone(UTC).date(), "medium", babel_locale(current_locale())))


def format_moment(value: datetime | str | None) -> str:
    """A date and time as the locale writes them, in UTC and saying so."""
    moment = _moment(value)
    if moment is None:
        return ""
    language = babel_locale(current_locale())
    day = format_skeleton("yMMMd", moment, tzinfo=UTC, locale=language)
    clock = format_datetime(moment, "HH:mm", tzinfo=UTC, locale=language)
    return f"{day} {clock} UTC"


def format_countries(codes: list[str] | None) -> str:
    """Country codes as the locale names and lists them (`日本、韩国和新加坡`, `Japan, South
    Korea, and Singapore`); a code Babel does not know stays as it is."""
    if not codes:
        return ""
    language = babel_locale(current_locale())
    names = [language.territories.get(str(code), str(code)) for code in codes]
    return str(format_list(names, locale=language))


def html_lang(locale: str) -> str:
    """The `lang` attribute of a page in `locale`."""
    return "zh-Hans-CN" if locale == "zh-CN" else "en"
