"""Rollups readings_1m / readings_1h: correct values, late data re-refreshed, replays ignored."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from core.assets import ASSET_TYPES
from core.records import Reading
from storage.maintenance import run_maintenance, storage_status
from storage.rollups import metric_names
from storage.sinks import PostgresSink, SinkBatch

pytestmark = pytest.mark.stack

# The rollups recomputed straight from the raw jsonb, the slow way, to compare with.
DIRECT_1M = """
SELECT date_bin('1 minute', r.ts, '2000-01-01 00:00:00+00') AS bucket, r.device_id, r.asset_id,
       r.asset_type, m.key AS metric, avg(m.value::float8), min(m.value::float8),
       max(m.value::float8), count(*)
FROM readings r, jsonb_each_text(r.metrics) m
GROUP BY 1, 2, 3, 4, 5
"""
DIRECT_1H = DIRECT_1M.replace("'1 minute'", "'1 hour'")


def readings(start: datetime, n: int, seed: int) -> SinkBatch:
    rnd = random.Random(seed)
    batch = SinkBatch()
    for i in range(n):
        device = f"dev-{i % 4}"
        kind, metrics = (
            ("water_pump", {"flow": rnd.uniform(0, 900), "pressure": rnd.uniform(1, 9)})
            if i % 4 < 2
            else ("bridge", {"strain": rnd.uniform(-800, 800), "tilt": rnd.uniform(-1, 1)})
        )
        ts = start + timedelta(seconds=7 * i + rnd.random())
        batch.readings.append(Reading(ts, device, f"asset-{device}", kind, metrics, {}))
    return batch


def table(db: psycopg.Connection, sql: str) -> dict[tuple, tuple]:
    out = {}
    for bucket, device, asset, kind, metric, avg, lo, hi, n in db.execute(sql):
        out[(bucket, device, asset, kind, metric)] = (round(avg, 9), lo, hi, n)
    return out


def assert_rollups_match(url: str) -> None:
    with psycopg.connect(url) as db:
        for view, direct in (("readings_1m", DIRECT_1M), ("readings_1h", DIRECT_1H)):
            got = table(db, f"SELECT * FROM {view}")
            want = table(db, direct)
            assert got == want, view


def test_rollups_match_the_raw_readings_and_include_late_data(fresh_db):
    sink = PostgresSink(fresh_db)
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=3)
    sink.write(readings(start, 1200, seed=1))  # 2h20m of readings, 4 devices
    refreshed = run_maintenance(fresh_db).rollup_minutes_refreshed
    assert refreshed > 100
    assert_rollups_match(fresh_db)

    # Late rows: an hour already rolled up, and a day long gone; one row of them again.
    late = readings(start + timedelta(minutes=30), 20, seed=2)
    late.readings += readings(start - timedelta(days=2), 5, seed=3).readings
    sink.write(late)
    assert storage_status(fresh_db)["rollups"]["pending_minutes"] > 0
    assert run_maintenance(fresh_db).rollup_minutes_refreshed > 0
    assert_rollups_match(fresh_db)

    # A replay stores nothing, so it invalidates nothing.
    sink.write(late)
    sink.close()
    assert storage_status(fresh_db)["rollups"]["pending_minutes"] == 0
    assert run_maintenance(fresh_db).rollup_minutes_refreshed == 0
    assert_rollups_match(fresh_db)


def test_views_have_the_contract_columns_and_every_catalogue_metric(fresh_db):
    with psycopg.connect(fresh_db) as db:
        for view in ("readings_1m", "readings_1h"):
            cols = [
                r[0]
                for r in db.execute(
                    "SELECT column_name FROM information_schema.columns"
                    " WHERE table_name = %s ORDER BY ordinal_position",
                    (view,),
                )
            ]
            assert cols == [
                "bucket",
                "device_id",
                "asset_id",
                "asset_type",
                "metric",
                "avg",
                "min",
                "max",
                "n",
            ]
    names = metric_names()
    catalogue = {m for t in ASSET_TYPES.values() for m in t.metric_names}
    assert len(names) == len(set(names)) == len(catalogue)
    # Every catalogue metric is rolled up; a non-numeric value is skipped, not fatal.
    ts = datetime.now(UTC)
    sink = PostgresSink(fresh_db)
    sink.write(
        SinkBatch(
            readings=[
                Reading(ts, "d", "a", "mixed", {m: 1.5 for m in names}, {}),
                Reading(ts, "e", "b", "mixed", {"flow": "broken", "tilt": 0.5}, {}),
            ]
        )
    )
    sink.close()
    run_maintenance(fresh_db)
    with psycopg.connect(fresh_db) as db:
        got = db.execute("SELECT device_id, metric, n FROM readings_1m ORDER BY 1, 2").fetchall()
    assert got == sorted([("d", m, 1) for m in names] + [("e", "tilt", 1)])


def test_views_are_real_time_between_refreshes(fresh_db):
    sink = PostgresSink(fresh_db)
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=90)
    try:
        sink.write(readings(start, 400, seed=4))  # 46 minutes, nothing refreshed yet
        assert_rollups_match(fresh_db)
        run_maintenance(fresh_db)
        sink.write(readings(start + timedelta(minutes=50), 300, seed=5))  # newer minutes
        assert storage_status(fresh_db)["rollups"]["pending_minutes"] > 0
        assert_rollups_match(fresh_db)  # the unrefreshed minutes are aggregated live
        # A late row behind the watermark waits for the refresh (as on TimescaleDB).
        late = readings(start - timedelta(hours=5), 1, seed=6)
        sink.write(late)
    finally:
        sink.close()
    with psycopg.connect(fresh_db) as db:
        total = db.execute("SELECT sum(n) FROM readings_1m").fetchone()[0]
    assert total == sum(len(r.metrics) for r in readings(start, 400, 4).readings) + sum(
        len(r.metrics) for r in readings(start + timedelta(minutes=50), 300, 5).readings
    )
    run_maintenance(fresh_db)
    assert_rollups_match(fresh_db)
