"""What every migration module shares: the flavours, the shape of a migration, and
SQL spelled from the vocabularies in :mod:`core.vocabulary`."""

from __future__ import annotations

from collections.abc import Iterable

POSTGRES = "postgres"
TIMESCALEDB = "timescaledb"
FLAVOURS = (POSTGRES, TIMESCALEDB)

#: ``(version, name, sql)``: ``sql`` is one string (both flavours) or one per flavour.
Migration = tuple[int, str, str | dict[str, str]]


def sql_in(words: Iterable[str]) -> str:
    """``('a', 'b')``: the list of a CHECK (... IN ...) constraint, from a vocabulary tuple."""
    return "(" + ", ".join(f"'{w}'" for w in words) + ")"
