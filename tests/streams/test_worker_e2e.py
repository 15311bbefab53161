"""The worker on the real Tansu broker and the real PostgreSQL, end to end."""

from __future__ import annotations

import json
import math
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from kafka import KafkaProducer

from ingest.sim_records import maintenance_bytes
from ingest.simulator import FleetSimulator
from models.bundle_store import load_champion
from streams.topics import DEADLETTER
from tests.pipeline_helpers import (
    Worker,
    as_messages,
    database_outage,
    offline_scores,
    past_history,
    produce,
    register_fleet,
    stored_scores,
    stored_total,
    wait_for_total,
)

pytestmark = pytest.mark.stack


def bad_messages(fleet) -> list[tuple[bytes, bytes, str]]:
    device = fleet.devices[0]
    good = {
        "device_id": device.device_id,
        "asset_id": device.asset_id,
        "asset_type": device.asset_type,
        "ts": (datetime.now(UTC) - timedelta(hours=1)).isoformat(),
        "metrics": {},
        "source": {},
    }
    metric = next(iter(fleet_metrics(fleet, device)))
    return [
        (b"k", b'{"device_id": "trunc', "malformed_json"),
        (b"k", b"\x00\x01\x02binary", "malformed_json"),
        (b"k", json.dumps({**good, "metrics": [1]}).encode(), "schema"),
        (b"k", json.dumps({**good, "device_id": "ffffffffffffffff"}).encode(), "unknown_device"),
        (b"k", json.dumps({**good, "metrics": {metric: math.nan}}).encode(), "nan_value"),
        (b"k", json.dumps({**good, "metrics": {metric: 1e9}}).encode(), "out_of_range"),
        (
            b"k",
            json.dumps(
                {**good, "ts": "2099-01-01T00:00:00+00:00", "metrics": {metric: 1.0}}
            ).encode(),
            "clock_skew",
        ),
    ]


def fleet_metrics(fleet, device):
    from core.assets import ASSET_TYPES

    return ASSET_TYPES[device.asset_type].metric_names


def test_readings_become_rows_and_bad_input_becomes_dead_letters(
    conn, db, isolated, trained_models, tmp_path
):
    fleet = FleetSimulator(n_devices=8, seed=5)
    register_fleet(conn, fleet)
    readings, _ = past_history(fleet, 60)
    bad = bad_messages(fleet)
    # A duplicate: the same valid reading sent twice.
    messages = as_messages(readings)
    messages.append(messages[-1])
    messages += [(k, v) for k, v, _ in bad]
    produce(conn, isolated, messages)
    # Dead letters an ingest process published (the LoRaWAN bridge's contract),
    # one of them delivered twice: stored once each, by the worker.
    ingest_dead = [
        (b"70b3d57ed0000099", b"{not json", {"reason": b"malformed_json", "id": b"mqtt:aa"}),
        (None, b"\x01\x02", {"reason": b"decode_error", "id": b"mqtt:bb"}),
        (None, b"\x01\x02", {"reason": b"decode_error", "id": b"mqtt:bb"}),
    ]
    producer = KafkaProducer(bootstrap_servers=conn.kafka, acks="all")
    for key, value, h in ingest_dead:
        producer.send(
            isolated.topic(DEADLETTER),
            key=key,
            value=value,
            headers=[
                ("reason", h["reason"]),
                ("detail", b"from the bridge"),
                ("stage", b"ingest"),
                ("deadletter_id", h["id"]),
            ],
        )
    producer.flush()
    producer.close()

    worker = Worker(isolated, conn, tmp_path / "worker.log").start()
    try:
        expected_total = len(messages) + 2  # and the two distinct ingest dead letters
        assert wait_for_total(conn, expected_total) == expected_total
        assert worker.alive(), "bad input must not stop the worker"
    finally:
        worker.stop()

    stored = db.execute("SELECT count(*) FROM readings").fetchone()[0]
    scores = db.execute("SELECT count(*) FROM scores").fetchone()[0]
    reasons = dict(db.execute("SELECT reason, count(*) FROM deadletters GROUP BY 1").fetchall())
    assert stored == len(readings)
    assert scores == len(readings)
    expected = {}
    for *_, reason in bad:
        expected[reason] = expected.get(reason, 0) + 1
    expected["duplicate"] = 1
    expected["decode_error"] = 1
    expected["malformed_json"] += 1
    deadline = time.monotonic() + 30
    while reasons != expected and time.monotonic() < deadline:
        time.sleep(0.5)
        reasons = dict(db.execute("SELECT reason, count(*) FROM deadletters GROUP BY 1").fetchall())
    assert reasons == expected
    stages = dict(db.execute("SELECT stage, count(*) FROM deadletters GROUP BY 1").fetchall())
    assert stages["ingest"] == 2
    raw = db.execute(
        "SELECT raw, detail FROM deadletters WHERE reason = 'malformed_json'"
    ).fetchall()
    assert {bytes(r[0]) for r in raw} == {bad[0][1], bad[1][1], b"{not json"}
    assert all(r[1] for r in raw)


