"""The worker's packed device state: exact round trips and spec-change detection."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from models.feature_spec import FeatureSpec
from models.features import DeviceFeatureState
from streams.state import (
    DeviceState,
    StateCache,
    decode_offsets,
    decode_state,
    encode_state,
    spec_fingerprint,
)

SPEC = FeatureSpec(metrics=("a", "b"), window=5, extra_windows=(12,), baseline_warmup=4)

values = st.one_of(
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
    st.just(math.nan),
)


def same(x: list[float], y: list[float]) -> bool:
    return all(p == q or (math.isnan(p) and math.isnan(q)) for p, q in zip(x, y, strict=True))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(values, values), min_size=0, max_size=40), st.tuples(values, values))
def test_restored_state_computes_identical_features(history, next_values):
    features = DeviceFeatureState(SPEC)
    for a, b in history:
        features.update({"a": a, "b": b})
    ts = datetime(2026, 11, 24, 21, 0, 0, 123456, tzinfo=UTC)
    fingerprint = spec_fingerprint(SPEC)
    reset_ts = datetime(2026, 11, 24, 20, 0, tzinfo=UTC)
    packed = encode_state(DeviceState(41, ts, features, 3, reset_ts, True), fingerprint)

    restored = decode_state(packed, SPEC, fingerprint)
    assert restored is not None
    assert (restored.last_offset, restored.last_ts, restored.last_partition) == (41, ts, 3)
    assert (restored.reset_ts, restored.reset_pending) == (reset_ts, True)
    assert restored.features.to_dict() == features.to_dict()
    row = {"a": next_values[0], "b": next_values[1]}
    assert same(features.update(row), restored.features.update(row))


def test_other_feature_spec_discards_features_but_keeps_offsets():
    features = DeviceFeatureState(SPEC)
    features.update({"a": 1.0, "b": 2.0})
    packed = encode_state(DeviceState(7, None, features), spec_fingerprint(SPEC))
    other = FeatureSpec(metrics=("a", "b"), window=6)
    assert spec_fingerprint(other) != spec_fingerprint(SPEC)
    assert decode_state(packed, other, spec_fingerprint(other)) is None
    marks = decode_offsets(packed)
    assert (marks.last_offset, marks.last_ts, marks.last_partition) == (7, None, -1)
    assert (marks.reset_ts, marks.reset_pending) == (None, False)


def test_cache_hits_only_for_the_bytes_it_wrote():
    cache = StateCache()
    state = DeviceState(1, None, DeviceFeatureState(SPEC))
    packed = encode_state(state, spec_fingerprint(SPEC))
    cache.put(b"dev", packed, state)
    assert cache.get(b"dev", packed) is state
    # The RocksDB store returns a new bytes object on every read: equal bytes still hit.
    assert cache.get(b"dev", bytes(bytearray(packed))) is state
    # Another worker moved the device on while it was away: other bytes miss.
    moved = encode_state(DeviceState(2, None, DeviceFeatureState(SPEC)), spec_fingerprint(SPEC))
    assert cache.get(b"dev", moved) is None
    assert cache.get(b"dev", None) is None
    cache.clear()
    assert cache.get(b"dev", packed) is None


def _old_encode_state(state: DeviceState, fingerprint: bytes) -> bytes:
    # encode_state before DeviceFeatureState.packed_fields: generic over to_dict()'s
    # metrics lists. The reference the fast packer must equal byte for byte.
    from array import array

    from streams.state import _HEADER, _MAGIC, _micros

    snapshot = state.features.to_dict()
    layout = array("i")
    numbers = array("d")
    for fields in snapshot["metrics"]:
        layout.append(len(fields))
        for value in fields:
            if isinstance(value, list):
                layout.append(len(value) + 1)
                numbers.extend(value)
            elif value is None:
                layout.append(-1)
            else:
                layout.append(0)
                numbers.append(value)
    header = _HEADER.pack(
        _MAGIC,
        fingerprint,
        state.last_offset,
        state.last_partition,
        snapshot["n"],
        _micros(state.last_ts),
        _micros(state.reset_ts),
        state.reset_pending,
        len(layout),
    )
    return header + layout.tobytes() + numbers.tobytes()


any_values = st.one_of(values, st.just(math.inf), st.just(-math.inf), st.none())


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(any_values, any_values, st.booleans()), min_size=0, max_size=40),
    st.booleans(),
)
def test_packed_state_is_the_old_generic_packing_byte_for_byte(history, pending):
    features = DeviceFeatureState(SPEC)
    ts = datetime(2026, 11, 24, 21, 0, tzinfo=UTC)
    fp = spec_fingerprint(SPEC)
    for a, b, reset in history:
        if reset and a is None:
            features.reset_baseline(clear_windows=b is None)
        metrics = {k: v for k, v in (("a", a), ("b", b)) if v is not None}
        features.update(metrics)
        state = DeviceState(7, ts, features, 2, ts if pending else None, pending)
        assert encode_state(state, fp) == _old_encode_state(state, fp)
    state = DeviceState(-1, None, features)
    assert encode_state(state, fp) == _old_encode_state(state, fp)
