"""The clock every service reads: now in UTC, and stored timestamps read as UTC."""

from datetime import UTC, datetime


def utcnow() -> datetime:
    """The current time, in UTC."""
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """Read a stored timestamp as UTC (SQLite hands back naive datetimes)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
