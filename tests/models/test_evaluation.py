"""Benchmark evaluations, in a reduced configuration so the suite stays quick.

The full figures come from ``python -m models.evaluation cmapss|skab --data PATH``.
"""

from __future__ import annotations

import numpy as np
import pytest

from models.evaluation import (
    evaluate_cmapss,
    evaluate_skab,
    phm08_score,
    skab_binary_scores,
)


def test_phm08_penalises_late_predictions_more() -> None:
    assert phm08_score([50], [50]) == 0.0
    late = phm08_score([50], [60])
    early = phm08_score([50], [40])
    assert late == pytest.approx(np.e - 1)
    assert early == pytest.approx(np.exp(10 / 13) - 1)
    assert late > early


def test_skab_binary_scores_follow_skab_definitions() -> None:
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    p = np.array([0, 0, 0, 1, 1, 1, 0, 0])
    s = skab_binary_scores(y, p)
    assert (s["tp"], s["tn"], s["fp"], s["fn"]) == (2, 3, 1, 2)
    assert s["f1"] == pytest.approx(2 / (2 + 1.5))
    assert s["far"] == pytest.approx(25.0)
    assert s["mar"] == pytest.approx(50.0)


@pytest.mark.dataset
def test_cmapss_reduced(datasets_dir) -> None:
    if not (datasets_dir / "cmapss").is_dir():
        pytest.skip("cmapss/ not in the datasets folder")
    result = evaluate_cmapss(
        datasets_dir,
        progress=False,
        regressor_params={"n_estimators": 150, "learning_rate": 0.1},
        classifier_params={"n_estimators": 60},
    )
    assert result["n_test_units"] >= 90
    assert result["rmse"] < 14.0  # full configuration: see models.evaluation's docstring
    assert result["auc"] > 0.9
    assert result["validation"]["rmse"] < 14.0


@pytest.mark.dataset
def test_skab_reduced(datasets_dir) -> None:
    if not (datasets_dir / "skab").is_dir():
        pytest.skip("skab/ not in the datasets folder")
    result = evaluate_skab(
        datasets_dir, progress=False, n_folds=4, classifier_params={"n_estimators": 60}
    )
    assert result["folds"] == 4
    assert result["f1"] > 0.75
    assert result["far"] < 20.0
