"""Stored rows as the operator endpoints show them: a public view, one row or a 404, a page."""

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, Protocol, Self, TypeVar
from uuid import UUID

from esim_schemas.types import Iccid
from fastapi import APIRouter, Path, Query
from pydantic import BaseModel
from sqlmodel import SQLModel, col, select

from esim_core.clock import as_utc
from esim_core.persistence.db import Database
from esim_core.web.problems import ProblemError, problem_responses

RowT = TypeVar("RowT", bound=SQLModel)
ViewT = TypeVar("ViewT", bound=BaseModel)


class RowView(Protocol):
    """A public view that is made from its stored row."""

    @classmethod
    def of(cls, row: Any) -> Self:
        """The view of `row`."""
        ...


RenewalId = Annotated[UUID, Path(description="the renewal's id (a UUID)")]
IccidFilter = Annotated[
    Iccid | None,
    Query(description="the card's ICCID: 19 or 20 digits with a valid Luhn check digit"),
]
Limit = Annotated[int, Query(ge=1, le=500, description="at most this many")]


def row_view(model: type[ViewT], row: object, **values: Any) -> ViewT:
    """The public `model` of a stored row: each field the row has by name, `values` for others.

    Timestamps come out in UTC, since SQLite hands stored ones back naive.
    """
    fields = {name: getattr(row, name) for name in model.model_fields if hasattr(row, name)}
    fields.update(values)
    return model(
        **{
            name: as_utc(value) if isinstance(value, datetime) else value
            for name, value in fields.items()
        }
    )


async def renewal_row(database: Database, model: type[RowT], key: Any, renewal_id: UUID) -> RowT:
    """The row of `model` whose column `key` holds the renewal id.

    Raises:
        ProblemError: a 404 `<table>-not-found` when there is none.
    """
    async with database.session() as session:
        row = (await session.exec(select(model).where(col(key) == str(renewal_id)))).first()
    if row is None:
        what = model.__name__.lower()
        raise ProblemError(404, f"no {what} for renewal {renewal_id}", kind=f"{what}-not-found")
    return row


def renewal_route(
    router: APIRouter, database: Database, view: type[RowView], key: Any, description: str
) -> None:
    """Add `GET /<table>s/{renewal_id}`: the row whose column `key` holds the renewal id, as `view`.

    The route is named `get_<table>` (its operation id and summary) after the table of `key`;
    a renewal without a row is a 404 problem (`renewal_row`).
    """
    table = key.class_
    name = table.__name__.lower()

    async def get_row(renewal_id: RenewalId) -> Any:
        return view.of(await renewal_row(database, table, key, renewal_id))

    router.add_api_route(
        f"/{name}s/{{renewal_id}}",
        get_row,
        methods=["GET"],
        response_model=view,
        responses=problem_responses(401, 404, 422),
        name=f"get_{name}",
        description=description,
    )


async def newest_rows(
    database: Database, model: type[RowT], filters: Sequence[tuple[Any, object]], limit: int
) -> Sequence[RowT]:
    """The rows of `model` that match each filter (a column and its value; None: any), newest first.

    Rows created at the same moment come in the order of their ids, so pages stay stable.
    """
    query = select(model)
    for column, value in filters:
        if value is not None:
            query = query.where(col(column) == value)
    created, key = (getattr(model, name) for name in ("created_at", "id"))
    query = query.order_by(col(created).desc(), col(key)).limit(limit)
    async with database.session() as session:
        return (await session.exec(query)).all()
