"""The TimescaleDB-only SQL, checked in a WebAssembly TimescaleDB 2.23 (PGlite build).

That build is no database for citywatch (single connection, no background
jobs, 32-bit); it proves that every migration of the ``timescaledb`` flavour and
every statement ``storage.maintenance`` sends to TimescaleDB parses, plans and
does what we expect: hypertables, compression, continuous aggregates and their
policies, retention, and the unpivoted ``readings_1m`` / ``readings_1h`` views.
It needs node and ``npm ci`` in tools/timescale-check (``make setup`` runs it).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from storage import maintenance as m
from storage.migrations import MIGRATIONS, TIMESCALEDB

TOOL = Path(__file__).resolve().parents[2] / "tools" / "timescale-check"


def literal(sql: str, *params: str) -> str:
    """Inline string parameters (our own constants only) for the node runner."""
    for p in params:
        sql = sql.replace("%s", "'" + p.replace("'", "''") + "'", 1)
    return sql


def run_steps(steps: list[tuple[str, str]], tmp_path: Path) -> dict[str, dict]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the TimescaleDB DDL check needs it")
    if not (TOOL / "node_modules" / "@unni-craftsman" / "pglite").exists():
        pytest.skip("run `npm ci` in tools/timescale-check (make setup does) for this check")
    path = tmp_path / "steps.json"
    path.write_text(json.dumps([{"name": n, "sql": s} for n, s in steps]))
    out = subprocess.run(
        [node, str(TOOL / "check.mjs"), str(path)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=TOOL,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    results = {r["name"]: r for r in json.loads(out.stdout)}
    failed = [r for r in results.values() if not r["ok"]]
    assert not failed, failed
    assert len(results) == len(steps)
    return results


def test_timescale_flavour_migrations_and_maintenance_sql(tmp_path):
    steps = [("extension", "CREATE EXTENSION IF NOT EXISTS timescaledb")]
    for version, _name, sql in sorted(MIGRATIONS, key=lambda x: x[0]):
        body = sql[TIMESCALEDB] if isinstance(sql, dict) else sql
        # PGlite runs in template1, whose pg_database row it cannot update ("tuple
        # concurrently deleted"); database-level grants are checked on real PostgreSQL.
        body = re.sub(r"EXECUTE format\('GRANT CONNECT[^;]*;", "", body)
        steps.append((f"migration {version}", body))
    # Two devices, 3 minutes of readings 2 days ago and now, plus one late, far-past row.
    steps.append(
        (
            "data",
            """
            INSERT INTO readings (ts, device_id, asset_id, asset_type, metrics)
            SELECT t, 'dev-' || d, 'pump-' || d, 'water_pump',
                   jsonb_build_object('flow', d * 10 + s, 'pressure', 2.5)
            FROM generate_series(1, 2) d, generate_series(0, 179, 10) s,
                 unnest(ARRAY[date_trunc('hour', now()) - interval '2 days',
                              date_trunc('hour', now())]) AS base,
                 LATERAL (SELECT base + s * interval '1 second' AS t) x;
            INSERT INTO readings (ts, device_id, asset_id, asset_type, metrics)
            VALUES (now() - interval '400 days', 'dev-1', 'pump-1', 'water_pump',
                    '{"flow": 1, "tilt": "not a number"}');
            INSERT INTO scores (ts, device_id, asset_id, asset_type, model_version, risk,
                                threshold)
            SELECT ts, device_id, asset_id, asset_type, 'v1', 0.2, 0.5 FROM readings;
            SELECT count(*) AS n FROM readings
            """,
        )
    )
    for _view, wide in m.ROLLUPS:
        steps.append((f"refresh {wide}", literal(m.TS_REFRESH, wide)))
    steps += [
        (
            "hypertables",
            "SELECT hypertable_name, compression_enabled FROM timescaledb_information.hypertables"
            " ORDER BY 1",
        ),
        (
            "policies",
            "SELECT proc_name, coalesce(hypertable_name, '') AS h FROM"
            " timescaledb_information.jobs WHERE proc_name LIKE 'policy_%' ORDER BY 1, 2",
        ),
        (
            "caggs",
            "SELECT view_name, materialized_only FROM"
            " timescaledb_information.continuous_aggregates ORDER BY 1",
        ),
        (
            "1m",
            "SELECT device_id, metric, sum(n)::int AS n, min(min) AS lo, max(max) AS hi"
            " FROM readings_1m GROUP BY 1, 2 ORDER BY 1, 2",
        ),
        ("1h buckets", "SELECT count(DISTINCT bucket)::int AS n FROM readings_1h"),
        ("chunks", literal(m.TS_CHUNKS, "readings")),
        ("last refresh", literal(m.TS_LAST_REFRESH, "readings_1m_wide")),
        # Retention as run_maintenance applies it: policy follows the setting, chunks go.
        ("remove retention", literal(m.TS_REMOVE_RETENTION, "readings")),
        ("add retention", literal(m.TS_ADD_RETENTION, "readings", "30 days")),
        ("retention setting", literal(m.TS_RETENTION_SETTING, "readings")),
        ("drop chunks", literal(m.TS_DROP_CHUNKS, "readings", "30 days")),
        ("after retention", "SELECT count(*)::int AS n FROM readings"),
        ("roles", "SELECT rolname FROM pg_roles WHERE rolname LIKE 'citywatch%' ORDER BY 1"),
    ]
    r = run_steps(steps, tmp_path)

    assert r["data"]["rows"] == [{"n": 2 * 18 * 2 + 1}]
    assert r["hypertables"]["rows"] == [
        {"hypertable_name": "readings", "compression_enabled": True},
        {"hypertable_name": "scores", "compression_enabled": True},
        {"hypertable_name": "station_outlook", "compression_enabled": True},
    ]
    policies = {(p["proc_name"], p["h"]) for p in r["policies"]["rows"]}
    assert {("policy_compression", "readings"), ("policy_compression", "scores")} <= policies
    assert sum(1 for p, _ in policies if p == "policy_refresh_continuous_aggregate") == 2
    assert [c["view_name"] for c in r["caggs"]["rows"]] == ["readings_1h_wide", "readings_1m_wide"]
    # 18 readings per device and window, two windows, plus the late row on dev-1.
    rows = {(x["device_id"], x["metric"]): x for x in r["1m"]["rows"]}
    assert rows[("dev-1", "flow")]["n"] == 37 and rows[("dev-2", "flow")]["n"] == 36
    assert (rows[("dev-1", "flow")]["lo"], rows[("dev-2", "flow")]["hi"]) == (1.0, 190.0)
    assert rows[("dev-1", "pressure")]["n"] == 36
    assert ("dev-1", "tilt") not in rows  # a non-numeric value is skipped
    assert r["1h buckets"]["rows"][0]["n"] == 3
    assert r["retention setting"]["rows"][0]["?column?"] == "30 days"
    assert len(r["drop chunks"]["rows"]) == 1  # the 400-day-old chunk
    assert r["after retention"]["rows"] == [{"n": 2 * 18 * 2}]
    assert [x["rolname"] for x in r["roles"]["rows"]] == ["citywatch_reader", "citywatch_writer"]
