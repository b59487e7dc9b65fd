"""Templates and formatting: every message in both languages and all four parts, money, data
and times as Babel writes them, escaping, and what a template may not leave undefined."""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from importlib.resources import files
from typing import Any, get_args
from uuid import UUID

import pytest
from babel.dates import format_skeleton, format_time, format_timedelta
from babel.numbers import format_currency
from esim_schemas import (
    AutoRenewDisabled,
    BundleCancelled,
    Money,
    PasswordChanged,
    PasswordResetRequested,
    PaymentAuthorized,
    PaymentFailed,
    PaymentRefunded,
    PaymentSettled,
    PlanExpiring,
)
from esim_schemas.events import AutoRenewOffReason, PaymentFailureReason, RejectionReason
from notifier import domain, messages
from notifier.domain import NotificationKind, RefundCause
from notifier.messages import (
    LOCALES,
    PARTS,
    RenderError,
    format_data,
    format_moment,
    format_money,
    render_mail,
    render_sms,
    sms_segments,
)
from notifier_testkit import (
    ICCID,
    NOW,
    auto_renew_disabled,
    bundle_cancelled,
    data_low,
    payment_failed,
    payment_refunded,
    payment_settled,
    plan_expiring,
    profile_activated,
    renewal_rejected,
)

# The Chinese texts use full-width punctuation on purpose.
# ruff: noqa: RUF001

RENEW_URL = "https://shop.example.com/cards/8944500102198304826/renew"
RENEWAL = UUID("5b0f6e2a-9a4e-4a8f-9d55-3f1f3f0c2b11")
BABEL = {"en": "en", "zh-CN": "zh_Hans_CN"}


def samples() -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(kind, variant, context) for every message and each of its variants."""
    card = {"renew_url": RENEW_URL}
    for state in ("active", "queued"):
        event = profile_activated(RENEWAL, bundle_state=state)
        yield (
            "profile_activated",
            f"{state}, discount",
            card | {"event": event, "payment": settled()},
        )
        yield (
            "profile_activated",
            f"{state}, no discount",
            card | {"event": event, "payment": settled(discount=None, promo_code=None)},
        )
        yield (
            "profile_activated",
            f"{state}, no payment yet",
            card | {"event": event, "payment": None},
        )
        yield (
            "profile_activated",
            f"{state}, held then captured",
            card | {"event": event, "payment": settled(), "hold": held()},
        )
        yield (
            "profile_activated",
            f"{state}, held, capture not heard of",
            card | {"event": event, "payment": None, "hold": held()},
        )
    for reason in get_args(PaymentFailureReason):
        yield "payment_failed", reason, card | {"event": payment_failed(RENEWAL, reason=reason)}
    for cause in RefundCause:
        yield (
            "payment_refunded",
            cause,
            card | {"event": payment_refunded(RENEWAL), "refund_cause": cause},
        )
        yield (
            "payment_refunded",
            f"{cause}, a hold released",
            card | {"event": released(), "refund_cause": cause},
        )
    for reason in get_args(RejectionReason):
        yield "renewal_rejected", reason, card | {"event": renewal_rejected(RENEWAL, reason=reason)}
    for plan in ("JP-30D-10GB", None):
        yield "data_low", f"plan {plan}", card | {"event": data_low(90, RENEWAL, plan=plan)}
        yield "data_used_up", f"plan {plan}", card | {"event": data_low(100, RENEWAL, 0, plan=plan)}
    yield (
        "password_reset",
        "",
        {"event": reset_requested(), "code": "482913"},
    )
    yield "password_changed", "", {"event": password_changed()}
    for days, auto in ((3, True), (1, False), (1, None), (0, False)):
        yield "plan_expiring", f"{days} days, auto {auto}", card | {"event": expiring(days, auto)}
    for reason in get_args(AutoRenewOffReason):
        yield "auto_renew_disabled", reason, card | {"event": auto_renew_off(reason)}
    yield "auto_renew_disabled", "no plan", card | {"event": auto_renew_off("monthly_cap", None)}
    for reason in ("cancelled_by_user", "replaced"):
        for payment in (settled(), None):
            yield (
                "bundle_cancelled",
                f"{reason}, payment {payment is not None}",
                card | {"event": cancelled(reason), "payment": payment},
            )


def reset_requested() -> PasswordResetRequested:
    return PasswordResetRequested(
        user_id="user-7", email="t@example.com", code_expires_at=NOW + timedelta(minutes=15)
    )


def password_changed() -> PasswordChanged:
    return PasswordChanged(user_id="user-7", email="t@example.com", changed_at=NOW)


def settled(**values: Any) -> PaymentSettled:
    return payment_settled(RENEWAL, **values)


def held() -> PaymentAuthorized:
    """The payment of `settled()`, held first (PayPal), as billing authorizes it."""
    paid = settled()
    return PaymentAuthorized(
        renewal_id=RENEWAL,
        payment_id=paid.payment_id,
        iccid=paid.iccid,
        plan=paid.plan,
        price=paid.price,
        method="paypal",
        provider_reference="5O190127TN364715T",
        authorized_at=paid.settled_at,
        capture_before=paid.settled_at + timedelta(days=29),
        start=paid.start,
        discount=paid.discount,
        promo_code=paid.promo_code,
    )


def released() -> PaymentRefunded:
    """A hold released: billing voided the authorization, nothing was taken."""
    return payment_refunded(RENEWAL).model_copy(update={"via": "void"})


def expiring(days: int, auto_renew: bool | None) -> PlanExpiring:
    return plan_expiring(days, auto_renew=auto_renew, renewal_id=RENEWAL)


def auto_renew_off(reason: str, plan: str | None = "JP-1D-1GB") -> AutoRenewDisabled:
    return auto_renew_disabled(reason, renewal_id=RENEWAL, plan=plan)


def cancelled(reason: str) -> BundleCancelled:
    return bundle_cancelled(RENEWAL, reason=reason)


def money(amount: str, locale: str, currency: str = "CNY") -> str:
    """What Babel writes for an amount, the reference the texts are held to."""
    return str(format_currency(Decimal(amount), currency, locale=BABEL[locale]))


def sms_form(text: str) -> str:
    """Babel's text as a text message carries it: no-break spaces become plain ones."""
    return " ".join(text.split())


