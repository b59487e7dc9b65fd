"""What every body of the accounts HTTP API shares: strict requests, times answered in UTC."""

from datetime import datetime
from typing import Annotated, Any

from esim_core.clock import as_utc
from esim_schemas import Money, format_time
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
)

# A stored time read as UTC, whatever the database handed back (SQLite returns naive datetimes,
# PostgreSQL aware ones; both hold UTC).
UtcTime = Annotated[datetime, AfterValidator(as_utc)]
# Every time the traveller's API answers with is RFC 3339 with an offset.
ApiTime = Annotated[
    UtcTime,
    PlainSerializer(format_time, return_type=str, when_used="json"),
    Field(description="RFC 3339 timestamp in UTC, e.g. 2026-11-23T10:15:30.123Z"),
]


class Body(BaseModel):
    """A request body: unknown fields are refused, so typos are caught, and types are strict.

    Strict: `0` is not `false` and `"5"` is not `5`; a client that sends the wrong type hears
    so instead of having it guessed.
    """

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, strict=True)


def stored_money(amount: int | None, currency: str | None) -> Money | None:
    """An amount kept in two nullable columns (minor units, currency), as a body shows it.

    None unless both are set: a renewal not priced yet, a card without a monthly cap.
    """
    return Money(amount=amount, currency=currency) if amount is not None and currency else None


def with_example(**example: Any) -> ConfigDict:
    """`Body`'s configuration with one example request, shown in the API's documentation."""
    return ConfigDict(**Body.model_config, json_schema_extra={"examples": [example]})
