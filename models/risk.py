"""Failure-risk classifier: LightGBM, calibrated on held-out devices, with a precision threshold.

:class:`FailureRiskClassifier` follows scikit-learn's conventions: ``__init__``
only stores its parameters, ``fit`` validates and returns ``self``, learned
attributes end in ``_``, and ``decision_function`` is ``predict_proba`` minus
``threshold_`` so that 0 is the alerting boundary.

The fitted model is plain data (a LightGBM text model, a calibration curve and
a threshold), so :mod:`models.bundle_store` stores it without pickle.
"""

from __future__ import annotations

import warnings
from typing import Any

import lightgbm as lgb
import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from models.calibration import (
    Calibrator,
    budget_threshold,
    choose_threshold,
    group_split,
    scores_at,
)

__all__ = ["FailureRiskClassifier", "RemainingLifeRegressor"]


class _LightGBMMixin:
    """Shared LightGBM parameter handling for the classifier and the regressor."""

    def _lgb_params(self, objective: str) -> dict[str, Any]:
        p = self.get_params()  # type: ignore[attr-defined]
        params: dict[str, Any] = {
            "objective": objective,
            "n_estimators": p["n_estimators"],
            "learning_rate": p["learning_rate"],
            "num_leaves": p["num_leaves"],
            "min_child_samples": p["min_child_samples"],
            "subsample": p["subsample"],
            "subsample_freq": 1 if p["subsample"] < 1.0 else 0,
            "colsample_bytree": p["colsample_bytree"],
            "reg_lambda": p["reg_lambda"],
            "random_state": 0 if p["random_state"] is None else p["random_state"],
            # Same seed, same threads, same model: deterministic mode pins the
            # histogram construction and the thread count pins summation order.
            "deterministic": True,
            "force_row_wise": True,
            "n_jobs": p["n_jobs"],
            "verbose": -1,
        }
        return params


