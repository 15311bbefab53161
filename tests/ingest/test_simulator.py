"""The fleet simulator: layout, determinism, physics, degradation, and the run loop."""

from __future__ import annotations

import json
import math
import re
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from core.assets import ASSET_TYPES
from core.wire import READING_FIELDS
from ingest.asset_signals import FAILURE_MODES, KEY_METRICS, SIMULATED_TYPES
from ingest.faults import ALL_KINDS, FaultInjector
from ingest.history_tables import METRIC_COLUMNS, failures_frame, history_frame
from ingest.producer import ReadingProducer, SimulationStats, run_simulation
from ingest.sim_records import FailureEvent, SimReading, reading_bytes
from ingest.simulator import FleetSimulator

START = datetime(2026, 3, 2, tzinfo=UTC)
PERIOD = timedelta(minutes=5)
DAY = 288  # the default day_ticks


@pytest.fixture(scope="module")
def busy_run() -> tuple[list[SimReading], list[FailureEvent], pd.DataFrame]:
    """A run with many degradations, repairs and transients."""
    sim = FleetSimulator(
        n_devices=40,
        seed=7,
        degradation_probability=0.005,
        degradation_ticks=(60, 200),
        transient_probability=0.01,
        initial_degrading_fraction=0.25,
    )
    readings, failures = sim.history(1500, START, PERIOD)
    return readings, failures, history_frame(readings)


# --------------------------------------------------------------------------- fleet


def test_fleet_layout() -> None:
    sim = FleetSimulator(n_devices=10, seed=1)
    devices = sim.devices
    assert len(devices) == 10
    assert len({d.device_id for d in devices}) == 10
    assert all(re.fullmatch(r"[0-9a-f]{16}", d.device_id) for d in devices)
    assert devices[0].device_id == "70b3d57ed0000001"
    types = list(SIMULATED_TYPES)
    assert [d.asset_type for d in devices] == [types[i % 4] for i in range(10)]
    assert [d.asset_id for d in devices[:4]] == [
        "pump-0001",
        "bridge-0002",
        "lift-0003",
        "light-0004",
    ]
    for d in devices:
        assert abs(d.lat - 52.37) <= 0.05 and abs(d.lon - 4.89) <= 0.05
        assert d.installed_at.tzinfo is not None and d.installed_at < START
    assert sim.device(devices[3].device_id) is devices[3]


