"""Remaining useful life with an interval: "likely to fail in 9-20 days".

A planner needs *when*, with how sure. :class:`RemainingLifeInterval` gives a
point estimate (:class:`~models.risk.RemainingLifeRegressor`) and an interval
from two quantile LightGBM regressors (10% and 90% by default), widened or
narrowed by conformalised quantile regression (Romano et al., 2019): the
quantile models are fitted on some groups (engines, devices) and the
interval's miss distances on the other groups set one additive correction, so
the nominal coverage holds on unseen groups rather than only on the rows the
trees were fitted to. Then every model is refitted on all groups and keeps that
correction.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from models.calibration import group_split
from models.risk import RemainingLifeRegressor

__all__ = [
    "RemainingLifeInterval",
    "format_time_to_failure",
    "interval_coverage",
    "ticks_to_failure",
    "time_to_failure_days",
]


class RemainingLifeInterval:
    """Remaining life, with a ``[low, high]`` interval of nominal coverage ``high - low``.

    Parameters
    ----------
    low, high : float, default=0.1, 0.9
        Quantiles of the interval.
    regressor_params : mapping, optional
        :class:`~models.risk.RemainingLifeRegressor` parameters shared by the
        point and the quantile models (``rul_cap`` included).
    calibration_fraction : float, default=0.2
        Share of groups held out to conformalise the interval.
    random_state : int, default=0

    Attributes
    ----------
    point_, low_, high_ : RemainingLifeRegressor
    correction_ : float
        Added to the width on each side (negative narrows it).
    calibration_ : dict
        Coverage on the calibration groups before and after the correction.
    """

    def __init__(
        self,
        *,
        low: float = 0.1,
        high: float = 0.9,
        regressor_params: Mapping[str, Any] | None = None,
        calibration_fraction: float = 0.2,
        random_state: int = 0,
    ) -> None:
        self.low = low
        self.high = high
        self.regressor_params = regressor_params
        self.calibration_fraction = calibration_fraction
        self.random_state = random_state

    def _quantile(self, alpha: float) -> RemainingLifeRegressor:
        params = {"random_state": self.random_state, **(self.regressor_params or {})}
        return RemainingLifeRegressor(**{**params, "objective": "quantile", "alpha": alpha})

    def fit(self, X: Any, y: Any, groups: Any) -> RemainingLifeInterval:
        """Fit on feature rows, remaining-life targets and their group (engine/device) ids.

        Returns
        -------
        self : RemainingLifeInterval
        """
        if not 0.0 < self.low < self.high < 1.0:
            raise ValueError(f"need 0 < low < high < 1, got {self.low}, {self.high}")
        X = np.asarray(X, dtype=float)
        y = np.asarray(y, dtype=float)
        groups = np.asarray(groups)
        cap = (self.regressor_params or {}).get("rul_cap", 125.0)
        target = np.clip(y, 0.0, cap) if cap is not None else y
        fit_rows, cal_rows = group_split(groups, self.calibration_fraction, self.random_state)
        lo = self._quantile(self.low).fit(X[fit_rows], y[fit_rows]).predict(X[cal_rows])
        hi = self._quantile(self.high).fit(X[fit_rows], y[fit_rows]).predict(X[cal_rows])
        t = target[cal_rows]
        miss = np.maximum(lo - t, t - hi)
        n = len(miss)
        level = min(1.0, math.ceil((n + 1) * (self.high - self.low)) / n)
        self.correction_ = float(np.quantile(miss, level))
        self.calibration_ = {
            "groups": len(np.unique(groups[cal_rows])),
            "rows": n,
            "coverage_before": float(np.mean(miss <= 0)),
            "coverage_after": float(np.mean(miss <= self.correction_)),
        }
        point = RemainingLifeRegressor(
            **{"random_state": self.random_state, **(self.regressor_params or {})}
        ).fit(X, y)
        low = self._quantile(self.low).fit(X, y)
        high = self._quantile(self.high).fit(X, y)
        self.boosters_ = (point.booster_, low.booster_, high.booster_)
        self.cap_ = cap
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Point estimate of remaining life."""
        return self.predict_interval(X)[1]

    def predict_interval(self, X: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(low, point, high)``, ordered, clipped to ``[0, rul_cap]``."""
        X = np.asarray(X, dtype=float)
        if X.ndim == 1:
            X = X.reshape(1, -1)
        point, lo, hi = (np.asarray(b.predict(X, num_threads=1)) for b in self.boosters_)
        upper = np.inf if self.cap_ is None else float(self.cap_)
        point = np.clip(point, 0.0, upper)
        lo = np.clip(np.minimum(lo - self.correction_, point), 0.0, upper)
        hi = np.clip(np.maximum(hi + self.correction_, point), 0.0, upper)
        return lo, point, hi

    def to_state(self) -> tuple[tuple[str, str, str], dict[str, Any]]:
        """The three LightGBM model texts (point, low, high) and a JSON-safe meta."""
        texts = tuple(b.model_to_string() for b in self.boosters_)
        meta = {
            "low": self.low,
            "high": self.high,
            "correction": self.correction_,
            "cap": self.cap_,
            "calibration": self.calibration_,
        }
        return texts, meta  # type: ignore[return-value]

    @classmethod
    def from_state(
        cls, texts: tuple[str, str, str], meta: Mapping[str, Any]
    ) -> RemainingLifeInterval:
        """Inverse of :meth:`to_state`."""
        est = cls(low=float(meta["low"]), high=float(meta["high"]))
        est.boosters_ = tuple(lgb.Booster(model_str=t) for t in texts)
        est.correction_ = float(meta["correction"])
        est.cap_ = None if meta["cap"] is None else float(meta["cap"])
        est.calibration_ = dict(meta.get("calibration") or {})
        return est


def ticks_to_failure(history: pd.DataFrame, failures: pd.DataFrame, cap: float) -> pd.Series:
    """Readings until the device's next failure, capped at ``cap``; NaN where unknown.

    A reading with no later failure is labelled ``cap`` when its device was
    observed for at least ``cap`` more readings (it survived that long), else
    NaN (censored: it might fail just after the data ends).
    """
    out = np.full(len(history), np.nan)
    ticks = history["tick"].to_numpy(dtype=np.int64)
    fails = {
        d: np.sort(g.to_numpy(dtype=np.int64))
        for d, g in failures.groupby("device_id", sort=False)["failed_tick"]
    }
    for dev, pos in history.groupby("device_id", sort=False).indices.items():
        t = ticks[pos]
        f = fails.get(dev, np.empty(0, dtype=np.int64))
        nxt = np.searchsorted(f, t, side="left")  # first failure at or after t
        has = nxt < len(f)
        left = np.where(has, f[np.minimum(nxt, max(len(f) - 1, 0))] - t if len(f) else 0, 0)
        last = t.max()
        value = np.where(has, np.minimum(left, cap), np.where(last - t >= cap, cap, np.nan))
        out[pos] = value
    return pd.Series(out, index=history.index, name="ticks_to_failure")


def interval_coverage(y: Any, low: Any, high: Any) -> dict[str, float]:
    """Share of true values inside ``[low, high]`` and the mean width."""
    y, low, high = (np.asarray(a, dtype=float) for a in (y, low, high))
    return {
        "coverage": float(np.mean((low <= y) & (y <= high))),
        "mean_width": float(np.mean(high - low)),
        "n": len(y),
    }


def format_time_to_failure(low: float, high: float, unit: str = "days") -> str:
    """``"likely to fail in 9-20 days"`` (rounded out, so the text never narrows the interval)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return ""
    lo, hi = math.floor(max(low, 0.0)), math.ceil(max(high, 0.0))
    if hi <= 0:
        return "likely to fail now"
    return f"likely to fail in {lo}-{hi} {unit}"


def time_to_failure_days(bundle: Any, asset_type: str, X: np.ndarray) -> list[tuple] | None:
    """``(low, median, high)`` days to failure per feature row, or None without a model.

    The bundle's :class:`RemainingLifeInterval` predicts readings; the card's
    ``tick_seconds`` (median time between a device's readings in the training
    data) turns them into days. A ``high`` at the cap means "at least that long".
    """
    est = getattr(bundle, "remaining_life", {}).get(asset_type)
    meta = (bundle.card.get("remaining_life") or {}).get(asset_type) or {}
    seconds = meta.get("tick_seconds")
    if est is None or not seconds:
        return None
    lo, mid, hi = est.predict_interval(X)
    scale = float(seconds) / 86400.0
    return list(
        zip((lo * scale).tolist(), (mid * scale).tolist(), (hi * scale).tolist(), strict=True)
    )