class FailureRiskClassifier(_LightGBMMixin, ClassifierMixin, BaseEstimator):
    """Probability that an asset fails soon, from its feature row.

    A LightGBM classifier is fitted on most groups (devices/assets); its
    probabilities are then calibrated on the remaining groups, never on random
    rows (rows of one device are strongly correlated). The alert threshold is
    chosen on the same held-out groups for ``target_precision``.

    Parameters
    ----------
    n_estimators : int, default=300
        Boosting rounds.
    learning_rate : float, default=0.05
        Shrinkage.
    num_leaves : int, default=31
        Leaves per tree.
    min_child_samples : int, default=20
        Minimum rows per leaf.
    subsample : float, default=0.8
        Row fraction per tree (bagging).
    colsample_bytree : float, default=0.8
        Feature fraction per tree.
    reg_lambda : float, default=1.0
        L2 regularisation.
    class_weight : {"balanced"}, dict or None, default=None
        ``"balanced"`` (or a ``{label: weight}`` dict) reweights classes in the
        boosting loss (calibration then undoes the skew in the probabilities).
        Off by default: on simulated
        fleets with 1-4 % positives it overfitted the few failing devices and
        gave lower held-out AUC and average precision.
    calibration : {"isotonic", "sigmoid"} or None, default="isotonic"
        How to calibrate probabilities on the held-out groups; None keeps the
        raw LightGBM probabilities (and trains on all groups).
    calibration_fraction : float, default=0.25
        Share of groups held out for calibration and the threshold.
    target_precision : float, default=0.8
        Precision the threshold aims for (highest recall subject to it). If no
        threshold reaches it, the threshold maximising F1 is used.
    alert_budget : float or None, default=None
        If set, ignore ``target_precision`` and choose the lowest threshold at
        which at most this share of the held-out readings alert (a crew's
        capacity rather than a precision goal).
    n_jobs : int, default=1
        LightGBM threads. Fixed, because results depend on the thread count.
    random_state : int or None, default=0
        Seed for LightGBM and the group split.

    Attributes
    ----------
    classes_ : ndarray of shape (2,)
        Class labels; ``classes_[1]`` is "fails soon".
    n_features_in_ : int
        Number of features seen in ``fit``.
    feature_names_in_ : ndarray of str
        Feature names, when ``X`` was a DataFrame with string column names.
    booster_ : lightgbm.Booster
        The fitted trees.
    calibrator_ : object
        The fitted probability calibration (private type).
    threshold_ : float
        Calibrated probability at or above which :meth:`predict` says 1.
    threshold_strategy_ : str
        How ``threshold_`` was chosen.
    calibration_scores_ : dict
        Rows, positives, precision and recall at ``threshold_`` on the
        calibration groups.

    See Also
    --------
    models.bundle.RiskModelBundle : one classifier per asset type, saved and loaded.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(400, 3)); y = (X[:, 0] > 1).astype(int)
    >>> groups = np.repeat(np.arange(8), 50)
    >>> clf = FailureRiskClassifier(n_estimators=20).fit(X, y, groups=groups)
    >>> clf.predict_proba(X[:2]).shape
    (2, 2)
    """

    def __init__(
        self,
        *,
        n_estimators: int = 300,
        learning_rate: float = 0.05,
        num_leaves: int = 31,
        min_child_samples: int = 20,
        subsample: float = 0.8,
        colsample_bytree: float = 0.8,
        reg_lambda: float = 1.0,
        class_weight: str | dict[Any, float] | None = None,
        calibration: str | None = "isotonic",
        calibration_fraction: float = 0.25,
        target_precision: float = 0.8,
        alert_budget: float | None = None,
        n_jobs: int = 1,
        random_state: int | None = 0,
    ) -> None:
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.reg_lambda = reg_lambda
        self.class_weight = class_weight
        self.calibration = calibration
        self.calibration_fraction = calibration_fraction
        self.target_precision = target_precision
        self.alert_budget = alert_budget
        self.n_jobs = n_jobs
        self.random_state = random_state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # LightGBM routes NaN (missing metrics) itself
        tags.classifier_tags.multi_class = False
        return tags

    def _validate_params(self) -> None:
        if self.calibration not in ("isotonic", "sigmoid", None):
            raise ValueError(
                f"calibration must be 'isotonic', 'sigmoid' or None, got {self.calibration!r}"
            )
        if not (self.class_weight in ("balanced", None) or isinstance(self.class_weight, dict)):
            raise ValueError(
                f"class_weight must be 'balanced', a dict or None, got {self.class_weight!r}"
            )
        if not 0.0 < self.calibration_fraction < 1.0:
            raise ValueError("calibration_fraction must be in (0, 1)")
        if not 0.0 < self.target_precision <= 1.0:
            raise ValueError("target_precision must be in (0, 1]")
        if self.alert_budget is not None and not 0.0 < self.alert_budget < 1.0:
            raise ValueError("alert_budget must be in (0, 1) or None")
        if int(self.n_estimators) < 1:
            raise ValueError("n_estimators must be >= 1")

    def fit(self, X: Any, y: Any, groups: Any = None) -> FailureRiskClassifier:
        """Fit trees, calibrate on held-out groups and choose the threshold.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Feature rows; NaN means missing.
        y : array-like of shape (n_samples,)
            Two class labels; the larger one (after sorting) is "fails soon".
        groups : array-like of shape (n_samples,), optional
            Device or asset id of each row. Calibration holds out whole groups.
            Without groups the last ``calibration_fraction`` of the rows (in the
            given order) are held out, which is only sound for time-ordered data.

        Returns
        -------
        self : FailureRiskClassifier
        """
        self._validate_params()
        X, y = validate_data(self, X, y, ensure_all_finite="allow-nan", dtype=np.float64)
        check_classification_targets(y)
        self.classes_, y_enc = np.unique(y, return_inverse=True)
        if len(self.classes_) != 2:
            raise ValueError(
                "Only binary classification is supported. "
                f"y has {len(self.classes_)} class(es); FailureRiskClassifier needs 2."
            )
        if groups is not None:
            groups = np.asarray(groups)
            if groups.shape != (len(y_enc),):
                raise ValueError("groups must have one entry per row of X")

        fit_mask = np.ones(len(y_enc), dtype=bool)
        cal_mask = np.zeros(len(y_enc), dtype=bool)
        if self.calibration is not None:
            if groups is not None and len(np.unique(groups)) >= 2:
                fit_mask, cal_mask = group_split(
                    groups, self.calibration_fraction, self.random_state
                )
            else:
                cut = round(len(y_enc) * (1 - self.calibration_fraction))
                fit_mask[cut:] = False
                cal_mask[cut:] = True
            # Both classes are needed on both sides; otherwise calibrate nothing.
            if (
                len(np.unique(y_enc[fit_mask])) < 2
                or len(np.unique(y_enc[cal_mask])) < 2
                or cal_mask.sum() < 2
            ):
                fit_mask[:] = True
                cal_mask[:] = False

        params = self._lgb_params("binary")
        if isinstance(self.class_weight, dict):
            # Keys are original labels; LightGBM sees the encoded 0/1.
            params["class_weight"] = {
                i: float(self.class_weight.get(c, 1.0)) for i, c in enumerate(self.classes_)
            }
        elif self.class_weight == "balanced":
            params["class_weight"] = "balanced"
        model = lgb.LGBMClassifier(**params)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*feature names.*")
            model.fit(X[fit_mask], y_enc[fit_mask])
        self.booster_ = model.booster_

        if cal_mask.any():
            raw = self._raw_proba(X[cal_mask])
            self.calibrator_ = Calibrator.fit(self.calibration, raw, y_enc[cal_mask])
            p_eval, y_eval = self.calibrator_.transform(raw), y_enc[cal_mask]
        else:
            # No held-out groups: keep raw probabilities and pick the threshold on
            # the training rows (optimistic, so say so in threshold_strategy_).
            self.calibrator_ = Calibrator("identity")
            p_eval, y_eval = self._raw_proba(X), y_enc
        if self.alert_budget is not None:
            self.threshold_, strategy = budget_threshold(p_eval, float(self.alert_budget))
        else:
            self.threshold_, strategy = choose_threshold(p_eval, y_eval, self.target_precision)
        self.threshold_strategy_ = strategy + (
            " on held-out groups" if cal_mask.any() else " on training rows"
        )
        self.calibration_scores_ = scores_at(p_eval, y_eval, self.threshold_)
        return self

    def _raw_proba(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.booster_.predict(X, num_threads=self.n_jobs), dtype=np.float64)

    def _check(self, X: Any) -> np.ndarray:
        check_is_fitted(self, ("booster_", "threshold_"))
        return validate_data(self, X, reset=False, ensure_all_finite="allow-nan", dtype=np.float64)

    def risk(self, X: Any) -> np.ndarray:
        """Calibrated probability of the positive class, shape (n_samples,)."""
        return self._risk_validated(self._check(X))

    def _risk_validated(self, X: np.ndarray) -> np.ndarray:
        # For callers that validated X themselves (the bundle, per worker batch):
        # scikit-learn's validation costs ~4x a one-row LightGBM prediction.
        return np.clip(self.calibrator_.transform(self._raw_proba(X)), 0.0, 1.0)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Calibrated class probabilities, columns in ``classes_`` order.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, 2)
        """
        p = self.risk(X)
        return np.column_stack([1.0 - p, p])

    def decision_function(self, X: Any) -> np.ndarray:
        """``predict_proba(X)[:, 1] - threshold_``: positive means "alert"."""
        return self.risk(X) - self.threshold_

    def predict(self, X: Any) -> np.ndarray:
        """``classes_[1]`` where the calibrated risk is at least ``threshold_``."""
        positive = self.decision_function(X) >= 0
        return self.classes_[positive.astype(int)]

    # -- plain-data form, used by models.bundle_store (no pickle) -----------------
    def to_state(self) -> tuple[str, dict[str, Any]]:
        """The fitted model as (LightGBM model text, JSON-safe dict)."""
        check_is_fitted(self, ("booster_", "threshold_"))
        meta: dict[str, Any] = {
            "params": self.get_params(),
            "classes": self.classes_.tolist(),
            "n_features_in": int(self.n_features_in_),
            "feature_names_in": (
                self.feature_names_in_.tolist() if hasattr(self, "feature_names_in_") else None
            ),
            "calibrator": self.calibrator_.to_dict(),
            "threshold": float(self.threshold_),
            "threshold_strategy": self.threshold_strategy_,
            "calibration_scores": self.calibration_scores_,
        }
        return self.booster_.model_to_string(), meta

    @classmethod
    def from_state(cls, model_text: str, meta: dict[str, Any]) -> FailureRiskClassifier:
        """Inverse of :meth:`to_state`."""
        clf = cls(**meta["params"])
        clf.booster_ = lgb.Booster(model_str=model_text)
        clf.classes_ = np.asarray(meta["classes"])
        clf.n_features_in_ = int(meta["n_features_in"])
        if meta.get("feature_names_in") is not None:
            clf.feature_names_in_ = np.asarray(meta["feature_names_in"], dtype=object)
        clf.calibrator_ = Calibrator.from_dict(meta["calibrator"])
        clf.threshold_ = float(meta["threshold"])
        clf.threshold_strategy_ = meta["threshold_strategy"]
        clf.calibration_scores_ = meta["calibration_scores"]
        return clf


class RemainingLifeRegressor(_LightGBMMixin, RegressorMixin, BaseEstimator):
    """Remaining useful life (in readings or cycles) from a feature row.

    A LightGBM regressor on targets capped at ``rul_cap``: far from failure the
    sensors carry no information about how far, so an uncapped target only adds
    noise (the usual C-MAPSS convention, cap 125).

    Parameters
    ----------
    n_estimators, learning_rate, num_leaves, min_child_samples, subsample, \
