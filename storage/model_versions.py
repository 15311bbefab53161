"""The database registry of model versions: versions, promotions (which version is
champion or challenger), load failures, and feature drift per version (migration 4).

Plain functions over a psycopg connection; they know rows, not models, so
storage never imports :mod:`models` (the dependency runs models -> storage).
Every write is keyed on a natural key and safe to repeat.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

__all__ = [
    "REGISTRY_LOCK_KEY",
    "active_versions",
    "champion_history",
    "fetch_load_failures",
    "fetch_model",
    "fetch_models",
    "insert_drift_alerts",
    "insert_feature_drift",
    "insert_load_failure",
    "lock_registry",
    "model_comparison",
    "record_promotion",
    "upsert_model",
]

# Serialises promotions across processes: two CLI calls or a CLI call and a
# training job must not both read "current champion" and then both write.
REGISTRY_LOCK_KEY = 0x6D6F646C  # "modl"


def lock_registry(conn: psycopg.Connection) -> None:
    """Take the registry's transaction-level advisory lock (call inside a transaction)."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (REGISTRY_LOCK_KEY,))


def upsert_model(
    conn: psycopg.Connection,
    *,
    version: str,
    created_at: datetime | str,
    owner: str | None,
    data_from: datetime | str | None,
    data_to: datetime | str | None,
    data_sha256: str,
    asset_types: Sequence[str],
    card: dict[str, Any],
    file_sha256: dict[str, str] | None = None,
) -> bool:
    """Insert a model row; on a repeat only fill in a missing owner or checksums. True if new."""
    row = conn.execute(
        """
        INSERT INTO model_registry
            (version, created_at, owner, data_from, data_to, data_sha256, asset_types, card,
             file_sha256)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT (version) DO UPDATE
            SET owner = COALESCE(EXCLUDED.owner, model_registry.owner),
                file_sha256 = COALESCE(model_registry.file_sha256, EXCLUDED.file_sha256)
        RETURNING (xmax = 0) AS inserted
        """,
        (
            version,
            created_at,
            owner,
            data_from,
            data_to,
            data_sha256,
            list(asset_types),
            Jsonb(card),
            Jsonb(file_sha256) if file_sha256 is not None else None,
        ),
    ).fetchone()
    return bool(row[0])


_ACTIVE_SQL = """
    SELECT DISTINCT ON (role) role, version
    FROM model_promotions
    ORDER BY role, promotion_id DESC
"""


def active_versions(conn: psycopg.Connection) -> dict[str, str | None]:
    """``{"champion": v | None, "challenger": v | None}`` from the latest promotion rows."""
    out: dict[str, str | None] = {"champion": None, "challenger": None}
    for role, version in conn.execute(_ACTIVE_SQL):
        out[role] = version
    return out


def champion_history(conn: psycopg.Connection) -> list[tuple[str, str | None]]:
    """Every champion change as ``(action, version)``, oldest first."""
    return [
        (action, version)
        for action, version in conn.execute(
            "SELECT action, version FROM model_promotions"
            " WHERE role = 'champion' ORDER BY promotion_id"
        )
    ]


def record_promotion(
    conn: psycopg.Connection,
    *,
    role: str,
    version: str | None,
    previous: str | None,
    action: str,
    actor: str,
) -> None:
    """Append one row to the promotion log."""
    conn.execute(
        "INSERT INTO model_promotions (role, version, previous, action, actor)"
        " VALUES (%s, %s, %s, %s, %s)",
        (role, version, previous, action, actor),
    )


_MODEL_COLUMNS = """
    m.version, m.created_at, m.registered_at, m.owner, m.data_from, m.data_to,
    m.data_sha256, m.asset_types, m.file_sha256,
    CASE WHEN a.champion = m.version THEN 'champion'
         WHEN a.challenger = m.version THEN 'challenger' END AS role,
    f.at AS load_failed_at, f.stage AS load_failed_stage, f.reason AS load_failure
"""
# The latest load failure of each version (refused promotion, or a worker that
# could not load it), so `model list` shows a broken champion at a glance.
_LATEST_FAILURE = """
    LEFT JOIN LATERAL (
        SELECT at, stage, reason FROM model_load_failures lf
        WHERE lf.version = m.version ORDER BY failure_id DESC LIMIT 1
    ) f ON true
"""
_ACTIVE_CTE = (
    """
    WITH latest AS ("""
    + _ACTIVE_SQL
    + """),
    a AS (
        SELECT max(version) FILTER (WHERE role = 'champion') AS champion,
               max(version) FILTER (WHERE role = 'challenger') AS challenger
        FROM latest
    )
"""
)


def fetch_models(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Registered models without their cards, newest first, with their current role."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            _ACTIVE_CTE
            + "SELECT "
            + _MODEL_COLUMNS
            + " FROM model_registry m CROSS JOIN a"
            + _LATEST_FAILURE
            + " ORDER BY m.created_at DESC, m.version DESC"
        ).fetchall()


