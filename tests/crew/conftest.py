"""Fixtures for the alert service: a clean lifecycle schema, users, a running API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from citywatch.stack import free_port
from core.records import Alert
from crew.auth import create_user
from crew.receiver import WebhookReceiver

T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)


@pytest.fixture
def crew_db(db):
    """``db`` plus empty alert-lifecycle tables (the shared fixture doesn't know them)."""
    db.execute(
        "TRUNCATE alert_deliveries, alert_transitions, alert_comments, notification_channels,"
        " routing_rules, crew_tokens, crew_users, crew_teams"
    )
    return db


@pytest.fixture
def tokens(crew_db) -> dict[str, str]:
    """Two crews in two teams, an engineer and an admin; name -> token."""
    return {
        "ana": create_user(crew_db, "ana", "crew", "north", "ana@example.org"),
        "ben": create_user(crew_db, "ben", "crew", "north"),
        "sam": create_user(crew_db, "sam", "crew", "south"),
        "eve": create_user(crew_db, "eve", "engineer"),
        "root": create_user(crew_db, "root", "admin"),
    }


@pytest.fixture
def receiver():
    with WebhookReceiver(free_port()) as r:
        yield r


def alert_row(
    asset: str = "pump-1",
    *,
    status: str = "open",
    risk: float = 0.8,
    minutes: int = 0,
    asset_type: str = "water_pump",
    device: str | None = None,
) -> Alert:
    """The row the worker writes through ``PostgresSink`` (same fields, same vocabulary)."""
    opened = T0 + timedelta(minutes=minutes)
    return Alert(
        f"{asset}:{opened.isoformat()}",
        asset,
        device or f"dev-{asset}",
        asset_type,
        status,
        opened,
        opened + timedelta(minutes=10) if status == "closed" else None,
        risk,
        risk if status == "open" else 0.1,
        0.7,
        "v1",
    )


def add_device(db: psycopg.Connection, asset: str, zone: str, asset_type: str = "water_pump"):
    db.execute(
        "INSERT INTO devices (device_id, asset_id, asset_type, zone) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (device_id) DO UPDATE SET zone = EXCLUDED.zone",
        (f"dev-{asset}", asset, asset_type, zone),
    )


@pytest.fixture
def api(conn, crew_db):
    """The alert API on a free loopback port (a real uvicorn server)."""
    from crew.api import create_app
    from crew.server import BackgroundServer

    with BackgroundServer(
        create_app(conn.database_url, rate_per_s=500, burst=500), free_port()
    ) as s:
        yield s.url
