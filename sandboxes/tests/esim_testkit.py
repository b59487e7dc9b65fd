"""Shared bits of the eSIM sandbox tests: ICCIDs with a valid check digit, a clock to move."""

from datetime import UTC, datetime, timedelta

from sandboxes.esim import is_valid_iccid


def iccid(serial: int) -> str:
    """A 19-digit ICCID with a valid Luhn check digit, one per serial."""
    base = f"894450010219830{serial:03d}"
    return next(base + str(d) for d in range(10) if is_valid_iccid(base + str(d)))


class FakeClock:
    """A clock that stands still until moved."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)
