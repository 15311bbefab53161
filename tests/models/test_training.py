"""Labels and the training entry point."""

from __future__ import annotations

import numpy as np
import pandas as pd

from models.features import compute_features
from models.training import failure_labels, maintenance_resets, train_risk_bundle


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