def test_same_seed_same_output_different_seed_different_output() -> None:
    def run(seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
        sim = FleetSimulator(
            n_devices=12, seed=seed, degradation_probability=0.01, degradation_ticks=(20, 40)
        )
        readings, failures = sim.history(300, START, PERIOD)
        return history_frame(readings), failures_frame(failures)

    a_readings, a_failures = run(3)
    b_readings, b_failures = run(3)
    pd.testing.assert_frame_equal(a_readings, b_readings)
    pd.testing.assert_frame_equal(a_failures, b_failures)
    assert len(a_failures) > 0
    c_readings, _ = run(4)
    assert not a_readings["flow"].equals(c_readings["flow"])


def test_step_emits_one_reading_per_device_with_increasing_ts() -> None:
    sim = FleetSimulator(n_devices=8, seed=0, jitter_ms=20.0)
    last: dict[str, datetime] = {}
    for k in range(5):
        ts = START + k * timedelta(milliseconds=100)
        readings, _ = sim.step(ts)
        assert [r.device for r in readings] == sim.devices
        for r in readings:
            assert r.tick == k
            assert r.ts.tzinfo is not None
            assert ts <= r.ts < ts + timedelta(milliseconds=20)
            assert r.device.device_id not in last or r.ts > last[r.device.device_id]
            last[r.device.device_id] = r.ts
    with pytest.raises(ValueError, match="increase"):
        sim.step(START)
    with pytest.raises(ValueError, match="timezone"):
        sim.step(datetime(2030, 1, 1))  # noqa: DTZ001 - the naive datetime is the point


def test_history_is_fast_enough() -> None:
    sim = FleetSimulator(n_devices=100, seed=0)
    began = time.perf_counter()
    readings, _ = sim.history(2000, START, PERIOD)
    assert len(readings) == 200_000
    assert time.perf_counter() - began < 10.0


# --------------------------------------------------------------------------- signals


def test_metrics_are_complete_and_within_spec(busy_run) -> None:
    readings, _, _ = busy_run
    healthy = degrading = 0
    for r in readings:
        spec = ASSET_TYPES[r.device.asset_type]
        assert tuple(r.metrics) == spec.metric_names
        for m in spec.metrics:
            value = r.metrics[m.name]
            assert math.isfinite(value) and m.in_range(value), (r.device.asset_id, m.name, value)
        assert 0.0 <= r.health <= 1.0
        healthy += r.health == 1.0
        degrading += r.health < 1.0
    assert healthy > 0 and degrading > 0.05 * len(readings)


def test_values_are_not_pinned_at_sensor_limits(busy_run) -> None:
    # Clipping to the sensor range is a safety net, not the signal model.
    _, _, frame = busy_run
    for asset_type in SIMULATED_TYPES:
        spec = ASSET_TYPES[asset_type]
        rows = frame[frame["asset_type"] == asset_type]
        for m in spec.metrics:
            at_limit = ((rows[m.name] <= m.low) | (rows[m.name] >= m.high)).mean()
            assert at_limit < 0.001, (asset_type, m.name, at_limit)


def test_devices_have_their_own_baselines() -> None:
    sim = FleetSimulator(n_devices=40, seed=2, degradation_probability=0.0)
    frame = history_frame(sim.history(DAY, START, PERIOD)[0])
    pumps = frame[frame["asset_type"] == "water_pump"].groupby("device_id")["flow"].mean()
    assert pumps.nunique() == len(pumps)
    assert pumps.max() > 1.5 * pumps.min()


def test_channels_are_correlated_and_cycle_daily() -> None:
    sim = FleetSimulator(n_devices=8, seed=5, degradation_probability=0.0)
    frame = history_frame(sim.history(2 * DAY, START, PERIOD)[0])
    pump = frame[frame["device_id"] == sim.devices[0].device_id]
    assert pump["flow"].corr(pump["motor_current"]) > 0.8
    assert pump["flow"].corr(pump["pressure"]) < -0.5  # the pump curve
    assert pump["flow"].max() > 1.4 * pump["flow"].min()  # daily demand cycle
    light = frame[frame["device_id"] == sim.devices[3].device_id]
    dark = light["light_level"] < 40
    assert 0.3 < dark.mean() < 0.7
    assert light.loc[dark, "lamp_current"].median() > 10 * light.loc[~dark, "lamp_current"].median()
    bridge = frame[frame["device_id"] == sim.devices[1].device_id]
    assert bridge["deck_temp"].corr(bridge["strain"]) > 0.3  # thermal strain


def test_benign_transients_are_short() -> None:
    sim = FleetSimulator(
        n_devices=20, seed=11, degradation_probability=0.0, transient_probability=0.02
    )
    frame = history_frame(sim.history(600, START, PERIOD)[0])
    assert (frame["health"] == 1.0).all()
    pumps = frame[frame["asset_type"] == "water_pump"]
    spikes = 0
    for _, dev in pumps.groupby("device_id"):
        vib = dev["vibration_rms"].to_numpy()
        high = vib > np.median(vib) + 2.5
        spikes += int(high.sum())
        runs = np.diff(np.flatnonzero(np.diff(np.r_[0, high.astype(int), 0])))[::2]
        assert runs.size == 0 or runs.max() <= 3
    assert spikes > 0


# --------------------------------------------------------------------------- degradation


def test_failures_complete_and_are_followed_by_repair(busy_run) -> None:
    _, failures, frame = busy_run
    assert len(failures) >= 20
    by_device = {k: g.set_index("tick") for k, g in frame.groupby("device_id")}
    for e in failures:
        assert e.mode in FAILURE_MODES[e.asset_type]
        assert e.degradation_started_tick < e.failed_tick
        assert e.degradation_started_at < e.failed_at
        dev = by_device[e.device_id]
        assert dev.loc[e.failed_tick, "health"] == 0.0
        assert dev.loc[e.failed_tick, "ts"] == e.failed_at
        if e.degradation_started_tick >= 0:
            assert dev.loc[e.degradation_started_tick, "ts"] == e.degradation_started_at
            health = dev.loc[e.degradation_started_tick : e.failed_tick, "health"].to_numpy()
            assert health[0] == 1.0 and np.all(np.diff(health) < 0)
        if e.failed_tick + 1 in dev.index:
            assert dev.loc[e.failed_tick + 1, "health"] == 1.0  # repaired, reporting again


def test_seeded_degradations_start_before_tick_zero() -> None:
    sim = FleetSimulator(
        n_devices=20, seed=4, degradation_probability=0.0, initial_degrading_fraction=0.5
    )
    seeded = sim.degrading
    assert len(seeded) == 10
    assert all(d.started_tick < 0 < d.failing_tick for d in seeded)
    horizon = max(d.failing_tick for d in seeded) + 1
    _, failures = sim.history(horizon, START, PERIOD)
    assert sorted((f.device_id, f.failed_tick) for f in failures) == sorted(
        (d.device_id, d.failing_tick) for d in seeded
    )
    for f in failures:
        # Extrapolated back from tick 0 with the period; only the per-device delay differs.
        expected = START + f.degradation_started_tick * PERIOD
        assert timedelta(0) <= f.degradation_started_at - expected < timedelta(milliseconds=50)
    assert sim.degrading == []


def test_force_degradation() -> None:
    sim = FleetSimulator(n_devices=8, seed=0, degradation_probability=0.0)
    sim.history(10, START, PERIOD)
    pump = sim.devices[0]
    sim.force_degradation(pump.device_id, 25, mode="impeller_clog")
    _, failures = sim.history(30, START + 10 * PERIOD, PERIOD)
    assert [(f.device_id, f.mode, f.degradation_started_tick, f.failed_tick) for f in failures] == [
        (pump.device_id, "impeller_clog", 10, 35)
    ]
    with pytest.raises(ValueError, match="failure mode"):
        sim.force_degradation(pump.device_id, 25, mode="door_motor")
    with pytest.raises(KeyError):
        sim.force_degradation("ffffffffffffffff", 25)


@pytest.mark.parametrize("seed", [0, 1])
def test_degradation_is_subtle_early_and_clear_late(seed: int) -> None:
    # Force every mode once and compare with the same time of the previous day,
    # so the daily cycle cancels out.
    sim = FleetSimulator(
        n_devices=8, seed=seed, degradation_probability=0.0, transient_probability=0.0
    )
    yesterday = history_frame(sim.history(DAY, START, PERIOD)[0])
    for i, d in enumerate(sim.devices):
        sim.force_degradation(d.device_id, DAY, mode=FAILURE_MODES[d.asset_type][i // 4])
    readings, failures = sim.history(DAY + 1, START + DAY * PERIOD, PERIOD)
    assert sorted(f.mode for f in failures) == sorted(KEY_METRICS)
    today = history_frame(readings)
    first, last = slice(0, DAY // 3), slice(DAY - DAY // 5, DAY + 1)
    for f in failures:
        metric, sign = KEY_METRICS[f.mode]
        dev = today.loc[today["device_id"] == f.device_id, metric]
        base = yesterday.loc[yesterday["device_id"] == f.device_id, metric]
        early = sign * (dev.iloc[first].mean() - base.iloc[first].mean())
        late = sign * (dev.iloc[last].mean() - base.iloc[last].mean())
        assert late > 2.0 * base.std(), (f.mode, late, base.std())
        assert abs(early) < 0.1 * late, (f.mode, early, late)


def test_random_degradations_show_in_key_metric_late(busy_run) -> None:
    _, failures, frame = busy_run
    by_device = {k: g.set_index("tick") for k, g in frame.groupby("device_id")}
    shifts: dict[str, list[float]] = {}
    for e in failures:
        metric, sign = KEY_METRICS[e.mode]
        dev = by_device[e.device_id][metric]
        start, end = e.degradation_started_tick, e.failed_tick
        before = dev.loc[start - 150 : start - 1]
        if (
            start < 150
            or len(before) < 100
            or by_device[e.device_id].loc[before.index, "health"].min() < 1
        ):
            continue
        late = dev.loc[end - (end - start) // 5 : end]
        shifts.setdefault(e.mode, []).append(sign * (late.mean() - before.mean()) / before.std())
    assert len(shifts) >= 6
    for mode, z in shifts.items():
        assert np.mean(z) > 1.5, (mode, z)


# --------------------------------------------------------------------------- frames, bytes


def test_reading_bytes_follow_the_wire_contract() -> None:
    sim = FleetSimulator(n_devices=4, seed=0)
    readings, _ = sim.step(START)
    doc = json.loads(reading_bytes(readings[2], 17))
    assert tuple(doc) == READING_FIELDS
    assert doc["device_id"] == readings[2].device.device_id
    assert doc["asset_type"] == "lift"
    assert datetime.fromisoformat(doc["ts"]) == readings[2].ts
    assert doc["metrics"] == readings[2].metrics
    assert doc["source"] == {"kind": "simulator", "seq": 17}
    assert "health" not in json.dumps(doc)


def test_history_frame_and_failures_frame(busy_run) -> None:
    readings, failures, frame = busy_run
    assert list(frame.columns[:6]) == [
        "device_id",
        "asset_id",
        "asset_type",
        "tick",
        "ts",
        "health",
    ]
    assert tuple(frame.columns[6:]) == METRIC_COLUMNS
    assert set(METRIC_COLUMNS) == {n for t in SIMULATED_TYPES for n in ASSET_TYPES[t].metric_names}
    assert len(frame) == len(readings)
    assert str(frame["ts"].dtype) == "datetime64[ns, UTC]"
    lights = frame[frame["asset_type"] == "streetlight"]
    assert lights["flow"].isna().all() and lights["lamp_current"].notna().all()
    assert frame.loc[5, "supply_voltage"] == pytest.approx(
        readings[5].metrics.get("supply_voltage", np.nan), nan_ok=True
    )

    table = failures_frame(failures)
    assert len(table) == len(failures)
    assert list(table.columns) == [
        "device_id",
        "asset_id",
        "asset_type",
        "mode",
        "degradation_started_at",
        "failed_at",
        "degradation_started_tick",
        "failed_tick",
    ]
    assert str(table["failed_at"].dtype) == "datetime64[ns, UTC]"
    empty = failures_frame([])
    assert list(empty.columns) == list(table.columns) and len(empty) == 0


# --------------------------------------------------------------------------- run loop


class FakeClock:
    """Monotonic time that only moves when the loop sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept = 0.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.now += seconds
        self.slept += seconds


def _run(fleet: FleetSimulator, faults: FaultInjector | None, **kw) -> tuple[SimulationStats, list]:
    sent: list[tuple[bytes, bytes]] = []
    fake = FakeClock()
    stats = run_simulation(
        fleet,
        lambda k, v: sent.append((k, v)),
        faults=faults,
        progress=False,
        clock=fake.clock,
        sleep=fake.sleep,
        **kw,
    )
    return stats, sent


def test_run_simulation_paces_and_counts() -> None:
    fleet = FleetSimulator(n_devices=10, seed=0)
    stats, sent = _run(fleet, None, rate=100.0, duration_s=2.0)
    assert stats.ticks == 20  # 100 readings/s over 10 devices = 10 ticks/s
    assert stats.produced == stats.valid == len(sent) == 200
    assert stats.bad_by_reason == {}
    assert stats.elapsed_s == pytest.approx(2.0)
    assert stats.rate == pytest.approx(100.0)
    seqs = [json.loads(v)["source"]["seq"] for _, v in sent]
    assert seqs == list(range(200))
    for key, value in sent:
        assert json.loads(value)["device_id"].encode() == key


def test_run_simulation_with_faults_keeps_the_invariant() -> None:
    fleet = FleetSimulator(n_devices=20, seed=1)
    stats, sent = _run(fleet, FaultInjector(rate=0.3, seed=2), rate=200.0, duration_s=5.0)
    assert stats.ticks == 50
    assert stats.produced == len(sent) == stats.valid + stats.bad + stats.maintenance
    assert set(stats.bad_by_reason) == set(ALL_KINDS)
    # Only duplicates and maintenance events add messages: the rest replaces a reading.
    assert stats.produced == 50 * 20 + stats.bad_by_reason["duplicate"] + stats.maintenance
    assert stats.valid == 50 * 20 - (stats.bad - stats.bad_by_reason["duplicate"])
    fleet_ids = {d.device_id.encode() for d in fleet.devices}
    assert {k for k, _ in sent} <= fleet_ids


def test_run_simulation_reports_failures_and_stamps_wall_clock() -> None:
    fleet = FleetSimulator(n_devices=4, seed=0, degradation_probability=0.0)
    fleet.force_degradation(fleet.devices[1].device_id, 5, mode="corrosion")
    seen: list[FailureEvent] = []
    frozen = datetime(2026, 6, 1, 12, tzinfo=UTC)
    stats, sent = _run(
        fleet,
        None,
        rate=40.0,
        duration_s=1.0,
        on_failure=seen.append,
        wallclock=lambda: frozen,  # a stuck wall clock must not break the simulator
    )
    assert stats.ticks == 10
    assert seen == stats.failures and len(seen) == 1
    assert seen[0].failed_tick == 5 and seen[0].mode == "corrosion"
    stamps = [datetime.fromisoformat(json.loads(v)["ts"]) for _, v in sent]
    assert all(frozen <= s < frozen + timedelta(seconds=1) for s in stamps)
    # The repair: one maintenance event right before the device's next reading.
    device = fleet.devices[1]
    bodies = [json.loads(v) for _, v in sent]
    kinds = [b.get("type", "reading") for b in bodies]
    assert kinds.count("maintenance") == stats.maintenance == 1
    at = kinds.index("maintenance")
    event, after = bodies[at], bodies[at + 1]
    assert sent[at][0] == device.device_id.encode()
    assert (event["device_id"], event["asset_id"], event["asset_type"]) == (
        device.device_id,
        device.asset_id,
        device.asset_type,
    )
    assert after["device_id"] == device.device_id and after["ts"] == event["ts"]
    # ... and that reading is the device's tick-6 reading, the first after the tick-5 failure.
    device_readings = [b for b in bodies if b["device_id"] == device.device_id and "metrics" in b]
    assert device_readings.index(after) == 6
    assert stats.produced == len(sent) == stats.valid + 1


def test_history_marks_the_first_reading_after_each_repair() -> None:
    fleet = FleetSimulator(n_devices=4, seed=0, degradation_probability=0.0)
    fleet.force_degradation(fleet.devices[2].device_id, 3)
    readings, failures = fleet.history(10, datetime(2026, 1, 1, tzinfo=UTC), timedelta(minutes=1))
    assert [f.failed_tick for f in failures] == [3]
    repaired = [(r.device.device_id, r.tick) for r in readings if r.repaired]
    assert repaired == [(fleet.devices[2].device_id, 4)]


def test_run_simulation_stops_early() -> None:
    fleet = FleetSimulator(n_devices=5, seed=0)
    calls = iter(range(1000))
    stats, sent = _run(fleet, None, rate=5.0, duration_s=60.0, should_stop=lambda: next(calls) >= 3)
    assert 0 < stats.ticks < 60
    assert stats.produced == len(sent) == 5 * stats.ticks


@pytest.mark.stack
def test_reading_producer_delivers_in_order_with_safe_settings(conn, isolated) -> None:
    """The real client against the real broker: settings, ordering and counts."""
    from streams.topics import READINGS, ensure_topics
    from tests.pipeline_helpers import consume

    ensure_topics(conn.kafka, isolated)
    topic = isolated.topic(READINGS)
    values = [f'{{"seq":{i}}}'.encode() for i in range(20)]
    with ReadingProducer(conn.kafka, topic, compression_type="gzip") as out:
        config = out._producer.config
        for value in values:
            out.send(b"70b3d57ed0000001", value)
    assert config["acks"] in ("all", -1)  # kafka-python normalises "all" to -1
    assert config["linger_ms"] == 5 and config["batch_size"] >= 64 * 1024
    assert config["retries"] > 0 and config["enable_idempotence"] is False
    assert config["max_in_flight_requests_per_connection"] == 1  # order across retries
    assert config["compression_type"] == "gzip"
    assert (out.sent, out.failed) == (20, 0)

    received = [
        (m.key, m.value) for m in consume(conn, topic, until=len(values), timeout_ms=10_000)
    ]
    # One key, one partition: the device's readings arrive in the order sent.
    assert received == [(b"70b3d57ed0000001", v) for v in values]
