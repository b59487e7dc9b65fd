"""Model instances made from rows a Core statement read, without SQLModel's constructor.

`Model(**values)` on a table model sets every field through SQLModel's `__setattr__`, which
goes through pydantic and SQLAlchemy's attribute events one field at a time: 0.2 to 0.5 ms
for a due row of 40 columns on this project's machines, more than the statement that read it.
`transient` makes the same transient instance (attached to no session, its values those of
the row) the way SQLAlchemy itself loads a row: the instance's state first, then its
`__dict__` at once, then what pydantic keeps of a model. Setting an attribute later goes
through the model's ordinary `__setattr__`.
"""

from collections.abc import Mapping
from typing import Any, TypeVar

from sqlalchemy import inspect
from sqlalchemy.orm import configure_mappers
from sqlmodel import SQLModel

M = TypeVar("M", bound=SQLModel)


def transient(model: type[M], values: Mapping[str, Any]) -> M:
    """An instance of the table model `model` holding `values` (every field's, by name)."""
    mapper = inspect(model)
    if not mapper.configured:
        # The constructor configures the mappers on first use; attribute access needs it.
        configure_mappers()
    instance: M = mapper.class_manager.new_instance()
    instance.__dict__.update(values)
    object.__setattr__(instance, "__pydantic_fields_set__", set(values))
    object.__setattr__(instance, "__pydantic_extra__", None)
    object.__setattr__(instance, "__pydantic_private__", None)
    return instance
