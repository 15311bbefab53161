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

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from lightgbm import Booster, LGBMClassifier
from lightgbm.basic import LightGBMError

from core.files import write_text_atomic
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
    "load_water_quality_model",
    "outlook_row",
    "parse_water_quality_model",
    "save_water_quality_model",
    "unsupervised_probability",
]
_FORMAT = "citywatch-water-quality/1"
UNSUPERVISED_VERSION = "wq-unsupervised"

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
    event_model: LGBMClassifier | Booster
    horizon_models: dict[int, LGBMClassifier | Booster]
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
        return _proba(self.event_model, x)

    def horizon_probability(self, features: pd.DataFrame | np.ndarray, hours: int) -> np.ndarray:
        """Probability of an incident within the next ``hours`` hours, per row."""
        x = self._x(features, horizon_feature_names(self.feature_names))
        return _proba(self.horizon_models[hours], x)

    @property
    def version(self) -> str:
        """Content hash: the same trees and thresholds, the same version."""
        return "wq-" + hashlib.sha256(_dumps(self).encode()).hexdigest()[:12]


def _proba(model: LGBMClassifier | Booster, x: np.ndarray) -> np.ndarray:
    if isinstance(model, Booster):  # a loaded model: predict() gives the probability
        return np.asarray(model.predict(x), dtype=float)
    return model.predict_proba(x)[:, 1]


def _booster_text(model: LGBMClassifier | Booster) -> str:
    booster = model if isinstance(model, Booster) else model.booster_
    return booster.model_to_string()


def _dumps(model: WaterQualityModel) -> str:
    doc = {
        "format": _FORMAT,
        "feature_names": list(model.feature_names),
        "alarm_threshold": model.alarm_threshold,
        "horizon_thresholds": {str(h): t for h, t in model.horizon_thresholds.items()},
        "params": model.params,
        "event_model": _booster_text(model.event_model),
        "horizon_models": {str(h): _booster_text(m) for h, m in model.horizon_models.items()},
    }
    return json.dumps(doc, sort_keys=True)


def save_water_quality_model(model: WaterQualityModel, path: str) -> str:
    """Write ``model`` as JSON (LightGBM's text format inside, no pickle); returns its version.

    Atomic: the JSON goes to a temporary file in the same directory, is flushed
    to disk, then renamed over ``path`` (``os.replace``). A worker reloading the
    file (``streams.water_quality``) therefore sees the old file or the new one,
    never half of it.
    """
    # The worker must be able to read a new file too: 0644, not mkstemp's 0600.
    write_text_atomic(path, _dumps(model), new_file_mode=0o644)
    return model.version


