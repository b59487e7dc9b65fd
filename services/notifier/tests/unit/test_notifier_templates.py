"""Templates and formatting: every text in every language, amounts and data in words."""

from datetime import UTC, datetime
from string import Formatter

import pytest
from notifier import domain, templates
from notifier.domain import format_data, format_money, render


def test_every_template_exists_in_every_locale_with_the_same_placeholders() -> None:
    for name, by_locale in templates.TEMPLATES.items():
        assert set(by_locale) == set(templates.LOCALES), name
        fields = {
            locale: {
                field
                for text in (template.subject, template.body)
                for _, field, _, _ in Formatter().parse(text)
                if field
            }
            for locale, template in by_locale.items()
        }
        assert fields["en"] == fields["zh-CN"], name


def test_every_kind_has_a_template() -> None:
    names = set(templates.TEMPLATES)
    for kind in domain.NotificationKind:
        assert domain.template_name(kind, {"bundle_state": "active"}) in names
    assert domain.template_name("profile_activated", {"bundle_state": "queued"}) in names


def test_every_reason_of_the_contract_has_words_in_every_locale() -> None:
    from typing import get_args

    from esim_schemas.events import PaymentFailureReason, RejectionReason

    for table, codes in (
        (templates.PAYMENT_FAILURE_REASONS, get_args(PaymentFailureReason)),
        (templates.REJECTION_REASONS, get_args(RejectionReason)),
    ):
        for locale in templates.LOCALES:
            assert set(codes) <= set(table[locale]), locale


@pytest.mark.parametrize(
    ("amount", "currency", "text"),
    [
        (9900, "CNY", "99.00 CNY"),
        (5, "USD", "0.05 USD"),
        (123456, "EUR", "1234.56 EUR"),
        (0, "GBP", "0.00 GBP"),
        (1500, "JPY", "1500 JPY"),
        (12345, "KWD", "12.345 KWD"),
    ],
)
def test_amounts_are_written_in_major_units(amount: int, currency: str, text: str) -> None:
    assert format_money(amount, currency) == text


@pytest.mark.parametrize(
    ("data_mb", "text"), [(500, "500 MB"), (1024, "1 GB"), (10240, "10 GB"), (1536, "1.5 GB")]
)
def test_data_allowances_are_written_for_people(data_mb: int, text: str) -> None:
    assert format_data(data_mb) == text


def test_an_unknown_locale_or_reason_falls_back_instead_of_failing() -> None:
    mail = render(
        "payment_failed",
        "fr",
        {"iccid": "8944500102198304826", "renewal_id": "r-1", "reason": "new_reason_code"},
    )

    assert mail.subject == "Your eSIM renewal payment did not go through"
    assert "the payment provider refused it" in mail.body


def test_a_kind_without_a_template_is_an_error() -> None:
    with pytest.raises(domain.TemplateMissingError, match="plan_expiring"):
        render("plan_expiring", "en", {})


def test_times_are_shown_in_utc_whatever_offset_they_came_with() -> None:
    moment = datetime(2026, 11, 23, 18, 15, tzinfo=UTC)

    assert domain.format_moment("2026-11-24T02:15:00+08:00", "en") == "23 Nov 2026, 18:15 UTC"
    assert domain.format_moment(moment, "zh-CN") == "2026年11月23日 18:15（UTC）"  # noqa: RUF001


def test_notification_ids_are_stable_per_renewal_and_kind() -> None:
    first = domain.notification_id(
        domain.NotificationKind.PAYMENT_FAILED, domain.Channel.EMAIL, renewal_id="r", event_id="a"
    )
    again = domain.notification_id(
        domain.NotificationKind.PAYMENT_FAILED, domain.Channel.EMAIL, renewal_id="r", event_id="b"
    )
    other = domain.notification_id(
        domain.NotificationKind.PAYMENT_REFUNDED, domain.Channel.EMAIL, renewal_id="r", event_id="a"
    )

    assert first == again != other
