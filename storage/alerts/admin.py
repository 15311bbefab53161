"""Teams, users, API tokens, routing rules and notification channels."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row


def _ensure_team(conn: psycopg.Connection, team: str | None) -> None:
    """Create the team a user, rule, channel or escalation names, when it is new."""
    if team:
        conn.execute("INSERT INTO crew_teams (team) VALUES (%s) ON CONFLICT DO NOTHING", (team,))


def upsert_team(
    conn: psycopg.Connection,
    team: str,
    *,
    ack_timeout_s: int | None = None,
    escalate_to: str | None = None,
) -> None:
    with conn.transaction():
        _ensure_team(conn, escalate_to)
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
        _ensure_team(conn, team)
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
        _ensure_team(conn, team)
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
        _ensure_team(conn, team)
        conn.execute(
            "INSERT INTO notification_channels (channel_id, team, kind, target, min_level,"
            " enabled) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (channel_id) DO UPDATE SET"
            " team = EXCLUDED.team, kind = EXCLUDED.kind, target = EXCLUDED.target,"
            " min_level = EXCLUDED.min_level, enabled = EXCLUDED.enabled",
            (channel_id, team, kind, target, min_level, enabled),
        )
