"""The columns every table of due work has: when a row is due, who holds it, what went wrong."""

from datetime import datetime

from sqlmodel import Field, SQLModel

from esim_core.persistence.db import timestamp


class DueColumns(SQLModel):
    """When a row is next due and how long the round that claimed it holds it (`duework.loop`)."""

    due_at: datetime | None = timestamp(default=None, index=True)
    lease_until: datetime | None = timestamp(default=None)


class OutsideCallColumns(DueColumns):
    """Due columns of rows whose rounds call an outside system that may not answer."""

    unavailable_rounds: int = Field(
        default=0, description="rounds in a row in which the outside system did not answer"
    )
    last_error: str | None = Field(default=None, max_length=512)