SAMPLES = list(samples())
# The messages that ask for something to be done link back to renewal.
LINKED = {"payment_failed", "data_low", "data_used_up", "plan_expiring", "auto_renew_disabled"}


def test_every_kind_has_every_part_in_every_locale_and_nothing_else() -> None:
    root = files("notifier") / "templates"
    expected = {f"{kind}.{part}" for kind in NotificationKind for part in PARTS}
    for locale in LOCALES:
        names = {entry.name for entry in (root / locale).iterdir() if entry.name[0] != "_"}
        assert names == expected, locale
    assert {kind for kind, _, _ in SAMPLES} == set(NotificationKind)


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize(("kind", "variant", "context"), SAMPLES, ids=lambda v: str(v)[:40])
def test_every_message_renders_in_all_parts(
    kind: str, variant: str, context: dict[str, Any], locale: str
) -> None:
    mail = render_mail(kind, locale, context)
    text = render_sms(kind, locale, context)

    assert mail.subject and "\n" not in mail.subject
    assert mail.text.startswith("Hello," if locale == "en" else "您好：")
    assert mail.text.rstrip().endswith("Your eSIM team" if locale == "en" else "eSIM 团队")
    assert "\n\n\n" not in mail.text
    assert mail.html.startswith("<!DOCTYPE html>")
    assert f'<html lang="{locale}">' in mail.html
    for part in (mail.subject, mail.text, mail.html, text):
        assert "None" not in part, part
    event = context["event"]
    if getattr(event, "iccid", None):
        assert ICCID in mail.text and ICCID in mail.html
    if getattr(event, "renewal_id", None) and kind not in (
        "plan_expiring",
        "data_low",
        "data_used_up",
    ):
        assert str(RENEWAL) in mail.text
    assert text.startswith("eSIM: " if locale == "en" else "【eSIM】")
    # One or two segments: GSM-7 up to 306 characters, UCS-2 (Chinese) up to 134.
    assert sms_segments(text) <= 2, (len(text), text)
    if kind in LINKED:
        assert RENEW_URL in mail.text and RENEW_URL in mail.html
        assert text.endswith(RENEW_URL)


