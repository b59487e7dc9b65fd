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


def test_a_row_of_a_model_never_used_before_reads_like_any_other() -> None:
    # A model just declared has mappers not yet configured (the constructor would configure
    # them): a claimed row must still read in a process whose first use of it is a claim.
    class Fresh(SQLModel, table=True):
        __tablename__ = "test_rows_fresh"

        id: str = Field(primary_key=True)
        count: int = 0

    assert not inspect(Fresh).configured

    made = transient(Fresh, {"id": "f1", "count": 2})

    assert (made.id, made.count) == ("f1", 2)
