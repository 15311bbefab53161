import json
from datetime import UTC, datetime, timedelta

import pytest

from streams.records import Reading
from streams.validation import Rejection, validate_reading

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
DEVICES = {"dev1": ("pump-1", "water_pump")}


def message(**overrides) -> bytes:
    body = {
        "device_id": "dev1",
        "asset_id": "pump-1",
        "asset_type": "water_pump",
        "ts": (NOW - timedelta(seconds=1)).isoformat(),
        "metrics": {"vibration_rms": 2.0, "bearing_temp": 40.0},
        "source": {"kind": "test"},
    }
    body.update(overrides)
    return json.dumps(body).encode()


def check(raw: bytes):
    return validate_reading(raw, DEVICES.get, now=NOW, max_skew=timedelta(minutes=5))


def test_valid_reading_becomes_a_record():
    reading = check(message())
    assert isinstance(reading, Reading)
    assert reading.metrics == {"vibration_rms": 2.0, "bearing_temp": 40.0}
    assert reading.ts.tzinfo is not None


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "malformed_json"),
        (b"\xff\xfe\x00", "malformed_json"),
        (b"", "schema"),
        (b"[1, 2]", "schema"),
        (message(metrics=[1, 2]), "schema"),
        (message(ts="yesterday"), "schema"),
        (message(ts="2026-11-24T11:00:00"), "schema"),
        (message(metrics={}), "schema"),
        (message(metrics={"vibration_rms": "high"}), "schema"),
        (message(asset_type="teapot"), "unknown_asset_type"),
        (message(device_id="nobody"), "unknown_device"),
        (message(asset_id="pump-2"), "asset_mismatch"),
        (message(metrics={"lux": 1.0}), "unknown_metric"),
        (message(metrics={"vibration_rms": float("nan")}), "nan_value"),
        (message(metrics={"vibration_rms": float("inf")}), "nan_value"),
        (message(metrics={"vibration_rms": 1e6}), "out_of_range"),
        (message(ts=(NOW + timedelta(hours=2)).isoformat()), "clock_skew"),
    ],
)
def test_bad_input_is_rejected_with_its_reason(raw, reason):
    result = check(raw)
    assert isinstance(result, Rejection)
    assert result.reason == reason
    assert result.detail


def maintenance(**overrides) -> bytes:
    from citywatch.readings import encode_maintenance

    fields = {
        "device_id": "dev1",
        "asset_id": "pump-1",
        "asset_type": "water_pump",
        "ts": NOW - timedelta(seconds=1),
        "source": {"kind": "test", "reason": "repair"},
    }
    fields.update(overrides)
    return encode_maintenance(**fields)


def test_maintenance_event_becomes_a_maintenance_record():
    from streams.records import Maintenance

    event = check(maintenance())
    assert isinstance(event, Maintenance)
    assert (event.device_id, event.asset_id, event.asset_type) == ("dev1", "pump-1", "water_pump")
    assert event.ts == NOW - timedelta(seconds=1)
    assert event.source == {"kind": "test", "reason": "repair"}
    # "type": "reading" is an explicit plain reading.
    assert isinstance(check(message(type="reading")), Reading)


def _with(raw: bytes, **changes) -> bytes:
    body = json.loads(raw)
    body.update(changes)
    return json.dumps({k: v for k, v in body.items() if v is not None}).encode()


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (maintenance(device_id="nobody"), "unknown_device"),
        (maintenance(asset_id="pump-2"), "asset_mismatch"),
        (maintenance(asset_type="teapot"), "unknown_asset_type"),
        (maintenance(ts=NOW + timedelta(hours=2)), "clock_skew"),
        (_with(maintenance(), ts="yesterday"), "schema"),
        (_with(maintenance(), ts="2026-11-24T11:00:00"), "schema"),
        (_with(maintenance(), asset_id=None), "schema"),
        (_with(maintenance(), device_id=7), "schema"),
        (message(type="inspection"), "schema"),
    ],
)
def test_bad_maintenance_events_are_rejected_with_the_reading_reasons(raw, reason):
    result = check(raw)
    assert isinstance(result, Rejection)
    assert result.reason == reason, result.detail


def test_maintenance_needs_a_timezone_aware_ts():
    with pytest.raises(ValueError, match="timezone-aware"):
        maintenance(ts=datetime(2026, 1, 1))  # noqa: DTZ001 (the point of the test)