@pytest.mark.parametrize(
    ("amount", "currency", "major"),
    [
        (9900, "CNY", "99.00"),
        (5, "USD", "0.05"),
        (123456, "EUR", "1234.56"),
        (0, "GBP", "0"),
        (1500, "JPY", "1500"),
        (12345, "KWD", "12.345"),
    ],
)
@pytest.mark.parametrize("locale", LOCALES)
def test_amounts_are_written_by_babel_from_the_currencys_minor_units(
    amount: int, currency: str, major: str, locale: str
) -> None:
    assert format_money(Money(amount=amount, currency=currency), locale) == money(
        major, locale, currency
    )


def test_a_yuan_amount_reads_as_each_locale_writes_it() -> None:
    price = {"amount": 9900, "currency": "CNY"}
    assert format_money(price, "en") == "CN¥99.00" == money("99.00", "en")
    assert format_money(price, "zh-CN") == "¥99.00" == money("99.00", "zh-CN")
    assert format_money({"amount": 1500, "currency": "JPY"}, "en") == "¥1,500"


@pytest.mark.parametrize(
    ("data_mb", "text"), [(500, "500 MB"), (1024, "1 GB"), (10240, "10 GB"), (1536, "1.5 GB")]
)
@pytest.mark.parametrize("locale", LOCALES)
def test_data_allowances_are_written_for_people(data_mb: int, text: str, locale: str) -> None:
    assert " ".join(format_data(data_mb, locale).split()) == text


def test_times_are_shown_in_utc_whatever_offset_they_came_with() -> None:
    moment = datetime(2026, 11, 23, 18, 15, tzinfo=UTC)

    assert format_moment("2026-11-24T02:15:00+08:00", "en") == "Nov 23, 2026, 6:15\u202fPM UTC"
    assert format_moment(moment, "zh-CN") == "2026年11月23日 18:15 UTC"
    day = format_skeleton("yMMMd", moment, tzinfo=UTC, locale="en")
    clock = format_time(moment, "short", tzinfo=UTC, locale="en")
    assert format_moment(moment, "en") == f"{day}, {clock} UTC"


def test_a_known_zone_is_named_in_the_time() -> None:
    moment = datetime(2026, 11, 23, 18, 15, tzinfo=UTC)
    assert format_moment(moment, "zh-CN", "Asia/Shanghai") == "2026年11月24日 02:15 +0800"


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("state", ["active", "queued"])
def test_the_confirmation_is_a_receipt_with_the_discount(locale: str, state: str) -> None:
    event = profile_activated(RENEWAL, bundle_state=state)
    context = {"event": event, "payment": settled(), "renew_url": RENEW_URL}
    mail = render_mail("profile_activated", locale, context)
    text = render_sms("profile_activated", locale, context)

    words = {
        "en": ["Price: ", "Discount (WELCOME10): -", "Amount paid: ", "Payment method: Alipay"],
        "zh-CN": ["原价：", "优惠（WELCOME10）：-", "实付金额：", "支付方式：支付宝"],
    }[locale]
    paid, full, off = money("89.10", locale), money("99.00", locale), money("9.90", locale)
    for line in (
        f"{words[0]}{full}",
        f"{words[1]}{off}",
        f"{words[2]}{paid}",
        words[3],
        "ch_3PZ9xK",
        "JP-30D-10GB",
        "10 GB",
        format_moment(event.valid_from, locale),
        format_moment(event.valid_until, locale),
    ):
        assert line in mail.text, line
    for value in (
        paid,
        full,
        off,
        "WELCOME10",
        "ch_3PZ9xK",
        format_moment(event.valid_until, locale),
    ):
        assert value in mail.html, value
    queued = {"en": "queued", "zh-CN": "排队"}[locale]
    assert (queued in mail.text) == (state == "queued")
    assert (queued in mail.subject or "排在" in mail.subject) == (state == "queued")
    assert sms_form(paid) in text


