"""A district's detector survives being saved and loaded: exact, idempotent, crash-consistent."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pytest

from ingest.network_sim import NetworkSimOptions, messages, parse_leak, simulate
from networks.assets import network_spec
from streams.leak_state import LeakStateStore, decode, encode
from streams.leaks import build_district
from tests.networks.layouts import district_layout

START = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def hanoi(leakdb_dir):
    """17 days of Hanoi with a leak at node 21 from day 15, as (device, ts, value) readings."""
    inp = leakdb_dir / "Hanoi_CMH.inp"
    spec = network_spec(inp, "hanoi", origin=(21.0285, 105.8542))
    options = NetworkSimOptions(days=17, leaks=(parse_leak("21:0.05:360"),), seed=2)
    readings = []
    for _k, key, raw in messages(spec, simulate(inp, spec, options), START):
        reading = json.loads(raw)
        value = next(iter(reading["metrics"].values()))
        readings.append((key.decode(), datetime.fromisoformat(reading["ts"]), value))
    return district_layout(spec), readings


def _feed(district, readings):
    return [r for reading in readings for r in district.add(*reading)]


def _same(a, b) -> bool:
    """Step results equal to the last bit (NaN equal to NaN)."""
    return len(a) == len(b) and all(
        x.ts == y.ts
        and np.array_equal([x.statistic], [y.statistic], equal_nan=True)
        and x.alarm == y.alarm
        and x.candidates == y.candidates
        for x, y in zip(a, b, strict=True)
    )


def _same_detector(a: dict, b: dict) -> list[str]:
    """The detector-state fields that differ (NaN equal to NaN, None only to None)."""
    return [
        name
        for name, value in a.items()
        if (value is None) != (b[name] is None)
        or (
            value is not None
            and not np.array_equal(
                np.asarray(b[name], float), np.asarray(value, float), equal_nan=True
            )
        )
    ]


def test_codec_is_exact_and_refuses_what_it_did_not_write():
    values = {
        "a": np.array([[1.5, np.nan], [-0.0, 1e-300]]),
        "n": np.arange(3),
        "flag": np.array([True, False]),
        "x": 0.1 + 0.2,
        "none": None,
        "pending": {"2026-01-01T00:00:00+00:00": {"dev": 3.25}},
    }
    back = decode(encode(values))
    for name in ("a", "n", "flag"):
        assert back[name].dtype == values[name].dtype
        assert np.array_equal(back[name], values[name], equal_nan=True)
    assert back["x"] == 0.1 + 0.2 and back["none"] is None and back["pending"] == values["pending"]
    raw = encode(values)
    for bad in (b"", b"CWL1", raw[:-1], raw + b"x", b"XXXX" + raw[4:], raw[:8] + b"[" + raw[9:]):
        with pytest.raises(ValueError):
            decode(bad)


def test_restored_district_continues_bit_for_bit(hanoi):
    layout, readings = hanoi
    half = (
        len(readings) * 12 // 17 + 7
    )  # day 12, inside a step: the detector is learning its references
    straight = build_district("hanoi.all", layout)
    expected = _feed(straight, readings)
    assert any(r.alarm for r in expected)  # the leak is found: the comparison is not empty

    first = build_district("hanoi.all", layout)
    before = _feed(first, readings[:half])
    # Mid-step: the partial step must travel with the state.
    assert first.pending
    table: dict[bytes, bytes] = {}
    LeakStateStore(table).save("hanoi.all", first.to_state())
    second = build_district("hanoi.all", layout)
    second.restore(LeakStateStore(table).load("hanoi.all"))
    assert _same(before + _feed(second, readings[half:]), expected)


def test_replayed_readings_change_nothing(hanoi):
    layout, readings = hanoi
    cut = len(readings) * 10 // 17 + 7  # inside a step
    district = build_district("hanoi.all", layout)
    _feed(district, readings[:cut])
    saved = district.to_state()
    # The same readings again, as after a restart from an older committed offset.
    assert _feed(district, readings[cut - 500 : cut]) == []
    again = district.to_state()
    assert district.late + district.repeated == 500
    assert _same_detector(saved["detector"], again["detector"]) == []
    assert again["pending"] == saved["pending"] and again["done_ts"] == saved["done_ts"]


def test_each_step_writes_only_what_changed_and_a_torn_save_loads_the_last_whole_one(hanoi):
    layout, readings = hanoi
    district = build_district("hanoi.all", layout)
    table: dict[bytes, bytes] = {}
    store = LeakStateStore(table)
    sizes = []
    for reading in readings[: len(readings) * 9 // 17]:
        if district.add(*reading):
            before = dict(table)
            store.save("hanoi.all", district.to_state())
            sizes.append(sum(len(v) for k, v in table.items() if before.get(k) != v))
    whole = sum(len(v) for v in table.values())
    assert whole > 300_000  # the references and the day window
    # A step writes its two rows, the covariance and the small arrays: ~20 kB of ~390.
    assert max(sizes[-48:]) < 0.08 * whole
    # A crash after some parts of the next save but before its core: the old state loads,
    # and the parts nobody refers to are swept.
    saved = district.to_state()
    torn = dict(table)
    shadow: dict[bytes, bytes] = dict(table)
    _feed(district, readings[len(readings) * 9 // 17 : len(readings) * 9 // 17 + 200])
    LeakStateStore(shadow).save("hanoi.all", district.to_state())
    new_parts = [k for k in shadow if k not in table and k != b"hanoi.all"]
    assert new_parts
    torn.update({k: shadow[k] for k in new_parts})
    loaded = LeakStateStore(torn).load("hanoi.all")
    assert loaded["done_ts"] == saved["done_ts"]
    assert _same_detector(saved["detector"], loaded["detector"]) == []
    assert not any(k in torn for k in new_parts)


def test_a_state_of_another_configuration_is_refused(hanoi, leakdb_dir):
    from networks.detector import DetectorConfig

    layout, readings = hanoi
    district = build_district("hanoi.all", layout)
    _feed(district, readings[:3000])
    other = build_district("hanoi.all", layout, DetectorConfig(threshold=9.0))
    with pytest.raises(ValueError):
        other.restore(district.to_state())
    assert other.done_ts is None and other.detector.to_state()["t"] == 0


def test_steps_wait_for_a_source_days_behind_and_not_for_a_lost_reading(hanoi):
    from streams.pipeline import partition_of

    layout, readings = hanoi
    days = readings[: 4 * 48 * 32]
    part = {d: partition_of(d.encode(), 2) for d, _, _ in days}
    assert set(part.values()) == {0, 1}
    # Partition 1 runs three days behind partition 0, as after a restart with a backlog.
    behind = 3 * 48
    order = sorted(
        range(len(days)),
        key=lambda i: (i // 32 + (behind if part[days[i][0]] else 0), part[days[i][0]], i),
    )
    lost = 2 * 48 * 32 + 5  # one reading of day 2 never arrives
    district = build_district("hanoi.all", layout)
    district.lateness = 10**6  # only the sources' progress can decide the incomplete step
    results = [r for i in order if i != lost for r in district.add(*days[i], part[days[i][0]])]
    assert district.incomplete == 1 and district.late == 0
    # The step with the lost reading was decided once its source moved on: none is blocked.
    assert len(results) == 4 * 48 - 1
