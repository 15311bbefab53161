"""Migrations 6-9: time partitioning, rollups, the writer and reader roles, real-time
rollups. Each has a plain-PostgreSQL and a TimescaleDB flavour."""

from __future__ import annotations

from pathlib import Path

from storage.migrations.base import POSTGRES, TIMESCALEDB, Migration
from storage.rollups import realtime_sql, rollup_sql

_SQL_DIR = Path(__file__).resolve().parent

MIGRATIONS: list[Migration] = [
    (
        6,
        "time partitioning: daily range partitions, or TimescaleDB hypertables",
        {
            POSTGRES: (_SQL_DIR / "partitioning.sql").read_text(),
            TIMESCALEDB: (_SQL_DIR / "timescale.sql").read_text(),
        },
    ),
    (
        7,
        "rollups readings_1m and readings_1h (tables + trigger, or continuous aggregates)",
        {POSTGRES: rollup_sql(POSTGRES), TIMESCALEDB: rollup_sql(TIMESCALEDB)},
    ),
    (8, "roles citywatch_writer and citywatch_reader", (_SQL_DIR / "roles.sql").read_text()),
    (
        9,
        "real-time rollups: readings_1m/_1h include the minutes not yet refreshed",
        {POSTGRES: realtime_sql(POSTGRES), TIMESCALEDB: realtime_sql(TIMESCALEDB)},
    ),
]
