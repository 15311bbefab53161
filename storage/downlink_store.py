"""The ``downlink_commands`` table: every command sent (or refused) to a sensor, and why.

Rows are written by the downlink service (``citywatch downlinks run``) and, as
``requested``, by the crew API when a crew asks for a fresh reading; the
service then sends or refuses them. Also here: where a device was last heard
(network, application, network-server id, tenant), read from its newest
LoRaWAN reading, which is what a downlink needs to be addressed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

__all__ = [
    "CommandRow",
    "claim_requested",
    "commands_for_asset",
    "finish_command",
    "last_route",
    "record_command",
    "request_reading",
    "sent_since",
]

_COLUMNS = (
    "command_id, created_at, event_at, device_id, asset_id, command, args, reason,"
    " requested_by, alert_id, status, detail, network, topic, f_port, sent_at"
)


@dataclass(frozen=True)
class CommandRow:
    """One command as the controller decided it (see :func:`record_command`)."""

    device_id: str
    command: str
    reason: str
    requested_by: str
    status: str
    asset_id: str | None = None
    args: Mapping[str, Any] | None = None
    event_at: datetime | None = None
    alert_id: str | None = None
    detail: str | None = None
    network: str | None = None
    topic: str | None = None
    f_port: int | None = None
    payload: bytes | None = None
    sent_at: datetime | None = None


def _params(row: CommandRow) -> dict[str, Any]:
    return {
        "device_id": row.device_id,
        "asset_id": row.asset_id,
        "command": row.command,
        "args": Jsonb(dict(row.args or {})),
        "reason": row.reason,
        "requested_by": row.requested_by,
        "alert_id": row.alert_id,
        "status": row.status,
        "detail": row.detail,
        "network": row.network,
        "topic": row.topic,
        "f_port": row.f_port,
        "payload": row.payload,
        "event_at": row.event_at,
        "sent_at": row.sent_at,
    }


def record_command(conn: psycopg.Connection, row: CommandRow) -> int:
    """Insert one command; returns its id."""
    return conn.execute(
        "INSERT INTO downlink_commands (device_id, asset_id, command, args, reason, requested_by,"
        " alert_id, status, detail, network, topic, f_port, payload, event_at, sent_at)"
        " VALUES (%(device_id)s, %(asset_id)s, %(command)s, %(args)s, %(reason)s,"
        " %(requested_by)s, %(alert_id)s, %(status)s, %(detail)s, %(network)s, %(topic)s,"
        " %(f_port)s, %(payload)s, %(event_at)s, %(sent_at)s) RETURNING command_id",
        _params(row),
    ).fetchone()[0]


def request_reading(
    conn: psycopg.Connection,
    *,
    device_id: str,
    asset_id: str,
    requested_by: str,
    alert_id: str | None,
    reason: str,
) -> dict[str, Any]:
    """A crew's request for a fresh reading, left ``requested`` for the downlink service."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "INSERT INTO downlink_commands (device_id, asset_id, command, reason, requested_by,"
            " alert_id, status) VALUES (%s, %s, 'request_reading', %s, %s, %s, 'requested')"
            f" RETURNING {_COLUMNS}",
            (device_id, asset_id, reason, requested_by, alert_id),
        )
        return cur.fetchone()


def claim_requested(conn: psycopg.Connection, limit: int = 100) -> list[dict[str, Any]]:
    """Requested commands, oldest first, locked for this transaction (one service sends each)."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            f"SELECT {_COLUMNS} FROM downlink_commands WHERE status = 'requested'"
            " ORDER BY command_id LIMIT %s FOR UPDATE SKIP LOCKED",
            (limit,),
        )
        return cur.fetchall()


def finish_command(conn: psycopg.Connection, command_id: int, row: CommandRow) -> None:
    """Record what became of a requested command (sent, refused or failed)."""
    params = _params(row) | {"command_id": command_id}
    conn.execute(
        "UPDATE downlink_commands SET status = %(status)s, detail = %(detail)s,"
        " network = %(network)s, topic = %(topic)s, f_port = %(f_port)s,"
        " payload = %(payload)s, sent_at = %(sent_at)s, args = %(args)s"
        " WHERE command_id = %(command_id)s",
        params,
    )


def commands_for_asset(
    conn: psycopg.Connection, asset_id: str, limit: int = 50
) -> list[dict[str, Any]]:
    """The asset's newest commands first."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            f"SELECT {_COLUMNS} FROM downlink_commands WHERE asset_id = %s"
            " ORDER BY command_id DESC LIMIT %s",
            (asset_id, limit),
        )
        return cur.fetchall()


def sent_since(conn: psycopg.Connection, device_id: str, since: datetime) -> list[datetime]:
    """When commands were sent to the device since ``since`` (for duty-cycle limits)."""
    rows = conn.execute(
        "SELECT coalesce(event_at, sent_at) FROM downlink_commands WHERE device_id = %s"
        " AND status = 'sent' AND coalesce(event_at, sent_at) >= %s ORDER BY 1",
        (device_id, since),
    ).fetchall()
    return [r[0] for r in rows]


def last_route(conn: psycopg.Connection, device_id: str) -> dict[str, Any] | None:
    """The ``source`` of the device's newest LoRaWAN reading (network, application, ids)."""
    row = conn.execute(
        "SELECT source FROM readings WHERE device_id = %s AND source->>'kind' = 'lorawan'"
        " ORDER BY ts DESC LIMIT 1",
        (device_id,),
    ).fetchone()
    return None if row is None else row[0]
