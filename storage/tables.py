"""The tables the sink writes, spelled from the record types in :mod:`core.records`.

A table's columns are its record's fields, in order (a few carry a unit in their
column name), and their PostgreSQL types follow from the fields' annotations, so a
field added to a record needs only its migration.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.records import Explanation, Maintenance, Reading, Score

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "EXPLANATIONS",
    "MAINTENANCE",
    "READINGS",
    "SCORES",
    "Table",
    "copy_rows",
    "table_of",
]

# Python annotation (without "| None") -> PostgreSQL type; mappings are stored as jsonb.
_PG_TYPES = {"datetime": "timestamptz", "str": "text", "float": "float8", "int": "int8"}
_PG_TYPES["bytes"] = "bytea"


@dataclass(frozen=True)
class Table:
    """One table: its columns, their types, and one record's values in column order."""

    name: str
    columns: tuple[str, ...]
    types: tuple[str, ...]
    values: Callable[[Any], tuple]


def copy_rows(
    cur: psycopg.Cursor, table: Table, records: Sequence[Any], into: str | None = None
) -> None:
    """Binary COPY of ``records`` (of ``table``'s record type) into ``into`` (default:
    the table itself); the sink, its staging tables and the raw baselines all use it."""
    if not records:
        return
    values = table.values
    columns = ", ".join(table.columns)
    with cur.copy(f"COPY {into or table.name} ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(list(table.types))
        for record in records:
            copy.write_row(values(record))


def _pg_type(annotation: str) -> str:
    base = annotation.split(" | ")[0]
    return "jsonb" if base.startswith(("Mapping[", "dict[")) else _PG_TYPES[base]


def table_of(
    name: str,
    record: type,
    *,
    renamed: Mapping[str, str] | None = None,
    types: Mapping[str, str] | None = None,
    values: Callable[[Any], tuple] | None = None,
) -> Table:
    """The table ``name`` holding ``record``'s fields.

    ``renamed`` maps a field to its column name, ``types`` overrides a column's type,
    and ``values`` replaces the plain field getter (to clean hostile text, say).
    Mappings go in as they are: binary COPY dumps them as jsonb.
    """
    fields = [f.name for f in dataclasses.fields(record)]
    renamed, types = renamed or {}, types or {}
    return Table(
        name,
        tuple(renamed.get(f, f) for f in fields),
        tuple(types.get(f) or _pg_type(record.__annotations__[f]) for f in fields),
        values or operator.attrgetter(*fields),
    )


READINGS = table_of("readings", Reading)
MAINTENANCE = table_of("maintenance_events", Maintenance)
SCORES = table_of(
    "scores",
    Score,
    renamed={f"ttf_{q}": f"ttf_{q}_days" for q in ("low", "median", "high")},
)
EXPLANATIONS = table_of("score_explanations", Explanation)
