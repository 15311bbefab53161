"""Train a :class:`~models.bundle.RiskModelBundle` from reading history and failures.

Labels: a reading at tick ``t`` is positive iff the same device fails within
``(t, t + horizon]`` ticks. Features come from :func:`models.features.compute_features`,
the same code the worker runs. Assets are split into training and held-out sets
as whole groups (never random rows, which would leak a device's own history into
its test score), and the reported metrics are those of the saved model on the
held-out assets.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score
from tqdm.auto import tqdm

from core.assets import ASSET_TYPES
from models.bundle import RiskModelBundle, make_version
from models.calibration import group_split
from models.drift import reference_profile
from models.failure_labels import failure_labels, maintenance_resets
from models.feature_spec import FeatureSpec
from models.features import compute_features
from models.health import CITY_HEALTH_WARMUP, HealthSpec, scoring_policy
from models.remaining_life import RemainingLifeInterval, interval_coverage, ticks_to_failure
from models.risk import FailureRiskClassifier

__all__ = ["frame_sha256", "train_risk_bundle"]

# Never features: ids, time, labels, and the simulator's ground-truth "health".
_ID_COLUMNS = {
    "device_id",
    "asset_id",
    "asset_type",
    "tick",
    "ts",
    "failed_tick",
    "failed_at",
    "health",
    "label",
}

DEFAULT_INTENDED_USE = (
    "Rank city assets by the risk that they fail within the label horizon, and raise "
    "maintenance alerts for a crew to inspect. Decision support only: a person decides "
    "whether to act."
)
DEFAULT_LIMITS = (
    "Trained on the data described under training_data; scores for asset types, sensor "
    "models or operating regimes not seen there are unreliable. Probabilities are "
    "calibrated on held-out assets of the same data and drift as the fleet changes. "
    "Failures without a sensor precursor cannot be predicted. Not a safety system."
)


def frame_sha256(*frames: pd.DataFrame) -> str:
    """SHA-256 of the frames' contents (values and index, row order included)."""
    h = hashlib.sha256()
    for frame in frames:
        h.update(",".join(map(str, frame.columns)).encode())
        h.update(pd.util.hash_pandas_object(frame, index=True).to_numpy().tobytes())
    return h.hexdigest()


def _metrics_for(
    history: pd.DataFrame, asset_type: str, spec_params: Mapping[str, Any]
) -> FeatureSpec:
    if asset_type in ASSET_TYPES:
        return FeatureSpec.for_asset_type(asset_type, **spec_params)
    # An asset type outside the catalogue: use whichever metric columns it reports.
    metrics = tuple(
        c
        for c in history.columns
        if c not in _ID_COLUMNS
        and pd.api.types.is_numeric_dtype(history[c])
        and history[c].notna().any()
    )
    return FeatureSpec(metrics=metrics, **spec_params)


def _json_safe(obj: Any) -> Any:
    """Replace NaN/inf by None and numpy scalars by Python ones (strict JSON)."""
    if isinstance(obj, Mapping):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _heldout_metrics(
    clf: FailureRiskClassifier,
    X: np.ndarray,
    y: np.ndarray,
    devices: np.ndarray,
    ticks: np.ndarray,
    failures: pd.DataFrame,
    horizon: int,
) -> dict[str, Any]:
    p = clf.risk(X)
    pred = p >= clf.threshold_
    tp = int(np.sum(pred & (y == 1)))
    fp = int(np.sum(pred & (y == 0)))
    fn = int(np.sum(~pred & (y == 1)))
    both = 0 < y.sum() < len(y)
    # Event level: a failure counts as caught if any reading in the horizon before
    # it scored above the threshold; that is what a crew experiences.
    caught = n_fail = 0
    held = failures[failures["device_id"].isin(np.unique(devices))]
    for dev, f in zip(held["device_id"], held["failed_tick"], strict=True):
        m = (devices == dev) & (ticks < f) & (ticks >= f - horizon)
        if not m.any():
            continue  # its warning window is outside the test rows (e.g. before a time cut)
        n_fail += 1
        caught += bool(pred[m].any())
    return {
        "rows": len(y),
        "positives": int(y.sum()),
        "auc": float(roc_auc_score(y, p)) if both else math.nan,
        "average_precision": float(average_precision_score(y, p)) if both else math.nan,
        "threshold": float(clf.threshold_),
        "precision": tp / (tp + fp) if tp + fp else math.nan,
        "recall": tp / (tp + fn) if tp + fn else math.nan,
        "alerting_rate": float(pred.mean()) if len(pred) else math.nan,
        "failures": n_fail,
        "failures_caught": caught,
    }


