import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.records import Maintenance, Reading
from core.vocabulary import WORKER_REJECTIONS as REASONS
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
    from core.wire import encode_maintenance

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
    from core.records import Maintenance

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


def bounded(raw: bytes):
    return validate_reading(
        raw, DEVICES.get, now=NOW, max_skew=timedelta(minutes=5), max_age=timedelta(days=7)
    )


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (message(source={"note": "a\u0000b"}), "bad_text"),
        (message(source={"note": "\ud800"}), "bad_text"),
        (message(source={"\u0000": 1}), "bad_text"),
        (message(device_id="dev\u00001"), "bad_text"),
        (message(device_id="d" * 10_000), "too_large"),
        (message(source={"x": "y" * 5000}), "too_large"),
        (message(source={"n": float("nan")}), "nan_value"),
        (message(source=json.loads("[" * 50 + "]" * 50)), "schema"),
        (message(source={"a": {"b": {"c": {"d": {"e": {"f": {"g": 1}}}}}}}), "too_large"),
        (message(source={str(i): i for i in range(600)}), "too_large"),
        (message(metrics={"vibration_rms": 10**400}), "out_of_range"),
        (b'{"metrics": {"vibration_rms": 1' + b"0" * 5000 + b"}}", "too_large"),
        (b"[" * 100_000 + b"]" * 100_000, "too_large"),
        (message(ts=(NOW - timedelta(days=8)).isoformat()), "too_old"),
        (message(ts="0001-01-01T00:00:00+14:00"), "too_old"),
        (message(ts="9999-12-31T23:59:59-14:00"), "clock_skew"),
        (message(source={"blob": "x" * 100}) + b" " * 70_000, "too_large"),
    ],
)
def test_hostile_messages_get_a_reason_never_an_exception(raw, reason):
    result = bounded(raw)
    assert isinstance(result, Rejection), result
    assert result.reason == reason, result.detail


def test_a_backfill_without_age_limit_takes_old_readings():
    old = message(ts=(NOW - timedelta(days=400)).isoformat())
    assert bounded(old).reason == "too_old"
    assert isinstance(check(old), Reading)  # max_age=None: no limit


json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    overrides=st.dictionaries(
        st.sampled_from(["device_id", "asset_id", "asset_type", "ts", "metrics", "source", "type"]),
        json_values,
        max_size=3,
    )
)
def test_validation_never_raises_on_any_json(overrides):
    raw = json.dumps(message_dict() | overrides).encode()
    result = bounded(raw)
    assert isinstance(result, Rejection | Reading | Maintenance)
    if isinstance(result, Rejection):
        assert result.reason in REASONS


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=300))
def test_validation_never_raises_on_any_bytes(raw):
    result = bounded(raw)
    assert isinstance(result, Rejection) and result.reason in REASONS


def message_dict() -> dict:
    return json.loads(message())


_NAMES = ("vibration_rms", "bearing_temp", "motor_current", "pressure", "flow", "lux", "")
_VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1e6, -1e6, 1e308, 2.0, 40.0]),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.booleans(),
    st.none(),
    st.text(max_size=3),
)
_SOURCE_VALUES = st.one_of(
    st.text(max_size=70),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
)


@settings(max_examples=400, deadline=None)
@given(
    st.dictionaries(st.sampled_from(_NAMES), _VALUES, max_size=6),
    st.one_of(st.none(), st.dictionaries(st.text(max_size=70), _SOURCE_VALUES, max_size=70)),
)
def test_fast_paths_decide_exactly_as_the_full_checks(metrics, source):
    # The plain-input fast paths (streams.validation._plainly_valid, core.wire._plainly_flat)
    # only ever say "valid"; with them switched off every message gets the same outcome.
    import core.wire
    import streams.validation

    raw = json.dumps(
        {**json.loads(message()), "metrics": metrics, "source": source}, allow_nan=True
    ).encode()
    fast = check(raw)
    saved = streams.validation._plainly_valid, core.wire._plainly_flat
    streams.validation._plainly_valid = core.wire._plainly_flat = lambda *a: False
    try:
        slow = check(raw)
    finally:
        streams.validation._plainly_valid, core.wire._plainly_flat = saved
    assert type(fast) is type(slow)
    assert fast == slow
    if isinstance(fast, Reading):
        assert list(fast.metrics.items()) == list(slow.metrics.items())
        assert all(type(v) is float for v in fast.metrics.values())
