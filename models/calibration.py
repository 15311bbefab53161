"""Held-out calibration of the failure-risk classifier: whole-device splits, probability
calibration (isotonic or sigmoid), and the alert threshold chosen on the held-out rows."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import precision_recall_curve

__all__ = ["Calibrator", "budget_threshold", "choose_threshold", "group_split", "scores_at"]

_EPS = 1e-7


def group_split(
    groups: np.ndarray, fraction: float, random_state: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Split rows into two sets of whole groups.

    Parameters
    ----------
    groups : ndarray of shape (n_samples,)
        Group label of each row (device or asset id).
    fraction : float
        Share of the groups that go to the second set (at least one group).
    random_state : int or None
        Seed for the shuffle of the groups.

    Returns
    -------
    first, second : ndarray of bool
        Row masks; every group lies wholly in one of them.
    """
    uniq = np.unique(np.asarray(groups))
    rng = np.random.default_rng(random_state)
    order = rng.permutation(len(uniq))
    n_second = min(max(1, round(fraction * len(uniq))), max(len(uniq) - 1, 1))
    second_groups = uniq[order[:n_second]]
    second = np.isin(groups, second_groups)
    return ~second, second


@dataclass(frozen=True)
class Calibrator:
    """Maps raw LightGBM probabilities to calibrated ones.

    ``kind`` is ``"isotonic"`` (piecewise linear through ``x``/``y``, clipped at
    the ends, as :class:`~sklearn.isotonic.IsotonicRegression` predicts),
    ``"sigmoid"`` (Platt scaling on the raw log-odds: ``a * logit + b``) or
    ``"identity"``.
    """

    kind: str
    x: tuple[float, ...] = ()
    y: tuple[float, ...] = ()
    a: float = 1.0
    b: float = 0.0

    def transform(self, p: np.ndarray) -> np.ndarray:
        if self.kind == "identity":
            return p
        if self.kind == "isotonic":
            return np.interp(p, self.x, self.y)
        z = np.log(np.clip(p, _EPS, 1 - _EPS)) - np.log1p(-np.clip(p, _EPS, 1 - _EPS))
        return 1.0 / (1.0 + np.exp(-(self.a * z + self.b)))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "x": list(self.x), "y": list(self.y), "a": self.a, "b": self.b}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibrator:
        return cls(
            kind=d["kind"],
            x=tuple(float(v) for v in d.get("x", ())),
            y=tuple(float(v) for v in d.get("y", ())),
            a=float(d.get("a", 1.0)),
            b=float(d.get("b", 0.0)),
        )

    @classmethod
    def fit(cls, kind: str, p: np.ndarray, y: np.ndarray) -> Calibrator:
        if kind == "isotonic":
            iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p, y)
            return cls("isotonic", x=tuple(iso.X_thresholds_), y=tuple(iso.y_thresholds_))
        z = np.log(np.clip(p, _EPS, 1 - _EPS)) - np.log1p(-np.clip(p, _EPS, 1 - _EPS))
        lr = LogisticRegression(C=1e6).fit(z.reshape(-1, 1), y)
        return cls("sigmoid", a=float(lr.coef_[0, 0]), b=float(lr.intercept_[0]))


def budget_threshold(p: np.ndarray, alert_budget: float) -> tuple[float, str]:
    """Lowest threshold at which at most ``alert_budget`` of the rows alert."""
    how = f"alert budget {alert_budget:g} of readings"
    scores = np.sort(np.unique(p))[::-1]  # distinct risks, highest first
    alerting = np.searchsorted(np.sort(p), scores, side="left")  # rows strictly below
    share = 1.0 - alerting / len(p)  # share of rows at or above each distinct risk
    ok = np.flatnonzero(share <= alert_budget)
    if not len(ok):
        # Even the top risk alone exceeds the budget: alert on nothing seen.
        return float(np.nextafter(scores[0], np.inf)), how
    cut = float(scores[ok[-1]])
    lower = p[p < cut]
    if not len(lower):
        return float(np.nextafter(cut, -np.inf)), how
    return float((cut + lower.max()) / 2.0), how


def choose_threshold(p: np.ndarray, y: np.ndarray, target_precision: float) -> tuple[float, str]:
    """Highest-recall threshold with precision >= target; else the best-F1 one.

    The returned threshold sits halfway between the chosen score and the next
    lower score seen, so held-out rows classify exactly as when the threshold
    was chosen, while ties (risk exactly equal to the threshold) stay rare and
    ``decision_function > 0`` agrees with :meth:`models.risk.FailureRiskClassifier.predict`.
    """
    if y.sum() == 0 or y.sum() == len(y):
        return 0.5, "default (calibration split has one class)"
    precision, recall, thresholds = precision_recall_curve(y, p)
    precision, recall = precision[:-1], recall[:-1]  # the last point has no threshold
    ok = precision >= target_precision
    if ok.any():
        # Among thresholds meeting the precision target take the highest recall;
        # on ties the highest threshold, which alerts least.
        best_recall = recall[ok].max()
        idx = int(np.flatnonzero(ok & (recall == best_recall))[-1])
        how = f"max recall at precision >= {target_precision:g}"
    else:
        f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
        idx = int(np.flatnonzero(f1 == f1.max())[-1])
        how = f"max F1 (precision {target_precision:g} not reachable)"
    cut = float(thresholds[idx])
    lower = p[p < cut]
    if not len(lower):
        # Every held-out row alerts; still keep "risk > threshold" for them.
        return float(np.nextafter(cut, -np.inf)), how
    return float((cut + lower.max()) / 2.0), how


def scores_at(p: np.ndarray, y: np.ndarray, threshold: float) -> dict[str, float]:
    pred = p >= threshold
    tp = float(np.sum(pred & (y == 1)))
    fp = float(np.sum(pred & (y == 0)))
    fn = float(np.sum(~pred & (y == 1)))
    return {
        "rows": len(y),
        "positives": int(np.sum(y == 1)),
        "precision": tp / (tp + fp) if tp + fp else math.nan,
        "recall": tp / (tp + fn) if tp + fn else math.nan,
    }
