"""UTC clock and RFC 3339 rendering shared by the sandboxes."""

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated

from pydantic import PlainSerializer

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """Return the current time as an aware UTC datetime."""
    return datetime.now(UTC)


def rfc3339(moment: datetime) -> str:
    """Render a datetime as RFC 3339 UTC with milliseconds, e.g. ``2026-11-23T10:15:30.123Z``.

    Args:
        moment: An aware datetime in any zone.
    """
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


Timestamp = Annotated[datetime, PlainSerializer(rfc3339, return_type=str)]
