"""Plain-PostgreSQL time partitioning: partitions ahead, late data, retention, upgrades."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from core.records import Reading, Score
from storage.maintenance import run_maintenance, storage_status
from storage.migrations import migrate, recorded_flavour
from storage.sinks import PostgresSink, SinkBatch

pytestmark = pytest.mark.stack


def rows_at(*stamps: datetime, device: str = "dev-1") -> SinkBatch:
    batch = SinkBatch()
    for i, ts in enumerate(stamps):
        batch.readings.append(
            Reading(ts, device, "pump-1", "water_pump", {"flow": float(i)}, {"seq": i})
        )
        batch.scores.append(Score(ts, device, "pump-1", "water_pump", "v1", 0.2, 0.5))
    return batch


def partition_of(db: psycopg.Connection, table: str, ts: datetime) -> str:
    sql = f"SELECT tableoid::regclass::text FROM {table} WHERE ts = %s"
    return db.execute(sql, (ts,)).fetchone()[0]


def one(db: psycopg.Connection, sql: str):
    return db.execute(sql).fetchone()[0]


def test_fresh_database_is_partitioned_with_days_ready_ahead(fresh_db):
    with psycopg.connect(fresh_db) as db:
        kinds = dict(
            db.execute(
                "SELECT relname, relkind::text FROM pg_class"
                " WHERE relname IN ('readings', 'scores', 'readings_default', 'scores_default')"
            ).fetchall()
        )
        assert recorded_flavour(db) == "postgres"
    assert kinds == {"readings": "p", "scores": "p", "readings_default": "r", "scores_default": "r"}
    status = storage_status(fresh_db)
    for table in ("readings", "scores"):
        assert status["partitions"][table]["days_ready_ahead"] == 7
        assert status["partitions"][table]["default_partition_rows"] == 0
    # Nothing new to create the second time; more days ahead when asked.
    assert run_maintenance(fresh_db).partitions_created == 0
    assert run_maintenance(fresh_db, days_ahead=9).partitions_created == 4
    assert storage_status(fresh_db)["partitions"]["readings"]["days_ready_ahead"] == 9


def test_far_past_and_future_readings_are_stored_once(fresh_db):
    now = datetime.now(UTC).replace(microsecond=0)
    past, future = now - timedelta(days=3 * 365), now + timedelta(days=2 * 365)
    batch = rows_at(past, now, future)
    sink = PostgresSink(fresh_db)
    try:
        first = sink.write(batch)
        assert (first.readings, first.scores) == (3, 3)
        with psycopg.connect(fresh_db) as db:
            # No partition exists for those days yet: the default partition takes them.
            assert partition_of(db, "readings", past) == "readings_default"
            assert partition_of(db, "scores", future) == "scores_default"
        assert sink.write(batch).readings == 0  # replay while in the default partition

        result = run_maintenance(fresh_db)
        assert result.partitions_created == 4  # past and future day, readings and scores

        again = sink.write(batch)  # replay after they moved to their own partitions
        assert (again.readings, again.scores) == (0, 0)
    finally:
        sink.close()
    with psycopg.connect(fresh_db) as db:
        assert partition_of(db, "readings", past) == f"readings_p{past:%Y%m%d}"
        assert partition_of(db, "scores", future) == f"scores_p{future:%Y%m%d}"
        assert db.execute("SELECT count(*) FROM readings").fetchone()[0] == 3
        assert db.execute("SELECT count(*) FROM scores").fetchone()[0] == 3
        assert db.execute("SELECT count(*) FROM readings_default").fetchone()[0] == 0
        flows = db.execute("SELECT metrics->>'flow' FROM readings ORDER BY ts").fetchall()
    assert flows == [("0.0",), ("1.0",), ("2.0",)]


def test_retention_drops_whole_expired_days_and_keeps_recent_ones(fresh_db):
    now = datetime.now(UTC)
    old, late_old, recent = now - timedelta(days=40), now - timedelta(days=400), now
    sink = PostgresSink(fresh_db)
    sink.write(rows_at(old, recent))
    sink.close()
    run_maintenance(fresh_db)  # gives the 40-day-old row its own partition
    sink = PostgresSink(fresh_db)
    sink.write(rows_at(late_old, device="dev-2"))  # lands in the default partition
    sink.close()

    result = run_maintenance(fresh_db, retention_days=30)
    # The 40- and 400-day-old days' partitions (readings and scores) are dropped
    # whole; the 400-day-old row was re-homed before retention ran.
    assert result.partitions_dropped == 4
    with psycopg.connect(fresh_db) as db:
        left = db.execute("SELECT ts FROM readings").fetchall()
        assert left == [(recent,)]
        assert db.execute("SELECT count(*) FROM scores").fetchone()[0] == 1
        assert (
            db.execute("SELECT to_regclass(%s)", (f"readings_p{old:%Y%m%d}",)).fetchone()[0] is None
        )
    assert (
        storage_status(fresh_db)["partitions"]["readings"]["oldest_day"]
        >= (now - timedelta(days=30)).date().isoformat()
    )


def test_existing_v2_database_is_converted_with_its_data_and_views(blank_db):
    assert migrate(blank_db, target=2) == [1, 2]
    before = storage_status(blank_db)
    assert before["flavour"] is None and [m["version"] for m in before["migrations"]] == [1, 2]
    t0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    with psycopg.connect(blank_db) as db:
        for i in range(50):
            ts = t0 + timedelta(hours=i)
            db.execute(
                "INSERT INTO readings (ts, device_id, asset_id, asset_type, metrics)"
                " VALUES (%s, 'dev-1', 'pump-1', 'water_pump', %s)",
                (ts, f'{{"flow": {i}}}'),
            )
            db.execute(
                "INSERT INTO scores (ts, device_id, asset_id, asset_type, model_version, risk,"
                " threshold, role) VALUES (%s, 'dev-1', 'pump-1', 'water_pump', 'v1', 0.1, 0.5,"
                " 'challenger')",
                (ts,),
            )
        # A view another migration might have built on readings.
        db.execute(
            "CREATE VIEW flow_by_device AS SELECT device_id, count(*) AS n FROM readings"
            " GROUP BY device_id"
        )
        db.execute("CREATE VIEW flow_total AS SELECT sum(n) AS n FROM flow_by_device")

    applied = migrate(blank_db)
    assert {6, 7, 8, 9} <= set(applied)
    with psycopg.connect(blank_db) as db:
        assert one(db, "SELECT relkind::text FROM pg_class WHERE relname = 'readings'") == "p"
        assert one(db, "SELECT count(*) FROM readings") == 50
        assert one(db, "SELECT count(*) FROM scores WHERE role = 'challenger'") == 50
        assert db.execute("SELECT n FROM flow_total").fetchone()[0] == 50
        # 50 hours starting at noon span three UTC days, each its own partition.
        days = db.execute("SELECT count(DISTINCT tableoid) FROM readings").fetchone()[0]
        assert days == 3
        assert db.execute("SELECT count(*) FROM readings_default").fetchone()[0] == 0
        indexes = {
            r[0]
            for r in db.execute(
                "SELECT indexrelid::regclass::text FROM pg_index"
                " WHERE indrelid IN ('readings'::regclass, 'scores'::regclass)"
            )
        }
        assert indexes == {"readings_pkey", "readings_ts_idx", "scores_pkey", "scores_asset_ts_idx"}
        # The old rows are rolled up too.
        assert one(db, "SELECT sum(n) FROM readings_1h WHERE metric = 'flow'") == 50
        # The scores CHECK constraint survived the conversion.
        with pytest.raises(psycopg.errors.CheckViolation):
            db.execute(
                "INSERT INTO scores (ts, device_id, asset_id, asset_type, model_version, risk,"
                " threshold, role) VALUES (now(), 'd', 'a', 't', 'v', 0, 0, 'nobody')"
            )
    assert migrate(blank_db) == []


def test_flavour_is_fixed_once_chosen(fresh_db):
    with pytest.raises(ValueError, match="cannot switch"):
        migrate(fresh_db, flavour="timescaledb")
    assert migrate(fresh_db, flavour="postgres") == []


def test_a_row_written_while_its_day_is_being_attached_lands_in_the_new_partition(fresh_db):
    day = (datetime.now(UTC) + timedelta(days=100)).date()
    noon = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
    sink = PostgresSink(fresh_db, application_name="cw-race-sink")
    sink.write(rows_at(noon - timedelta(hours=1)))  # a row of that day, in the default
    maint = psycopg.connect(fresh_db)
    errors: list[Exception] = []

    def write() -> None:
        try:
            sink.write(rows_at(noon, device="dev-2"))
        except Exception as exc:  # reported below, the assertion says which
            errors.append(exc)

    try:
        # Maintenance creates the day's partition and holds its transaction open...
        assert maint.execute(
            "SELECT citywatch_create_partition('readings', %s)", (day,)
        ).fetchone() == (True,)
        writer = threading.Thread(target=write)
        writer.start()
        # ...while the sink tries to store another row of that day: it must wait.
        deadline = time.monotonic() + 20
        with psycopg.connect(fresh_db, autocommit=True) as watch:
            while time.monotonic() < deadline:
                waiting = watch.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name ="
                    " 'cw-race-sink' AND wait_event_type = 'Lock'"
                ).fetchone()[0]
                if waiting:
                    break
                time.sleep(0.05)
        assert waiting, "the sink did not wait for the partition to be attached"
        maint.commit()
        writer.join(timeout=20)
    finally:
        maint.close()
        sink.close()
    assert not errors, errors
    with psycopg.connect(fresh_db) as db:
        where = db.execute(
            "SELECT DISTINCT tableoid::regclass::text FROM readings WHERE ts >= %s",
            (noon - timedelta(hours=1),),
        ).fetchall()
    assert where == [(f"readings_p{day:%Y%m%d}",)]
