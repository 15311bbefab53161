"""Crew endpoints for sensor commands: ask for a fresh reading, see what was sent.

Added to the alert API by :func:`add_downlink_routes`. The API only stores a
request (``downlink_commands``, status ``requested``); the downlink service
(``citywatch downlinks run``) sends it through the network server, or refuses
it with a reason (no encoder for the device's profile, the duty-cycle limit),
so the API never talks to a radio network itself.

No ``from __future__ import annotations``: FastAPI reads the route
signatures' dependency types, which here are the API's own closures.
"""

from datetime import datetime
from typing import Any

import psycopg
from fastapi import FastAPI, HTTPException
from psycopg.rows import dict_row
from pydantic import BaseModel

from storage import downlink_store
from storage.alerts.access import Actor, NotFoundError, get_alert

__all__ = ["CommandOut", "add_downlink_routes", "visible_alert"]


class CommandOut(BaseModel):
    command_id: int
    created_at: datetime
    device_id: str
    asset_id: str | None
    command: str
    args: dict[str, Any]
    reason: str
    requested_by: str
    alert_id: str | None
    status: str
    detail: str | None
    network: str | None
    f_port: int | None
    sent_at: datetime | None


def visible_alert(conn: psycopg.Connection, alert_id: str, who: Actor) -> dict:
    """The alert, if ``who`` may see it; else a 404 (another team's alert looks absent)."""
    try:
        with conn.cursor(row_factory=dict_row) as cur:
            return get_alert(cur, alert_id, who)
    except NotFoundError as exc:
        raise HTTPException(404, f"no alert {alert_id}") from exc


def add_downlink_routes(
    app: FastAPI, who_dep: Any, conn_dep: Any, alert_id_type: Any, errors: dict
) -> None:
    """Register the routes on ``app`` with the API's own auth and connection dependencies."""

    @app.post(
        "/api/v1/alerts/{alert_id}/request-reading",
        response_model=CommandOut,
        status_code=202,
        responses=errors,
    )
    def request_reading(alert_id: alert_id_type, who: who_dep, conn: conn_dep) -> dict:
        """Ask the alert's sensor for a fresh reading now (sent by the downlink service)."""
        alert = visible_alert(conn, alert_id, who)
        return downlink_store.request_reading(
            conn,
            device_id=alert["device_id"],
            asset_id=alert["asset_id"],
            requested_by=who.user_name,
            alert_id=alert["alert_id"],
            reason=f"{who.user_name} asked for a fresh reading from the inbox",
        )

    @app.get(
        "/api/v1/alerts/{alert_id}/commands", response_model=list[CommandOut], responses=errors
    )
    def commands(alert_id: alert_id_type, who: who_dep, conn: conn_dep) -> list[dict]:
        """Commands sent (or refused) to the alert's asset's sensor, newest first."""
        alert = visible_alert(conn, alert_id, who)
        return downlink_store.commands_for_asset(conn, alert["asset_id"], 20)
