"""The plan lifecycle's rules: when a plan is reminded of and auto-renewed; no framework here."""

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator
from pydantic_settings import NoDecode

DAY_S = 86400
_UNITS = {"d": DAY_S, "h": 3600, "m": 60, "s": 1}
_DURATION = re.compile(r"\s*(\d+)\s*([dhms]?)\s*")


def parse_duration(value: Any) -> int:
    """Seconds of a duration such as `3d`, `12h`, `30m`, `45s` (a bare number is seconds).

    Raises:
        ValueError: not a positive duration of that form.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        seconds = value
    else:
        match = _DURATION.fullmatch(str(value))
        if match is None:
            raise ValueError(
                f"a duration is a number and a unit d, h, m or s (3d, 12h), not {value!r}"
            )
        seconds = int(match.group(1)) * _UNITS[match.group(2) or "s"]
    if seconds <= 0:
        raise ValueError(f"a duration must be longer than zero, not {value!r}")
    return seconds


def parse_leads(value: Any) -> tuple[int, ...]:
    """Reminder leads, longest first, from `3d,1d` (or a sequence of durations).

    Raises:
        ValueError: empty, a malformed duration, or a lead given twice.
    """
    items = value.split(",") if isinstance(value, str) else list(value)
    if not [item for item in items if str(item).strip()]:
        raise ValueError("at least one reminder lead is needed, such as '3d,1d'")
    leads = [parse_duration(item) for item in items]
    if len(set(leads)) != len(leads):
        raise ValueError(f"a reminder lead is given twice in {value!r}")
    return tuple(sorted(leads, reverse=True))


# NoDecode: the environment gives '3d,1d' and '1d', not JSON.
DurationSetting = Annotated[int, BeforeValidator(parse_duration), NoDecode]
LeadsSetting = Annotated[tuple[int, ...], BeforeValidator(parse_leads), NoDecode]


@dataclass(frozen=True)
class LifecycleRules:
    """How long before a plan ends its reminders go out and its auto-renewal is requested."""

    reminder_leads_s: Sequence[int] = (3 * DAY_S, DAY_S)
    auto_renew_lead_s: int = DAY_S


@dataclass(frozen=True)
class WatchedPlan:
    """What the rules know of one plan of a card."""

    valid_until: datetime
    reminded_lead_s: int | None = None
    auto_renewed: bool = False
    depleted: bool = False
    ended: bool = False


@dataclass(frozen=True)
class Decision:
    """What to do for a plan now, and when to look at it again."""

    remind_lead_s: int | None
    reminded_lead_s: int | None
    renew: bool
    next_due: datetime | None


def days_left(valid_until: datetime, now: datetime) -> int:
    """Days a plan has left, counting a started day as a day (23 h left is 1 day left)."""
    return max(0, math.ceil((valid_until - now).total_seconds() / DAY_S))


def decide(
    plan: WatchedPlan,
    now: datetime,
    rules: LifecycleRules,
    *,
    auto_renew: bool,
    later_plan: bool,
) -> Decision:
    """The reminder and auto-renewal due for a plan at `now`.

    Of the leads that have come (and were not handled before), only the shortest is reminded
    of: a daily plan starting with one day left hears "1 day", not "3 days" and "1 day". A
    plan with a later plan queued behind it is not the card's last plan: it is neither
    reminded nor auto-renewed (the later plan will be). A used-up plan is
    auto-renewed at once, and not reminded of its time.
    """
    if plan.ended or plan.valid_until <= now:
        return Decision(None, plan.reminded_lead_s, False, None)
    left_s = (plan.valid_until - now).total_seconds()
    pending = [
        lead
        for lead in rules.reminder_leads_s
        if plan.reminded_lead_s is None or lead < plan.reminded_lead_s
    ]
    due = [lead for lead in pending if left_s <= lead]
    # Passed over while a later plan waits, a lead stays owed: should that plan be cancelled,
    # the shortest lead due then still goes out.
    handled = bool(due) and not later_plan
    reminded = min(due) if handled else plan.reminded_lead_s
    remind = min(due) if handled and not plan.depleted else None
    wants_renewal = auto_renew and not plan.auto_renewed and not later_plan
    renew = wants_renewal and (plan.depleted or left_s <= rules.auto_renew_lead_s)
    times = [plan.valid_until - timedelta(seconds=lead) for lead in pending if lead < left_s]
    if wants_renewal and not renew:
        times.append(plan.valid_until - timedelta(seconds=rules.auto_renew_lead_s))
    return Decision(remind, reminded, renew, min(times) if times else None)
