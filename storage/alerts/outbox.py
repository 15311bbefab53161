"""The outbox: every alert transition, escalation, and notification deliveries.

A transition row is written in the alert change's transaction and wakes the notifier
with ``pg_notify`` at commit; the notifier fans it out to one delivery per matching
channel and records each delivery's outcome.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row, tuple_row
from psycopg.types.json import Jsonb

NOTIFY_CHANNEL = "citywatch_alert_transitions"

_INSERT_TRANSITION = """
INSERT INTO alert_transitions (alert_id, action, from_status, to_status, actor, at, team,
                               level, detail)
VALUES (%s, %s, %s, %s, %s, COALESCE(%s, clock_timestamp()), %s, %s, %s)
RETURNING transition_id
"""


# The inbox title says which model raised the alert: supervised, or no labels yet.


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
