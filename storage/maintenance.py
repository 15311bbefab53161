"""Storage housekeeping: partitions ahead, retention, rollup refresh; and a status report.

``run_maintenance`` is cheap when there is nothing to do, so a worker may call
it on a timer (every minute is fine). Concurrent callers are safe: partition
work is skipped by whoever does not hold the advisory lock, rollup refreshes
queue behind each other.

- plain PostgreSQL: ``citywatch_ensure_partitions(days_ahead)`` creates daily
  partitions ahead and re-homes rows that landed in a default partition;
  ``citywatch_drop_expired(retain)`` drops whole expired days;
  ``citywatch_refresh_rollups()`` recomputes the minutes (and their hours) that
  received rows since the last run, late rows included.
- TimescaleDB: chunks are created on demand; retention drops whole chunks
  (``drop_chunks``) and keeps a retention policy in line with the setting;
  continuous aggregates are refreshed over their invalidated ranges.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from typing import Any

import psycopg

from storage.migrations import TIMESCALEDB, recorded_flavour

log = logging.getLogger(__name__)

PARTITIONED = ("readings", "scores")
ROLLUPS = (("readings_1m", "readings_1m_wide"), ("readings_1h", "readings_1h_wide"))


@dataclass(frozen=True)
class MaintenanceResult:
    """What one maintenance run did."""

    flavour: str
    partitions_created: int = 0
    partitions_dropped: int = 0
    rollup_minutes_refreshed: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_maintenance(
    conninfo: str, *, days_ahead: int = 7, retention_days: int | None = None
) -> MaintenanceResult:
    """Ensure partitions ahead, drop data past retention, refresh the rollups.

    Parameters
    ----------
    conninfo : str
        A libpq connection string of a migrated database (owner or citywatch_writer).
    days_ahead : int
        Daily partitions to keep ready beyond today (plain PostgreSQL only).
    retention_days : int, optional
        Drop readings and scores older than this many days; None keeps everything.
    """
    started = time.perf_counter()
    # Autocommit: each step commits on its own, and CALL refresh_continuous_aggregate
    # refuses to run inside a transaction block.
    with psycopg.connect(conninfo, autocommit=True, application_name="citywatch-maint") as conn:
        flavour = recorded_flavour(conn)
        if flavour is None:
            raise RuntimeError("database is not migrated (run `citywatch storage migrate`)")
        if flavour == TIMESCALEDB and not owns(conn, PARTITIONED[0]):
            # TimescaleDB lets only the owner change policies or refresh an aggregate
            # (the compose worker is not: storage/service_roles.py); its background
            # refresh policies keep the rollups fresh meanwhile.
            log.debug("storage maintenance: not the owner; TimescaleDB's own jobs run it")
            created = dropped = refreshed = 0
        elif flavour == TIMESCALEDB:
            created, dropped, refreshed = _timescale(conn, retention_days)
        else:
            created = conn.execute(
                "SELECT citywatch_ensure_partitions(%s)", (days_ahead,)
            ).fetchone()[0]
            dropped = 0
            if retention_days is not None:
                dropped = conn.execute(
                    "SELECT citywatch_drop_expired(make_interval(days => %s))", (retention_days,)
                ).fetchone()[0]
            refreshed = conn.execute("SELECT citywatch_refresh_rollups()").fetchone()[0]
    result = MaintenanceResult(
        flavour, created, dropped, refreshed, round(time.perf_counter() - started, 3)
    )
    log.info(
        "storage maintenance: %d partitions created, %d dropped, %d rollup minutes refreshed"
        " (%.2f s)",
        result.partitions_created,
        result.partitions_dropped,
        result.rollup_minutes_refreshed,
        result.seconds,
    )
    return result


def owns(conn: psycopg.Connection, table: str) -> bool:
    """Whether the connected role owns ``table`` (or is a member of its owner)."""
    return conn.execute(
        "SELECT pg_has_role(current_user, relowner, 'USAGE') FROM pg_class"
        " WHERE oid = %s::regclass",
        (table,),
    ).fetchone()[0]


# TimescaleDB statements, module-level so tests check them against a real TimescaleDB build.
TS_RETENTION_SETTING = (
    "SELECT config->>'drop_after' FROM timescaledb_information.jobs"
    " WHERE proc_name = 'policy_retention' AND hypertable_name = %s"
)
TS_REMOVE_RETENTION = "SELECT remove_retention_policy(%s, if_exists => true)"
TS_ADD_RETENTION = "SELECT add_retention_policy(%s, %s::interval)"
TS_DROP_CHUNKS = "SELECT drop_chunks(%s, older_than => %s::interval)"
# NULL bounds: TimescaleDB materialises only the invalidated ranges (late data too).
TS_REFRESH = "CALL refresh_continuous_aggregate(%s, NULL, NULL)"
TS_CHUNKS = (
    "SELECT count(*), count(*) FILTER (WHERE is_compressed), min(range_start),"
    " max(range_end) FROM timescaledb_information.chunks WHERE hypertable_name = %s"
)
TS_LAST_REFRESH = (
    "SELECT s.last_successful_finish FROM timescaledb_information.jobs j"
    " JOIN timescaledb_information.job_stats s USING (job_id)"
    " WHERE j.proc_name = 'policy_refresh_continuous_aggregate'"
    " AND j.hypertable_name = (SELECT materialization_hypertable_name"
    " FROM timescaledb_information.continuous_aggregates WHERE view_name = %s)"
)


def _timescale(conn: psycopg.Connection, retention_days: int | None) -> tuple[int, int, int]:
    dropped = 0
    for table in PARTITIONED:
        if retention_days is None:
            conn.execute(TS_REMOVE_RETENTION, (table,))
            continue
        keep = f"{retention_days} days"
        current = conn.execute(TS_RETENTION_SETTING, (table,)).fetchone()
        if current is None or current[0] != keep:
            # One setting drives both flavours: the background policy follows it too.
            conn.execute(TS_REMOVE_RETENTION, (table,))
            conn.execute(TS_ADD_RETENTION, (table, keep))
        dropped += len(conn.execute(TS_DROP_CHUNKS, (table, keep)).fetchall())
    for _view, wide in ROLLUPS:
        conn.execute(TS_REFRESH, (wide,))
    return 0, dropped, 0


def maintain_forever(
    conninfo: str,
    every_s: float,
    *,
    days_ahead: int = 7,
    retention_days: int | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Run maintenance every ``every_s`` seconds until ``stop`` is set; errors are logged."""
    stop = stop or threading.Event()
    while not stop.is_set():
        try:
            run_maintenance(conninfo, days_ahead=days_ahead, retention_days=retention_days)
        except psycopg.Error as exc:
            # The database may be restarting; the next round tries again.
            log.warning("storage maintenance failed: %s", exc)
        stop.wait(every_s)


