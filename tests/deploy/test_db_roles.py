"""Least privilege: each service's login does its job, through the real code, and no more.

Every login of storage/service_roles.py runs the code its compose service runs (the
worker's sink and maintenance, the alert API and notifier, the device registry, the
simulator's ground truth, model registration, every dashboard query). Then each one
is shown to be unable to change the schema, and its privileges are compared, table by
table, with the declared matrix, so a grant nobody asked for fails the test.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg import sql

from crew.receiver import WebhookReceiver
from storage.service_roles import LOGINS, OWNER_ONLY, READER, READER_DENIED, TABLES

pytestmark = pytest.mark.stack

FIXTURES = Path(__file__).resolve().parents[1] / "crew" / "fixtures"
PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")


def _tables(c: psycopg.Connection) -> list[str]:
    return [
        r[0]
        for r in c.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm')"
            " AND NOT c.relispartition ORDER BY 1"
        )
    ]


def test_every_table_has_a_decision_and_grants_are_exactly_the_matrix(roles_db):
    owner, _urls = roles_db
    with psycopg.connect(owner) as c:
        tables = _tables(c)
        decided = {t for grants in TABLES.values() for t in grants}
        decided |= set(READER_DENIED) | set(OWNER_ONLY) | {"schema_migrations"}
        # Views read only by dashboards (rollups) are the reader's alone.
        undecided = [t for t in tables if t not in decided and not t.startswith("readings_1")]
        assert not undecided, (
            f"tables without a grant decision: {undecided}; name them in "
            "storage/service_roles.py (TABLES, READER_DENIED or OWNER_ONLY)"
        )
        for group in (*TABLES, READER):
            for table in tables:
                have = {
                    p
                    for p in PRIVILEGES
                    if c.execute(
                        "SELECT has_table_privilege(%s, %s, %s)", (group, table, p)
                    ).fetchone()[0]
                }
                if group == READER:
                    want = set() if table in READER_DENIED else {"SELECT"}
                else:
                    want = {p.strip() for p in TABLES[group].get(table, "").split(",") if p}
                assert have == want, f"{group} on {table}: has {sorted(have)}, wants {sorted(want)}"
        # Memberships: each login in exactly its group, no login is anything more.
        for login, group in LOGINS.items():
            row = c.execute(
                "SELECT rolsuper, rolcreaterole, rolcreatedb, rolbypassrls,"
                " array(SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g"
                "       ON g.oid = m.roleid WHERE m.member = r.oid)"
                " FROM pg_roles r WHERE rolname = %s",
                (login,),
            ).fetchone()
            assert row == (False, False, False, False, [group]), (login, row)


@pytest.mark.parametrize("login", sorted(LOGINS))
def test_no_login_can_change_the_schema(roles_db, login):
    _owner, urls = roles_db
    statements = [
        "CREATE TABLE sneaky (x int)",
        "DROP TABLE readings",
        "ALTER TABLE alerts ADD COLUMN sneaky int",
        "TRUNCATE alerts",
        "TRUNCATE readings",
        "CREATE FUNCTION sneaky() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        "SET ROLE citywatch",
        "ALTER ROLE citywatch_reader LOGIN",
        "CREATE INDEX sneaky_idx ON readings (asset_id)",
        "SELECT citywatch_create_partition('readings', current_date + 400)",
    ]
    with psycopg.connect(urls[login]) as c:
        for statement in statements:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                c.execute(statement)
            c.rollback()
        if "crew_tokens" not in TABLES.get(LOGINS[login], {}):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                c.execute("SELECT * FROM crew_tokens")


def test_a_current_schema_needs_no_ddl_so_services_start_as_their_role(roles_db):
    from storage.schema import migrate

    _owner, urls = roles_db
    for url in urls.values():
        assert migrate(url) == []


def test_worker_stores_a_batch_with_alerts_and_maintains_storage(roles_db, tmp_path):
    from models.catalog import ModelCatalog
    from storage.maintenance import owns, run_maintenance
    from storage.sinks import (
        AlertRow,
        DeadLetterRow,
        ExplanationRow,
        MaintenanceRow,
        PostgresSink,
        ReadingRow,
        ScoreRow,
        SinkBatch,
        record_worker_stats,
    )

    owner, urls = roles_db
    with psycopg.connect(owner) as c:
        c.execute("INSERT INTO crew_teams (team) VALUES ('north')")
        c.execute("INSERT INTO routing_rules (team) VALUES ('north')")
        c.execute("INSERT INTO devices (device_id, asset_id, asset_type) VALUES ('d', 'a', 'p')")
    ts = datetime.now(UTC).replace(microsecond=0)
    sink = PostgresSink(urls["worker"])
    result = sink.write(
        SinkBatch(
            readings=[ReadingRow(ts, "d", "a", "p", {"flow": 2.0}, {})],
            scores=[ScoreRow(ts, "d", "a", "p", "v1", 0.9, 0.5)],
            alerts=[AlertRow("a:1", "a", "d", "p", "open", ts, None, 0.9, 0.9, 0.5, "v1")],
            deadletters=[
                DeadLetterRow("dl-1", "validate", "bad_json", "x", "readings", 0, 7, None, b"{")
            ],
            explanations=[ExplanationRow(ts, "d", "a", "v1", 0.9, {"flow": 0.4})],
            maintenance=[MaintenanceRow(ts - timedelta(minutes=1), "d", "a", "p", {})],
            reading_positions=[("readings", 0, 8)],
        )
    )
    sink.close()
    assert (result.readings, result.scores, result.alerts, result.deadletters) == (1, 1, 1, 1)
    record_worker_stats(
        urls["worker"],
        {
            "ts": ts,
            "worker_id": "w",
            "consumed": 1,
            "stored": 1,
            "scored": 1,
            "deadletters": 1,
            "consumer_lag": 0,
            "batch_ms_p50": 1.0,
            "batch_ms_p99": 1.0,
        },
    )
    done = run_maintenance(urls["worker"], days_ahead=8, retention_days=400)
    assert done.rollup_minutes_refreshed >= 1
    # On TimescaleDB only the owner may change policies: the worker leaves them alone.
    for url, owner_or_not in ((owner, True), (urls["worker"], False)):
        with psycopg.connect(url) as c:
            assert owns(c, "readings") is owner_or_not
    registry = ModelCatalog(urls["worker"], tmp_path)
    assert registry.active().champion is None
    registry.record_load_failure(
        "20260101T000000Z-00000000", "champion", "load", "gone", kept=None, worker="w"
    )
    with psycopg.connect(owner) as c:
        transitions = c.execute("SELECT action, team FROM alert_transitions").fetchall()
        assert transitions == [("open", "north")]
        assert c.execute("SELECT count(*) FROM model_load_failures").fetchone()[0] == 1


def test_alert_service_runs_the_api_and_the_notifier(roles_db):
    from citywatch.stack import free_port
    from crew.api import create_app
    from crew.auth import create_user
    from crew.notifier import Notifier, NotifierConfig
    from crew.routing import add_channel, add_rule, rules, set_escalation
    from storage.alert_store import revoke_tokens
    from storage.sinks import AlertRow, PostgresSink, SinkBatch

    owner, urls = roles_db
    # Users, routing and channels are the crew admin's job, with its own login.
    with psycopg.connect(urls["crew_admin"], autocommit=True) as c:
        ana = create_user(c, "ana", "crew", "north")
        eve = create_user(c, "eve", "engineer")
        hook = create_user(c, "grafana", "webhook")
        add_rule(c, "north")
        receiver = WebhookReceiver(free_port())
        add_channel(c, "north-hook", "webhook", receiver.url, team="north")
        set_escalation(c, "north", 600, "duty")
        assert [r["team"] for r in rules(c)] == ["north"]
        create_user(c, "leaver", "crew", "north")
        assert revoke_tokens(c, "leaver") == 1
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("DELETE FROM crew_tokens")
    with psycopg.connect(owner) as c:
        c.execute("INSERT INTO devices (device_id, asset_id, asset_type) VALUES ('d', 'a', 'p')")
    sink = PostgresSink(urls["worker"])
    ts = datetime.now(UTC)
    sink.write(SinkBatch(alerts=[AlertRow("a:1", "a", "d", "p", "open", ts, None, 1, 1, 0.5, "v")]))
    sink.close()
    with TestClient(create_app(urls["alerts"], rate_per_s=100, burst=100)) as http:
        for token in (ana, eve):
            h = {"Authorization": f"Bearer {token}"}
            assert http.get("/api/v1/alerts", headers=h).status_code == 200
        h = {"Authorization": f"Bearer {ana}"}
        assert http.post("/api/v1/alerts/a:1/acknowledge", json={}, headers=h).status_code == 200
        assert http.get("/api/v1/alerts/a:1/context", headers=h).status_code == 200
        c = http.post("/api/v1/alerts/a:1/comments", json={"body": "on it"}, headers=h)
        assert c.status_code == 201
        asked = http.post("/api/v1/alerts/a:1/request-reading", headers=h)
        assert asked.status_code == 202, asked.text
        assert http.get("/api/v1/alerts/a:1/commands", headers=h).status_code == 200
        r = http.post("/api/v1/alerts/a:1/resolve", json={"outcome": "fault_confirmed"}, headers=h)
        assert r.status_code == 200, r.text
        firing = json.loads((FIXTURES / "grafana_firing.json").read_text())
        g = http.post(
            "/api/v1/grafana/webhook", json=firing, headers={"Authorization": f"Bearer {hook}"}
        )
        assert g.status_code == 200, g.text
    notifier = Notifier(urls["alerts"], config=NotifierConfig(escalation_check_s=0.0))
    with receiver, psycopg.connect(urls["alerts"], autocommit=True) as c:
        counts = notifier.run_once(c)
        assert receiver.wait_for(lambda _path, _body: True), counts
    with psycopg.connect(owner) as c:
        sent = c.execute("SELECT count(*) FROM alert_deliveries WHERE status = 'sent'")
        assert sent.fetchone()[0] >= 1


def test_ingest_and_simulator_keep_the_device_registry_and_ground_truth(roles_db):
    from citywatch import healthcheck
    from storage.device_registry import auto_register_device, latest_registry, store_registry
    from storage.sinks import record_failures, register_devices

    _owner, urls = roles_db
    entry = {"dev_eui": "a84041000181c061", "asset_id": "pump-7", "asset_type": "water_pump"}
    for login in ("ingest", "simulator"):
        store_registry(urls[login], [entry], source=login)
        assert latest_registry(urls[login])[1][0]["asset_id"] == "pump-7"
    assert auto_register_device(urls["ingest"], {**entry, "dev_eui": "a84041000181c062"})
    device = {"device_id": "s1", "asset_id": "s", "asset_type": "p", "lat": 1.0, "lon": 2.0}
    register_devices(urls["simulator"], [{**device, "installed_at": None}])
    started = datetime.now(UTC) - timedelta(hours=1)
    row = {
        "asset_id": "s",
        "device_id": "s1",
        "asset_type": "p",
        "mode": "wear",
        "degradation_started_at": started,
        "failed_at": None,
    }
    record_failures(urls["simulator"], [row])
    record_failures(urls["simulator"], [{**row, "failed_at": started + timedelta(minutes=30)}])
    with psycopg.connect(urls["simulator"]) as c:
        c.execute(healthcheck.fresh_query("readings", "ingested_at", 120, "ts")).fetchone()
    with psycopg.connect(urls["ingest"]) as c:
        for table in ("readings", "failures", "alerts"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                c.execute(sql.SQL("SELECT 1 FROM {}").format(sql.Identifier(table)))
            c.rollback()


def test_trainer_registers_and_promotes_but_the_worker_cannot(roles_db, trained_models, tmp_path):
    from models.bundle_store import save_bundle
    from models.catalog import CatalogError, ModelCatalog

    _owner, urls = roles_db
    save_bundle(trained_models, tmp_path)
    trainer = ModelCatalog(urls["trainer"], tmp_path)
    trainer.register(trained_models.version)
    trainer.promote(trained_models.version, actor="test")
    assert ModelCatalog(urls["worker"], tmp_path).active().champion == trained_models.version
    with psycopg.connect(_owner) as c:
        before = c.execute("SELECT count(*) FROM model_promotions").fetchone()[0]
    with pytest.raises((CatalogError, psycopg.errors.InsufficientPrivilege)):
        ModelCatalog(urls["worker"], tmp_path).set_challenger(trained_models.version, actor="w")
    with psycopg.connect(_owner) as c:
        assert c.execute("SELECT count(*) FROM model_promotions").fetchone()[0] == before


def test_grafana_runs_every_dashboard_query_as_the_reader(roles_db):
    from dashboards.check import run_checks

    _owner, urls = roles_db
    report = run_checks(urls["grafana"], hours=1)
    assert report["queries"] > 10 and not report["errors"], report["errors"][:3]
    with psycopg.connect(urls["grafana"]) as c, pytest.raises(psycopg.errors.InsufficientPrivilege):
        c.execute("DELETE FROM alerts")


def test_migrate_sets_logins_from_secrets_and_refuses_weak_ones(roles_db):
    """`citywatch storage migrate` (compose's migrate job) creates the logins, hashed."""
    import os
    import subprocess
    import sys

    owner, _urls = roles_db
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo), "CITYWATCH_DATABASE_URL": owner}

    def migrate_job(**passwords: str) -> subprocess.CompletedProcess:
        extra = {f"CITYWATCH_{k.upper()}_DB_PASSWORD": v for k, v in passwords.items()}
        return subprocess.run(
            [sys.executable, "-m", "citywatch", "storage", "migrate"],
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=60,
        )

    weak = migrate_job(worker="citywatch", alerts="short")
    assert weak.returncode == 1
    assert "CITYWATCH_WORKER_DB_PASSWORD is a well-known default" in weak.stderr
    assert "CITYWATCH_ALERTS_DB_PASSWORD is shorter than 12" in weak.stderr
    assert "citywatch\n" not in weak.stderr and "short" not in weak.stderr.split("shorter")[0]
    strong = migrate_job(worker="a-long-random-secret-1")
    assert strong.returncode == 0, strong.stderr
    assert "logins set: worker" in strong.stdout
    with psycopg.connect(owner) as c:
        stored = c.execute("SELECT rolpassword FROM pg_authid WHERE rolname = 'worker'").fetchone()
    assert stored[0].startswith("SCRAM-SHA-256$") and "a-long-random" not in stored[0]
    again = migrate_job(worker="a-long-random-secret-1")
    assert "logins set: none; unchanged: worker" in again.stdout
    with psycopg.connect(owner) as c:
        same = c.execute("SELECT rolpassword FROM pg_authid WHERE rolname = 'worker'").fetchone()
    assert same == stored, "an unchanged password was set again"


