"""Maintenance from two workers at once while a sink writes late, early and current rows."""

from __future__ import annotations

import random
import threading
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from core.records import Reading, Score
from storage.maintenance import run_maintenance
from storage.sinks import PostgresSink, SinkBatch

from .test_rollups import assert_rollups_match

pytestmark = pytest.mark.stack


def test_concurrent_maintenance_and_writes_lose_nothing_and_never_fail(fresh_db):
    rnd = random.Random(5)
    now = datetime.now(UTC)
    batches = []
    for b in range(40):
        batch = SinkBatch()
        for i in range(50):
            # Mostly current, some up to 20 days late or 20 days early: new partitions
            # get created while the writer keeps writing into them.
            offset = timedelta(days=rnd.randint(-20, 20)) if i % 5 == 0 else timedelta(0)
            ts = now + offset + timedelta(milliseconds=b * 50 + i)
            device = f"dev-{i % 7}"
            batch.readings.append(
                Reading(ts, device, f"a-{device}", "water_pump", {"flow": float(i)}, {})
            )
            batch.scores.append(Score(ts, device, f"a-{device}", "water_pump", "v1", 0.1, 0.5))
        batches.append(batch)

    done = threading.Event()
    errors: list[BaseException] = []

    def maintain() -> None:
        try:
            while not done.is_set():
                run_maintenance(fresh_db, days_ahead=2, retention_days=365)
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    maintainers = [threading.Thread(target=maintain) for _ in range(2)]
    for t in maintainers:
        t.start()
    sink = PostgresSink(fresh_db)
    stored = 0
    try:
        for batch in batches + batches[:10]:  # the last ten again: a replay
            stored += sink.write(batch).readings
    finally:
        sink.close()
        done.set()
        for t in maintainers:
            t.join(timeout=60)
    assert not errors, errors
    assert stored == 40 * 50
    run_maintenance(fresh_db, days_ahead=2)  # re-homes what arrived after the last round
    with psycopg.connect(fresh_db) as db:
        assert db.execute("SELECT count(*) FROM readings").fetchone()[0] == 2000
        assert db.execute("SELECT count(*) FROM scores").fetchone()[0] == 2000
        assert db.execute("SELECT count(*) FROM readings_default").fetchone()[0] == 0
    assert_rollups_match(fresh_db)
