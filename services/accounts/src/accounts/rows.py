"""The hot rows of a renewal, read and written with Core statements built once.

A renewal's handlers read and write a few rows by primary key (its saga, its card's plan, the
plan's watch). Through the ORM each read built a query's cache key, an identity-map entry and a
validated model, and each write went through the unit of work's flush: about half of a
handler's CPU. `Rows` gives the same model objects (so the saga and the transition table read
as before: load, decide, apply, save) over statements compiled once per table:

- `get` is one SELECT of the row by its key (`FOR UPDATE` with `lock`); an object already read
  or saved in this transaction is returned as it is, so handlers of one batch see each other's
  changes, as they did in the ORM's identity map;
- `save` writes what changed since the read, in one UPDATE of those columns (nothing when
  nothing changed), or INSERTs a row that was not read; an object the caller's ORM session
  tracks (read with `session.get`, as the routes and the operator do) is left to its flush;
- `new` makes an object with the model's defaults without pydantic's validation, which cost
  a hundred microseconds an object.

Objects of `Rows` are not in the ORM session: a transaction writes a row through one of the
two, never both (the consumer's handlers use `Rows`, the HTTP routes and sweeps the ORM). They
work in a session's transaction or a driver transaction (`Database.transaction`) alike.
"""

from collections.abc import Mapping
from typing import Any, Generic, TypeVar

from esim_core.persistence.driver import Statement, Target, Transaction, connection_of, fetch, run
from sqlalchemy import Table, bindparam, insert, inspect, select, update
from sqlalchemy.orm import configure_mappers
from sqlalchemy.orm.instrumentation import ClassManager, manager_of_class
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

M = TypeVar("M", bound=SQLModel)

_TRACKED = "accounts.rows.tracked"


class _Tracked:
    """A row this transaction holds: its object, the values last read or written, its lock."""

    __slots__ = ("locked", "row", "stored")

    def __init__(self, row: Any, stored: dict[str, Any], locked: bool) -> None:
        self.row = row
        self.stored = stored
        self.locked = locked


class Rows(Generic[M]):
    """One table's rows by primary key, as `model` objects outside the ORM session."""

    def __init__(self, model: type[M]) -> None:
        self.model = model
        table: Table = model.__table__  # type: ignore[attr-defined]
        self.table = table
        (key_column,) = table.primary_key.columns
        self.key = key_column.name
        self.columns: tuple[str, ...] = tuple(column.name for column in table.columns)
        chosen = select(*table.columns).where(key_column == bindparam("key"))
        self._select = Statement(chosen)
        self._select_locked = Statement(chosen.with_for_update())
        self._insert = Statement(insert(table), keys=self.columns)
        # Compiled once per set of columns a write changes.
        self._update = Statement(update(table).where(key_column == bindparam("_row_key")))
        self._defaults: dict[str, Any] = {}
        self._factories: dict[str, Any] = {}
        for name, field in model.model_fields.items():
            if field.default_factory is not None:
                self._factories[name] = field.default_factory
            elif not field.is_required():
                self._defaults[name] = field.default
        self._manager: ClassManager[Any] | None = None

    def new(self, **values: Any) -> M:
        """A new object of the model: `values` over the model's defaults, not validated."""
        filled = dict(self._defaults)
        for name, factory in self._factories.items():
            if name not in values:
                filled[name] = factory()
        filled.update(values)
        return self._build(filled)

    async def get(self, session: Target, key: Any, *, lock: bool = False) -> M | None:
        """The row of `key` (locked against other transactions with `lock`), or None."""
        tracked = await _tracked(session)
        held = tracked.get((self.table.name, key))
        if held is not None and (held.locked or not lock):
            row: M = held.row
            return row
        statement = self._select_locked if lock else self._select
        rows = await fetch(session, statement, {"key": key})
        if held is not None:
            held.locked = True  # the lock is taken now; the object keeps this transaction's changes
            kept: M = held.row
            return kept
        if not rows:
            return None
        values = dict(zip(self.columns, rows[0], strict=True))
        loaded = self._build(values)
        tracked[(self.table.name, key)] = _Tracked(loaded, values, lock)
        return loaded

    async def save(self, session: Target, row: M) -> None:
        """Write what changed of `row` since it was read (or insert it, if it was not)."""
        state: Any = inspect(row)
        if state.session_id is not None:
            return  # the caller's ORM session tracks it: its flush writes it
        values = {name: getattr(row, name) for name in self.columns}
        key = values[self.key]
        tracked = await _tracked(session)
        held = tracked.get((self.table.name, key))
        if held is None or held.row is not row:
            await run(session, self._insert, values)
            tracked[(self.table.name, key)] = _Tracked(row, values, True)
            return
        changed = {name: value for name, value in values.items() if held.stored.get(name) != value}
        if not changed:
            return
        await run(
            session, self._update.writing([*changed, "_row_key"]), changed | {"_row_key": key}
        )
        held.stored = values

    def of(self, values: Mapping[Any, Any]) -> M:
        """An object of the model from a row's values as read (`values` has every column);
        not tracked: `save` would insert it."""
        return self._build({name: values[name] for name in self.columns})

    async def forget(self, session: Target) -> None:
        """Read this table's rows again in this transaction: a statement of its own changed some.

        Call it after a bulk UPDATE of the table, between handlers (every change made through
        `save` is written already).
        """
        tracked = await _tracked(session)
        for key in [key for key in tracked if key[0] == self.table.name]:
            del tracked[key]

    def _build(self, values: Mapping[str, Any]) -> M:
        # As the ORM builds a row it loads: the instance and its state, then its values set
        # straight into its __dict__ (no validation, no change events).
        manager = self._manager
        if manager is None:
            configure_mappers()
            manager = self._manager = manager_of_class(self.model)
        row: M = manager.new_instance()
        row.__dict__.update(values)
        return row


async def _tracked(session: Target) -> dict[tuple[str, Any], _Tracked]:
    """The rows of the current transaction (a later transaction reads them afresh); a session's
    transaction is begun first, so that it is the one they belong to."""
    if type(session) is Transaction:
        found: dict[tuple[str, Any], _Tracked] = session.info.setdefault(_TRACKED, {})
        return found
    assert isinstance(session, AsyncSession)
    await connection_of(session)
    info = session.sync_session.info
    transaction = session.sync_session.get_transaction()
    held: tuple[Any, dict[tuple[str, Any], _Tracked]] | None = info.get(_TRACKED)
    if held is None or held[0] is not transaction:
        held = info[_TRACKED] = (transaction, {})
    return held[1]
