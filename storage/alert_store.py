"""SQL for the alert lifecycle: open -> acknowledged -> assigned -> resolved.

Every state change is one transaction that updates ``alerts``, appends a row to
``alert_transitions`` (who, when, from, to) and calls ``pg_notify`` so the
notifier wakes at commit. The transitions table is the outbox: notifications
are derived from it, never sent from inside the transaction.

The worker's vocabulary ('open'/'closed', :class:`storage.sinks.AlertRow`) maps
onto it here: 'closed' is an automatic resolution (``resolved_by='system'``,
``outcome='auto'``) unless people resolved the alert already; nothing reopens a
resolved alert. Resolving with a crew outcome writes ``labels`` row
``alert:<id>`` in the same transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.rows import dict_row, tuple_row
from psycopg.types.json import Jsonb

if TYPE_CHECKING:
    from storage.sinks import AlertRow

NOTIFY_CHANNEL = "citywatch_alert_transitions"
LIVE_STATUSES = ("open", "acknowledged", "assigned")
OUTCOMES = ("fault_confirmed", "false_alarm", "no_access")
SEVERITIES = ("info", "warning", "critical")
# Risk at or above this makes a model alert critical; below it, a warning.
CRITICAL_RISK = 0.9

# Which actions are allowed from which status (the lifecycle, as data).
ALLOWED_FROM: dict[str, tuple[str, ...]] = {
    "acknowledge": ("open",),
    "assign": ("open", "acknowledged", "assigned"),
    "resolve": LIVE_STATUSES,
}
TARGET_STATUS = {"acknowledge": "acknowledged", "assign": "assigned", "resolve": "resolved"}


class TransitionError(ValueError):
    """The action is not allowed from the alert's current status."""


class NotFoundError(LookupError):
    """No such alert (or not visible to this user)."""


# The team for a new alert: first matching routing rule by priority, then the
# most specific one (a rule naming asset type and zone beats a catch-all).
_ROUTE_SQL = """
SELECT r.team FROM routing_rules r
WHERE (r.asset_type IS NULL OR r.asset_type = %(asset_type)s)
  AND (r.zone IS NULL OR r.zone = %(zone)s)
  AND array_position(ARRAY['info','warning','critical'], r.min_severity)
      <= array_position(ARRAY['info','warning','critical'], %(severity)s::text)
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

_INSERT_TRANSITION = """
INSERT INTO alert_transitions (alert_id, action, from_status, to_status, actor, at, team,
                               level, detail)
