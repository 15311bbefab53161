"""The worker's leak detection step by step (no broker): the benchmark's detector on a stream."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from core.records import Reading
from core.wire import Rejection
from ingest.network_sim import NetworkSimOptions, messages, parse_leak, simulate
from networks.assets import network_spec
from streams.leaks import Forwarded, build_district, forward_value, read_forwarded, result_rows
from tests.networks.layouts import district_layout


def test_district_stream_alarms_after_the_leak_and_names_the_node(leakdb_dir):
    inp = leakdb_dir / "Hanoi_CMH.inp"
    spec = network_spec(inp, "hanoi", origin=(21.0285, 105.8542))
    district = build_district("hanoi.all", district_layout(spec))
    assert district is not None
    leak_day = 20
    sensors = simulate(
        inp,
        spec,
        NetworkSimOptions(days=23, leaks=(parse_leak(f"21:0.05:{leak_day * 24}"),), seed=2),
    )
    results = []
    start = datetime(2026, 1, 1, tzinfo=UTC)
    # Two source partitions merged with one running two steps behind the other, as
    # they reach the district after group_by: steps interleave, none is lost.
    stream = list(messages(spec, sensors, start))
    ahead = [m for m in stream if hash(m[1]) % 2 == 0]
    behind = [m for m in stream if hash(m[1]) % 2 == 1]
    merged = sorted(
        [(k, 0, key, raw) for k, key, raw in ahead]
        + [(k + 2, 1, key, raw) for k, key, raw in behind],
        key=lambda m: (m[0], m[1]),
    )
    for _k, _p, _key, raw in merged:
        reading = json.loads(raw)
        row = Reading(
            ts=datetime.fromisoformat(reading["ts"]),
            device_id=reading["device_id"],
            asset_id=reading["asset_id"],
            asset_type=reading["asset_type"],
            metrics=reading["metrics"],
            source={},
        )
        forwarded = read_forwarded(forward_value(row), b"hanoi.all")  # the district topic
        assert isinstance(forwarded, Forwarded) and forwarded.asset_id == "hanoi.all"
        results += district.add(forwarded.device_id, forwarded.ts, forwarded.value)
    assert district.incomplete == 0 and district.late == 0
    assert len(results) == len(sensors.inflow)  # a step is decided once all its sensors are in
    before = [r for r in results if (r.ts - start).days < leak_day]
    after = [r for r in results if (r.ts - start).days >= leak_day]
    assert not any(r.alarm for r in before)
    assert any(r.alarm for r in after)
    first = next(r for r in after if r.alarm)
    assert "21" in [node for node, *_ in first.candidates[:3]]
    score, candidates = result_rows(district, first)
    assert score.asset_id == "hanoi.all" and score.risk >= 0.5 and score.threshold == 0.5
    assert candidates[0][2] == 1 and candidates[0][5] is not None  # rank 1 with a latitude


def test_unusable_forwarded_values_are_refused_with_a_reason():
    good = b'{"a":"x","d":"y","t":"2026-01-01T00:00:00+00:00","v":1.5}'
    assert read_forwarded(good, b"x") == Forwarded("x", "y", datetime(2026, 1, 1, tzinfo=UTC), 1.5)
    cases = {
        None: "schema",
        b"": "schema",
        b"{": "malformed_json",
        b"\xff\xfe": "malformed_json",
        b"[1]": "schema",
        b'{"a": "x"}': "schema",
        b'{"a":"x","d":"y","t":"nope","v":1}': "schema",
        b'{"a":"x","d":"y","t":"2026-01-01T00:00:00","v":1}': "schema",  # no timezone
        b'{"a":"x","d":"y","t":"2026-01-01T00:00:00+00:00","v":true}': "schema",
        b'{"a":"x","d":"y","t":"2026-01-01T00:00:00+00:00","v":NaN}': "nan_value",
        b'{"a":"x","d":"y","t":"2026-01-01T00:00:00+00:00","v":1e999}': "nan_value",
        b'{"a":"x","d":"y","t":"2026-01-01T00:00:00+00:00","v":'
        + b"9" * 400
        + b"}": "out_of_range",
        b" " * 2000: "too_large",
    }
    for raw, reason in cases.items():
        refused = read_forwarded(raw, b"x")
        assert isinstance(refused, Rejection) and refused.reason == reason, (raw, refused)
    assert read_forwarded(good, b"other").reason == "asset_mismatch"


def test_a_subset_of_pressure_sensors_is_watched_and_ranks_every_junction(leakdb_dir):
    inp = leakdb_dir / "Hanoi_CMH.inp"
    spec = network_spec(inp, "hanoi", origin=(21.0285, 105.8542), pressure_nodes=("12", "21"))
    district = build_district("hanoi.all", district_layout(spec))
    assert district is not None and district.junctions == ("12", "21")
    assert len(district.detector.model.candidates) == spec.junctions == 31
    assert all(district.coords[node][0] is not None for node in district.detector.model.candidates)


def test_unsupported_layout_is_skipped(leakdb_dir):
    spec = network_spec(leakdb_dir / "Hanoi_CMH.inp", "hanoi")
    layout = district_layout(spec)
    pressure_only = [s for s in layout["sensors"] if s[3] == "pressure"]
    assert build_district("hanoi.all", {**layout, "sensors": pressure_only}) is None  # no inflow
    flows = [s for s in layout["sensors"] if s[3] == "flow"]
    assert build_district("hanoi.all", {**layout, "sensors": flows}) is None  # no pressure
    layout["inp_file"] = "/nonexistent.inp"
    assert build_district("hanoi.all", layout) is None


def test_net1_district_reads_its_tank_level_with_net1s_configuration(leakdb_dir):
    inp = leakdb_dir / "Net1.inp"
    spec = network_spec(inp, "net1")
    district = build_district("net1.all", {**district_layout(spec), "network_id": "net1"})
    assert district is not None and len(district.level_devices) == 1
    assert district.detector.config.threshold == 4.0 and district.detector.config.use_inflow
    sensors = simulate(inp, spec, NetworkSimOptions(days=1, seed=3))
    results = []
    for _k, key, raw in messages(spec, sensors, datetime(2026, 1, 1, tzinfo=UTC)):
        reading = json.loads(raw)
        results += district.add(
            key.decode(),
            datetime.fromisoformat(reading["ts"]),
            next(iter(reading["metrics"].values())),
        )
    assert len(results) == 48 and district.incomplete == 0