def _time_split(
    sub: pd.DataFrame,
    train: np.ndarray,
    test: np.ndarray,
    fraction: float,
    horizon: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Narrow an asset split to training before and testing after a time cut."""
    order = sub["ts"] if "ts" in sub.columns else sub["tick"]
    order = pd.to_datetime(order, utc=True) if "ts" in sub.columns else order
    lo, hi = order.min(), order.max()
    cut = lo + (hi - lo) * (1.0 - fraction)
    after = (order >= cut).to_numpy()
    # The gap: a training row's label looks `horizon` readings ahead, so drop the
    # rows of each device whose look-ahead reaches past the cut.
    ticks = sub["tick"].to_numpy()
    first_after = (
        pd.Series(np.where(after, ticks, np.iinfo(np.int64).max), index=sub.index)
        .groupby(sub["device_id"].to_numpy())
        .transform("min")
        .to_numpy()
    )
    clear = ticks + horizon < first_after
    return train & ~after & clear, test & after


RUL_CAP_HORIZONS = 4  # time-to-failure targets are capped at 4 label horizons
_RUL_PARAMS = {"n_estimators": 150, "min_child_samples": 20, "num_leaves": 15}


def _fit_remaining_life(
    X: np.ndarray,
    target: np.ndarray,
    groups: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    seed: int,
) -> tuple[RemainingLifeInterval, dict[str, Any]] | None:
    """Time to failure with a 10-90 % interval, and its coverage on the held-out assets
    (the simulator's ground truth); None when too few assets have a known target."""
    known = ~np.isnan(target)
    fit = train & known
    if len(np.unique(groups[fit])) < 4:
        return None
    cap = float(np.nanmax(target))
    est = RemainingLifeInterval(
        regressor_params={**_RUL_PARAMS, "rul_cap": cap}, random_state=seed
    ).fit(X[fit], target[fit], groups[fit])
    held = test & known
    if not held.any():
        return est, {"note": "no held-out assets with a known time to failure"}
    lo, mid, hi = est.predict_interval(X[held])
    t = target[held]
    near = t < cap  # rows that do fail within the cap: what a planner acts on
    return est, {
        **interval_coverage(t, lo, hi),
        "rmse": float(np.sqrt(np.mean((mid - t) ** 2))),
        "coverage_failing_within_cap": interval_coverage(t[near], lo[near], hi[near])["coverage"]
        if near.any()
        else math.nan,
        "quantiles": [est.low, est.high],
        "cap_readings": cap,
    }


def _tick_seconds(frame: pd.DataFrame) -> float | None:
    """Median time between a device's readings, to turn readings into days."""
    if "ts" not in frame.columns or len(frame) < 2:
        return None
    ts = pd.to_datetime(frame.sort_values(["device_id", "tick"])["ts"], utc=True)
    gaps = ts.groupby(frame["device_id"]).diff().dt.total_seconds().dropna()
    return float(gaps.median()) if len(gaps) else None


def _threshold_policy(classifier_params: Mapping[str, Any]) -> dict[str, Any]:
    budget = classifier_params.get("alert_budget")
    if budget is not None:
        return {"alert_budget": float(budget), "meaning": "share of readings allowed to alert"}
    precision = classifier_params.get(
        "target_precision", FailureRiskClassifier().get_params()["target_precision"]
    )
    return {
        "target_precision": float(precision),
        "meaning": "highest recall with held-out precision at least this (else best F1)",
    }


def train_risk_bundle(
    history: pd.DataFrame,
    failures: pd.DataFrame,
    *,
    horizon: int = 60,
    seed: int = 0,
    progress: bool = True,
    owner: str = "citywatch",
    test_fraction: float = 0.25,
    test_time_fraction: float = 0.0,
    reset_on_failure: bool = True,
    spec_params: Mapping[str, Any] | None = None,
    classifier_params: Mapping[str, Any] | None = None,
    intended_use: str = DEFAULT_INTENDED_USE,
    limits: str = DEFAULT_LIMITS,
    created_at: datetime | None = None,
    data_notes: Mapping[str, Any] | None = None,
    resets: pd.Series | None = None,
) -> tuple[RiskModelBundle, dict[str, Any]]:
    """Train one :class:`~models.risk.FailureRiskClassifier` per asset type.

    Parameters
    ----------
    history : pandas.DataFrame
        One row per reading: ``device_id``, ``asset_id``, ``asset_type``,
        ``tick`` (int order within a device), ``ts`` and one column per metric
        (NaN where a metric does not apply).
    failures : pandas.DataFrame
        ``device_id``, ``failed_tick`` (and optionally ``failed_at``).
    horizon : int, default=60
        Label look-ahead in ticks.
    seed : int, default=0
        Seeds the asset split and LightGBM; same seed and data, same model.
    progress : bool, default=True
        Show a tqdm bar over asset types.
    owner : str, default="citywatch"
        Recorded in the model card.
    test_fraction : float, default=0.25
        Share of each asset type's assets held out for the reported metrics.
    test_time_fraction : float, default=0.0
        If > 0, also split by time: the last share of the time range is the
        test period. The model trains on the training assets' readings before
        it (minus a gap of ``horizon`` readings, whose labels would look into
        the test period) and is scored on the held-out assets' readings in it.
    reset_on_failure : bool, default=True
        Reset a device's feature state at its first reading after a failure
        (see :func:`maintenance_resets`). The worker must then call
        ``reset_baseline()`` when a repair is recorded.
    resets : pandas.Series of bool, optional
        Indexed like ``history``: where to reset instead of
        :func:`maintenance_resets` (e.g. the stored maintenance events, see
        :func:`models.history.maintenance_reset_flags`). Used only with
        ``reset_on_failure``.
    spec_params : mapping, optional
        Extra :class:`~models.feature_spec.FeatureSpec` fields (e.g. ``window``).
    classifier_params : mapping, optional
        Extra :class:`~models.risk.FailureRiskClassifier` parameters.
    intended_use, limits : str
        Model-card text.
    created_at : datetime, optional
        Timezone-aware creation time (default now, UTC); fixes the version id.
    data_notes : mapping, optional
        Extra facts about the training data for the card's ``training_data``
        (e.g. where it came from and which labels were used).

    Returns
    -------
    bundle : RiskModelBundle
        The models (trained on the non-held-out assets) and their card.
    metrics : dict
        Per asset type: held-out ``auc``, ``average_precision``, ``precision``,
        ``recall`` at the threshold, ``failures_caught`` and sizes.
    """
    required = {"device_id", "asset_id", "asset_type", "tick"}
    missing = required - set(history.columns)
    if missing:
        raise KeyError(f"history lacks columns {sorted(missing)}")
    if {"device_id", "failed_tick"} - set(failures.columns):
        raise KeyError("failures needs columns device_id and failed_tick")
    if history.empty:
        raise ValueError("history is empty")
    if not 0.0 <= test_time_fraction < 1.0:
        raise ValueError("test_time_fraction must be in [0, 1)")
    if created_at is None:
        created_at = datetime.now(UTC)
    elif created_at.tzinfo is None:
        raise ValueError("created_at must be timezone-aware")
    spec_params = dict(spec_params or {})
    classifier_params = dict(classifier_params or {})

    labels = failure_labels(history, failures, horizon)
    frame = history.assign(_label=labels)
    if reset_on_failure:
        frame["_reset"] = (
            maintenance_resets(history, failures)
            if resets is None
            else resets.reindex(history.index, fill_value=False).astype(bool)
        )

    classifiers: dict[str, FailureRiskClassifier] = {}
    remaining: dict[str, RemainingLifeInterval] = {}
    rul_cap = RUL_CAP_HORIZONS * horizon
    ttf = ticks_to_failure(history, failures, rul_cap)
    specs: dict[str, FeatureSpec] = {}
    metrics: dict[str, Any] = {}
    drift_reference: dict[str, Any] = {}
    asset_types = sorted(frame["asset_type"].dropna().unique().tolist())
    for asset_type in tqdm(
        asset_types, desc="training", unit="asset type", disable=None if progress else True
    ):
        sub = frame[frame["asset_type"] == asset_type]
        spec = _metrics_for(sub, asset_type, spec_params)
        feats = compute_features(
            sub, spec, "device_id", "tick", reset_col="_reset" if reset_on_failure else None
        )
        sub = sub.loc[feats.index]
        X = feats.to_numpy()
        y = sub["_label"].to_numpy()
        groups = sub["asset_id"].astype(str).to_numpy()
        if y.sum() == 0 or len(np.unique(groups)) < 2:
            metrics[asset_type] = {"skipped": "needs failures and at least two assets"}
            continue
        train, test = group_split(groups, test_fraction, seed)
        if test_time_fraction > 0:
            train, test = _time_split(sub, train, test, test_time_fraction, horizon)
        if y[train].sum() == 0:
            train[:] = True  # too few failing assets to hold any out
            test[:] = False
        clf = FailureRiskClassifier(random_state=seed, **classifier_params)
        clf.fit(X[train], y[train], groups=groups[train])
        if test.any():
            m = _heldout_metrics(
                clf,
                X[test],
                y[test],
                sub["device_id"].to_numpy()[test],
                sub["tick"].to_numpy()[test],
                failures,
                horizon,
            )
        else:
            m = {"note": "no assets could be held out; no test metrics"}
        m.update(
            train_rows=int(train.sum()),
            train_assets=len(np.unique(groups[train])),
            test_assets=len(np.unique(groups[test])),
            threshold=float(clf.threshold_),
            threshold_strategy=clf.threshold_strategy_,
        )
        rul = _fit_remaining_life(X, ttf.loc[sub.index].to_numpy(), groups, train, test, seed)
        if rul is not None:
            remaining[asset_type], m["remaining_life"] = rul
        metrics[asset_type] = m
        classifiers[asset_type] = clf
        specs[asset_type] = spec
        # The training data's feature distribution (all its assets), for drift (PSI).
        drift_reference[asset_type] = reference_profile(X, spec.feature_names)
    if not classifiers:
        raise ValueError("no asset type had both failures and enough assets to train on")

    # Per asset type: which model alerts (labels decide) and the cold-start health spec.
    type_of = history.groupby("device_id")["asset_type"].first()
    fails_by_type = failures["device_id"].map(type_of).value_counts()
    policies = {
        t: scoring_policy(
            int(fails_by_type.get(t, 0)), metrics.get(t, {}).get("auc"), t in classifiers
        )
        for t in asset_types
    }
    health_specs = {
        t: HealthSpec(
            metrics=_metrics_for(frame[frame["asset_type"] == t], t, spec_params).metrics,
            warmup=CITY_HEALTH_WARMUP,
        ).to_dict()
        for t in asset_types
    }
    content_hash = frame_sha256(history, failures)
    created = created_at.astimezone(UTC).isoformat(timespec="seconds")
    version = make_version(created, content_hash)
    ts = pd.to_datetime(history["ts"], utc=True) if "ts" in history.columns else None
    card = {
        "created_at": created,
        "owner": owner,
        "model": {
            "kind": "FailureRiskClassifier (LightGBM, calibrated on held-out assets)",
            "params": {k: c.get_params() for k, c in classifiers.items()},
            "seed": seed,
        },
        "label": {
            "horizon_ticks": horizon,
            "definition": "positive iff the device fails within (t, t + horizon] ticks",
        },
        "training_data": {
            "rows": len(history),
            "devices": int(history["device_id"].nunique()),
            "assets": int(history["asset_id"].nunique()),
            "failures": len(failures),
            "ts_min": ts.min().isoformat() if ts is not None and len(ts) else None,
            "ts_max": ts.max().isoformat() if ts is not None and len(ts) else None,
            "tick_min": int(history["tick"].min()),
            "tick_max": int(history["tick"].max()),
            "sha256": content_hash,
            "split": f"assets grouped; {test_fraction:g} of each type's assets held out"
            + (
                f"; and time: the last {test_time_fraction:g} of the time range is the test "
                f"period, with a {horizon}-reading gap before it"
                if test_time_fraction > 0
                else ""
            ),
            "reset_on_failure": reset_on_failure,
            **dict(data_notes or {}),
        },
        "features": {k: list(s.feature_names) for k, s in specs.items()},
        "feature_specs": {k: s.to_dict() for k, s in specs.items()},
        "metrics": metrics,
        "thresholds": {k: float(c.threshold_) for k, c in classifiers.items()},
        "threshold_policy": _threshold_policy(classifier_params),
        "class_imbalance": (
            "rare positives: boosting loss weighted by class_weight="
            f"{classifier_params.get('class_weight')!r}; probabilities calibrated on held-out "
            "assets, threshold chosen on them for the policy above (not at 0.5)"
        ),
        "drift_reference": drift_reference,
        "scoring_policy": policies,
        "remaining_life": {
            t: {
                "unit": "readings",
                "tick_seconds": _tick_seconds(frame[frame["asset_type"] == t]),
                "cap_readings": rul_cap,
                "heldout": metrics[t].get("remaining_life"),
            }
            for t in remaining
        },
        "health_specs": health_specs,
        "intended_use": intended_use,
        "limits": limits,
    }
    bundle = RiskModelBundle(
        classifiers=classifiers,
        specs=specs,
        version=version,
        card=_json_safe(card),
        remaining_life=remaining,
    )
    return bundle, _json_safe(metrics)
