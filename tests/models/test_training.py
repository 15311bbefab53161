"""Labels and the training entry point."""

from __future__ import annotations

import numpy as np
import pandas as pd

from models.failure_labels import failure_labels, maintenance_resets
from models.features import compute_features
from models.training import train_risk_bundle


def test_labels_look_ahead_within_horizon() -> None:
    history = pd.DataFrame({"device_id": ["a"] * 10 + ["b"] * 3, "tick": [*range(10), 0, 1, 2]})
    failures = pd.DataFrame({"device_id": ["a", "a"], "failed_tick": [4, 9]})
    labels = failure_labels(history, failures, horizon=2)
    # a fails at 4 and 9: ticks 2, 3 (4 within (t, t+2]) and 7, 8 are positive.
    assert labels.tolist() == [0, 0, 1, 1, 0, 0, 0, 1, 1, 0, 0, 0, 0]
    resets = maintenance_resets(history, failures)
    assert resets.tolist() == [False] * 5 + [True] + [False] * 7


def test_train_bundle_is_deterministic_and_reports_heldout_metrics(fleet) -> None:
    history, failures = fleet
    kwargs = {"horizon": 40, "progress": False, "classifier_params": {"n_estimators": 40}}
    bundle, metrics = train_risk_bundle(history, failures, seed=1, **kwargs)
    again, metrics_again = train_risk_bundle(history, failures, seed=1, **kwargs)
    assert set(bundle.asset_types) == {"water_pump", "lift"}
    assert metrics == metrics_again
    assert bundle.version.split("-")[1] == again.version.split("-")[1]  # same data hash
    for asset_type in bundle.asset_types:
        m = metrics[asset_type]
        for key in ("auc", "precision", "recall", "threshold", "test_assets"):
            assert key in m
        assert m["test_assets"] >= 1
        assert 0.6 < m["auc"] <= 1.0  # the synthetic drift is learnable
        spec = bundle.feature_spec(asset_type)
        X = compute_features(
            history[history["asset_type"] == asset_type], spec, order_col="tick"
        ).to_numpy()
        np.testing.assert_array_equal(
            bundle.predict_proba(asset_type, X), again.predict_proba(asset_type, X)
        )
    assert bundle.card["metrics"] == metrics
    assert bundle.card["training_data"]["rows"] == len(history)


def test_offline_resets_are_where_the_worker_resets_online() -> None:
    """Training resets at the reading the simulator sends a maintenance event before."""
    from datetime import UTC, datetime, timedelta

    from ingest.history_tables import failures_frame, history_frame
    from ingest.simulator import FleetSimulator
    from models.feature_spec import FeatureSpec
    from models.features import DeviceFeatureState
    from models.history import maintenance_reset_flags

    sim = FleetSimulator(n_devices=12, seed=4, initial_degrading_fraction=0.5)
    readings, failures = sim.history(200, datetime(2026, 1, 1, tzinfo=UTC), timedelta(minutes=1))
    assert len(failures) >= 3
    history = history_frame(readings)
    repaired = np.array([r.repaired for r in readings])
    assert repaired.sum() == sum(f.failed_tick < 199 for f in failures)

    # From the ground truth (train_synthetic) ...
    resets = maintenance_resets(history, failures_frame(failures))
    np.testing.assert_array_equal(resets.to_numpy(), repaired)
    # ... and from stored maintenance events, which carry the reading's ts (train_from_database).
    events = pd.DataFrame(
        [(r.device.device_id, r.ts) for r in readings if r.repaired], columns=["device_id", "ts"]
    )
    ordered = history.sort_values(["device_id", "ts"], kind="stable")
    flags = maintenance_reset_flags(ordered, events).reindex(history.index)
    np.testing.assert_array_equal(flags.to_numpy(), repaired)

    # Online: the worker's state, reset by the event in stream order, gives the same features.
    history["_reset"] = resets
    for asset_type, part in history.groupby("asset_type"):
        spec = FeatureSpec.for_asset_type(asset_type)
        offline = compute_features(part, spec, "device_id", "tick", reset_col="_reset")
        states: dict[str, DeviceFeatureState] = {}
        online = {}
        for r in readings:
            if r.device.asset_type != asset_type:
                continue
            state = states.setdefault(r.device.device_id, DeviceFeatureState(spec))
            if r.repaired:  # the maintenance message just before this reading
                state.reset_baseline()
            online[(r.device.device_id, r.tick)] = state.update(r.metrics)
        ordered = part.loc[offline.index]
        keys = list(zip(ordered["device_id"], ordered["tick"], strict=True))
        np.testing.assert_array_equal(
            offline.to_numpy(), np.asarray([online[k] for k in keys], dtype=float)
        )
        age = offline["readings_since_maintenance"].to_numpy()
        assert (age[part.loc[offline.index, "_reset"].to_numpy()] == 1).all()
