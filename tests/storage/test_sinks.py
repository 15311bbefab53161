"""The sink against the real PostgreSQL: binary COPY, idempotent upserts."""

from __future__ import annotations

from dataclasses import replace
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


def test_a_replay_scored_by_another_model_stores_no_second_score(conn, db):
    """A batch delivered again after a crash may meet a new model (a champion promoted,
    a water-quality file reloaded): its readings are stored already, so are their
    scores, and the new version's scores must not join them. A reading of the same
    batch that was never stored gets its score."""
    sink = PostgresSink(conn.database_url)
    first = batch(10)
    first.reading_positions = [("readings", 0, i) for i in range(10)]
    sink.write(first)
    again = batch(12)  # the same ten messages, then two new ones
    again.reading_positions = [("readings", 0, i) for i in range(12)]
    again.scores = [replace(s, model_version="v2") for s in again.scores]
    result = sink.write(again)
    # A different message with a stored reading's key: a duplicate, and no score of it.
    other = batch(1, start=3)
    other.reading_positions = [("readings", 1, 0)]
    other.scores = [replace(s, model_version="v3") for s in other.scores]
    other.conflict_deadletter = lambda i: replace(other.deadletters[0], deadletter_id="dup")
    conflicted = sink.write(other)
    sink.close()
    assert (result.readings, result.scores, result.conflicts) == (2, 2, [])
    assert conflicted.conflicts == [0]
    versions = db.execute(
        "SELECT model_version, count(*) FROM scores GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert versions == [("v1", 10), ("v2", 2)]


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
