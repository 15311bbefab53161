"""An operator's catalogue type flows through the real worker: its readings are
validated against the operator's ranges and stored, and wait unscored for a model."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from core.wire import encode_reading
from ingest.simulator import FleetSimulator
from storage.device_registry import register_devices
from tests.pipeline_helpers import (
    Worker,
    as_messages,
    past_history,
    produce,
    register_fleet,
    wait_for_total,
)

pytestmark = pytest.mark.stack

STATION = """
[types.quality_probe]
description = "A test water-quality probe."
metrics = [
  { name = "ph", unit = "pH", low = 0, high = 14 },
  { name = "turbidity", unit = "NTU", low = 0.0, high = 1000.0 },
]
"""


def test_readings_of_a_type_without_a_model_are_stored_and_others_still_scored(
    conn, db, isolated, trained_models, tmp_path, monkeypatch
):
    catalogue = tmp_path / "station.toml"
    catalogue.write_text(STATION)
    monkeypatch.setenv("CITYWATCH_ASSET_CATALOGUE", str(catalogue))  # the worker inherits it

    fleet = FleetSimulator(n_devices=4, seed=5)
    register_fleet(conn, fleet)
    with psycopg.connect(conn.database_url) as pg:
        register_devices(
            pg,
            [
                {
                    "device_id": "probe-1",
                    "asset_id": "station-1",
                    "asset_type": "quality_probe",
                    "lat": 52.0,
                    "lon": 4.0,
                    "installed_at": datetime(2025, 1, 1, tzinfo=UTC),
                }
            ],
        )
    readings, _ = past_history(fleet, 20)
    messages = as_messages(readings)
    start = datetime.now(UTC) - timedelta(hours=1)
    probe = [
        (
            b"probe-1",
            encode_reading(
                device_id="probe-1",
                asset_id="station-1",
                asset_type="quality_probe",
                ts=start + timedelta(minutes=i),
                metrics={"ph": 7.0 + i / 100, "turbidity": 0.3},
            ),
        )
        for i in range(30)
    ]
    # pH 15 is outside the operator's physical range: dead-lettered, not stored.
    probe.append(
        (
            b"probe-1",
            encode_reading(
                device_id="probe-1",
                asset_id="station-1",
                asset_type="quality_probe",
                ts=start + timedelta(minutes=45),
                metrics={"ph": 15.0, "turbidity": 0.3},
            ),
        )
    )
    produce(conn, isolated, messages + probe)

    log = tmp_path / "worker.log"
    worker = Worker(isolated, conn, log).start()
    try:
        total = len(messages) + len(probe)
        assert wait_for_total(conn, total) == total
        assert worker.alive()
    finally:
        worker.stop()

    stored = db.execute("SELECT count(*) FROM readings WHERE device_id = 'probe-1'").fetchone()[0]
    assert stored == 30
    scored = dict(
        db.execute("SELECT device_id = 'probe-1', count(*) FROM scores GROUP BY 1").fetchall()
    )
    assert scored.get(True, 0) == 0
    assert scored[False] == len(messages)
    reasons = db.execute("SELECT reason FROM deadletters WHERE device_id = 'probe-1'").fetchall()
    assert reasons == [("out_of_range",)]
    assert "has no quality_probe model: its readings are stored, not scored" in log.read_text()
