"""Feature parity (online vs offline), state round trips and the statistics themselves."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from models.feature_spec import FeatureSpec
from models.features import DeviceFeatureState, compute_features

SPEC = FeatureSpec(
    metrics=("vibration_rms", "bearing_temp"),
    window=5,
    extra_windows=(12,),
    point_stats=("last", "ewm", "delta_baseline", "z_baseline", "z_last"),
    aggregate_stats=("max_abs_z_baseline", "mean_abs_z_baseline", "max_abs_z_last"),
    baseline_warmup=8,
)


def _readings(frame: pd.DataFrame, spec: FeatureSpec) -> list[dict[str, float]]:
    # What the worker would see: a dict per reading, missing metrics left out.
    out = []
    for row in frame[list(spec.metrics)].itertuples(index=False):
        out.append({m: v for m, v in zip(spec.metrics, row, strict=True) if not math.isnan(v)})
    return out


def test_feature_names_are_stable_and_readable() -> None:
    spec = FeatureSpec.for_asset_type("water_pump")
    names = spec.feature_names
    assert names[:9] == (
        "vibration_rms__last",
        "vibration_rms__mean_30",
        "vibration_rms__std_30",
        "vibration_rms__min_30",
        "vibration_rms__max_30",
        "vibration_rms__slope_30",
        "vibration_rms__ewm_30",
        "vibration_rms__delta_baseline",
        "vibration_rms__z_baseline",
    )
    assert names[-1] == "readings_since_maintenance"
    assert len(names) == len(set(names)) == spec.n_features
    assert FeatureSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_spec_validation() -> None:
    with pytest.raises(KeyError):
        FeatureSpec.for_asset_type("teleporter")
    with pytest.raises(ValueError):
        FeatureSpec(metrics=())
    with pytest.raises(ValueError):
        FeatureSpec(metrics=("a",), window=1)
    with pytest.raises(ValueError):
        FeatureSpec(metrics=("a",), window_stats=("median",))


def test_online_equals_offline_bit_for_bit(fleet) -> None:
    history, _ = fleet
    spec = FeatureSpec.for_asset_type(
        "water_pump",
        extra_windows=(90,),
        window=20,
        point_stats=("last", "ewm", "delta_baseline", "z_baseline", "z_last"),
        aggregate_stats=("max_abs_z_baseline", "mean_abs_z_baseline", "max_abs_z_last"),
    )
    pumps = history[history["asset_type"] == "water_pump"]
    # Shuffle rows: compute_features must sort by device then tick itself.
    shuffled = pumps.sample(frac=1.0, random_state=0)
    offline = compute_features(shuffled, spec, device_col="device_id", order_col="tick")
    assert list(offline.columns) == list(spec.feature_names)
    expected_index = shuffled.sort_values(["device_id", "tick"], kind="mergesort").index
    assert offline.index.equals(expected_index)

    online = []
    for _, dev in pumps.sort_values(["device_id", "tick"]).groupby("device_id", sort=True):
        state = DeviceFeatureState(spec)
        for i, reading in enumerate(_readings(dev, spec)):
            if i == 137:  # a worker restart mid-stream: state restored from its table
                state = DeviceFeatureState.from_dict(json.loads(json.dumps(state.to_dict())))
            online.append(state.update(reading))
    np.testing.assert_array_equal(np.array(online), offline.to_numpy())


def test_round_trip_preserves_results_exactly() -> None:
    rng = np.random.default_rng(3)
    a = DeviceFeatureState(SPEC)
    for _ in range(37):
        a.update({"vibration_rms": float(rng.normal(5, 1)), "bearing_temp": 40.0})
    saved = a.to_dict()
    text = json.dumps(saved, allow_nan=False)  # strictly JSON-safe, no NaN
    b = DeviceFeatureState.from_dict(json.loads(text))
    for _ in range(50):
        r = {"vibration_rms": float(rng.normal(5, 1)), "bearing_temp": float(rng.normal(40, 2))}
        np.testing.assert_array_equal(a.update(r), b.update(r))
    with pytest.raises(ValueError):
        DeviceFeatureState.from_dict({"format": 999})


def test_missing_metrics_give_nan_features_and_leave_state_alone() -> None:
    state = DeviceFeatureState(SPEC)
    state.update({"vibration_rms": 1.0, "bearing_temp": 2.0})
    row = state.update({"bearing_temp": 3.0, "unknown_metric": 9.0})
    names = SPEC.feature_names
    values = dict(zip(names, row, strict=True))
    assert all(math.isnan(values[n]) for n in names if n.startswith("vibration_rms__"))
    assert values["bearing_temp__last"] == 3.0
    assert values["readings_since_maintenance"] == 2.0
    for bad in (None, "x", float("nan"), float("inf")):
        row = state.update({"vibration_rms": bad, "bearing_temp": 3.0})
        assert math.isnan(dict(zip(names, row, strict=True))["vibration_rms__last"])
    row = state.update({"vibration_rms": 2.0, "bearing_temp": 3.0})
    assert dict(zip(names, row, strict=True))["vibration_rms__mean_5"] == 1.5


def test_window_statistics_match_direct_computation() -> None:
    rng = np.random.default_rng(7)
    # Large offset and small noise: the case where naive sums of squares lose digits.
    xs = 9046.0 + rng.normal(0, 0.05, size=3000) + np.linspace(0, 1, 3000)
    spec = FeatureSpec(metrics=("s",), window=30, extra_windows=(100,), baseline_warmup=20)
    state = DeviceFeatureState(spec)
    rows = [state.update({"s": float(x)}) for x in xs]
    names = spec.feature_names
    last = dict(zip(names, rows[-1], strict=True))
    for w in (30, 100):
        tail = xs[-w:]
        assert last[f"s__mean_{w}"] == pytest.approx(tail.mean(), rel=1e-12)
        assert last[f"s__std_{w}"] == pytest.approx(tail.std(), rel=1e-6)
        assert last[f"s__min_{w}"] == tail.min()
        assert last[f"s__max_{w}"] == tail.max()
        assert last[f"s__slope_{w}"] == pytest.approx(
            np.polyfit(np.arange(w), tail, 1)[0], rel=1e-6
        )
    early = dict(zip(names, rows[2], strict=True))
    assert early["s__slope_30"] == pytest.approx(np.polyfit(np.arange(3), xs[:3], 1)[0], rel=1e-6)
    assert math.isnan(dict(zip(names, rows[0], strict=True))["s__slope_30"])
    assert math.isnan(early["s__z_baseline"])  # still warming up


def test_baseline_resists_degradation_and_resets() -> None:
    spec = FeatureSpec(metrics=("v",), window=10, baseline_warmup=50)
    state = DeviceFeatureState(spec)
    rng = np.random.default_rng(0)
    for _ in range(300):
        state.update({"v": float(rng.normal(10, 1))})
    names = spec.feature_names
    # A slow drift of +8 sigma: the baseline must not follow it.
    for i in range(200):
        row = dict(
            zip(names, state.update({"v": 10 + 8 * i / 200 + float(rng.normal(0, 1))}), strict=True)
        )
    assert row["v__z_baseline"] > 5
    assert row["readings_since_maintenance"] == 500
    state.reset_baseline()
    row = dict(zip(names, state.update({"v": 18.0}), strict=True))
    assert row["readings_since_maintenance"] == 1
    assert math.isnan(row["v__z_baseline"])
    assert row["v__mean_10"] == 18.0  # windows cleared too


def test_reset_column_matches_online_reset() -> None:
    spec = FeatureSpec(metrics=("v",), window=4, baseline_warmup=3)
    frame = pd.DataFrame(
        {
            "device_id": "d",
            "ts": range(12),
            "v": np.arange(12.0) ** 1.5,
            "reset": [False] * 6 + [True] + [False] * 5,
        }
    )
    offline = compute_features(frame, spec, reset_col="reset")
    state = DeviceFeatureState(spec)
    online = []
    for v, reset in zip(frame["v"], frame["reset"], strict=True):
        if reset:
            state.reset_baseline()
        online.append(state.update({"v": v}))
    np.testing.assert_array_equal(np.array(online), offline.to_numpy())
    assert offline["readings_since_maintenance"].tolist() == [1, 2, 3, 4, 5, 6, 1, 2, 3, 4, 5, 6]


def test_empty_frame() -> None:
    spec = FeatureSpec(metrics=("v",))
    out = compute_features(pd.DataFrame({"device_id": [], "ts": [], "v": []}), spec)
    assert out.shape == (0, spec.n_features)


def test_aggregates_across_metrics() -> None:
    spec = FeatureSpec(
        metrics=("a", "b"),
        window=2,
        baseline_warmup=2,
        point_stats=("z_baseline", "z_last"),
        window_stats=(),
        aggregate_stats=("max_abs_z_baseline", "mean_abs_z_baseline", "max_abs_z_last"),
        include_age=False,
    )
    assert spec.feature_names[-3:] == (
        "max_abs_z_baseline",
        "mean_abs_z_baseline",
        "max_abs_z_last",
    )
    state = DeviceFeatureState(spec)
    first = state.update({"a": 0.0, "b": 10.0})
    assert all(math.isnan(v) for v in first[-3:])  # no baseline yet
    state.update({"a": 2.0, "b": 10.0})  # baselines: a 1 +- 1, b 10 (flat)
    row = dict(zip(spec.feature_names, state.update({"a": -3.0}), strict=True))
    assert row["a__z_last"] == -4.0
    assert row["max_abs_z_last"] == 4.0
    assert row["max_abs_z_baseline"] == abs(row["a__z_baseline"])
    assert row["mean_abs_z_baseline"] == abs(row["a__z_baseline"])  # b missing: not counted
