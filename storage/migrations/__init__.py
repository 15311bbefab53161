"""Database schema: versioned, idempotent migrations, one module per group.

Two flavours share every table and view name, so every query and dashboard
works on both:

- ``timescaledb`` when the extension is available: hypertables, compression,
  continuous aggregates;
- ``postgres`` otherwise: native daily range partitions and incrementally
  refreshed rollup tables (see ``partitioning.sql`` here, ``storage/rollups.py``).

A migration's SQL is either one string (both flavours) or a dict keyed by
flavour. The flavour is chosen once, when the first flavoured migration runs,
and recorded in ``schema_migrations``; later runs keep it even if TimescaleDB
appears or disappears. Each migration runs once, inside a transaction; an
advisory lock keeps concurrent workers from racing.

Where a new migration goes: into the module of its group (``v<first number>_<topic>.py``)
with the next free number of that group's range, or into a new module for a new group
(every ``v*.py`` module here is read). Numbers are never reused or renumbered:
``schema_migrations`` records them, and a duplicate fails at import.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil

import psycopg

from storage.migrations.base import FLAVOURS, POSTGRES, TIMESCALEDB, Migration

__all__ = [
    "FLAVOURS",
    "MIGRATIONS",
    "POSTGRES",
    "TIMESCALEDB",
    "migrate",
    "recorded_flavour",
    "timescale_available",
]

log = logging.getLogger(__name__)

_LOCK_KEY = 0x63697479  # "city": one advisory lock for all schema changes

# Every v<number>_<topic>.py module here is a group of migrations.
_GROUPS = [
    importlib.import_module(f"{__name__}.{module.name}")
    for module in pkgutil.iter_modules(__path__)
    if module.name.startswith("v")
]
MIGRATIONS: list[Migration] = sorted(
    (m for group in _GROUPS for m in group.MIGRATIONS), key=lambda m: m[0]
)
_numbers = [m[0] for m in MIGRATIONS]
if len(set(_numbers)) != len(_numbers):
    raise RuntimeError(f"two migrations share a number: {sorted(_numbers)}")


def timescale_available(conn: psycopg.Connection) -> bool:
    """True when the TimescaleDB extension can be created in this database."""
    row = conn.execute(
        "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
    ).fetchone()
    return row is not None


def recorded_flavour(conn: psycopg.Connection) -> str | None:
    """The flavour this database was migrated with, or None before migration 6."""
    if conn.execute("SELECT to_regclass('schema_migrations')").fetchone()[0] is None:
        return None
    has_column = conn.execute(
        "SELECT 1 FROM information_schema.columns"
        " WHERE table_name = 'schema_migrations' AND column_name = 'flavour'"
        " AND table_schema = current_schema()"
    ).fetchone()
    if not has_column:
        return None
    row = conn.execute(
        "SELECT flavour FROM schema_migrations WHERE flavour IS NOT NULL ORDER BY version LIMIT 1"
    ).fetchone()
    return row[0] if row else None


def _choose_flavour(conn: psycopg.Connection, requested: str, done: set[int]) -> str:
    recorded = recorded_flavour(conn)
    if recorded is not None:
        if requested not in ("auto", recorded):
            raise ValueError(
                f"database was migrated as {recorded!r}; it cannot switch to {requested!r}"
            )
        return recorded
    if requested != "auto":
        if requested not in FLAVOURS:
            raise ValueError(f"unknown storage flavour {requested!r}; use one of {FLAVOURS}")
        return requested
    # Version 100 was the old TimescaleDB-only step: such databases are hypertables already.
    if 100 in done or timescale_available(conn):
        return TIMESCALEDB
    return POSTGRES


def _pending(conn: psycopg.Connection, target: int | None) -> bool:
    """True unless every migration up to target is recorded (read-only check)."""
    if recorded_flavour(conn) is None:
        return True
    done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
    return any(v not in done for v, _, _ in MIGRATIONS if target is None or v <= target)


def migrate(database_url: str, flavour: str = "auto", target: int | None = None) -> list[int]:
    """Apply pending migrations; return the versions applied now (empty when current).

    Parameters
    ----------
    database_url : str
        A libpq connection string.
    flavour : str
        'auto' (TimescaleDB when available), 'postgres' or 'timescaledb'. Only the
        first migration that has flavours decides; later calls must agree or say 'auto'.
    target : int, optional
        Stop after this version (for upgrade tests); default: everything.
    """
    applied_now: list[int] = []
    with psycopg.connect(database_url, autocommit=True) as conn:
        # Services log in as roles that may not create or alter anything
        # (storage/service_roles.py): a current schema needs no DDL at all.
        if not _pending(conn, target):
            _choose_flavour(conn, flavour, set())  # still refuses a flavour switch
            return applied_now
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            conn.execute("ALTER TABLE schema_migrations ADD COLUMN IF NOT EXISTS flavour text")
            done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
            chosen = _choose_flavour(conn, flavour, done)
            for version, name, sql in sorted(MIGRATIONS, key=lambda m: m[0]):
                if version in done or (target is not None and version > target):
                    continue
                body = sql[chosen] if isinstance(sql, dict) else sql
                with conn.transaction():
                    conn.execute(body)
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name, flavour)"
                        " VALUES (%s, %s, %s)",
                        (version, name, chosen if isinstance(sql, dict) else None),
                    )
                log.info("applied migration %d (%s): %s", version, chosen, name)
                applied_now.append(version)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied_now
