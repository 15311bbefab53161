"""The compose services' own commands, run for real against the test session's stack:
migrate waits for a database that refuses its first connections, the train job is
idempotent, the simulator records ground truth and stops on SIGTERM, and the
healthchecks' queries read recent partitions only. tests/test_compose.py checks
the compose file itself.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import yaml

REPO = Path(__file__).resolve().parents[1]
SERVICES: dict[str, dict] = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]


def _cli(env: dict[str, str], *args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "citywatch", *args],
        env={**os.environ, "PYTHONPATH": str(REPO), **env},
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def test_migrate_retries_a_database_that_refuses_its_first_connections(conn, stack_home):
    """A fresh database that refuses connections at first: migrate waits, then migrates."""
    admin_url = conn.database_url.rsplit("/", 1)[0] + "/postgres"
    name = "compose_migrate_retry"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.execute(f"CREATE DATABASE {name} ALLOW_CONNECTIONS false")
    url = conn.database_url.rsplit("/", 1)[0] + f"/{name}"
    try:
        env = {"CITYWATCH_DATABASE_URL": url, "CITYWATCH_HOME": str(stack_home)}
        proc = _cli(env, "storage", "migrate")
        # Let it in only once it has been refused and said it retries (a loaded
        # machine may take seconds just to start the CLI).
        first_lines = []
        for line in proc.stderr:
            first_lines.append(line)
            if "retrying" in line:
                break
        assert proc.poll() is None, "".join(first_lines)
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert any("retrying" in line for line in first_lines) and "applied" in out
        with psycopg.connect(url) as c:
            assert c.execute("SELECT to_regclass('readings')").fetchone()[0] is not None
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_train_job_is_idempotent_on_a_second_up(conn, stack_home, tmp_path):
    """Compose re-runs one-shot jobs on every `up`: the second train changes nothing."""
    assert SERVICES["train"]["command"][:2] == ["train", "--synthetic"]
    assert "--if-no-champion" in SERVICES["train"]["command"]
    with psycopg.connect(conn.database_url, autocommit=True) as c:
        c.execute(
            "TRUNCATE model_promotions, model_registry, feature_drift, drift_alerts,"
            " model_load_failures"
        )
    env = {
        "CITYWATCH_DATABASE_URL": conn.database_url,
        "CITYWATCH_HOME": str(stack_home),
        "CITYWATCH_MODEL_DIR": str(tmp_path / "models"),
    }
    small = ("--devices", "30", "--ticks", "600")

    def up() -> tuple[str, list, list[str]]:
        proc = _cli(env, "train", "--synthetic", "--if-no-champion", *small)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        with psycopg.connect(conn.database_url) as c:
            rows = c.execute(
                "SELECT r.version, p.role, p.promotion_id FROM model_registry r"
                " LEFT JOIN model_promotions p USING (version) ORDER BY r.version"
            ).fetchall()
        return out, rows, sorted(p.name for p in (tmp_path / "models").iterdir())

    first_out, first_rows, first_files = up()
    assert "saved to" in first_out
    assert [role for _, role, _ in first_rows] == ["champion"]
    second_out, second_rows, second_files = up()
    assert "not training" in second_out
    assert (second_rows, second_files) == (first_rows, first_files)


def test_simulator_records_ground_truth_as_it_goes_and_stops_on_sigterm(
    conn, db, stack_home, isolated
):
    """`docker compose stop` sends SIGTERM: exit 0 with every failure so far recorded."""
    import signal

    env = {
        "CITYWATCH_KAFKA": conn.kafka,
        "CITYWATCH_BROKER_FLAVOR": "tansu",
        "CITYWATCH_DATABASE_URL": conn.database_url,
        "CITYWATCH_HOME": str(stack_home),
        "CITYWATCH_TOPIC_PREFIX": isolated.topic_prefix,
        "CITYWATCH_PARTITIONS": "1",
    }
    # 20 ticks/s with every device partway degraded: failures within a few seconds.
    args = ("--devices", "20", "--rate", "400", "--duration", "3600", "--degrading", "1")
    proc = _cli(env, "simulate", *args)
    deadline = time.monotonic() + 30
    recorded = 0
    while time.monotonic() < deadline and recorded == 0:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.5)
        recorded = db.execute(
            "SELECT count(*) FROM failures WHERE failed_at IS NOT NULL"
        ).fetchone()[0]
    assert recorded > 0, "no failure recorded while the simulator runs"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    injected = int(re.search(r"(\d+) failures injected", out).group(1))
    failed = db.execute("SELECT count(*) FROM failures WHERE failed_at IS NOT NULL").fetchone()
    assert failed[0] == injected > 0
    assert db.execute("SELECT count(*) FROM failures WHERE failed_at IS NULL").fetchone()[0] > 0


def _scanned_relations(c: psycopg.Connection, query) -> list[str]:
    plan = c.execute(psycopg.sql.SQL("EXPLAIN (FORMAT JSON) ") + query).fetchone()[0]
    found: list[str] = []

    def walk(node: dict) -> None:
        if "Relation Name" in node:
            found.append(f"{node['Node Type']}:{node['Relation Name']}")
        for child in node.get("Plans", []):
            walk(child)

    walk(plan[0]["Plan"])
    return found


def test_health_queries_on_readings_are_bounded_by_ts(conn, db):
    """The simulator healthcheck and the dead-letter rule read recent partitions only."""
    from psycopg import sql

    from citywatch import healthcheck
    from dashboards import alerting

    check = SERVICES["simulator"]["healthcheck"]["test"]
    assert check[4:] == ["fresh", "readings", "ingested_at", "120", "ts"]
    assert "ts > now() - interval" in alerting.DEADLETTER_SPIKE_SQL
    rules = (REPO / "dashboards" / "provisioning" / "alerting" / "rules.yaml").read_text()
    assert "AND ts > now() - interval '1 hour' AND ts < now() + interval '1 hour'" in rules

    # A month of readings, in daily partitions and the default one.
    with psycopg.connect(conn.database_url, autocommit=True) as c:
        c.execute(
            "INSERT INTO readings (ts, device_id, asset_id, asset_type, metrics, ingested_at)"
            " SELECT now() - d * interval '1 day', 'dev-1', 'a-1', 'pump', '{}', now()"
            "   - d * interval '1 day' FROM generate_series(0, 30) d"
        )
        everything = _scanned_relations(c, sql.SQL("SELECT * FROM readings"))
        bounded = _scanned_relations(
            c, healthcheck.fresh_query("readings", "ingested_at", 120, "ts")
        )
        rule = [r for r in _scanned_relations(c, sql.SQL(alerting.DEADLETTER_SPIKE_SQL))]
        today = c.execute("SELECT to_char(now() - interval '1 day', 'YYYYMMDD')").fetchone()[0]

    def past(relations: list[str]) -> list[str]:
        # Partitions before yesterday, or the default one that holds older readings.
        # (The empty daily partitions kept ready ahead of now cost nothing to scan.)
        names = [r.split(":", 1)[1] for r in relations if ":readings" in r]
        return [n for n in names if n.endswith("_default") or ("_p" in n and n[-8:] < today)]

    if len(everything) > 1:  # plain PostgreSQL: native daily partitions
        assert past(everything), everything
        assert not past(bounded), bounded
        assert not past(rule), rule
    os.environ["CITYWATCH_DATABASE_URL"] = conn.database_url
    try:
        assert healthcheck.main(["fresh", "readings", "ingested_at", "120", "ts"]) == 0
    finally:
        os.environ.pop("CITYWATCH_DATABASE_URL")