VALUES (%s, %s, %s, %s, %s, COALESCE(%s, clock_timestamp()), %s, %s, %s)
RETURNING transition_id
"""


# The inbox title says which model raised the alert: supervised, or no labels yet.
_KIND_TEXT = {"failure_risk": "failure risk", "anomaly": "anomaly (no labels yet), level"}


def severity_for(risk: float) -> str:
    return "critical" if risk >= CRITICAL_RISK else "warning"


def route(cur: psycopg.Cursor, asset_type: str, zone: str | None, severity: str) -> str | None:
    """The team a new alert goes to (None when no rule matches)."""
    row = cur.execute(
        _ROUTE_SQL, {"asset_type": asset_type, "zone": zone, "severity": severity}
    ).fetchone()
    return row[0] if row else None


def record_transition(
    cur: psycopg.Cursor,
    alert_id: str,
    action: str,
    from_status: str | None,
    to_status: str,
    actor: str,
    *,
    team: str | None,
    level: int = 0,
    at: datetime | None = None,
    detail: dict[str, Any] | None = None,
) -> int:
    """Append to the outbox and wake the notifier (delivered at commit)."""
    # A plain cursor on the same connection/transaction, whatever the caller's row factory.
    with cur.connection.cursor() as plain:
        tid = plain.execute(
            _INSERT_TRANSITION,
            (alert_id, action, from_status, to_status, actor, at, team, level, Jsonb(detail or {})),
        ).fetchone()[0]
        plain.execute("SELECT pg_notify(%s, %s)", (NOTIFY_CHANNEL, str(tid)))
    return tid


def _zone_of(cur: psycopg.Cursor, device_id: str) -> str | None:
    row = cur.execute("SELECT zone FROM devices WHERE device_id = %s", (device_id,)).fetchone()
    return row[0] if row else None


def apply_worker_alerts(cur: psycopg.Cursor, rows: Sequence[AlertRow]) -> int:
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


def _worker_open(cur: psycopg.Cursor, a: AlertRow) -> int:
    severity = severity_for(a.peak_risk)
    zone = _zone_of(cur, a.device_id)
    team = route(cur, a.asset_type, zone, severity)
    inserted = cur.execute(
        _INSERT_ALERT,
        {
            **_row_params(a),
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
    ).fetchone()
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


def _worker_close(cur: psycopg.Cursor, a: AlertRow) -> int:
    prev = cur.execute(
        "SELECT status, team, escalation_level FROM alerts WHERE alert_id = %s FOR UPDATE",
        (a.alert_id,),
    ).fetchone()
    if prev is None:
        # The open row never reached us (e.g. stored before this schema): keep history.
        cur.execute(
            _INSERT_ALERT,
            {
                **_row_params(a),
                "status": "resolved",
                "closed_at": a.closed_at,
                "source": "model",
                "severity": severity_for(a.peak_risk),
                "zone": _zone_of(cur, a.device_id),
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


def _row_params(a: AlertRow) -> dict[str, Any]:
    return {
        "alert_id": a.alert_id,
        "asset_id": a.asset_id,
        "device_id": a.device_id,
        "asset_type": a.asset_type,
        "opened_at": a.opened_at,
        "peak_risk": a.peak_risk,
        "last_risk": a.last_risk,
        "threshold": a.threshold,
        "model_version": a.model_version,
        "model_kind": a.model_kind,
        "outlook": a.outlook,
    }


# -- people's actions ---------------------------------------------------------


@dataclass(frozen=True)
class Actor:
    """Who acts; crews only see and change their own team's alerts."""

    user_name: str
    role: str
    team: str | None

    @property
    def team_scope(self) -> str | None:
        return self.team if self.role == "crew" else None


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
    NotFoundError
        No such alert, or it belongs to another team and ``actor`` is a crew.
    TransitionError
        The action is not allowed from the alert's status, or its input is invalid.
    """
    if action not in ALLOWED_FROM:
        raise TransitionError(f"unknown action {action!r}")
    if action == "resolve" and outcome not in OUTCOMES:
        raise TransitionError(f"outcome must be one of {', '.join(OUTCOMES)}")
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "SELECT * FROM alerts WHERE alert_id = %s FOR UPDATE", (alert_id,)
        ).fetchone()
        if row is None or (actor.team_scope and row["team"] != actor.team_scope):
            raise NotFoundError(alert_id)
        status = row["status"]
        if status not in ALLOWED_FROM[action]:
            raise TransitionError(f"cannot {action} an alert that is {status}")
        detail: dict[str, Any] = {"note": note} if note else {}
        if action == "acknowledge":
            cur.execute(
                "UPDATE alerts SET status = 'acknowledged', acknowledged_at = clock_timestamp(),"
                " acknowledged_by = %s, updated_at = now() WHERE alert_id = %s",
                (actor.user_name, alert_id),
            )
        elif action == "assign":
            target = cur.execute(
                "SELECT user_name, team FROM crew_users WHERE user_name = %s", (assignee,)
            ).fetchone()
            if target is None:
                raise TransitionError(f"no user {assignee!r}")
            if actor.team_scope and target["team"] != actor.team_scope:
                raise TransitionError("crews assign within their own team")
            cur.execute(
                "UPDATE alerts SET status = 'assigned', assigned_to = %s,"
                " assigned_at = clock_timestamp(), assigned_by = %s,"
                " acknowledged_at = COALESCE(acknowledged_at, clock_timestamp()),"
                " acknowledged_by = COALESCE(acknowledged_by, %s), updated_at = now()"
                " WHERE alert_id = %s",
                (assignee, actor.user_name, actor.user_name, alert_id),
            )
            detail["assignee"] = assignee
        else:
            cur.execute(
                "UPDATE alerts SET status = 'resolved', closed_at = clock_timestamp(),"
                " resolved_by = %s, outcome = %s, updated_at = now() WHERE alert_id = %s"
                " RETURNING closed_at",
                (actor.user_name, outcome, alert_id),
            )
            detail["outcome"] = outcome
            _write_label(cur, row, outcome, note)
        record_transition(
            cur,
            alert_id,
            action,
            status,
            TARGET_STATUS[action],
            actor.user_name,
            team=row["team"],
            level=row["escalation_level"],
            detail=detail,
        )
        return cur.execute("SELECT * FROM alerts WHERE alert_id = %s", (alert_id,)).fetchone()


def _write_label(
    cur: psycopg.Cursor, alert: dict[str, Any], outcome: str, note: str | None = None
) -> None:
    """The crew's outcome becomes a training label (``citywatch train`` reads labels); the
    crew's note goes with it (for a water district: where the leak was found)."""
    cur.execute(
        "INSERT INTO labels (label_id, asset_id, device_id, observed_at, window_start, outcome,"
        " source, detail) SELECT 'alert:' || alert_id, asset_id, NULLIF(device_id, ''),"
        " closed_at, opened_at, %s, 'alert', %s FROM alerts WHERE alert_id = %s"
        " ON CONFLICT (label_id) DO NOTHING",
        (
            outcome,
            Jsonb(
                {
                    "model_version": alert["model_version"],
                    "peak_risk": alert["peak_risk"],
                    "source": alert["source"],
                    **({"note": note} if note else {}),
                }
            ),
            alert["alert_id"],
        ),
    )


