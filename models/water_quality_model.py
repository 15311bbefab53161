"""Water-quality scorer: an incident now, and the chance of one within 1/6/24/48 h.

Plain functions and one estimator-style class, so the worker can hook them in
with a few lines (see :class:`StationScorer`). Features come only from
:class:`models.water_quality.StationState`, the code the stream runs.

* Before a station has labels, the event score is unsupervised: its
  ``anomaly_level`` (largest short-window jump, in day standard deviations).
* Once labels exist, :func:`fit_water_quality` trains LightGBM classifiers for
  the event itself and for each horizon.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from lightgbm import LGBMClassifier

from models.water_quality import (
    HORIZONS_H,
    StationState,
    event_feature_names,
    horizon_feature_names,
    horizon_labels,
)

__all__ = [
    "DEFAULT_PARAMS",
    "StationScorer",
    "WaterQualityModel",
    "fit_water_quality",
    "unsupervised_probability",
]

# Shallow, heavily regularised trees: a few dozen incidents, and neighbouring
# minutes are nearly copies of each other, so deep trees memorise events.
DEFAULT_PARAMS: dict[str, Any] = {
    "n_estimators": 200,
    "learning_rate": 0.05,
    "num_leaves": 15,
    "min_child_samples": 400,
    "subsample": 0.5,
    "subsample_freq": 1,
    "colsample_bytree": 0.5,
    "reg_lambda": 1.0,
    "verbose": -1,
    "n_jobs": 1,
}
STRIDE = 2  # train on every 2nd minute: the neighbours add time, not information


def unsupervised_probability(level: float) -> float:
    """Map ``anomaly_level`` to [0, 1) for the label-free score (monotone, so
    threshold-free metrics are unchanged): 0.5 at the anomaly level of 3 SD."""
    if level != level:
        return float("nan")
    return 1.0 - math.exp(-math.log(2.0) * max(level, 0.0) / 3.0)


def _classifier(params: Mapping[str, Any], y: np.ndarray, seed: int) -> LGBMClassifier:
    pos = max(int(y.sum()), 1)
    neg = max(len(y) - pos, 1)
    # Balanced weight: balanced accuracy and AUC are what is reported.
    return LGBMClassifier(**{**params, "scale_pos_weight": neg / pos, "random_state": seed})


@dataclass
class WaterQualityModel:
    """Fitted event and horizon classifiers over :class:`StationState` features.

    Attributes
    ----------
    feature_names : tuple of str
        The full :class:`StationState` row the model expects.
    event_model : LGBMClassifier
    horizon_models : dict of int to LGBMClassifier
        Keyed by horizon in hours.
    alarm_threshold : float
        Event probability above which a minute is an alarm.
    horizon_thresholds : dict of int to float
        Probability above which the outlook says "incident expected".
    params : dict
        The LightGBM parameters used.
    """

    feature_names: tuple[str, ...]
    event_model: LGBMClassifier
    horizon_models: dict[int, LGBMClassifier]
    alarm_threshold: float = 0.5
    horizon_thresholds: dict[int, float] = field(
        default_factory=lambda: dict.fromkeys(HORIZONS_H, 0.5)
    )
    params: dict[str, Any] = field(default_factory=dict)

    def _x(self, features: pd.DataFrame | np.ndarray, names: Sequence[str]) -> np.ndarray:
        if isinstance(features, pd.DataFrame):
            return features[list(names)].to_numpy(dtype=float)
        x = np.asarray(features, dtype=float).reshape(-1, len(self.feature_names))
        pos = {n: i for i, n in enumerate(self.feature_names)}
        return x[:, [pos[n] for n in names]]

    def event_probability(self, features: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Probability that each row's minute lies inside a quality incident."""
        x = self._x(features, event_feature_names(self.feature_names))
        return self.event_model.predict_proba(x)[:, 1]

    def horizon_probability(self, features: pd.DataFrame | np.ndarray, hours: int) -> np.ndarray:
        """Probability of an incident within the next ``hours`` hours, per row."""
        x = self._x(features, horizon_feature_names(self.feature_names))
        return self.horizon_models[hours].predict_proba(x)[:, 1]


