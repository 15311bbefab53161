"""The worker's alert rows, applied to the inbox inside the sink's transaction.

The worker's vocabulary ('open'/'closed', :class:`core.records.Alert`) maps onto the
lifecycle here: 'closed' is an automatic resolution (``resolved_by='system'``,
``outcome='auto'``) unless people resolved the alert already; nothing reopens a
resolved alert.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict

import psycopg

from core.records import Alert
from storage.alerts.opening import insert_alert, route, zone_of
from storage.alerts.outbox import record_transition

# Risk at or above this makes a model alert critical; below it, a warning.
CRITICAL_RISK = 0.9

# The inbox title says which model raised the alert: supervised, or no labels yet.
_KIND_TEXT = {"failure_risk": "failure risk", "anomaly": "anomaly (no labels yet), level"}


def severity_for(risk: float) -> str:
    return "critical" if risk >= CRITICAL_RISK else "warning"


def apply_worker_alerts(cur: psycopg.Cursor, rows: Sequence[Alert]) -> int:
    """Apply the worker's alert rows inside the caller's transaction; idempotent.

    Returns the number of transitions recorded (replays record none).
    """
    transitions = 0
    for a in rows:
        if a.status == "open":
            transitions += _worker_open(cur, a)
        elif a.status == "closed":
            transitions += _worker_close(cur, a)
        else:
            raise ValueError(f"unknown worker alert status {a.status!r}")
    return transitions


def _worker_open(cur: psycopg.Cursor, a: Alert) -> int:
    severity = severity_for(a.peak_risk)
    zone = zone_of(cur, a.device_id)
    team = route(cur, a.asset_type, zone, severity)
    inserted = insert_alert(
        cur,
        {
            **asdict(a),
            "status": "open",
            "closed_at": None,
            "source": "model",
            "severity": severity,
            "zone": zone,
            "team": team,
            "title": f"{a.asset_type} {a.asset_id}: {_KIND_TEXT.get(a.model_kind, 'risk')} "
            f"{a.peak_risk:.2f}" + (f", {a.outlook}" if a.outlook else ""),
            "resolved_by": None,
            "outcome": None,
        },
    )
    if inserted:
        record_transition(
            cur,
            a.alert_id,
            "open",
            None,
            "open",
            "system",
            team=team,
            detail={
                "risk": a.peak_risk,
                "threshold": a.threshold,
                "model_kind": a.model_kind,
                "severity": severity,
                "opened_at": a.opened_at.isoformat(),
            },
        )
        return 1
    # A replay, or another live alert for this asset (e.g. from Grafana): only
    # refresh the risk figures; never reopen, never a second live alert.
    cur.execute(
        "UPDATE alerts SET peak_risk = GREATEST(peak_risk, %s), last_risk = %s,"
        " updated_at = now() WHERE alert_id = %s",
        (a.peak_risk, a.last_risk, a.alert_id),
    )
    return 0


def _worker_close(cur: psycopg.Cursor, a: Alert) -> int:
    prev = cur.execute(
        "SELECT status, team, escalation_level FROM alerts WHERE alert_id = %s FOR UPDATE",
        (a.alert_id,),
    ).fetchone()
    if prev is None:
        # The open row never reached us (e.g. stored before this schema): keep history.
        insert_alert(
            cur,
            {
                **asdict(a),
                "status": "resolved",
                "closed_at": a.closed_at,
                "source": "model",
                "severity": severity_for(a.peak_risk),
                "zone": zone_of(cur, a.device_id),
                "team": None,
                "title": f"{a.asset_type} {a.asset_id}: {_KIND_TEXT.get(a.model_kind, 'risk')} "
                f"{a.peak_risk:.2f}",
                "resolved_by": "system",
                "outcome": "auto",
            },
        )
        return 0
    status, team, level = prev
    cur.execute(
        "UPDATE alerts SET peak_risk = GREATEST(peak_risk, %s), last_risk = %s,"
        " updated_at = now() WHERE alert_id = %s",
        (a.peak_risk, a.last_risk, a.alert_id),
    )
    if status == "resolved":
        return 0  # people resolved it first (or a replay): their outcome stands
    cur.execute(
        "UPDATE alerts SET status = 'resolved', closed_at = %s, resolved_by = 'system',"
        " outcome = 'auto' WHERE alert_id = %s",
        (a.closed_at, a.alert_id),
    )
    record_transition(
        cur,
        a.alert_id,
        "resolve",
        status,
        "resolved",
        "system",
        team=team,
        level=level,
        detail={"outcome": "auto", "risk": a.last_risk, "closed_at": a.closed_at.isoformat()},
    )
    return 1
