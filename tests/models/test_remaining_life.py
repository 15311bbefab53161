"""Remaining life with a conformalised interval."""

from __future__ import annotations

import numpy as np

from models.remaining_life import (
    RemainingLifeInterval,
    format_time_to_failure,
    interval_coverage,
)


def _engines(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X, y, g = [], [], []
    for unit in range(n):
        life = int(rng.integers(80, 160))
        for t in range(life):
            wear = t / life
            X.append([wear + rng.normal() * 0.08, rng.normal(), t])
            y.append(life - 1 - t)
            g.append(unit)
    return np.array(X), np.array(y, dtype=float), np.array(g)


def test_interval_covers_about_its_nominal_share_on_unseen_engines() -> None:
    X, y, g = _engines(40, 0)
    small = {"n_estimators": 80, "min_child_samples": 20, "rul_cap": 125.0}
    model = RemainingLifeInterval(regressor_params=small).fit(X, y, g)
    Xt, yt, _ = _engines(15, 1)
    lo, mid, hi = model.predict_interval(Xt)
    assert np.all(lo <= mid) and np.all(mid <= hi) and np.all(lo >= 0) and np.all(hi <= 125)
    cov = interval_coverage(np.minimum(yt, 125), lo, hi)
    assert 0.65 <= cov["coverage"] <= 0.97, cov
    assert model.calibration_["groups"] == 8
    # narrower than the whole range: the interval carries information
    assert cov["mean_width"] < 100


def test_time_to_failure_text_rounds_outwards() -> None:
    assert format_time_to_failure(9.4, 19.2) == "likely to fail in 9-20 days"
    assert format_time_to_failure(-1.0, 0.0) == "likely to fail now"
    assert format_time_to_failure(float("nan"), 3.0) == ""
