"""Alerts raised by Grafana rules: opened, merged into a live alert, or auto-resolved."""

from __future__ import annotations

from datetime import datetime

import psycopg

from storage.alerts.opening import insert_alert, route, zone_of
from storage.alerts.outbox import record_transition


def apply_grafana_alert(
    conn: psycopg.Connection,
    *,
    alert_id: str,
    asset_id: str,
    device_id: str,
    asset_type: str,
    firing: bool,
    starts_at: datetime,
    ends_at: datetime | None,
    severity: str,
    title: str,
    risk: float,
    actor: str,
) -> tuple[str, str]:
    """Open or auto-resolve an alert raised by a Grafana rule; idempotent.

    Returns ``(alert_id, what_happened)``; when the asset already has a live
    alert the Grafana one is merged into it (one live alert per asset).
    """
    with conn.transaction(), conn.cursor() as cur:
        if firing:
            zone = zone_of(cur, device_id) if device_id else None
            team = route(cur, asset_type, zone, severity)
            inserted = insert_alert(
                cur,
                {
                    "alert_id": alert_id,
                    "asset_id": asset_id,
                    "device_id": device_id,
                    "asset_type": asset_type,
                    "opened_at": starts_at,
                    "peak_risk": risk,
                    "last_risk": risk,
                    "threshold": 0.0,
                    "model_version": "grafana",
                    "model_kind": None,  # a Grafana rule, not a model
                    "outlook": None,
                    "status": "open",
                    "closed_at": None,
                    "source": "grafana",
                    "severity": severity,
                    "zone": zone,
                    "team": team,
                    "title": title,
                    "resolved_by": None,
                    "outcome": None,
                },
            )
            if inserted:
                record_transition(
                    cur,
                    alert_id,
                    "open",
                    None,
                    "open",
                    actor,
                    team=team,
                    detail={"source": "grafana", "severity": severity, "title": title},
                )
                return alert_id, "opened"
            if cur.execute("SELECT 1 FROM alerts WHERE alert_id = %s", (alert_id,)).fetchone():
                return alert_id, "unchanged"  # Grafana re-sends firing alerts
            live = cur.execute(
                "SELECT alert_id FROM alerts WHERE asset_id = %s AND status <> 'resolved'",
                (asset_id,),
            ).fetchone()
            return (live[0] if live else alert_id), "merged"
        prev = cur.execute(
            "SELECT status, team, escalation_level FROM alerts WHERE alert_id = %s FOR UPDATE",
            (alert_id,),
        ).fetchone()
        if prev is None or prev[0] == "resolved":
            return alert_id, "unchanged"
        cur.execute(
            "UPDATE alerts SET status = 'resolved', closed_at = %s, resolved_by = %s,"
            " outcome = 'auto', updated_at = now() WHERE alert_id = %s",
            (ends_at, actor, alert_id),
        )
        record_transition(
            cur,
            alert_id,
            "resolve",
            prev[0],
            "resolved",
            actor,
            team=prev[1],
            level=prev[2],
            detail={"outcome": "auto", "source": "grafana"},
        )
        return alert_id, "resolved"
