"""Training data as stored: readings, failures, maintenance events and labels.

What ``citywatch train`` and drift monitoring read, as rows (``models.history`` makes
frames of them); failures and labels are written here too, each keyed on a natural
key so that importing or recording them again changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

__all__ = [
    "fetch_failures",
    "fetch_labels",
    "fetch_maintenance_events",
    "fetch_readings",
    "insert_labels",
    "record_failures",
]


def fetch_readings(
    conn: psycopg.Connection,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    asset_types: Sequence[str] | None = None,
    include_simulated: bool = False,
) -> list[tuple[str, str, str, datetime, str]]:
    """``(device_id, asset_id, asset_type, ts, metrics json text)`` ordered by device and time.

    ``since`` is inclusive, ``until`` exclusive. Readings of uplinks a network
    server marked simulated (``source.simulated``, The Things Stack's console
    simulator) are left out unless ``include_simulated``: they are test
    traffic, not the asset's behaviour. Metrics come back as JSON
    text: parsing it in bulk client-side is cheaper than psycopg's per-row
    jsonb conversion.
    """
    return conn.execute(
        """
        SELECT device_id, asset_id, asset_type, ts, metrics::text
        FROM readings
        WHERE (%(since)s::timestamptz IS NULL OR ts >= %(since)s)
          AND (%(until)s::timestamptz IS NULL OR ts < %(until)s)
          AND (%(types)s::text[] IS NULL OR asset_type = ANY(%(types)s))
          AND (%(sim)s OR NOT coalesce(source @> '{"simulated": true}', false))
        ORDER BY device_id, ts
        """,
        {
            "since": since,
            "until": until,
            "types": list(asset_types) if asset_types else None,
            "sim": include_simulated,
        },
    ).fetchall()


def fetch_failures(conn: psycopg.Connection) -> list[tuple[str, str, str, datetime, str]]:
    """Completed failures ``(device_id, asset_id, asset_type, failed_at, source)``."""
    return conn.execute(
        "SELECT device_id, asset_id, asset_type, failed_at, source FROM failures"
        " WHERE failed_at IS NOT NULL ORDER BY device_id, failed_at"
    ).fetchall()


def fetch_maintenance_events(conn: psycopg.Connection) -> list[tuple[str, datetime]]:
    """Repairs the worker saw on the stream, ``(device_id, ts)``, ordered."""
    return conn.execute(
        "SELECT device_id, ts FROM maintenance_events ORDER BY device_id, ts"
    ).fetchall()


def fetch_labels(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Every label row (crews' alert outcomes and imported work orders)."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT label_id, asset_id, device_id, observed_at, window_start, outcome, source"
            " FROM labels ORDER BY observed_at, label_id"
        ).fetchall()


def insert_labels(conn: psycopg.Connection, rows: Sequence[dict[str, Any]]) -> int:
    """Insert label rows keyed by ``label_id``; a repeated id changes nothing. Returns new rows."""
    new = 0
    with conn.cursor() as cur:
        for r in rows:
            cur.execute(
                """
                INSERT INTO labels
                    (label_id, asset_id, device_id, observed_at, window_start, outcome, source,
                     detail)
                VALUES (%(label_id)s, %(asset_id)s, %(device_id)s, %(observed_at)s,
                        %(window_start)s, %(outcome)s, %(source)s, %(detail)s)
                ON CONFLICT (label_id) DO NOTHING
                """,
                {**r, "detail": Jsonb(r.get("detail") or {})},
            )
            new += cur.rowcount
    return new


def record_failures(conn: psycopg.Connection, failures: Sequence[dict[str, Any]]) -> int:
    """Store ground-truth failures (simulator or work orders); idempotent.

    A row with ``failed_at=None`` is a degradation still under way; recording
    it again with ``failed_at`` set completes it.
    """
    if not failures:
        return 0
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO failures (asset_id, device_id, asset_type, mode,"
            " degradation_started_at, failed_at, source) VALUES (%(asset_id)s, %(device_id)s,"
            " %(asset_type)s, %(mode)s, %(degradation_started_at)s, %(failed_at)s,"
            " %(source)s) ON CONFLICT (asset_id, degradation_started_at)"
            " DO UPDATE SET failed_at = COALESCE(failures.failed_at, EXCLUDED.failed_at)",
            [{"source": "simulator", **f} for f in failures],
        )
    return len(failures)
