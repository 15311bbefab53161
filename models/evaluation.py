"""Evaluation of the citywatch models on public benchmarks (C-MAPSS, SKAB).

Both evaluations use the production feature module (:mod:`models.features`)
and the production estimators (:mod:`models.risk`); only the
:class:`~models.feature_spec.FeatureSpec` parameters are dataset-specific, and they
are the module constants below.

* C-MAPSS: configuration chosen on a validation split of *training* engines,
  never on the test set; the test set is scored once.
* SKAB: leave-whole-files-out; no experiment is ever split by rows.

Figures, each with its command, are in docs/models.md ("Public benchmarks").
How configurations are chosen: C-MAPSS by RMSE on held-out training engines
(:data:`CMAPSS_REGRESSOR_CANDIDATES`); SKAB per outer fold by inner
leave-files-out on the training files only (:data:`SKAB_CANDIDATES`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score
from tqdm.auto import tqdm

from models.calibration import group_split
from models.datasets import CMAPSS_SENSORS, load_cmapss_subset, load_skab
from models.feature_spec import FeatureSpec
from models.features import compute_features
from models.remaining_life import RemainingLifeInterval, interval_coverage
from models.risk import FailureRiskClassifier, RemainingLifeRegressor

__all__ = [
    "CMAPSS_FEATURES",
    "SKAB_FEATURES",
    "evaluate_cmapss",
    "evaluate_skab",
    "phm08_score",
    "skab_binary_scores",
]

# C-MAPSS: the cycle count (readings since maintenance) carries much of the signal;
# engine-to-engine offsets are removed by a frozen per-engine baseline over the
# first 30 cycles (every test engine has at least 31). Short and long windows
# track the degradation trend. Chosen on validation engines (see evaluate_cmapss).
CMAPSS_FEATURES: dict[str, Any] = {
    "window": 10,
    "extra_windows": (30,),
    "window_stats": ("mean", "slope"),
    "point_stats": ("ewm", "delta_baseline"),
    "baseline_warmup": 30,
    "baseline_alpha": 0.0,
    "include_age": True,
}

# SKAB: each experiment is one "device" with its own baseline, learned over its
# first 150 seconds (well before any labelled fault) and then frozen. Only
# baseline-relative statistics are used, so a model trained on some operating
# points transfers to others (the anomaly-free file runs at a different flow
# and vibration level). Cross-sensor "how abnormal overall" aggregates let a
# fault that shows on a sensor no training fault touched still score. No age
# feature: in SKAB the fault onset time is an artefact of the protocol and
# would leak.
SKAB_FEATURES: dict[str, Any] = {
    "window": 5,
    "extra_windows": (30,),
    "window_stats": ("std", "slope"),
    "point_stats": ("delta_baseline", "z_baseline", "z_last"),
    "aggregate_stats": ("max_abs_z_baseline", "mean_abs_z_baseline", "max_abs_z_last"),
    "baseline_warmup": 150,
    "baseline_alpha": 0.0,
    "include_age": False,
}

# Regressor candidates, fixed before scoring; evaluate_cmapss picks one by RMSE on
# held-out *training* engines. The first is the configuration used until 2026-11-30.
CMAPSS_REGRESSOR_CANDIDATES: tuple[dict[str, Any], ...] = (
    {"num_leaves": 15, "min_child_samples": 50},
    {"num_leaves": 7, "min_child_samples": 50},
    {"num_leaves": 31, "min_child_samples": 100},
)

_SKAB_NON_METRICS = {"file", "tick", "datetime", "anomaly", "changepoint", "labelled"}


def phm08_score(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """PHM08 challenge score: asymmetric, late predictions cost more.

    ``sum(exp(-d / 13) - 1)`` for early predictions (``d = pred - true < 0``)
    plus ``sum(exp(d / 10) - 1)`` for late ones. Lower is better.
    """
    d = np.asarray(y_pred, dtype=float) - np.asarray(y_true, dtype=float)
    return float(np.sum(np.where(d < 0, np.exp(-d / 13.0) - 1.0, np.exp(d / 10.0) - 1.0)))


def _rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(a, float) - np.asarray(b, float)) ** 2)))


def _binary_at(y: np.ndarray, pred: np.ndarray, score: np.ndarray) -> dict[str, float]:
    y = y.astype(bool)
    pred = pred.astype(bool)
    tp = int(np.sum(pred & y))
    fp = int(np.sum(pred & ~y))
    fn = int(np.sum(~pred & y))
    both = 0 < y.sum() < len(y)
    return {
        "auc": float(roc_auc_score(y, score)) if both else math.nan,
        "precision": tp / (tp + fp) if tp + fp else math.nan,
        "recall": tp / (tp + fn) if tp + fn else math.nan,
        "positives": int(y.sum()),
        "alerts": int(pred.sum()),
    }


def evaluate_cmapss(
    data_dir: str | Path,
    seed: int = 0,
    progress: bool = True,
    *,
    subset: str = "FD001",
    rul_cap: float = 125.0,
    horizon: int = 30,
    validation_fraction: float = 0.2,
    spec_params: Mapping[str, Any] | None = None,
    regressor_params: Mapping[str, Any] | None = None,
    classifier_params: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """RUL regression and failure classification on a C-MAPSS subset.

    Steps: features for every cycle of every engine with
    :func:`~models.features.compute_features` (sensors that take more than two
    distinct values in training; :data:`CMAPSS_FEATURES`); a validation score
    on ``validation_fraction`` of the training engines held out; a
    :class:`~models.risk.RemainingLifeRegressor` refitted on all training
    engines and scored once on the last cycle of each test engine; and a
    :class:`~models.risk.FailureRiskClassifier` for "fails within ``horizon``
    cycles", scored on the same last cycles.

    Parameters
    ----------
    data_dir : str or Path
        Folder with the subset's files (or its parent with ``cmapss/``).
    seed : int, default=0
        Seeds the validation split and the models.
    progress : bool, default=True
        Show a tqdm bar over the steps.
    subset : str, default="FD001"
    rul_cap : float, default=125.0
        Cap on RUL targets and on the true test RUL (the usual convention).
    horizon : int, default=30
        Classifier label: the engine fails within this many cycles.
    validation_fraction : float, default=0.2
        Share of training engines held out for the validation score.
    spec_params, regressor_params, classifier_params : mapping, optional
        Overrides for :data:`CMAPSS_FEATURES` and the estimators.

    Returns
    -------
    dict
        ``rmse`` and ``phm_score`` on the test engines' last cycles (true RUL
        capped at ``rul_cap``), ``rmse_uncapped``, ``auc`` / ``precision`` /
        ``recall`` of the classifier, ``validation`` scores, ``n_test_units``,
        ``excluded_test_units`` (units without a RUL row) and ``config``.
    """
    steps = tqdm(total=4, desc=f"C-MAPSS {subset}", disable=None if progress else True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train, test, rul = load_cmapss_subset(data_dir, subset)
    data_warnings = [str(w.message) for w in caught]
    sensors = tuple(s for s in CMAPSS_SENSORS if train[s].nunique() > 2)
    spec = FeatureSpec(metrics=sensors, **{**CMAPSS_FEATURES, **(spec_params or {})})
    reg_params = {"random_state": seed, **(regressor_params or {}), "rul_cap": rul_cap}
    clf_params = {"random_state": seed, **(classifier_params or {})}

    f_train = compute_features(train, spec, device_col="unit", order_col="cycle")
    f_test = compute_features(test, spec, device_col="unit", order_col="cycle")
    train = train.loc[f_train.index]
    test = test.loc[f_test.index]
    X = f_train.to_numpy()
    rul_train = train["rul"].to_numpy(dtype=float)
    units = train["unit"].to_numpy()
    steps.update()

    # Validation on held-out training engines: every cycle from the 31st on with
    # true RUL <= 150, roughly the range of the test cut-off points.
    fit_rows, val_rows = group_split(units, validation_fraction, seed)
    scored = val_rows & (train["cycle"].to_numpy() >= 31) & (rul_train <= 150)
    val_true = np.minimum(rul_train[scored], rul_cap)
    candidates = [{}] if regressor_params else list(CMAPSS_REGRESSOR_CANDIDATES)
    val_rmse = []
    for cand in candidates:
        reg = RemainingLifeRegressor(**{**reg_params, **cand}).fit(X[fit_rows], rul_train[fit_rows])
        val_rmse.append(_rmse(reg.predict(X[scored]), val_true))
    best = int(np.argmin(val_rmse))  # chosen on training engines only
    reg_params = {**reg_params, **candidates[best]}
    validation = {
        "units": len(np.unique(units[val_rows])),
        "rows": int(scored.sum()),
        "rmse": val_rmse[best],
        "candidates": [{**c, "rmse": r} for c, r in zip(candidates, val_rmse, strict=True)],
        "chosen": best,
    }
    steps.update()

    reg = RemainingLifeRegressor(**reg_params).fit(X, rul_train)
    last = test.groupby("unit", sort=True).tail(1)
    scored_units = last["unit"].isin(rul.index).to_numpy()
    last = last[scored_units]
    X_last = f_test.loc[last.index].to_numpy()
    true_rul = rul.loc[last["unit"]].to_numpy(dtype=float)
    pred = reg.predict(X_last)
    interval = RemainingLifeInterval(regressor_params=reg_params, random_state=seed).fit(
        X, rul_train, units
    )
    lo, _, hi = interval.predict_interval(X_last)
    steps.update()

    clf = FailureRiskClassifier(**clf_params).fit(X, (rul_train <= horizon).astype(int), units)
    risk = clf.risk(X_last)
    cls = _binary_at(true_rul <= horizon, risk >= clf.threshold_, risk)
    steps.update()
    steps.close()

    capped = np.minimum(true_rul, rul_cap)
    return {
        "dataset": f"C-MAPSS {subset}",
        "rmse": _rmse(pred, capped),
        "phm_score": phm08_score(capped, pred),
        "rmse_uncapped": _rmse(pred, true_rul),
        "auc": cls["auc"],
        "precision": cls["precision"],
        "recall": cls["recall"],
        "interval": {
            "quantiles": [interval.low, interval.high],
            **interval_coverage(capped, lo, hi),
            "correction": interval.correction_,
            "calibration": interval.calibration_,
        },
        "classifier": {**cls, "horizon": horizon, "threshold": clf.threshold_},
        "validation": validation,
        "n_train_units": len(np.unique(units)),
        "n_test_units": len(last),
        "excluded_test_units": sorted(
            int(u) for u in set(test["unit"].unique()) - set(rul.index.tolist())
        ),
        "data_warnings": data_warnings,
        "config": {
            "seed": seed,
            "rul_cap": rul_cap,
            "feature_spec": spec.to_dict(),
            "regressor": RemainingLifeRegressor(**reg_params).get_params(),
            "classifier": FailureRiskClassifier(**clf_params).get_params(),
        },
    }


def skab_binary_scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """SKAB's outlier-detection scores on pooled point-wise labels.

    As in SKAB's ``chp_score(..., metric="binary")`` (waico/SKAB,
    ``core/metrics.py``, from the tsad library): TP, TN, FP and FN are summed
    over all evaluated files, then ``F1 = TP / (TP + (FN + FP) / 2)``,
    ``FAR = FP / (FP + TN) * 100`` (false-alarm rate, %) and
    ``MAR = FN / (FN + TP) * 100`` (missed-alarm rate, %). SKAB rounds the
    published figures to 2 decimals; these are unrounded.
    """
    t = np.asarray(y_true) == 1
    p = np.asarray(y_pred) == 1
    tp = int(np.sum(t & p))
    tn = int(np.sum(~t & ~p))
    fp = int(np.sum(~t & p))
    fn = int(np.sum(t & ~p))
    return {
        "f1": tp / (tp + (fn + fp) / 2) if tp + fn + fp else math.nan,
        "far": 100.0 * fp / (fp + tn) if fp + tn else math.nan,
        "mar": 100.0 * fn / (fn + tp) if fn + tp else math.nan,
        "tp": tp,
        "tn": tn,
        "fp": fp,
        "fn": fn,
    }


# Feature-spec candidates (overrides of SKAB_FEATURES), fixed before scoring;
# evaluate_skab picks one per held-out fold by inner leave-files-out on the
# training files only.
SKAB_CANDIDATES: tuple[dict[str, Any], ...] = (
    {},
    {"window": 10, "extra_windows": (60,)},
    {
        "point_stats": ("delta_baseline", "z_baseline"),
        "aggregate_stats": ("max_abs_z_baseline", "mean_abs_z_baseline"),
    },
)


def _file_folds(names: np.ndarray, n_folds: int | None, seed: int) -> list[np.ndarray]:
    if n_folds is None or n_folds >= len(names):
        return [np.array([f]) for f in names]
    order = np.random.default_rng(seed).permutation(names)
    return [order[i::n_folds] for i in range(n_folds)]


def evaluate_skab(
    data_dir: str | Path,
    seed: int = 0,
    progress: bool = True,
    *,
    n_folds: int | None = None,
    inner_folds: int = 3,
    spec_params: Mapping[str, Any] | None = None,
    classifier_params: Mapping[str, Any] | None = None,
    use_unlabelled: bool = True,
) -> dict[str, Any]:
    """Anomaly detection on SKAB experiments, leaving whole files out.

    Every ``*.csv`` below ``data_dir`` is one experiment (one device). For each
    outer fold, the feature spec is chosen among :data:`SKAB_CANDIDATES` by
    pooled F1 over ``inner_folds`` leave-files-out folds of the *training*
    files (nested selection); then a :class:`~models.risk.FailureRiskClassifier`
    is trained on all training files' ``anomaly`` labels, with calibration and
    threshold chosen on held-out training files, and predicts every row of the
    held-out files. Files without an ``anomaly`` column (the anomaly-free run)
    are only ever used for training, as all-normal examples.

    Parameters
    ----------
    data_dir : str or Path
        SKAB folder (or its parent with ``skab/``).
    seed : int, default=0
    progress : bool, default=True
        Show a tqdm bar over the folds.
    n_folds : int, optional
        Outer folds of labelled files; None leaves one file out at a time.
    inner_folds : int, default=3
        Inner folds of the training files for the selection.
    spec_params : mapping, optional
        A single spec override instead of the candidates (no selection).
    classifier_params : mapping, optional
        Overrides for the classifier.
    use_unlabelled : bool, default=True
        Train on the unlabelled (anomaly-free) files as well.

    Returns
    -------
    dict
        ``f1``, ``far`` and ``mar`` (SKAB definitions, see
        :func:`skab_binary_scores`) pooled over the held-out predictions,
        ``auc``, per-file scores, the candidate ``chosen`` per fold, and ``config``.
    """
    data = load_skab(data_dir)
    metrics = tuple(
        c
        for c in data.columns
        if c not in _SKAB_NON_METRICS and pd.api.types.is_numeric_dtype(data[c])
    )
    candidates = [dict(spec_params)] if spec_params is not None else list(SKAB_CANDIDATES)
    specs = [FeatureSpec(metrics=metrics, **{**SKAB_FEATURES, **c}) for c in candidates]
    clf_params = {"random_state": seed, "n_estimators": 200, **(classifier_params or {})}

    feats = [compute_features(data, sp, device_col="file", order_col="tick") for sp in specs]
    data = data.loc[feats[0].index]
    Xs = [f.loc[data.index].to_numpy() for f in feats]
    y = data["anomaly"].to_numpy().astype(int)
    files = data["file"].to_numpy()
    labelled = data["labelled"].to_numpy(dtype=bool)
    test_files = np.unique(files[labelled])
    if len(test_files) < 2:
        raise ValueError("SKAB evaluation needs at least two files with 'anomaly' labels")
    folds = _file_folds(test_files, n_folds, seed)

    def fit_predict(X: np.ndarray, fit: np.ndarray, held: np.ndarray):
        clf = FailureRiskClassifier(**clf_params).fit(X[fit], y[fit], groups=files[fit])
        r = clf.risk(X[held])
        return r, (r >= clf.threshold_).astype(int)

    pred = np.zeros(len(y), dtype=int)
    risk = np.full(len(y), np.nan)
    chosen: dict[str, int] = {}
    for fold in tqdm(folds, desc="SKAB folds", disable=None if progress else True):
        held = np.isin(files, fold)
        fit = ~held & (labelled | use_unlabelled)
        best = 0
        if len(specs) > 1:
            train_files = np.setdiff1d(test_files, fold)
            inner = _file_folds(train_files, inner_folds, seed)
            f1s = []
            for X in Xs:
                yi, pi = [], []
                for ifold in inner:
                    iheld = np.isin(files, ifold)
                    _, p = fit_predict(X, fit & ~iheld, iheld)
                    yi.append(y[iheld])
                    pi.append(p)
                f1s.append(skab_binary_scores(np.concatenate(yi), np.concatenate(pi))["f1"])
            best = int(np.nanargmax(f1s))
        chosen.update({str(f): best for f in fold})
        risk[held], pred[held] = fit_predict(Xs[best], fit, held)

    scored = labelled
    scores = skab_binary_scores(y[scored], pred[scored])
    per_file = {str(f): skab_binary_scores(y[files == f], pred[files == f]) for f in test_files}
    return {
        "dataset": "SKAB",
        **scores,
        "auc": float(roc_auc_score(y[scored], risk[scored])),
        "n_files": len(test_files),
        "n_rows": int(scored.sum()),
        "folds": len(folds),
        "per_file": per_file,
        "spread": {
            k: {
                "min": float(np.nanmin([s[k] for s in per_file.values()])),
                "median": float(np.nanmedian([s[k] for s in per_file.values()])),
                "max": float(np.nanmax([s[k] for s in per_file.values()])),
            }
            for k in ("f1", "far", "mar")
        },
        "chosen": chosen,
        "selection": f"nested: candidate by pooled F1 over {inner_folds} inner file folds",
        "config": {
            "seed": seed,
            "candidates": [sp.to_dict() for sp in specs],
            "classifier": FailureRiskClassifier(**clf_params).get_params(),
            "use_unlabelled": use_unlabelled,
            "unlabelled_files": sorted(set(files[~labelled].tolist())),
        },
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m models.evaluation {cmapss,skab} [--data PATH] [--seed N]``: print JSON."""
    import argparse
    import json
    import os

    parser = argparse.ArgumentParser(prog="python -m models.evaluation", description=main.__doc__)
    parser.add_argument("benchmark", choices=("cmapss", "skab"))
    parser.add_argument(
        "--data",
        type=Path,
        default=Path(os.environ.get("CITYWATCH_DATASETS", "../shared/datasets")),
        help="datasets folder (default: $CITYWATCH_DATASETS or ../shared/datasets)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--folds", type=int, default=None, help="SKAB: file folds (default LOFO)")
    parser.add_argument("--per-file", action="store_true", help="SKAB: include per-file scores")
    args = parser.parse_args(argv)
    if args.benchmark == "cmapss":
        result = evaluate_cmapss(args.data, seed=args.seed)
    else:
        result = evaluate_skab(args.data, seed=args.seed, n_folds=args.folds)
        if not args.per_file:
            result.pop("per_file")
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