def load_water_quality_model(path: str) -> WaterQualityModel:
    """Read a model written by :func:`save_water_quality_model`.

    Raises ``ValueError`` for a file of another format; nothing in it is executed.
    LightGBM's own parser can abort the process on damaged tree text: a running
    worker checks a new file in a child process first (``models.water_quality_watch``).
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise ValueError(f"{path}: not a citywatch water-quality model ({exc})") from None
    return parse_water_quality_model(raw, path)


def parse_water_quality_model(raw: bytes, path: str = "<model>") -> WaterQualityModel:
    """The model in ``raw`` (a file's bytes); see :func:`load_water_quality_model`."""
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"{path}: not a citywatch water-quality model ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != _FORMAT:
        raise ValueError(f"{path}: not a citywatch water-quality model")
    try:
        model = WaterQualityModel(
            feature_names=tuple(str(n) for n in doc["feature_names"]),
            event_model=Booster(model_str=str(doc["event_model"])),
            horizon_models={
                int(h): Booster(model_str=str(s)) for h, s in doc["horizon_models"].items()
            },
            alarm_threshold=float(doc["alarm_threshold"]),
            horizon_thresholds={int(h): float(t) for h, t in doc["horizon_thresholds"].items()},
            params=dict(doc["params"]),
        )
    except (KeyError, TypeError, ValueError, AttributeError, LightGBMError) as exc:
        raise ValueError(f"{path}: a damaged water-quality model ({exc})") from None
    if model.event_model.num_feature() != len(event_feature_names(model.feature_names)):
        raise ValueError(f"{path}: the detector does not match the model's feature names")
    return model


def fit_water_quality(
    features: pd.DataFrame,
    ts: pd.Series,
    event: np.ndarray,
    *,
    params: Mapping[str, Any] | None = None,
    horizon_params: Mapping[int, Mapping[str, Any]] | None = None,
    horizons: Sequence[int] = HORIZONS_H,
    seed: int = 0,
    strict: bool = True,
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
    strict : bool, default=True
        Refuse a horizon whose labels are all one class; False leaves it out
        instead (a short history), so the station still gets the rest.
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
            if not strict:
                continue
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
    """What the worker needs per water-quality reading.

    Keeps one :class:`StationState` per device. :meth:`score_batch` updates the
    states reading by reading (in order) and then scores the whole batch in one
    LightGBM call per model, the cheap way (one-row predicts cost ~15x more).
    Without a model (no labels yet) the event probability is
    :func:`unsupervised_probability` and the horizons are None.

    Parameters
    ----------
    model : WaterQualityModel, optional
    """

    def __init__(self, model: WaterQualityModel | None = None) -> None:
        self.model = model
        self.states: dict[str, StationState] = {}
        self.version = model.version if model is not None else UNSUPERVISED_VERSION

    @property
    def alarm_threshold(self) -> float:
        """Event probability at and above which a reading is an alarm."""
        return self.model.alarm_threshold if self.model is not None else 0.5

    def score(
        self,
        device_id: str,
        ts: datetime,
        metrics: Mapping[str, Any],
        incident: bool | None = None,
    ) -> dict[str, Any]:
        """Score one reading; see :meth:`score_batch`."""
        return self.score_batch([(device_id, ts, metrics, incident)])[0]

    def score_batch(
        self, readings: Sequence[tuple[str, datetime, Mapping[str, Any], bool | None]]
    ) -> list[dict[str, Any]]:
        """Score ``(device_id, ts, metrics, incident)`` readings, in stream order.

        Returns one dict per reading: ``event_probability``, ``alarm``,
        ``horizons`` (hours -> probability or None), ``model_version`` and
        ``features`` (the row, for drift monitoring). A reading with no values
        gives a NaN probability and no alarm: a gap is not evidence either way.
        """
        rows = []
        for device_id, ts, metrics, incident in readings:
            state = self.states.get(device_id)
            if state is None:
                state = self.states[device_id] = StationState()
            rows.append(state.update(ts, metrics, incident))
        if not rows:
            return []
        names = self.states[readings[0][0]].feature_names
        x = np.asarray(rows, dtype=float)
        level = x[:, names.index("anomaly_level")]
        has = level == level
        p = np.full(len(rows), np.nan)
        horizons = {h: np.full(len(rows), np.nan) for h in HORIZONS_H}
        if self.model is None:
            p[has] = [unsupervised_probability(v) for v in level[has]]
        elif has.any():
            p[has] = self.model.event_probability(x[has])
            for h in self.model.horizon_models:
                horizons[h][has] = self.model.horizon_probability(x[has], h)
        threshold = self.alarm_threshold
        out = []
        for i, row in enumerate(rows):
            out.append(
                {
                    "event_probability": float(p[i]),
                    "alarm": bool(has[i] and p[i] >= threshold),
                    "horizons": {
                        h: (float(v[i]) if v[i] == v[i] else None) for h, v in horizons.items()
                    },
                    "model_version": self.version,
                    "features": row,
                }
            )
        return out


def outlook_row(device_id: str, asset_id: str, ts: datetime, result: Mapping[str, Any]):
    """The ``station_outlook`` row of one :meth:`StationScorer.score_batch` result."""
    from storage.outlook import OutlookRow

    hz = result["horizons"]
    return OutlookRow(
        ts=ts,
        device_id=device_id,
        asset_id=asset_id,
        model_version=result["model_version"],
        event_probability=result["event_probability"],
        alarm=result["alarm"],
        p_1h=hz.get(1),
        p_6h=hz.get(6),
        p_24h=hz.get(24),
        p_48h=hz.get(48),
    )