def fit_water_quality(
    features: pd.DataFrame,
    ts: pd.Series,
    event: np.ndarray,
    *,
    params: Mapping[str, Any] | None = None,
    horizon_params: Mapping[int, Mapping[str, Any]] | None = None,
    horizons: Sequence[int] = HORIZONS_H,
    seed: int = 0,
) -> WaterQualityModel:
    """Train the event and horizon classifiers on one station's labelled history.

    Parameters
    ----------
    features : pandas.DataFrame
        :func:`models.water_quality.station_features` output, in time order.
    ts : pandas.Series
        Reading times, aligned with ``features``.
    event : array of 0/1
        Incident labels per reading.
    params : mapping, optional
        LightGBM parameters of the event detector (default :data:`DEFAULT_PARAMS`).
    horizon_params : mapping of int to mapping, optional
        LightGBM parameters per horizon (default: ``params``).
    horizons : sequence of int
        Forecast horizons in hours.
    seed : int
    """
    params = dict(params or DEFAULT_PARAMS)
    ev = np.asarray(event).astype(int)
    if ev.sum() == 0:
        raise ValueError("no incident in the training data: use the unsupervised score")
    has_data = features["anomaly_level"].notna().to_numpy()
    take = has_data & (np.arange(len(ev)) % STRIDE == 0)
    x = features[list(event_feature_names(features.columns))].to_numpy(dtype=float)
    event_model = _classifier(params, ev[take], seed).fit(x[take], ev[take])
    xh = features[list(horizon_feature_names(features.columns))].to_numpy(dtype=float)
    horizon_models = {}
    for h in horizons:
        y, known = horizon_labels(ts, ev, h)
        sel = take & known
        if y[sel].sum() == 0 or y[sel].sum() == sel.sum():
            raise ValueError(f"{h} h labels are all one class in the training data")
        hp = dict((horizon_params or {}).get(int(h), params))
        horizon_models[int(h)] = _classifier(hp, y[sel], seed).fit(xh[sel], y[sel])
    return WaterQualityModel(
        feature_names=tuple(features.columns),
        event_model=event_model,
        horizon_models=horizon_models,
        params=params,
    )


class StationScorer:
    """What the worker needs per water-quality reading, in one call.

    Keeps one :class:`StationState` per device; :meth:`score` updates it and
    returns the event probability, whether it is an alarm, and the horizon
    probabilities. Without a model (no labels yet) the event probability is
    :func:`unsupervised_probability` and the horizons are None.

    Parameters
    ----------
    model : WaterQualityModel, optional
    """

    def __init__(self, model: WaterQualityModel | None = None) -> None:
        self.model = model
        self.states: dict[str, StationState] = {}

    def score(
        self,
        device_id: str,
        ts: datetime,
        metrics: Mapping[str, Any],
        incident: bool | None = None,
    ) -> dict[str, Any]:
        """Score one reading; returns ``{"event_probability", "alarm", "horizons", "features"}``.

        ``horizons`` maps hours to probability, ``features`` is the feature row
        (for drift monitoring). A reading with no values gives NaN probabilities
        and no alarm: a gap is not evidence either way.
        """
        state = self.states.get(device_id)
        if state is None:
            state = self.states[device_id] = StationState()
        row = state.update(ts, metrics, incident)
        level = row[state.feature_names.index("anomaly_level")]
        if level != level:
            return {
                "event_probability": float("nan"),
                "alarm": False,
                "horizons": dict.fromkeys(HORIZONS_H),
                "features": row,
            }
        if self.model is None:
            p = unsupervised_probability(level)
            return {
                "event_probability": p,
                "alarm": p >= 0.5,
                "horizons": dict.fromkeys(HORIZONS_H),
                "features": row,
            }
        x = np.asarray(row, dtype=float)[None, :]
        p = float(self.model.event_probability(x)[0])
        horizons = {
            h: float(self.model.horizon_probability(x, h)[0]) for h in self.model.horizon_models
        }
        return {
            "event_probability": p,
            "alarm": p >= self.model.alarm_threshold,
            "horizons": horizons,
            "features": row,
        }
