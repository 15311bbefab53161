"""A new alert's row: its zone (from the device), its team (the routing rules), inserted
unless the asset already has a live alert."""

from __future__ import annotations

from typing import Any

import psycopg

from core.vocabulary import SEVERITIES

# The team for a new alert: first matching routing rule by priority, then the
# most specific one (a rule naming asset type and zone beats a catch-all).
_ROUTE_SQL = """
SELECT r.team FROM routing_rules r
WHERE (r.asset_type IS NULL OR r.asset_type = %(asset_type)s)
  AND (r.zone IS NULL OR r.zone = %(zone)s)
  AND array_position(%(severities)s::text[], r.min_severity)
      <= array_position(%(severities)s::text[], %(severity)s::text)
ORDER BY r.priority, (r.asset_type IS NOT NULL)::int + (r.zone IS NOT NULL)::int DESC, r.rule_id
LIMIT 1
"""

_INSERT_ALERT = """
INSERT INTO alerts (alert_id, asset_id, device_id, asset_type, status, opened_at, closed_at,
                    peak_risk, last_risk, threshold, model_version, source, severity, zone,
                    team, title, resolved_by, outcome, model_kind, outlook)
VALUES (%(alert_id)s, %(asset_id)s, %(device_id)s, %(asset_type)s, %(status)s, %(opened_at)s,
        %(closed_at)s, %(peak_risk)s, %(last_risk)s, %(threshold)s, %(model_version)s,
        %(source)s, %(severity)s, %(zone)s, %(team)s, %(title)s, %(resolved_by)s, %(outcome)s,
        %(model_kind)s, %(outlook)s)
ON CONFLICT DO NOTHING
RETURNING alert_id
"""


def route(cur: psycopg.Cursor, asset_type: str, zone: str | None, severity: str) -> str | None:
    """The team a new alert goes to (None when no rule matches)."""
    row = cur.execute(
        _ROUTE_SQL,
        {
            "asset_type": asset_type,
            "zone": zone,
            "severity": severity,
            "severities": list(SEVERITIES),
        },
    ).fetchone()
    return row[0] if row else None


def zone_of(cur: psycopg.Cursor, device_id: str) -> str | None:
    """The zone of a registered device (None: unknown device or no zone)."""
    row = cur.execute("SELECT zone FROM devices WHERE device_id = %s", (device_id,)).fetchone()
    return row[0] if row else None


def insert_alert(cur: psycopg.Cursor, params: dict[str, Any]) -> bool:
    """Insert an alert row (``params`` names every column); False when its id exists or its
    asset already has a live alert."""
    return cur.execute(_INSERT_ALERT, params).fetchone() is not None
