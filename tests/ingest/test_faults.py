"""The fault injector: every kind is really bad, and bad for the advertised reason."""

from __future__ import annotations

import json
import math
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from core.assets import ASSET_TYPES
from ingest.faults import ALL_KINDS, FaultInjector
from ingest.sim_records import SimReading, reading_bytes
from ingest.simulator import FleetSimulator

START = datetime(2026, 3, 2, tzinfo=UTC)


@pytest.fixture(scope="module")
def fleet_and_messages() -> tuple[FleetSimulator, list[tuple[bytes, SimReading]]]:
    sim = FleetSimulator(n_devices=12, seed=9)
    readings, _ = sim.history(40, START, timedelta(minutes=5))
    return sim, [(reading_bytes(r, seq), r) for seq, r in enumerate(readings)]


def _corrupt_all(kind: str, messages, seed: int = 0) -> list[tuple[bytes, bytes, SimReading]]:
    injector = FaultInjector(rate=1.0, seed=seed, kinds=(kind,))
    out = []
    for raw, reading in messages:
        result = injector.maybe_corrupt(raw, reading)
        if kind == "duplicate":
            assert result == [(raw, None), (raw, "duplicate")]
            continue
        assert len(result) == 1
        bad, reason = result[0]
        assert reason == kind
        assert bad != raw
        out.append((raw, bad, reading))
    return out


def test_kinds_are_the_validator_contract() -> None:
    assert ALL_KINDS == (
        "malformed_json",
        "schema",
        "nan_value",
        "out_of_range",
        "unknown_device",
        "clock_skew",
        "duplicate",
    )


def test_malformed_json_does_not_parse(fleet_and_messages) -> None:
    _, messages = fleet_and_messages
    for _, bad, _ in _corrupt_all("malformed_json", messages):
        assert bad  # empty messages are a schema problem, not a JSON one
        with pytest.raises(ValueError):  # JSONDecodeError or UnicodeDecodeError
            json.loads(bad)


def _schema_problem(doc: object) -> str | None:
    if not isinstance(doc, dict):
        return "not an object"
    for name, kind in (
        ("device_id", str),
        ("asset_id", str),
        ("asset_type", str),
        ("ts", str),
        ("metrics", dict),
    ):
        if not isinstance(doc.get(name), kind):
            return f"{name} missing or not {kind.__name__}"
    try:
        datetime.fromisoformat(doc["ts"])
    except ValueError:
        return "ts not ISO 8601"
    if not doc["metrics"]:
        return "no metrics"
    return None


def test_schema_faults_parse_but_break_the_schema(fleet_and_messages) -> None:
    _, messages = fleet_and_messages
    problems = Counter()
    for _, bad, _ in _corrupt_all("schema", messages):
        problem = _schema_problem(json.loads(bad))
        assert problem is not None
        problems[problem.split()[0]] += 1
    assert len(problems) >= 5  # several different ways of being wrong


def test_nan_value_is_a_json_nan_token(fleet_and_messages) -> None:
    _, messages = fleet_and_messages
    for raw, bad, _ in _corrupt_all("nan_value", messages):
        assert b"NaN" in bad
        before, after = json.loads(raw), json.loads(bad)
        nans = [k for k, v in after["metrics"].items() if math.isnan(v)]
        assert len(nans) == 1
        after["metrics"][nans[0]] = before["metrics"][nans[0]]
        assert after == before  # nothing else changed


def test_out_of_range_is_far_outside_the_spec(fleet_and_messages) -> None:
    _, messages = fleet_and_messages
    for _, bad, reading in _corrupt_all("out_of_range", messages):
        spec = ASSET_TYPES[reading.device.asset_type]
        metrics = json.loads(bad)["metrics"]
        outside = [m for m in spec.metrics if not m.in_range(metrics[m.name])]
        assert len(outside) == 1
        m = outside[0]
        assert math.isfinite(metrics[m.name])
        assert min(abs(metrics[m.name] - m.low), abs(metrics[m.name] - m.high)) >= m.high - m.low


def test_unknown_device_is_not_in_the_fleet(fleet_and_messages) -> None:
    sim, messages = fleet_and_messages
    fleet_ids = {d.device_id for d in sim.devices}
    for raw, bad, _ in _corrupt_all("unknown_device", messages):
        doc = json.loads(bad)
        assert doc["device_id"] not in fleet_ids
        assert len(doc["device_id"]) == 16 and int(doc["device_id"], 16) >= 0
        doc["device_id"] = json.loads(raw)["device_id"]
        assert doc == json.loads(raw)


def test_clock_skew_is_at_least_a_day_ahead(fleet_and_messages) -> None:
    _, messages = fleet_and_messages
    for _, bad, reading in _corrupt_all("clock_skew", messages):
        ts = datetime.fromisoformat(json.loads(bad)["ts"])
        assert ts.tzinfo is not None
        assert ts - reading.ts >= timedelta(days=1)


def test_duplicate_repeats_the_valid_bytes(fleet_and_messages) -> None:
    _, messages = fleet_and_messages
    assert _corrupt_all("duplicate", messages) == []  # the checks are inside


def test_rate_controls_how_often(fleet_and_messages) -> None:
    _, messages = fleet_and_messages
    raw, reading = messages[0]
    assert all(
        FaultInjector(rate=0.0).maybe_corrupt(raw, reading) == [(raw, None)] for _ in range(200)
    )
    injector = FaultInjector(rate=0.2, seed=1)
    bad = sum(
        any(reason is not None for _, reason in injector.maybe_corrupt(raw, reading))
        for _ in range(5000)
    )
    assert 0.17 < bad / 5000 < 0.23


def test_same_seed_same_faults(fleet_and_messages) -> None:
    _, messages = fleet_and_messages

    def run(seed: int) -> list:
        injector = FaultInjector(rate=0.5, seed=seed)
        return [injector.maybe_corrupt(raw, r) for raw, r in messages]

    assert run(3) == run(3)
    assert run(3) != run(4)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        FaultInjector(rate=1.5)
    with pytest.raises(ValueError):
        FaultInjector(rate=0.1, kinds=("gremlins",))
    with pytest.raises(ValueError):
        FaultInjector(rate=0.1, kinds=())


def test_the_worker_validator_agrees(fleet_and_messages) -> None:
    """Cross-check with ``streams.validation``: the reason names are a shared contract."""
    validation = pytest.importorskip("streams.validation")
    sim, messages = fleet_and_messages
    registry = {d.device_id: (d.asset_id, d.asset_type) for d in sim.devices}
    now = messages[-1][1].ts + timedelta(seconds=1)
    injector = FaultInjector(rate=0.5, seed=5)
    seen = Counter()
    for raw, reading in messages:
        for value, expected in injector.maybe_corrupt(raw, reading):
            result = validation.validate_reading(value, registry.get, now=now)
            got = getattr(result, "reason", None)
            # Duplicates are caught by the worker's per-device state, not by validation.
            assert got == (None if expected == "duplicate" else expected), (expected, result)
            seen[expected] += 1
    assert set(seen) == {*ALL_KINDS, None}