def test_killed_worker_restarts_without_loss_or_duplicates_and_restores_state(
    conn, db, isolated, trained_models, tmp_path
):
    fleet = FleetSimulator(n_devices=20, seed=9, initial_degrading_fraction=0.3)
    register_fleet(conn, fleet)
    readings, failures = past_history(fleet, 400)
    first, second = readings[: len(readings) * 3 // 4], readings[len(readings) * 3 // 4 :]
    # Failures and their repairs in every part: maintenance events before, during and
    # after the kill, so the restored state must carry the resets too.
    assert any(r.repaired for r in first) and any(r.repaired for r in second)
    produce(conn, isolated, as_messages(first, maintenance=True))

    log = tmp_path / "worker.log"
    worker = Worker(isolated, conn, log).start()
    # Kill it in mid-stream: some of the first part stored, not all.
    wait_for_total(conn, len(first) // 3)
    worker.kill()
    stored_at_kill = stored_total(conn)
    assert 0 < stored_at_kill < len(first)

    worker = Worker(isolated, conn, log).start()
    try:
        messages = as_messages(second, seq0=len(first), maintenance=True)
        # A producer retry: one maintenance event delivered again after later
        # readings. Stored once, and it must not reset the features a second time.
        repeated = next(r for r in second if r.repaired)
        messages.append((repeated.device.device_id.encode(), maintenance_bytes(repeated)))
        produce(conn, isolated, messages)
        expected = len(readings) + sum(r.repaired for r in readings)
        assert wait_for_total(conn, expected) == expected
        # A second restart after a clean stop restores the tables from the changelog again.
        worker.stop()
        more, more_failures = fleet.history(
            50, readings[-1].ts + pd.Timedelta(seconds=1), pd.Timedelta(seconds=1)
        )
        assert any(r.repaired for r in more)
        restarted_at = log.stat().st_size
        worker = Worker(isolated, conn, log).start()
        # The tables' local store holds everything the changelog has: nothing to read back.
        assert "Restoring state from changelog" not in log.read_text()[restarted_at:]
        produce(conn, isolated, as_messages(more, seq0=len(readings), maintenance=True))
        expected += len(more) + sum(r.repaired for r in more)
        assert wait_for_total(conn, expected) == expected
    finally:
        worker.stop()
    everything = readings + more
    repaired = [r for r in everything if r.repaired]

    rows = db.execute("SELECT count(*), count(DISTINCT (device_id, ts)) FROM readings").fetchone()
    assert rows == (len(everything), len(everything))
    assert db.execute("SELECT count(*) FROM deadletters").fetchone()[0] == 0
    events = db.execute("SELECT device_id, ts FROM maintenance_events ORDER BY 1, 2").fetchall()
    assert events == sorted((r.device.device_id, r.ts) for r in repaired)

    # The restored per-device state must be exact: every score the worker stored
    # equals the score computed offline from the full history with the same code,
    # with training's resets (the first reading after each failure).
    bundle = load_champion(isolated.models_path)
    online = stored_scores(db)
    assert len(online) == len(everything)
    offline = offline_scores(bundle, everything, failures + more_failures)
    assert offline["reset"].sum() == len(repaired)
    merged = online.merge(offline, on=["device_id", "ts"], suffixes=("_online", "_offline"))
    assert len(merged) == len(everything)
    np.testing.assert_array_equal(merged["risk_online"], merged["risk_offline"])
    # The cold-start health baselines too (restored from their own table): NaN while
    # a device is learning, the same figure afterwards, and which model alerted.
    np.testing.assert_array_equal(merged["anomaly_score_online"], merged["anomaly_score_offline"])
    assert merged["anomaly_score_online"].notna().sum() > len(merged) // 4
    assert (merged["model_kind_online"] == merged["model_kind_offline"]).all()
    # and the time to failure (days, with its interval) of every score
    for c in ("ttf_low", "ttf_median", "ttf_high"):
        np.testing.assert_array_equal(merged[f"{c}_online"], merged[f"{c}_offline"])
    assert merged["ttf_median_online"].notna().all()
    assert (merged["ttf_low_online"] <= merged["ttf_high_online"]).all()
    # Without the resets the offline scores differ: the parity above really covers them.
    plain = offline_scores(bundle, everything, [])
    assert not plain["reset"].any()
    assert not np.array_equal(
        np.sort(plain["risk"].to_numpy()), np.sort(offline["risk"].to_numpy())
    )
    assert "Tansu end-offset fix" in log.read_text()


def test_database_outage_loses_nothing(conn, db, isolated, trained_models, tmp_path, stack):
    """The worker holds its batch while PostgreSQL refuses connections, then stores it once."""
    fleet = FleetSimulator(n_devices=6, seed=2)
    register_fleet(conn, fleet)
    readings, _ = past_history(fleet, 50)
    worker = Worker(isolated, conn, tmp_path / "worker.log").start()
    try:
        with database_outage(conn):
            produce(conn, isolated, as_messages(readings))
            time.sleep(3)
        assert wait_for_total(conn, len(readings)) == len(readings)
        assert worker.alive()
        assert "retrying in" in (tmp_path / "worker.log").read_text()
    finally:
        worker.stop()
    assert db.execute("SELECT count(*) FROM readings").fetchone()[0] == len(readings)
