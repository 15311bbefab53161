"""The sink against the real PostgreSQL: binary COPY, idempotent upserts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from core.records import Alert, DeadLetter, Reading, Score
from storage.migrations import migrate
from storage.sinks import PostgresSink, SinkBatch

pytestmark = pytest.mark.stack
T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)


def batch(n: int, start: int = 0) -> SinkBatch:
    out = SinkBatch()
    for i in range(start, start + n):
        ts = T0 + timedelta(seconds=i)
        out.readings.append(
            Reading(
                ts, f"dev{i % 3}", f"pump-{i % 3}", "water_pump", {"flow": float(i)}, {"seq": i}
            )
        )
        out.scores.append(Score(ts, f"dev{i % 3}", f"pump-{i % 3}", "water_pump", "v1", 0.1, 0.5))
    out.deadletters.append(
        DeadLetter(
            f"readings:0:{start}",
            "validate",
            "malformed_json",
            "bad",
            "readings",
            0,
            start,
            None,
            b"\x00{",
        )
    )
    return out


def test_migrations_are_idempotent(conn):
    assert migrate(conn.database_url) == []


def test_writing_a_batch_twice_stores_it_once(conn, db):
    sink = PostgresSink(conn.database_url)
    first = sink.write(batch(300))
    again = sink.write(batch(300))
    overlapping = sink.write(batch(300, start=150))
    sink.close()
    assert (first.readings, first.scores, first.deadletters) == (300, 300, 1)
    assert (again.readings, again.scores, again.deadletters) == (0, 0, 0)
    assert overlapping.readings == 150
    assert db.execute("SELECT count(*) FROM readings").fetchone()[0] == 450
    assert db.execute("SELECT count(*) FROM scores").fetchone()[0] == 450
    row = db.execute(
        "SELECT metrics->>'flow', source->>'seq' FROM readings"
        " WHERE ts = %s AND device_id = 'dev1'",
        (T0 + timedelta(seconds=7),),
    ).fetchone()
    assert row == ("7.0", "7")
    raw = db.execute("SELECT raw FROM deadletters WHERE source_offset = 0").fetchone()[0]
    assert bytes(raw) == b"\x00{"


def test_alert_upsert_keeps_one_open_alert_and_closes_it(conn, db):
    sink = PostgresSink(conn.database_url)
    opened = Alert(
        "pump-1:t0", "pump-1", "dev1", "water_pump", "open", T0, None, 0.9, 0.9, 0.7, "v1"
    )
    closed = Alert(
        "pump-1:t0",
        "pump-1",
        "dev1",
        "water_pump",
        "closed",
        T0,
        T0 + timedelta(minutes=5),
        0.95,
        0.2,
        0.7,
        "v1",
    )
    sink.write(SinkBatch(alerts=[opened]))
    sink.write(SinkBatch(alerts=[opened]))  # replay
    sink.write(SinkBatch(alerts=[closed]))
    sink.write(SinkBatch(alerts=[opened]))  # a late replay must not reopen it
    sink.close()
    rows = db.execute("SELECT status, closed_at, peak_risk FROM alerts").fetchall()
    # Migration 5: the worker's close is an automatic resolution; nothing reopens it.
    assert rows == [("resolved", T0 + timedelta(minutes=5), 0.95)]


def test_maintenance_events_are_stored_once(conn, db):
    from core.records import Maintenance

    def events(start: int, n: int) -> SinkBatch:
        return SinkBatch(
            maintenance=[
                Maintenance(
                    T0 + timedelta(minutes=i),
                    f"dev{i % 2}",
                    f"pump-{i % 2}",
                    "water_pump",
                    {"kind": "simulator", "reason": "repair"},
                )
                for i in range(start, start + n)
            ]
        )

    sink = PostgresSink(conn.database_url)
    first = sink.write(events(0, 10))
    again = sink.write(events(0, 10))
    overlapping = sink.write(events(5, 10))
    sink.close()
    assert (first.maintenance, again.maintenance, overlapping.maintenance) == (10, 0, 5)
    rows = db.execute(
        "SELECT count(*), count(DISTINCT (device_id, ts)), min(source->>'reason')"
        " FROM maintenance_events"
    ).fetchone()
    assert rows == (15, 15, "repair")