@pytest.mark.parametrize("locale", LOCALES)
def test_a_receipt_without_a_discount_shows_only_what_was_paid(locale: str) -> None:
    payment = settled(discount=None, promo_code=None, amount=9900)
    mail = render_mail(
        "profile_activated",
        locale,
        {"event": profile_activated(), "payment": payment} | {"renew_url": RENEW_URL},
    )
    paid, discount, price = {
        "en": ("Amount paid: ", "Discount", "Price: "),
        "zh-CN": ("实付金额：", "优惠", "原价："),
    }[locale]
    assert f"{paid}{money('99.00', locale)}" in mail.text
    assert discount not in mail.text and price not in mail.text
    assert discount not in mail.html


@pytest.mark.parametrize("locale", LOCALES)
def test_a_receipt_whose_payment_never_came_still_confirms_the_plan(locale: str) -> None:
    mail = render_mail(
        "profile_activated",
        locale,
        {"event": profile_activated(RENEWAL), "payment": None, "renew_url": RENEW_URL},
    )
    assert "JP-30D-10GB" in mail.text and str(RENEWAL) in mail.text
    assert ("Amount paid" if locale == "en" else "实付金额") not in mail.text


def test_a_value_the_template_needs_and_the_context_lacks_is_an_error() -> None:
    with pytest.raises(RenderError, match="'payment' is undefined"):
        render_mail("profile_activated", "en", {"event": profile_activated(), "renew_url": "x"})
    with pytest.raises(RenderError, match="renew_url"):
        render_sms("data_low", "zh-CN", {"event": data_low(90)})
    with pytest.raises(RenderError, match="code"):
        render_mail("password_reset", "en", {"event": reset_requested()})


def test_values_from_outside_are_escaped_in_html_and_kept_in_text() -> None:
    script = "<script>alert('x')</script>"
    payment = settled(promo_code=script)
    mail = render_mail(
        "profile_activated",
        "en",
        {"event": profile_activated(), "payment": payment, "renew_url": RENEW_URL},
    )
    rejected = render_mail(
        "renewal_rejected",
        "zh-CN",
        {"event": renewal_rejected().model_copy(update={"detail": script}), "renew_url": "x"},
    )

    for html in (mail.html, rejected.html):
        assert "<script>" not in html
        assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html
    assert f"Discount ({script})" in mail.text
    assert script in rejected.text


def test_an_unknown_locale_or_reason_falls_back_instead_of_failing() -> None:
    event = PaymentFailed.model_construct(
        **payment_failed().model_dump() | {"reason": "new_reason_code"}
    )
    mail = render_mail("payment_failed", "fr", {"event": event, "renew_url": RENEW_URL})

    assert mail.subject == "Your eSIM renewal payment did not go through"
    assert "the payment provider refused it" in mail.text


@pytest.mark.parametrize("locale", LOCALES)
def test_every_reason_of_the_contract_has_its_own_words(locale: str) -> None:
    cases = (
        [
            ("payment_failed", reason, payment_failed(reason=reason))
            for reason in get_args(PaymentFailureReason)
        ]
        + [
            ("renewal_rejected", reason, renewal_rejected(reason=reason))
            for reason in get_args(RejectionReason)
        ]
        + [
            ("auto_renew_disabled", reason, auto_renew_off(reason))
            for reason in get_args(AutoRenewOffReason)
        ]
    )
    for kind, reason, event in cases:
        fallback = render_mail(
            kind,
            locale,
            {"event": event.model_construct(**event.model_dump() | {"reason": "?"})}
            | {"renew_url": RENEW_URL},
        )
        mail = render_mail(kind, locale, {"event": event, "renew_url": RENEW_URL})
        assert mail.text != fallback.text, (kind, reason)


def test_a_kind_without_a_template_is_an_error() -> None:
    with pytest.raises(messages.TemplateMissingError, match="plan_renamed"):
        render_mail("plan_renamed", "en", {})