colsample_bytree, reg_lambda, n_jobs, random_state
        As in :class:`FailureRiskClassifier`.
    rul_cap : float or None, default=125.0
        Targets (and predictions) are clipped to ``[0, rul_cap]``; None keeps
        them as they are.
    objective : str, default="regression"
        LightGBM objective (e.g. ``"huber"``, or ``"quantile"`` with ``alpha``).
    alpha : float, default=0.5
        The quantile when ``objective="quantile"`` (ignored otherwise).

    Attributes
    ----------
    n_features_in_ : int
    feature_names_in_ : ndarray of str
    booster_ : lightgbm.Booster
    """

    def __init__(
        self,
        *,
        n_estimators: int = 500,
        learning_rate: float = 0.03,
        num_leaves: int = 15,
        min_child_samples: int = 50,
        subsample: float = 0.8,
        colsample_bytree: float = 0.8,
        reg_lambda: float = 1.0,
        rul_cap: float | None = 125.0,
        objective: str = "regression",
        alpha: float = 0.5,
        n_jobs: int = 1,
        random_state: int | None = 0,
    ) -> None:
        self.alpha = alpha
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.reg_lambda = reg_lambda
        self.rul_cap = rul_cap
        self.objective = objective
        self.n_jobs = n_jobs
        self.random_state = random_state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags

    def fit(self, X: Any, y: Any) -> RemainingLifeRegressor:
        """Fit on feature rows and remaining-life targets.

        Returns
        -------
        self : RemainingLifeRegressor
        """
        X, y = validate_data(
            self, X, y, ensure_all_finite="allow-nan", dtype=np.float64, y_numeric=True
        )
        y = np.asarray(y, dtype=np.float64)
        if self.rul_cap is not None:
            y = np.clip(y, 0.0, float(self.rul_cap))
        params = self._lgb_params(self.objective)
        if self.objective == "quantile":
            params["alpha"] = self.alpha
        model = lgb.LGBMRegressor(**params)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*feature names.*")
            model.fit(X, y)
        self.booster_ = model.booster_
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Predicted remaining life, clipped to ``[0, rul_cap]`` when ``rul_cap`` is set."""
        check_is_fitted(self, "booster_")
        X = validate_data(self, X, reset=False, ensure_all_finite="allow-nan", dtype=np.float64)
        pred = np.asarray(self.booster_.predict(X, num_threads=self.n_jobs), dtype=np.float64)
        if self.rul_cap is None:
            return pred
        return np.clip(pred, 0.0, float(self.rul_cap))
