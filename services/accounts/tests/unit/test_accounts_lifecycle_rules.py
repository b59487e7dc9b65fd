"""The lifecycle's rules on their own: leads, the shortest due lead, auto-renew timing."""

from datetime import UTC, datetime, timedelta

import pytest
from accounts.lifecycle.rules import (
    DAY_S,
    LifecycleRules,
    WatchedPlan,
    days_left,
    decide,
    parse_duration,
    parse_leads,
)
from accounts.settings import AccountsSettings
from pydantic import ValidationError

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
RULES = LifecycleRules()


@pytest.mark.parametrize(
    ("text", "seconds"), [("3d", 3 * DAY_S), ("12h", 43200), ("30m", 1800), ("45s", 45), ("90", 90)]
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "3x", "d", "0d", "-1d", "1.5d"])
def test_bad_durations_say_what_a_duration_is(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_leads_are_sorted_longest_first_and_not_repeated() -> None:
    assert parse_leads("1d, 3d") == (3 * DAY_S, DAY_S)
    with pytest.raises(ValueError, match="twice"):
        parse_leads("1d,24h")
    with pytest.raises(ValueError, match="at least one"):
        parse_leads(" , ")


def test_settings_validate_the_leads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACCOUNTS_REMINDER_LEADS", "2m,30s")
    monkeypatch.setenv("ACCOUNTS_AUTO_RENEW_LEAD", "1m")
    settings = AccountsSettings()
    assert (settings.reminder_leads, settings.auto_renew_lead) == ((120, 30), 60)
    monkeypatch.setenv("ACCOUNTS_REMINDER_LEADS", "3days")
    with pytest.raises(ValidationError, match="reminder_leads"):
        AccountsSettings()
    assert AccountsSettings.model_fields["reminder_leads"].default == (3 * DAY_S, DAY_S)


def plan(left: timedelta, **known: object) -> WatchedPlan:
    return WatchedPlan(valid_until=NOW + left, **known)  # type: ignore[arg-type]


def test_a_daily_plan_starting_hears_only_the_shortest_lead() -> None:
    decision = decide(
        plan(timedelta(hours=23, minutes=59)), NOW, RULES, auto_renew=False, later_plan=False
    )
    assert (decision.remind_lead_s, decision.reminded_lead_s) == (DAY_S, DAY_S)
    assert decision.next_due is None and not decision.renew


def test_a_monthly_plan_is_reminded_at_each_lead_in_turn() -> None:
    start = decide(plan(timedelta(days=30)), NOW, RULES, auto_renew=False, later_plan=False)
    assert start.remind_lead_s is None and start.next_due == NOW + timedelta(days=27)
    at_3d = decide(plan(timedelta(days=3)), NOW, RULES, auto_renew=False, later_plan=False)
    assert at_3d.remind_lead_s == 3 * DAY_S and at_3d.next_due == NOW + timedelta(days=2)
    at_1d = decide(
        plan(timedelta(days=1), reminded_lead_s=3 * DAY_S),
        NOW,
        RULES,
        auto_renew=False,
        later_plan=False,
    )
    assert at_1d.remind_lead_s == DAY_S and at_1d.next_due is None
    again = decide(
        plan(timedelta(hours=5), reminded_lead_s=DAY_S),
        NOW,
        RULES,
        auto_renew=False,
        later_plan=False,
    )
    assert again.remind_lead_s is None and again.next_due is None


def test_a_plan_with_a_later_one_queued_is_passed_over() -> None:
    decision = decide(plan(timedelta(days=2)), NOW, RULES, auto_renew=True, later_plan=True)
    assert decision.remind_lead_s is None and not decision.renew
    assert decision.reminded_lead_s is None  # still owed, should the later plan go away
    assert decision.next_due == NOW + timedelta(days=1)  # the 1-day lead is looked at still


def test_auto_renew_at_its_lead_once() -> None:
    early = decide(plan(timedelta(days=5)), NOW, RULES, auto_renew=True, later_plan=False)
    assert not early.renew and early.next_due == NOW + timedelta(days=2)
    due = decide(
        plan(timedelta(hours=20), reminded_lead_s=3 * DAY_S),
        NOW,
        RULES,
        auto_renew=True,
        later_plan=False,
    )
    assert due.renew and due.remind_lead_s == DAY_S
    done = decide(
        plan(timedelta(hours=20), reminded_lead_s=DAY_S, auto_renewed=True),
        NOW,
        RULES,
        auto_renew=True,
        later_plan=False,
    )
    assert not done.renew and done.next_due is None


def test_a_used_up_plan_renews_at_once_without_a_time_reminder() -> None:
    decision = decide(
        plan(timedelta(days=20), depleted=True), NOW, RULES, auto_renew=True, later_plan=False
    )
    assert decision.renew and decision.remind_lead_s is None
    off = decide(
        plan(timedelta(days=2), depleted=True), NOW, RULES, auto_renew=False, later_plan=False
    )
    assert not off.renew and off.remind_lead_s is None


def test_ended_plans_owe_nothing() -> None:
    for watched in (plan(timedelta(days=1), ended=True), plan(timedelta(seconds=-1))):
        decision = decide(watched, NOW, RULES, auto_renew=True, later_plan=False)
        assert (decision.remind_lead_s, decision.renew, decision.next_due) == (None, False, None)


def test_days_left_counts_a_started_day() -> None:
    assert days_left(NOW + timedelta(hours=23), NOW) == 1
    assert days_left(NOW + timedelta(days=3), NOW) == 3
    assert days_left(NOW - timedelta(hours=1), NOW) == 0
