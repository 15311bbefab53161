"""FailureRiskClassifier and RemainingLifeRegressor: conventions, determinism, thresholds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.utils.estimator_checks import parametrize_with_checks

from models.calibration import group_split
from models.risk import FailureRiskClassifier, RemainingLifeRegressor

# check_class_weight_classifiers expects class_weight={0: 1000, 1: 1e-4} to push
# almost every prediction to class 0. Here class_weight only reweights the boosting
# loss: the held-out calibration and the precision-targeted threshold are designed
# to undo its effect on probabilities and predictions, so that check cannot pass.
EXPECTED_FAILED_CHECKS = {
    "check_class_weight_classifiers": (
        "calibration and the precision-targeted threshold deliberately cancel class_weight"
    ),
}


def _expected_failed(estimator):
    return EXPECTED_FAILED_CHECKS if isinstance(estimator, FailureRiskClassifier) else {}


@parametrize_with_checks(
    [
        FailureRiskClassifier(n_estimators=10),
        # rul_cap=None: the checks use standardised (negative) targets.
        RemainingLifeRegressor(
            n_estimators=50, learning_rate=0.1, min_child_samples=5, rul_cap=None
        ),
    ],
    expected_failed_checks=_expected_failed,
)
def test_sklearn_conventions(estimator, check) -> None:
    check(estimator)


def _data(n_groups: int = 12, per_group: int = 150, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_groups * per_group, 4))
    X[rng.random(X.shape) < 0.02] = np.nan
    logit = 2.5 * np.nan_to_num(X[:, 0]) - 4
    y = (rng.random(len(X)) < 1 / (1 + np.exp(-logit))).astype(int)
    groups = np.repeat([f"asset{i}" for i in range(n_groups)], per_group)
    return X, y, groups


def test_not_fitted_first() -> None:
    X, _, _ = _data()
    clf = FailureRiskClassifier()
    for method in (clf.predict, clf.predict_proba, clf.decision_function, clf.risk):
        with pytest.raises(NotFittedError):
            method(X)
    with pytest.raises(NotFittedError):
        RemainingLifeRegressor().predict(X)


def test_fit_is_deterministic_and_layers_agree() -> None:
    X, y, groups = _data()
    a = FailureRiskClassifier(n_estimators=60, random_state=3).fit(X, y, groups=groups)
    b = FailureRiskClassifier(n_estimators=60, random_state=3).fit(X, y, groups=groups)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    assert a.threshold_ == b.threshold_
    proba = a.predict_proba(X)
    assert proba.shape == (len(X), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_allclose(a.decision_function(X), proba[:, 1] - a.threshold_)
    np.testing.assert_array_equal(a.predict(X), (proba[:, 1] >= a.threshold_).astype(int))
    assert a.n_features_in_ == 4
    assert "held-out groups" in a.threshold_strategy_


def test_threshold_meets_target_precision_on_calibration_groups() -> None:
    X, y, groups = _data(n_groups=16)
    clf = FailureRiskClassifier(n_estimators=60, target_precision=0.7).fit(X, y, groups=groups)
    fit_rows, cal_rows = group_split(groups, clf.calibration_fraction, clf.random_state)
    cal = clf.predict(X[cal_rows]) == 1
    precision = (y[cal_rows][cal] == 1).mean()
    assert precision >= 0.7
    assert clf.calibration_scores_["precision"] == pytest.approx(precision)
    # Calibration holds out whole groups, never rows of a training group.
    assert not set(groups[fit_rows]) & set(groups[cal_rows])


def test_feature_names_and_labels() -> None:
    X, y, groups = _data()
    frame = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    labels = np.where(y == 1, "fails", "ok")
    clf = FailureRiskClassifier(n_estimators=20).fit(frame, labels, groups=groups)
    assert list(clf.feature_names_in_) == ["a", "b", "c", "d"]
    assert list(clf.classes_) == ["fails", "ok"]
    assert set(clf.predict(frame)) <= {"fails", "ok"}


def test_rejects_bad_input() -> None:
    X, y, groups = _data()
    with pytest.raises(ValueError, match="binary"):
        FailureRiskClassifier().fit(X, np.arange(len(y)) % 3)
    with pytest.raises(ValueError, match="calibration"):
        FailureRiskClassifier(calibration="platt").fit(X, y)
    with pytest.raises(ValueError, match="groups"):
        FailureRiskClassifier().fit(X, y, groups=groups[:-1])


@pytest.mark.parametrize("calibration", ["isotonic", "sigmoid", None])
def test_state_round_trip(calibration) -> None:
    X, y, groups = _data()
    clf = FailureRiskClassifier(n_estimators=30, calibration=calibration).fit(X, y, groups=groups)
    text, meta = clf.to_state()
    back = FailureRiskClassifier.from_state(text, meta)
    np.testing.assert_array_equal(clf.predict_proba(X), back.predict_proba(X))
    np.testing.assert_array_equal(clf.predict(X), back.predict(X))


def test_remaining_life_regressor_caps_targets() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 3))
    y = 200 * (X[:, 0] > 0) + rng.normal(size=500)
    reg = RemainingLifeRegressor(n_estimators=100).fit(X, y)
    pred = reg.predict(X)
    assert pred.max() <= 125.0
    assert pred.min() >= 0.0
    again = RemainingLifeRegressor(n_estimators=100).fit(X, y).predict(X)
    np.testing.assert_array_equal(pred, again)


def test_alert_budget_threshold_caps_the_alerting_share() -> None:
    X, y, groups = _data(n_groups=16)
    clf = FailureRiskClassifier(n_estimators=60, alert_budget=0.05).fit(X, y, groups=groups)
    _, cal_rows = group_split(groups, clf.calibration_fraction, clf.random_state)
    share = float(np.mean(clf.risk(X[cal_rows]) >= clf.threshold_))
    # Never more than the budget; fewer when isotonic calibration ties a plateau of risks.
    assert 0.0 < share <= 0.05
    assert clf.threshold_strategy_.startswith("alert budget 0.05")
    with pytest.raises(ValueError, match="alert_budget"):
        FailureRiskClassifier(alert_budget=1.5).fit(X, y, groups=groups)
