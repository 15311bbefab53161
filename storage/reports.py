"""Read-side queries: what happened in the pipeline, straight from the tables.

The demo summary and the benchmarks use these, so every figure they print can
be checked with the same SQL by hand.
"""

from __future__ import annotations

from typing import Any

import psycopg

# An alert is a true early warning when it opens while its asset is degrading,
# or shortly after the failure (the crew still learns something).
MATCH_GRACE = "30 seconds"

ALERTS_WITH_GROUND_TRUTH = f"""
SELECT a.alert_id, a.asset_id, a.asset_type, a.status, a.opened_at, a.closed_at,
       a.peak_risk,
       EXISTS (
           SELECT 1 FROM failures f
           WHERE f.asset_id = a.asset_id
             AND a.opened_at >= f.degradation_started_at
             AND (f.failed_at IS NULL OR a.opened_at <= f.failed_at + interval '{MATCH_GRACE}')
       ) AS matches_failure
FROM alerts a
ORDER BY a.opened_at
"""

FAILURES_DETECTED = f"""
SELECT count(*) FILTER (WHERE detected), count(*)
FROM (
    SELECT EXISTS (
        SELECT 1 FROM alerts a
        WHERE a.asset_id = f.asset_id
          AND a.opened_at >= f.degradation_started_at
          AND a.opened_at <= f.failed_at + interval '{MATCH_GRACE}'
    ) AS detected
    FROM failures f
    WHERE f.failed_at IS NOT NULL
) t
"""


def messages_accounted_for(conn: psycopg.Connection) -> int:
    """Readings, dead letters and maintenance events stored: every message the worker settled."""
    return conn.execute(
        "SELECT (SELECT count(*) FROM readings) + (SELECT count(*) FROM deadletters)"
        " + (SELECT count(*) FROM maintenance_events)"
    ).fetchone()[0]


def count_rows(conn: psycopg.Connection) -> dict[str, int]:
    counts = {}
    for table in ("readings", "alerts", "deadletters", "failures", "devices", "maintenance_events"):
        counts[table] = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    # One champion score per stored reading; challenger scores are shadows of those.
    counts["scores"] = conn.execute(
        "SELECT count(*) FROM scores WHERE role = 'champion'"
    ).fetchone()[0]
    return counts


def pipeline_summary(conn: psycopg.Connection) -> dict[str, Any]:
    """Counts, dead letters by reason, alerts against ground truth, latency."""
    counts = count_rows(conn)
    deadletters = dict(
        conn.execute(
            "SELECT reason, count(*) FROM deadletters GROUP BY reason ORDER BY 2 DESC"
        ).fetchall()
    )
    alerts = [
        {
            "alert_id": r[0],
            "asset_id": r[1],
            "asset_type": r[2],
            "status": r[3],
            "opened_at": r[4].isoformat(),
            "closed_at": r[5].isoformat() if r[5] else None,
            "peak_risk": round(r[6], 3),
            "matches_failure": r[7],
        }
        for r in conn.execute(ALERTS_WITH_GROUND_TRUTH).fetchall()
    ]
    detected, completed = conn.execute(FAILURES_DETECTED).fetchone()
    degrading = conn.execute("SELECT count(*) FROM failures WHERE failed_at IS NULL").fetchone()[0]
    latency = conn.execute(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY lag),"
        "       percentile_cont(0.99) WITHIN GROUP (ORDER BY lag),"
        "       min(ingested_at), max(ingested_at)"
        " FROM (SELECT extract(epoch FROM ingested_at - ts) AS lag, ingested_at"
        # Replayed records are back-dated on purpose: their age is not a lag.
        "       FROM readings WHERE source->>'kind' IS DISTINCT FROM 'replay') t"
    ).fetchone()
    matched = sum(a["matches_failure"] for a in alerts)
    span = (latency[3] - latency[2]).total_seconds() if latency[2] else 0.0
    return {
        "readings_stored": counts["readings"],
        "deadletters": counts["deadletters"],
        "maintenance_events": counts["maintenance_events"],
        "deadletters_by_reason": deadletters,
        "scores": counts["scores"],
        "alerts_opened": len(alerts),
        # Live = not yet resolved (open, acknowledged or assigned; see migration 5).
        "alerts_open_now": sum(a["status"] != "resolved" for a in alerts),
        "alerts_matching_failures": matched,
        "alert_precision": round(matched / len(alerts), 3) if alerts else None,
        "failures_injected": completed,
        "failures_detected": detected,
        "degradations_in_progress": degrading,
        "alert_recall": round(detected / completed, 3) if completed else None,
        "alerts": alerts,
        "lag_p50_s": round(latency[0], 3) if latency[0] is not None else None,
        "lag_p99_s": round(latency[1], 3) if latency[1] is not None else None,
        "stored_per_s": round(counts["readings"] / span, 1) if span > 0 else None,
    }
