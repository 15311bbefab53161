"""Roles: citywatch_writer writes and maintains without DDL; citywatch_reader only reads."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from core.records import Reading, Score
from storage.maintenance import run_maintenance
from storage.migrations import migrate
from storage.sinks import PostgresSink, SinkBatch

pytestmark = pytest.mark.stack


@pytest.fixture
def logins(fresh_db):
    """Two login users, members of the writer and the reader role; dropped afterwards."""
    suffix = uuid.uuid4().hex[:8]
    users = {"writer": f"cw_w_{suffix}", "reader": f"cw_r_{suffix}"}
    with psycopg.connect(fresh_db, autocommit=True) as db:
        for group, user in users.items():
            db.execute(f"CREATE ROLE {user} LOGIN IN ROLE citywatch_{group}")
    yield {group: make_conninfo(fresh_db, user=user) for group, user in users.items()}
    admin = make_conninfo(fresh_db, dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as db:
        db.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = ANY(%s)",
            (list(users.values()),),
        )
    with psycopg.connect(admin, autocommit=True) as db:
        for user in users.values():
            db.execute(f"DROP ROLE IF EXISTS {user}")


def test_roles_exist_without_login(fresh_db):
    with psycopg.connect(fresh_db) as db:
        rows = db.execute(
            "SELECT rolname, rolcanlogin FROM pg_roles"
            " WHERE rolname IN ('citywatch_reader', 'citywatch_writer') ORDER BY 1"
        ).fetchall()
    # (storage/service_roles.py adds one group per service: tests/deploy/test_db_roles.py)
    assert rows == [("citywatch_reader", False), ("citywatch_writer", False)]


def test_writer_stores_and_maintains_but_cannot_change_the_schema(logins):
    ts = datetime.now(UTC)
    sink = PostgresSink(logins["writer"])
    result = sink.write(
        SinkBatch(
            readings=[Reading(ts, "d", "a", "water_pump", {"flow": 2.0}, {})],
            scores=[Score(ts, "d", "a", "water_pump", "v1", 0.3, 0.5)],
        )
    )
    sink.close()
    assert (result.readings, result.scores) == (1, 1)
    # Partitions ahead, retention and rollups run as the owner (SECURITY DEFINER).
    done = run_maintenance(logins["writer"], days_ahead=10, retention_days=30)
    assert (done.partitions_created, done.rollup_minutes_refreshed) == (6, 1)
    with psycopg.connect(logins["writer"]) as db:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            db.execute("CREATE TABLE sneaky (x int)")
        db.rollback()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            db.execute("DROP TABLE readings_default")


def test_reader_reads_everything_and_writes_nothing(logins):
    with psycopg.connect(logins["reader"]) as db:
        for relation in ("readings", "scores", "alerts", "readings_1m", "readings_1h"):
            db.execute(f"SELECT count(*) FROM {relation}").fetchone()
        for statement in (
            "INSERT INTO alerts (alert_id, asset_id, device_id, asset_type, status, opened_at,"
            " peak_risk, last_risk, threshold, model_version)"
            " VALUES ('x', 'a', 'd', 't', 'open', now(), 1, 1, 0.5, 'v')",
            "DELETE FROM readings",
            "SELECT citywatch_refresh_rollups()",
            "SELECT citywatch_ensure_partitions(30)",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                db.execute(statement)
            db.rollback()


def test_tables_added_by_later_migrations_are_granted_by_default(logins, fresh_db):
    # Default privileges: a table created after migration 8 by the migrating user.
    with psycopg.connect(fresh_db) as db:
        db.execute("CREATE TABLE later_table (x int)")
    with psycopg.connect(logins["writer"]) as db:
        db.execute("INSERT INTO later_table VALUES (1)")
    with psycopg.connect(logins["reader"]) as db:
        assert db.execute("SELECT x FROM later_table").fetchall() == [(1,)]
    assert migrate(fresh_db) == []


def test_maintenance_functions_search_pg_temp_last(fresh_db):
    with psycopg.connect(fresh_db) as db:
        configs = db.execute(
            "SELECT proname, proconfig FROM pg_proc WHERE prosecdef"
            " AND proname LIKE 'citywatch\\_%' ORDER BY 1"
        ).fetchall()
    assert [name for name, _ in configs] == [
        "citywatch_create_partition",
        "citywatch_drop_expired",
        "citywatch_ensure_partitions",
        "citywatch_refresh_rollups",
    ]
    for _name, config in configs:
        assert config == ["search_path=public, pg_temp"]