@pytest.mark.parametrize("locale", LOCALES)
def test_a_reminder_says_when_and_what_auto_renew_will_do(locale: str) -> None:
    on = render_mail("plan_expiring", locale, {"event": expiring(3, True), "renew_url": RENEW_URL})
    off = render_mail(
        "plan_expiring", locale, {"event": expiring(1, False), "renew_url": RENEW_URL}
    )
    today = render_mail("plan_expiring", locale, {"event": expiring(0, None), "renew_url": "x"})

    three = format_timedelta(timedelta(days=3), granularity="day", locale=BABEL[locale])
    assert three in on.subject and three in on.text
    assert format_moment(NOW + timedelta(days=3), locale) in on.text
    auto = {"en": "Auto-renew is on", "zh-CN": "自动续费已开启"}[locale]
    assert auto in on.text and auto in on.html
    assert auto not in off.text
    assert ("Renew now" if locale == "en" else "现在续费") in off.text
    assert RENEW_URL in on.text and RENEW_URL in off.text
    assert ("today" if locale == "en" else "今天") in today.subject
    sms_on = render_sms("plan_expiring", locale, {"event": expiring(3, True), "renew_url": "u"})
    assert ("Auto-renew" if locale == "en" else "自动续费") in sms_on


@pytest.mark.parametrize("locale", LOCALES)
def test_a_cancellation_promises_the_refund_and_a_replacement_does_not(locale: str) -> None:
    context = {"payment": settled(), "renew_url": RENEW_URL}
    by_user = render_mail(
        "bundle_cancelled", locale, context | {"event": cancelled("cancelled_by_user")}
    )
    replaced = render_mail("bundle_cancelled", locale, context | {"event": cancelled("replaced")})

    refund = {"en": "refund", "zh-CN": "退"}[locale]
    assert refund in by_user.text and money("89.10", locale) in by_user.text
    assert refund not in replaced.text.replace("Reference", "")
    assert ("replaced" if locale == "en" else "替换") in replaced.subject


@pytest.mark.parametrize("locale", LOCALES)
def test_a_refund_says_why_as_far_as_the_notifier_knows(locale: str) -> None:
    def text(cause: RefundCause) -> str:
        context = {"event": payment_refunded(), "refund_cause": cause, "renew_url": RENEW_URL}
        return render_mail("payment_refunded", locale, context).text

    not_activated = {"en": "could not be activated", "zh-CN": "未能在您的 eSIM 上激活"}[locale]
    asked = {"en": "as you asked", "zh-CN": "按您的要求"}[locale]
    assert not_activated in text(RefundCause.NOT_ACTIVATED)
    assert asked in text(RefundCause.CANCELLED)
    neutral = text(RefundCause.AFTER_ACTIVATION)
    assert not_activated not in neutral and asked not in neutral
    assert money("99.00", locale) in neutral


@pytest.mark.parametrize(
    ("text", "segments"),
    [
        ("a" * 160, 1),
        ("a" * 161, 2),
        ("a" * 306, 2),
        ("a" * 307, 3),
        ("€" * 80, 1),  # each takes two septets
        ("€" * 81, 2),
        ("流" * 70, 1),
        ("流" * 71, 2),
        ("流" * 134, 2),
        ("a" * 69 + "\u202f", 1),  # one character outside GSM-7 makes it UCS-2
        ("a" * 70 + "\u202f", 2),
    ],
)
def test_sms_segments_count_as_carriers_do(text: str, segments: int) -> None:
    assert sms_segments(text) == segments


def test_text_messages_carry_no_no_break_spaces() -> None:
    text = render_sms(
        "profile_activated",
        "en",
        {"event": profile_activated(), "payment": settled(), "renew_url": RENEW_URL},
    )
    assert "\u202f" not in text and "\xa0" not in text
    assert sms_segments(text) == 1


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


def test_a_reminder_is_one_per_plan_and_lead() -> None:
    until = datetime(2026, 12, 1, 10, tzinfo=UTC)
    three = domain.reminder_cause(ICCID, until, 3)
    assert three == domain.reminder_cause(ICCID, until.astimezone(domain.UTC), 3)
    assert three != domain.reminder_cause(ICCID, until, 1)
    assert three != domain.reminder_cause(ICCID, until + timedelta(days=1), 3)