def add_comment(conn: psycopg.Connection, alert_id: str, actor: Actor, body: str) -> dict:
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        get_alert(cur, alert_id, actor)
        return cur.execute(
            "INSERT INTO alert_comments (alert_id, author, body) VALUES (%s, %s, %s)"
            " RETURNING comment_id, alert_id, author, at, body",
            (alert_id, actor.user_name, body),
        ).fetchone()


# -- reads --------------------------------------------------------------------


def get_alert(cur: psycopg.Cursor, alert_id: str, actor: Actor) -> dict[str, Any]:
    row = cur.execute("SELECT * FROM alerts WHERE alert_id = %s", (alert_id,)).fetchone()
    if row is None or (actor.team_scope and row["team"] != actor.team_scope):
        raise NotFoundError(alert_id)
    return row


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


# -- Grafana as a source --------------------------------------------------------


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
            zone = _zone_of(cur, device_id) if device_id else None
            team = route(cur, asset_type, zone, severity)
            inserted = cur.execute(
                _INSERT_ALERT,
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
            ).fetchone()
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


# -- escalation and the notifier's outbox --------------------------------------------


def escalate_due(conn: psycopg.Connection) -> list[str]:
    """Escalate open alerts nobody acknowledged within their team's timeout.

    The level goes up by one (channels with that ``min_level`` join in) and,
    when the team names an ``escalate_to`` team, the alert moves there.
    """
    done = []
    with conn.transaction(), conn.cursor() as cur:
        due = cur.execute(
            "SELECT a.alert_id, a.team, a.escalation_level, COALESCE(t.escalate_to, a.team)"
            " FROM alerts a JOIN crew_teams t ON t.team = a.team"
            " WHERE a.status = 'open' AND t.ack_timeout_s IS NOT NULL"
            "   AND COALESCE(a.escalated_at, a.raised_at)"
            "       + make_interval(secs => t.ack_timeout_s) <= now()"
            " FOR UPDATE OF a SKIP LOCKED"
        ).fetchall()
        for alert_id, team, level, new_team in due:
            cur.execute(
                "UPDATE alerts SET escalation_level = %s, escalated_at = now(), team = %s,"
                " updated_at = now() WHERE alert_id = %s",
                (level + 1, new_team, alert_id),
            )
            record_transition(
                cur,
                alert_id,
                "escalate",
                "open",
                "open",
                "system",
                team=new_team,
                level=level + 1,
                detail={"from_team": team, "to_team": new_team, "level": level + 1},
            )
            done.append(alert_id)
    return done


