"""What people do to an alert: acknowledge, assign, resolve (with an outcome), comment.

Resolving with a crew outcome writes ``labels`` row ``alert:<id>`` in the same
transaction. Which action is allowed from which status is decided by the caller
(``crew.lifecycle``) and checked here under the row lock.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from storage.alerts.access import Actor, NotFoundError, TransitionError, get_alert
from storage.alerts.outbox import record_transition


def apply_transition(
    conn: psycopg.Connection,
    alert_id: str,
    action: str,
    actor: Actor,
    *,
    allowed_from: tuple[str, ...],
    to_status: str,
    assignee: str | None = None,
    outcome: str | None = None,
    note: str | None = None,
) -> dict[str, Any]:
    """Acknowledge, assign or resolve one alert; returns the alert after the change.

    ``allowed_from`` (the statuses the action may start from) and ``to_status`` are the
    lifecycle's rule for ``action``; the status is checked under the row lock.

    Raises
    ------
    NotFoundError
        No such alert, or it belongs to another team and ``actor`` is a crew.
    TransitionError
        The action is not allowed from the alert's status, or its assignee is invalid.
    """
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "SELECT * FROM alerts WHERE alert_id = %s FOR UPDATE", (alert_id,)
        ).fetchone()
        if row is None or (actor.team_scope and row["team"] != actor.team_scope):
            raise NotFoundError(alert_id)
        status = row["status"]
        if status not in allowed_from:
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
        elif action == "resolve":
            cur.execute(
                "UPDATE alerts SET status = 'resolved', closed_at = clock_timestamp(),"
                " resolved_by = %s, outcome = %s, updated_at = now() WHERE alert_id = %s"
                " RETURNING closed_at",
                (actor.user_name, outcome, alert_id),
            )
            detail["outcome"] = outcome
            _write_label(cur, row, outcome, note)
        else:
            raise TransitionError(f"unknown action {action!r}")
        record_transition(
            cur,
            alert_id,
            action,
            status,
            to_status,
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