def fetch_model(conn: psycopg.Connection, version: str) -> dict[str, Any] | None:
    """One registered model with its card and promotion log, or None."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            _ACTIVE_CTE
            + "SELECT "
            + _MODEL_COLUMNS
            + ", m.card FROM model_registry m CROSS JOIN a"
            + _LATEST_FAILURE
            + " WHERE m.version = %s",
            (version,),
        ).fetchone()
        if row is None:
            return None
        row["promotions"] = cur.execute(
            "SELECT at, role, action, version, previous, actor FROM model_promotions"
            " WHERE version = %s OR previous = %s ORDER BY promotion_id",
            (version, version),
        ).fetchall()
        row["load_failures"] = fetch_load_failures(conn, version)
    return row


def insert_load_failure(
    conn: psycopg.Connection,
    *,
    version: str,
    role: str,
    stage: str,
    reason: str,
    kept: str | None,
    worker: str,
) -> None:
    """Record why a model was refused at promotion (stage 'promote') or not loaded ('load')."""
    conn.execute(
        "INSERT INTO model_load_failures (version, role, stage, reason, kept, worker)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        (version, role, stage, reason.replace("\x00", "\\0")[:2000], kept, worker),
    )


def fetch_load_failures(
    conn: psycopg.Connection, version: str | None = None, limit: int = 20
) -> list[dict[str, Any]]:
    """The latest load failures, newest first (of one version, or of all)."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT at, version, role, stage, reason, kept, worker FROM model_load_failures"
            " WHERE %(v)s::text IS NULL OR version = %(v)s ORDER BY failure_id DESC LIMIT %(n)s",
            {"v": version, "n": limit},
        ).fetchall()


def insert_feature_drift(conn: psycopg.Connection, rows: Iterable[tuple[Any, ...]]) -> int:
    """Upsert ``(window_start, window_end, model_version, asset_type, feature, psi, n)`` rows."""
    rows = list(rows)
    if rows:
        with conn.cursor() as cur:
            cur.executemany(
                """
                INSERT INTO feature_drift
                    (window_start, window_end, model_version, asset_type, feature, psi, n)
                VALUES (%s, %s, %s, %s, %s, %s, %s)
                ON CONFLICT (model_version, asset_type, feature, window_end) DO UPDATE
                    SET psi = EXCLUDED.psi, n = EXCLUDED.n, window_start = EXCLUDED.window_start,
                        computed_at = now()
                """,
                rows,
            )
    return len(rows)


def insert_drift_alerts(conn: psycopg.Connection, rows: Iterable[tuple[Any, ...]]) -> int:
    """Insert ``(model_version, asset_type, feature, window_start, window_end, psi, threshold)``.

    Returns the number of new alerts (a repeated window raises nothing twice).
    """
    new = 0
    with conn.cursor() as cur:
        for row in rows:
            cur.execute(
                """
                INSERT INTO drift_alerts
                    (model_version, asset_type, feature, window_start, window_end, psi, threshold)
                VALUES (%s, %s, %s, %s, %s, %s, %s)
                ON CONFLICT DO NOTHING
                """,
                row,
            )
            new += cur.rowcount
    return new


def model_comparison(
    conn: psycopg.Connection,
    champion: str,
    challenger: str,
    *,
    since: datetime | None = None,
    horizon_s: float = 3600.0,
) -> dict[str, Any]:
    """Champion vs challenger scores on the same readings (joined on device_id, ts).

    Each side alerts when its risk is at or above its own recorded threshold.
    A score is a true positive when its device fails (``failures.failed_at``)
    within ``horizon_s`` seconds after the reading.
    """
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            """
            WITH pairs AS (
                SELECT a.device_id, a.ts, a.risk AS r1, b.risk AS r2,
                       a.risk >= a.threshold AS alert1, b.risk >= b.threshold AS alert2,
                       EXISTS (
                           SELECT 1 FROM failures f
                           WHERE f.device_id = a.device_id AND f.failed_at > a.ts
                             AND f.failed_at <= a.ts + make_interval(secs => %(h)s)
                       ) AS fails
                FROM scores a
                JOIN scores b ON b.device_id = a.device_id AND b.ts = a.ts
                WHERE a.model_version = %(c1)s AND b.model_version = %(c2)s
                  AND (%(since)s::timestamptz IS NULL OR a.ts >= %(since)s)
            )
            SELECT count(*) AS n,
                   avg(abs(r1 - r2)) AS mean_abs_diff,
                   corr(r1, r2) AS correlation,
                   avg(alert1::int) AS champion_alert_rate,
                   avg(alert2::int) AS challenger_alert_rate,
                   avg((alert1 = alert2)::int) AS agreement,
                   count(*) FILTER (WHERE fails) AS positives,
                   count(*) FILTER (WHERE alert1 AND fails) AS champion_tp,
                   count(*) FILTER (WHERE alert1) AS champion_alerts,
                   count(*) FILTER (WHERE alert2 AND fails) AS challenger_tp,
                   count(*) FILTER (WHERE alert2) AS challenger_alerts
            FROM pairs
            """,
            {"c1": champion, "c2": challenger, "since": since, "h": horizon_s},
        ).fetchone()
