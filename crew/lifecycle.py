"""What people and Grafana do to alerts, in the service's terms.

The lifecycle's rules live here: which action is allowed from which status, where
it leads, and which outcomes a crew may give. The SQL that applies them is in
``storage.alerts`` (the worker's sink shares it). This module also maps Grafana's
webhook payload onto the lifecycle.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import psycopg

from core.vocabulary import CREW_OUTCOMES, LIVE_STATUSES
from storage.alerts.access import Actor, TransitionError
from storage.alerts.actions import apply_transition
from storage.alerts.grafana import apply_grafana_alert

__all__ = [
    "ALLOWED_FROM",
    "TARGET_STATUS",
    "apply_grafana_payload",
    "grafana_severity",
    "transition",
]

# Which actions are allowed from which status (the lifecycle, as data).
ALLOWED_FROM: dict[str, tuple[str, ...]] = {
    "acknowledge": ("open",),
    "assign": ("open", "acknowledged", "assigned"),
    "resolve": LIVE_STATUSES,
}
TARGET_STATUS = {"acknowledge": "acknowledged", "assign": "assigned", "resolve": "resolved"}


def transition(
    conn: psycopg.Connection,
    alert_id: str,
    action: str,
    actor: Actor,
    *,
    assignee: str | None = None,
    outcome: str | None = None,
    note: str | None = None,
) -> dict[str, Any]:
    """Acknowledge, assign or resolve one alert; returns the alert after the change.

    Raises
    ------
    storage.alerts.access.NotFoundError
        No such alert, or it belongs to another team and ``actor`` is a crew.
    TransitionError
        The action is not allowed from the alert's status, or its input is invalid.
    """
    if action not in ALLOWED_FROM:
        raise TransitionError(f"unknown action {action!r}")
    if action == "resolve" and outcome not in CREW_OUTCOMES:
        raise TransitionError(f"outcome must be one of {', '.join(CREW_OUTCOMES)}")
    return apply_transition(
        conn,
        alert_id,
        action,
        actor,
        allowed_from=ALLOWED_FROM[action],
        to_status=TARGET_STATUS[action],
        assignee=assignee,
        outcome=outcome,
        note=note,
    )


_SEVERITY_WORDS = {
    "info": "info",
    "low": "info",
    "warning": "warning",
    "warn": "warning",
    "medium": "warning",
    "high": "critical",
    "critical": "critical",
    "page": "critical",
}


def grafana_severity(labels: dict[str, str]) -> str:
    return _SEVERITY_WORDS.get(str(labels.get("severity", "")).lower(), "warning")


def apply_grafana_payload(
    conn: psycopg.Connection, payload: dict[str, Any], actor: Actor
) -> list[dict[str, str]]:
    """Apply each alert of a Grafana webhook notification; idempotent per alert.

    Grafana's payload (``alerts[]`` with ``status``, ``labels``, ``annotations``,
    ``startsAt``, ``endsAt``, ``fingerprint``, ``values``) becomes one citywatch
    alert per Grafana alert instance. Labels ``asset_id``, ``device_id`` and
    ``asset_type`` tie it to an asset; without them it is filed under
    ``grafana:<alertname>``.
    """
    results = []
    for item in payload.get("alerts", []):
        labels = {str(k): str(v) for k, v in (item.get("labels") or {}).items()}
        annotations = item.get("annotations") or {}
        fingerprint = (
            item.get("fingerprint")
            or hashlib.sha1(json.dumps(labels, sort_keys=True).encode()).hexdigest()[:16]
        )
        starts_at: datetime = item["startsAt"]
        ends_at: datetime | None = item.get("endsAt")
        if ends_at is not None and ends_at.year < 2000:
            ends_at = None  # Grafana sends 0001-01-01 for "not ended"
        alertname = labels.get("alertname", "grafana")
        values = [v for v in (item.get("values") or {}).values() if isinstance(v, int | float)]
        alert_id, what = apply_grafana_alert(
            conn,
            alert_id=f"grafana:{fingerprint}:{starts_at.astimezone(UTC).isoformat()}",
            asset_id=labels.get("asset_id") or f"grafana:{alertname}",
            device_id=labels.get("device_id", ""),
            asset_type=labels.get("asset_type", "grafana"),
            firing=item.get("status") == "firing",
            starts_at=starts_at,
            ends_at=ends_at or datetime.now(UTC),
            severity=grafana_severity(labels),
            title=str(annotations.get("summary") or alertname)[:500],
            risk=float(max(values)) if values else 0.0,
            actor=actor.user_name,
        )
        results.append({"alert_id": alert_id, "result": what})
    return results