def test_the_downlink_services_group_sends_what_crews_requested(roles_db):
    """`citywatch downlinks run` has no compose service (so no login here): its group,
    granted to a login of the test's own, claims and finishes a crew's request."""
    import uuid

    from psycopg.conninfo import make_conninfo

    from storage.downlink_store import (
        CommandRow,
        claim_requested,
        finish_command,
        last_route,
        record_command,
        request_reading,
    )

    owner, urls = roles_db
    login = f"cw_dl_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(owner, autocommit=True) as c:
        c.execute(f"CREATE ROLE {login} LOGIN IN ROLE citywatch_downlinks")
    try:
        with psycopg.connect(urls["alerts"], autocommit=True) as c:
            request_reading(
                c, device_id="d", asset_id="a", requested_by="ana", alert_id=None, reason="t"
            )
        with psycopg.connect(make_conninfo(owner, user=login)) as c:
            [claimed] = claim_requested(c)
            sent = CommandRow("d", "request_reading", "t", "ana", "sent", sent_at=datetime.now(UTC))
            finish_command(c, claimed["command_id"], sent)
            record_command(c, CommandRow("d", "set_interval", "risk", "sampler", "refused"))
            assert last_route(c, "d") is None
            c.commit()
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                c.execute("DELETE FROM downlink_commands")
    finally:
        with psycopg.connect(owner, autocommit=True) as c:
            c.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (login,),
            )
            c.execute(f"DROP ROLE {login}")
    with psycopg.connect(owner) as c:
        rows = c.execute("SELECT status FROM downlink_commands ORDER BY command_id").fetchall()
    assert rows == [("sent",), ("refused",)]
