"""The clock every service reads: now in UTC, and stored timestamps read as UTC."""

from datetime import UTC, datetime
from typing import overload


def utcnow() -> datetime:
    """The current time, in UTC."""
    return datetime.now(UTC)


@overload
def as_utc(value: datetime) -> datetime: ...


@overload
def as_utc(value: None) -> None: ...


@overload
def as_utc(value: datetime | None) -> datetime | None: ...


def as_utc(value: datetime | None) -> datetime | None:
    """Read a stored timestamp as UTC (SQLite hands back naive datetimes); None stays None."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
