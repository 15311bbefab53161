"""Explanations of a bundle's scores are exact TreeSHAP contributions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from ingest.history_tables import history_frame
from ingest.simulator import FleetSimulator
from models.features import compute_features


def test_contributions_sum_to_the_raw_margin(trained_models):
    bundle = trained_models
    asset_type = bundle.asset_types[0]
    spec = bundle.feature_spec(asset_type)
    fleet = FleetSimulator(n_devices=12, seed=4)
    readings, _ = fleet.history(150, datetime(2026, 1, 1, tzinfo=UTC), timedelta(minutes=1))
    frame = history_frame(readings)
    frame = frame[frame.asset_type == asset_type]
    X = compute_features(frame, spec).to_numpy()[-40:]

    explained = bundle.explain(asset_type, X, top=spec.n_features)
    margin = bundle.classifiers[asset_type].booster_.predict(X, raw_score=True)
    totals = np.array([sum(e.values()) for e in explained])
    np.testing.assert_allclose(totals, margin, rtol=1e-9, atol=1e-9)
    top3 = bundle.explain(asset_type, X[:1], top=3)[0]
    assert len(top3) == 4 and "_bias" in top3
    magnitudes = [abs(v) for k, v in top3.items() if k != "_bias"]
    assert magnitudes == sorted(magnitudes, reverse=True)