_FAN_OUT = """
WITH t AS (
    SELECT transition_id, team, level FROM alert_transitions
    WHERE NOT fanned_out ORDER BY transition_id LIMIT 500
    FOR UPDATE SKIP LOCKED
), ins AS (
    INSERT INTO alert_deliveries (transition_id, channel_id)
    SELECT t.transition_id, c.channel_id FROM t JOIN notification_channels c
      ON c.enabled AND (c.team IS NULL OR c.team = t.team) AND c.min_level <= t.level
    ON CONFLICT DO NOTHING
)
UPDATE alert_transitions SET fanned_out = true FROM t
WHERE alert_transitions.transition_id = t.transition_id
"""

_CLAIM = """
SELECT d.transition_id, d.channel_id, d.attempts, c.kind, c.target,
       extract(epoch FROM now() - coalesce(d.first_error_at, now()))::float8 AS failing_for_s,
       t.action, t.from_status, t.to_status, t.actor, t.at, t.level, t.detail,
       a.alert_id, a.asset_id, a.device_id, a.asset_type, a.status, a.severity, a.team,
       a.zone, a.title, a.opened_at, a.closed_at, a.peak_risk, a.last_risk, a.threshold,
       a.model_version, a.assigned_to, a.outcome, a.source
FROM alert_deliveries d
JOIN notification_channels c USING (channel_id)
JOIN alert_transitions t USING (transition_id)
JOIN alerts a ON a.alert_id = t.alert_id
WHERE d.status = 'pending' AND d.next_attempt_at <= now()
ORDER BY d.transition_id
LIMIT %s
FOR UPDATE OF d SKIP LOCKED
"""


def fan_out(cur: psycopg.Cursor) -> int:
    """Turn new transitions into one pending delivery per matching channel."""
    cur.execute(_FAN_OUT)
    return cur.rowcount


def claim_deliveries(cur: psycopg.Cursor, limit: int = 50) -> list[dict[str, Any]]:
    """Lock due deliveries for this notifier (others skip them) until commit."""
    cur.row_factory = dict_row
    try:
        return cur.execute(_CLAIM, (limit,)).fetchall()
    finally:
        cur.row_factory = tuple_row


def mark_delivery(
    cur: psycopg.Cursor,
    transition_id: int,
    channel_id: str,
    *,
    error: str | None,
    retry_in_s: float | None,
) -> None:
    """Record the outcome: sent, retry later (backoff), or failed for good.

    The first failure stamps ``first_error_at`` (the retry period counts from
    it); giving up stamps ``failed_at``.
    """
    if error is None:
        cur.execute(
            "UPDATE alert_deliveries SET status = 'sent', attempts = attempts + 1,"
            " delivered_at = clock_timestamp(), last_error = NULL"
            " WHERE transition_id = %s AND channel_id = %s",
            (transition_id, channel_id),
        )
    else:
        # Exception text may hold NUL, which PostgreSQL text cannot store.
        error = error.replace("\x00", "\\0")[:2000]
        cur.execute(
            "UPDATE alert_deliveries SET attempts = attempts + 1, last_error = %(error)s,"
            " first_error_at = COALESCE(first_error_at, clock_timestamp()),"
            " status = CASE WHEN %(retry)s::float8 IS NULL THEN 'failed' ELSE 'pending' END,"
            " failed_at = CASE WHEN %(retry)s::float8 IS NULL THEN clock_timestamp() END,"
            " next_attempt_at = now() + make_interval(secs => COALESCE(%(retry)s::float8, 0))"
            " WHERE transition_id = %(tid)s AND channel_id = %(cid)s",
            {"error": error, "retry": retry_in_s, "tid": transition_id, "cid": channel_id},
        )


# -- teams, users, tokens, routing rules, channels -------------------------------------


