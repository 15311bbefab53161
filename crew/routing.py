"""Routing: which team gets an alert (by asset type, zone, severity) and over which channels.

The rule lookup itself runs in SQL inside the alert's transaction
(``storage.alerts.opening.route``), so the worker's write and the routing agree.
This module is the management side used by the CLI and tests.
"""

from __future__ import annotations

from typing import Any

import psycopg

from core.vocabulary import CHANNEL_KINDS, SEVERITIES
from storage.alerts import admin


def add_rule(
    conn: psycopg.Connection,
    team: str,
    *,
    asset_type: str | None = None,
    zone: str | None = None,
    min_severity: str = "info",
    priority: int = 100,
) -> int:
    """Route alerts matching asset type / zone / at least ``min_severity`` to ``team``."""
    if min_severity not in SEVERITIES:
        raise ValueError(f"min_severity must be one of {', '.join(SEVERITIES)}")
    return admin.add_rule(
        conn,
        team,
        asset_type=asset_type,
        zone=zone,
        min_severity=min_severity,
        priority=priority,
    )


def add_channel(
    conn: psycopg.Connection,
    channel_id: str,
    kind: str,
    target: str,
    *,
    team: str | None = None,
    min_level: int = 0,
) -> None:
    """A team's channel (``team=None``: every team's, e.g. the work-order topic).

    ``target`` is a URL (webhook, slack), an e-mail address (email) or a topic
    name (kafka). ``min_level`` > 0 makes it an escalation channel.
    """
    if kind not in CHANNEL_KINDS:
        raise ValueError(f"kind must be one of {', '.join(CHANNEL_KINDS)}")
    if kind in ("webhook", "slack") and not target.startswith(("http://", "https://")):
        raise ValueError("webhook and slack targets are http(s) URLs")
    if kind == "email" and "@" not in target:
        raise ValueError("email targets are e-mail addresses")
    admin.upsert_channel(conn, channel_id, kind, target, team=team, min_level=min_level)


def set_escalation(
    conn: psycopg.Connection, team: str, ack_timeout_s: int | None, escalate_to: str | None
) -> None:
    """Escalate the team's open alerts after ``ack_timeout_s`` without acknowledgement."""
    admin.upsert_team(conn, team, ack_timeout_s=ack_timeout_s, escalate_to=escalate_to)


def rules(conn: psycopg.Connection) -> list[dict[str, Any]]:
    return admin.list_rules(conn)
