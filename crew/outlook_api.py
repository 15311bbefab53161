"""Crew endpoint for water-quality stations: an alert's incident outlook, 1 to 48 hours.

Added to the alert API by :func:`add_outlook_routes`. It reads the station's
latest row of ``station_outlook`` (written by the worker, streams.water_quality),
so the inbox can show, beside the alert, how likely an incident is within the
next 1, 6, 24 and 48 hours.

No ``from __future__ import annotations``: FastAPI reads the route
signatures' dependency types, which here are the API's own closures.
"""

from datetime import datetime
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from storage.outlook import latest_outlook

from .downlinks_api import visible_alert

__all__ = ["OutlookOut", "add_outlook_routes"]


class HorizonOut(BaseModel):
    hours: int
    probability: float | None  # None: the station's model has no such horizon yet


class StationOutlook(BaseModel):
    ts: datetime
    device_id: str
    model_version: str
    event_probability: float
    alarm: bool
    horizons: list[HorizonOut]


class OutlookOut(BaseModel):
    asset_id: str
    outlook: StationOutlook | None  # None: not a scored water-quality station


def add_outlook_routes(
    app: FastAPI, who_dep: Any, conn_dep: Any, alert_id_type: Any, errors: dict
) -> None:
    """Register the route on ``app`` with the API's own auth and connection dependencies."""

    @app.get("/api/v1/alerts/{alert_id}/outlook", response_model=OutlookOut, responses=errors)
    def alert_outlook(alert_id: alert_id_type, who: who_dep, conn: conn_dep) -> dict:
        """The alert's station: incident probability now and within 1/6/24/48 hours."""
        alert = visible_alert(conn, alert_id, who)
        return {
            "asset_id": alert["asset_id"],
            "outlook": latest_outlook(conn, alert["asset_id"]),
        }
