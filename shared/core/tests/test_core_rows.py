"""`transient`: a table model's instance from a row, as the constructor would make it."""

from datetime import UTC, datetime

from esim_core.persistence.rows import transient
from sqlalchemy import inspect
from sqlmodel import Field, SQLModel


class Ticket(SQLModel, table=True):
    """A table of a few kinds of column, defaults among them."""

    __tablename__ = "test_rows_ticket"

    id: str = Field(primary_key=True)
    count: int = 0
    note: str | None = None
    due_at: datetime | None = None


def test_a_row_becomes_the_instance_the_constructor_makes_and_changes_like_one() -> None:
    values = {"id": "t1", "count": 3, "note": None, "due_at": datetime(2026, 1, 2, tzinfo=UTC)}

    made = transient(Ticket, values)

    assert made.model_dump() == Ticket(**values).model_dump()
    assert inspect(made).transient
    made.count += 1
    made.note = "seen"
    assert (made.count, made.note) == (4, "seen")
    assert made.model_dump()["count"] == 4
    assert values["count"] == 3  # the row's values are copied, not shared
