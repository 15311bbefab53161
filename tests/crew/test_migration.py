"""Migration 5 on a database that already holds the worker's open/closed alerts."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from storage.migrations import MIGRATIONS

pytestmark = pytest.mark.stack


@pytest.fixture
def scratch_db(conn):
    name = f"mig_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(conn.database_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield make_conninfo(conn.database_url, dbname=name)
    finally:
        with psycopg.connect(conn.database_url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


def test_v5_turns_closed_into_resolved_and_keeps_one_live_per_asset(scratch_db):
    steps = {version: sql for version, _, sql in MIGRATIONS}
    with psycopg.connect(scratch_db, autocommit=True) as c:
        c.execute(steps[1])
        c.execute(steps[2])
        c.execute(
            "INSERT INTO alerts (alert_id, asset_id, device_id, asset_type, status, opened_at,"
            " closed_at, peak_risk, last_risk, threshold, model_version) VALUES"
            " ('a1', 'p1', 'd1', 'water_pump', 'closed', now() - interval '1 hour', now(),"
            "  0.9, 0.1, 0.7, 'v1'),"
            " ('a2', 'p1', 'd1', 'water_pump', 'open', now(), NULL, 0.8, 0.8, 0.7, 'v1')"
        )
        c.execute(steps[5])
        rows = c.execute(
            "SELECT alert_id, status, resolved_by, outcome FROM alerts ORDER BY alert_id"
        ).fetchall()
        assert rows == [("a1", "resolved", "system", "auto"), ("a2", "open", None, None)]
        with pytest.raises(psycopg.errors.UniqueViolation):
            c.execute(
                "INSERT INTO alerts (alert_id, asset_id, device_id, asset_type, status,"
                " opened_at, peak_risk, last_risk, threshold, model_version)"
                " VALUES ('a3', 'p1', 'd1', 'water_pump', 'assigned', now(), 1, 1, 1, 'v1')"
            )
        with pytest.raises(psycopg.errors.CheckViolation):
            c.execute("UPDATE alerts SET status = 'closed' WHERE alert_id = 'a2'")