def storage_status(conninfo: str) -> dict[str, Any]:
    """Flavour, migrations, partitions (or chunks) and rollup freshness, as plain data."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        flavour = recorded_flavour(conn)
        migrations = []
        if conn.execute("SELECT to_regclass('schema_migrations')").fetchone()[0]:
            # to_jsonb: databases migrated before the flavour column have no such column.
            migrations = [
                {"version": v, "name": n, "flavour": f, "applied_at": a.isoformat()}
                for v, n, f, a in conn.execute(
                    "SELECT version, name, to_jsonb(m)->>'flavour', applied_at"
                    " FROM schema_migrations m ORDER BY 1"
                )
            ]
        status: dict[str, Any] = {"flavour": flavour, "migrations": migrations}
        if flavour is None:
            return status
        if flavour == TIMESCALEDB:
            status["partitions"] = _timescale_chunks(conn)
        else:
            status["partitions"] = _plain_partitions(conn)
        status["rollups"] = _rollup_freshness(conn, flavour)
    return status


def _plain_partitions(conn: psycopg.Connection) -> dict[str, Any]:
    today = datetime.now(UTC).date()
    out = {}
    for parent in PARTITIONED:
        days = [
            date.fromisoformat(name[-8:])
            for (name,) in conn.execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                " WHERE i.inhparent = %s::regclass AND c.relname ~ '_p[0-9]{8}$'",
                (parent,),
            )
        ]
        default_rows = conn.execute(f"SELECT count(*) FROM {parent}_default").fetchone()[0]
        out[parent] = {
            "daily_partitions": len(days),
            "oldest_day": min(days).isoformat() if days else None,
            "newest_day": max(days).isoformat() if days else None,
            "days_ready_ahead": (max(days) - today).days if days else 0,
            "default_partition_rows": default_rows,
        }
    return out


def _timescale_chunks(conn: psycopg.Connection) -> dict[str, Any]:
    out = {}
    for table in PARTITIONED:
        total, compressed, oldest, newest = conn.execute(TS_CHUNKS, (table,)).fetchone()
        out[table] = {
            "chunks": total,
            "compressed_chunks": compressed,
            "oldest": oldest.isoformat() if oldest else None,
            "newest": newest.isoformat() if newest else None,
        }
    return out


def _rollup_freshness(conn: psycopg.Connection, flavour: str) -> dict[str, Any]:
    newest_reading = conn.execute("SELECT max(ts) FROM readings").fetchone()[0]
    out: dict[str, Any] = {"newest_reading": newest_reading.isoformat() if newest_reading else None}
    for view, wide in ROLLUPS:
        newest = conn.execute(f"SELECT max(bucket) FROM {wide}").fetchone()[0]
        out[view] = {"newest_bucket": newest.isoformat() if newest else None}
    if flavour == TIMESCALEDB:
        for view, wide in ROLLUPS:
            row = conn.execute(TS_LAST_REFRESH, (wide,)).fetchone()
            out[view]["last_refresh"] = row[0].isoformat() if row and row[0] else None
    else:
        pending, oldest = conn.execute(
            "SELECT count(DISTINCT bucket), min(logged_at) FROM rollup_invalidations"
        ).fetchone()
        out["pending_minutes"] = pending
        out["oldest_pending_age_s"] = (
            round((datetime.now(UTC) - oldest).total_seconds(), 1) if oldest else 0.0
        )
    return out