def upsert_team(
    conn: psycopg.Connection,
    team: str,
    *,
    ack_timeout_s: int | None = None,
    escalate_to: str | None = None,
) -> None:
    with conn.transaction():
        if escalate_to:
            conn.execute(
                "INSERT INTO crew_teams (team) VALUES (%s) ON CONFLICT DO NOTHING", (escalate_to,)
            )
        conn.execute(
            "INSERT INTO crew_teams (team, ack_timeout_s, escalate_to) VALUES (%s, %s, %s)"
            " ON CONFLICT (team) DO UPDATE SET ack_timeout_s = EXCLUDED.ack_timeout_s,"
            " escalate_to = EXCLUDED.escalate_to",
            (team, ack_timeout_s, escalate_to),
        )


def upsert_user(
    conn: psycopg.Connection, user_name: str, role: str, team: str | None, email: str | None
) -> None:
    """Create or update a user; its team is created when missing."""
    with conn.transaction():
        if team:
            conn.execute(
                "INSERT INTO crew_teams (team) VALUES (%s) ON CONFLICT DO NOTHING", (team,)
            )
        conn.execute(
            "INSERT INTO crew_users (user_name, role, team, email) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (user_name) DO UPDATE SET role = EXCLUDED.role,"
            " team = EXCLUDED.team, email = EXCLUDED.email",
            (user_name, role, team, email),
        )


def add_token(conn: psycopg.Connection, user_name: str, token_hash: str) -> None:
    with conn.transaction():
        conn.execute(
            "INSERT INTO crew_tokens (token_hash, user_name) VALUES (%s, %s)",
            (token_hash, user_name),
        )


def revoke_tokens(conn: psycopg.Connection, user_name: str) -> int:
    with conn.transaction():
        cur = conn.execute(
            "UPDATE crew_tokens SET revoked_at = now() WHERE user_name = %s AND revoked_at IS NULL",
            (user_name,),
        )
        return cur.rowcount


def user_for_token(conn: psycopg.Connection, token_hash: str) -> tuple[str, str, str | None] | None:
    """``(user_name, role, team)`` of a valid token's owner, or None."""
    return conn.execute(
        "SELECT u.user_name, u.role, u.team FROM crew_tokens t"
        " JOIN crew_users u USING (user_name)"
        " WHERE t.token_hash = %s AND t.revoked_at IS NULL",
        (token_hash,),
    ).fetchone()


def add_rule(
    conn: psycopg.Connection,
    team: str,
    *,
    asset_type: str | None = None,
    zone: str | None = None,
    min_severity: str = "info",
    priority: int = 100,
) -> int:
    with conn.transaction():
        conn.execute("INSERT INTO crew_teams (team) VALUES (%s) ON CONFLICT DO NOTHING", (team,))
        return conn.execute(
            "INSERT INTO routing_rules (priority, asset_type, zone, min_severity, team)"
            " VALUES (%s, %s, %s, %s, %s) RETURNING rule_id",
            (priority, asset_type, zone, min_severity, team),
        ).fetchone()[0]


def list_rules(conn: psycopg.Connection) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT rule_id, priority, asset_type, zone, min_severity, team FROM routing_rules"
            " ORDER BY priority, rule_id"
        ).fetchall()


def upsert_channel(
    conn: psycopg.Connection,
    channel_id: str,
    kind: str,
    target: str,
    *,
    team: str | None = None,
    min_level: int = 0,
    enabled: bool = True,
) -> None:
    with conn.transaction():
        if team:
            conn.execute(
                "INSERT INTO crew_teams (team) VALUES (%s) ON CONFLICT DO NOTHING", (team,)
            )
        conn.execute(
            "INSERT INTO notification_channels (channel_id, team, kind, target, min_level,"
            " enabled) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (channel_id) DO UPDATE SET"
            " team = EXCLUDED.team, kind = EXCLUDED.kind, target = EXCLUDED.target,"
            " min_level = EXCLUDED.min_level, enabled = EXCLUDED.enabled",
            (channel_id, team, kind, target, min_level, enabled),
        )
