"""What a request asks for, so that a repeat of it can be checked against the first one."""

from dataclasses import dataclass, fields
from typing import Self


@dataclass(frozen=True)
class Terms:
    """Base of a frozen dataclass of terms; two requests of one renewal must agree on all."""

    @classmethod
    def of(cls, row: object) -> Self:
        """The terms a stored row holds: each term read from the row's attribute of its name.

        `row` is a table's object or a result row that selected the terms' columns.
        """
        return cls(**{field.name: getattr(row, field.name) for field in fields(cls)})

    def differences(self, other: Self) -> list[str]:
        """The names of the terms that differ, in declaration order."""
        return [
            field.name
            for field in fields(self)
            if getattr(self, field.name) != getattr(other, field.name)
        ]
