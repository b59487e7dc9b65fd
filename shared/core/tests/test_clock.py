"""as_utc: stored timestamps, naive from SQLite or aware from PostgreSQL, read as UTC."""

from datetime import UTC, datetime, timedelta, timezone

from esim_core.clock import as_utc, utcnow


def test_a_naive_timestamp_is_read_as_utc() -> None:
    assert as_utc(datetime(2026, 11, 23, 10, 15)) == datetime(2026, 11, 23, 10, 15, tzinfo=UTC)


def test_an_aware_timestamp_is_moved_to_utc() -> None:
    beijing = timezone(timedelta(hours=8))
    moved = as_utc(datetime(2026, 11, 23, 18, 15, tzinfo=beijing))
    assert (moved, moved.tzinfo) == (datetime(2026, 11, 23, 10, 15, tzinfo=UTC), UTC)


def test_no_timestamp_stays_none() -> None:
    assert as_utc(None) is None


def test_now_is_in_utc() -> None:
    assert utcnow().tzinfo is UTC
