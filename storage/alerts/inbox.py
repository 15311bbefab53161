"""The inbox's reads: alerts visible to a user, an alert's history, and the asset's
recent readings and latest explanation for the alert page."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import psycopg
from psycopg.rows import dict_row

from storage.alerts.access import Actor


def list_alerts(
    conn: psycopg.Connection,
    actor: Actor,
    *,
    statuses: Iterable[str] | None = None,
    team: str | None = None,
    asset_type: str | None = None,
    zone: str | None = None,
    severity: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Alerts visible to ``actor``, riskiest first (crews: their own team only)."""
    where, params = [], []
    scope = actor.team_scope
    if scope:
        where.append("team = %s")
        params.append(scope)
    for column, value in (
        ("team", team),
        ("asset_type", asset_type),
        ("zone", zone),
        ("severity", severity),
    ):
        if value is not None:
            where.append(f"{column} = %s")
            params.append(value)
    if statuses:
        where.append("status = ANY(%s)")
        params.append(list(statuses))
    sql = "SELECT * FROM alerts"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY last_risk DESC, opened_at DESC LIMIT %s"
    params.append(limit)
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(sql, params).fetchall()


def alert_history(conn: psycopg.Connection, alert_id: str) -> dict[str, list[dict]]:
    with conn.cursor(row_factory=dict_row) as cur:
        transitions = cur.execute(
            "SELECT transition_id, action, from_status, to_status, actor, at, level, detail"
            " FROM alert_transitions WHERE alert_id = %s ORDER BY transition_id",
            (alert_id,),
        ).fetchall()
        comments = cur.execute(
            "SELECT comment_id, author, at, body FROM alert_comments WHERE alert_id = %s"
            " ORDER BY comment_id",
            (alert_id,),
        ).fetchall()
    return {"transitions": transitions, "comments": comments}


def recent_readings(
    conn: psycopg.Connection, asset_id: str, limit: int = 120
) -> list[dict[str, Any]]:
    """The asset's latest readings (oldest first) for the inbox plot."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT ts, device_id, metrics FROM readings WHERE asset_id = %s"
            " ORDER BY ts DESC LIMIT %s",
            (asset_id, limit),
        ).fetchall()
    return rows[::-1]


def top_contributions(
    conn: psycopg.Connection, asset_id: str, model_version: str | None, k: int = 5
) -> dict[str, Any] | None:
    """The latest explanation for the asset: top-k features by |contribution|."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "SELECT ts, model_version, risk, contributions FROM score_explanations"
            " WHERE asset_id = %s AND (%s::text IS NULL OR model_version = %s)"
            " ORDER BY ts DESC LIMIT 1",
            (asset_id, model_version, model_version),
        ).fetchone()
    if row is None:
        return None
    contrib = {f: float(v) for f, v in row["contributions"].items() if f != "_bias"}
    top = sorted(contrib.items(), key=lambda kv: abs(kv[1]), reverse=True)[:k]
    return {
        "ts": row["ts"],
        "model_version": row["model_version"],
        "risk": row["risk"],
        "bias": row["contributions"].get("_bias"),
        "top": [{"feature": f, "contribution": v} for f, v in top],
    }
