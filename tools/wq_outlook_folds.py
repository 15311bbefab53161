"""Rolling-origin study of the 1-48 h outlook, inside the training half only.

Run: ``PYTHONPATH=. python tools/wq_outlook_folds.py ../shared/datasets/gecco2018/train.csv``

Only the training half (the first 50 % of the rows) is read; the test half is
never loaded. The single validation part of ``bench water-quality`` holds
about 13 days of 48 h labels (a couple of incident clusters), too few to tell
variants apart. Here every origin in :data:`ORIGINS` (a share of the training
half) starts one fold: models are fitted on the rows before the origin, with
horizon labels censored at the origin (``horizon_labels(ts[:origin], ...)``,
so no label peeks past it), and score the rows up to the next origin (the last
fold up to the end of the training half). Scored rows are those with every
reading and a known label. Every threshold is chosen without the fold's
scored rows.

Variants, fixed before the first run (48 h first, then 24 h):

a. ``static``: the current outlook, as the bench builds it, nested in the
   fold: fit both :data:`HORIZON_GRID` settings on the first 70 % of the rows
   before the origin, keep the better AUC on the remaining 30 %, choose the
   threshold there (best balanced accuracy on ``_THRESHOLDS``), refit the kept
   setting on every row before the origin;
b. ``static@0.5``: the same model, threshold 0.5 (balanced accuracy does not
   depend on the class prior, and 0.5 is its optimum for a classifier trained
   with balanced class weights: nothing tuned);
c. ``logistic@0.5``: ``LogisticRegression(class_weight="balanced")`` on the
   standardised history features (``horizon_feature_names``; median-imputed
   gaps), threshold 0.5: a low-variance model;
d. ``persistence AND static@0.5`` (incident expected only when persistence
   says so and the model agrees: cuts persistence's false alarms after a
   cluster ends) and ``persistence OR static@0.5``;
e. ``look-back``: persistence with its look-back window L chosen from
   :data:`LOOKBACK_H` by balanced accuracy on the rows before the origin,
   because the incident clusters' length, not the horizon, sets how long an
   incident predicts more of them, and one parameter cannot overfit a few
   clusters the way trees can.

Reported per fold and as the mean over folds: balanced accuracy, AUC (scored
variants only) and persistence ("an incident in the last H hours") on the
same rows. Decision rule, fixed before the first run: a variant replaces the
current outlook only if its mean 48 h balanced accuracy beats both ``static``
and persistence by at least :data:`MARGIN`.
"""

from __future__ import annotations

import itertools
import sys
from typing import Any

import numpy as np
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from models.water_quality import (
    METRICS,
    horizon_feature_names,
    horizon_labels,
    load_gecco,
    persistence,
    station_features,
)
from models.water_quality_eval import (
    _THRESHOLDS,
    HORIZON_GRID,
    VALIDATION_FRACTION,
    _best_threshold,
    split_by_time,
)
from models.water_quality_model import STRIDE, _classifier

ORIGINS = (0.5, 0.6, 0.7, 0.8)
LOOKBACK_H = (6, 12, 24, 36, 48, 72, 96, 120, 168)
MARGIN = 0.02
VARIANTS = (
    "static",
    "static@0.5",
    "logistic@0.5",
    "persistence AND static@0.5",
    "persistence OR static@0.5",
    "look-back",
    "persistence",
)


def _fit_lgbm(x: np.ndarray, y: np.ndarray, rows: np.ndarray, params: dict[str, Any]):
    return _classifier(params, y[rows], 0).fit(x[rows], y[rows])


def static_outlook(
    x: np.ndarray, ts, event: np.ndarray, trainable: np.ndarray, complete: np.ndarray,
    origin: int, h: int,
) -> tuple[np.ndarray, float, str]:  # fmt: skip
    """Probabilities of every row from the bench's procedure, nested before ``origin``.

    Returns the probabilities, the threshold and what was chosen, in words.
    """
    inner = round(origin * (1.0 - VALIDATION_FRACTION))
    y_in, known_in = horizon_labels(ts[:inner], event[:inner], h)
    y_o, known_o = horizon_labels(ts[:origin], event[:origin], h)
    val = (np.arange(origin) >= inner) & complete[:origin] & known_o
    k, threshold, chosen = 0, 0.5, "grid 0, threshold 0.5 (one class in the inner validation)"
    if 0 < y_o[val].sum() < val.sum():
        rows = trainable[:inner] & known_in
        cands = [_fit_lgbm(x[:inner], y_in, rows, p) for p in HORIZON_GRID]
        ps = [m.predict_proba(x[:origin][val])[:, 1] for m in cands]
        k = int(np.argmax([roc_auc_score(y_o[val], p) for p in ps]))
        threshold = _best_threshold(y_o[val], ps[k], balanced_accuracy_score)
        chosen = f"grid {k}, threshold {threshold:.2f}"
    model = _fit_lgbm(x[:origin], y_o, trainable[:origin] & known_o, HORIZON_GRID[k])
    return model.predict_proba(x)[:, 1], threshold, chosen


def logistic_outlook(
    x: np.ndarray, ts, event: np.ndarray, trainable: np.ndarray, origin: int, h: int
) -> np.ndarray:
    """Balanced-weight logistic regression on standardised history features."""
    y_o, known_o = horizon_labels(ts[:origin], event[:origin], h)
    rows = trainable[:origin] & known_o
    model = make_pipeline(
        SimpleImputer(strategy="median"),
        StandardScaler(),
        LogisticRegression(class_weight="balanced", max_iter=2000),
    ).fit(x[:origin][rows], y_o[rows])
    return model.predict_proba(x)[:, 1]


def lookback(ts, event: np.ndarray, complete: np.ndarray, origin: int, h: int) -> int:
    """The persistence look-back (hours) with the best balanced accuracy before ``origin``."""
    y_o, known_o = horizon_labels(ts[:origin], event[:origin], h)
    rows = complete[:origin] & known_o

    def score(w: int) -> tuple[float, float]:
        pers = persistence(ts[:origin], event[:origin], w)
        return balanced_accuracy_score(y_o[rows], pers[rows]), -abs(w - h)

    return max(LOOKBACK_H, key=score)


def fold_bounds(n: int) -> list[tuple[int, int]]:
    """``(origin, end)`` row indices of each fold."""
    cuts = [round(n * o) for o in ORIGINS] + [n]
    return list(itertools.pairwise(cuts))


def run_horizon(train, feats, h: int) -> dict[str, list[Any]]:
    """Per variant, per fold: (balanced accuracy, AUC or None); plus a notes list."""
    ts, event = train["ts"], train["event"].to_numpy().astype(int)
    n = len(train)
    x = feats[list(horizon_feature_names(feats.columns))].to_numpy(dtype=float)
    trainable = feats["anomaly_level"].notna().to_numpy() & (np.arange(n) % STRIDE == 0)
    complete = train[list(METRICS)].notna().all(axis=1).to_numpy()
    # Labels of the scored rows may look past their fold, never past the training half.
    y, known = horizon_labels(ts, event, h)
    pers = persistence(ts, event, h)
    out: dict[str, list[Any]] = {v: [] for v in VARIANTS} | {"notes": []}
    for origin, end in fold_bounds(n):
        sel = (np.arange(n) >= origin) & (np.arange(n) < end) & complete & known
        p, thr, chosen = static_outlook(x, ts, event, trainable, complete, origin, h)
        p_lr = logistic_outlook(x, ts, event, trainable, origin, h)
        w = lookback(ts, event, complete, origin, h)
        out["notes"].append(
            f"rows {sel.sum()}, incident share {y[sel].mean():.2f}, "
            f"static: {chosen}; look-back {w} h"
        )
        if not 0 < y[sel].sum() < sel.sum():
            for v in VARIANTS:
                out[v].append((None, None))
            continue
        ys, ps, pl, ks = y[sel], p[sel], p_lr[sel], pers[sel] > 0
        scored = {
            "static": (ps >= thr, ps),
            "static@0.5": (ps >= 0.5, ps),
            "logistic@0.5": (pl >= 0.5, pl),
            "persistence AND static@0.5": (ks & (ps >= 0.5), np.where(ks, ps, 0.0)),
            "persistence OR static@0.5": (ks | (ps >= 0.5), np.where(ks, 1.0, ps)),
            "look-back": (persistence(ts, event, w)[sel] > 0, None),
            "persistence": (ks, None),
        }
        for v, (pred, score) in scored.items():
            auc = None if score is None else float(roc_auc_score(ys, score))
            out[v].append((float(balanced_accuracy_score(ys, pred)), auc))
    return out


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _mean(vals: list[float | None]) -> float | None:
    vals = [v for v in vals if v is not None]
    return float(np.mean(vals)) if vals else None


def table(h: int, res: dict[str, list[Any]]) -> tuple[str, dict[str, float | None]]:
    """A Markdown table of one horizon and the mean balanced accuracy per variant."""
    folds = range(1, len(ORIGINS) + 1)
    head = (
        f"| {h} h variant | "
        + " | ".join(f"fold {i} BA" for i in folds)
        + " | mean BA | "
        + " | ".join(f"fold {i} AUC" for i in folds)
        + " | mean AUC |"
    )
    lines = [head, "|" + "---|" * (2 * len(ORIGINS) + 3)]
    means = {}
    for v in VARIANTS:
        ba = [r[0] for r in res[v]]
        auc = [r[1] for r in res[v]]
        means[v] = _mean(ba)
        lines.append(
            f"| {v} | "
            + " | ".join(_fmt(b) for b in ba)
            + f" | {_fmt(means[v])} | "
            + " | ".join(_fmt(a) if a is not None else "" for a in auc)
            + f" | {_fmt(_mean(auc)) if any(a is not None for a in auc) else ''} |"
        )
    return "\n".join(lines), means


def main(path: str) -> None:
    train, _ = split_by_time(load_gecco(path))  # the test half is never read
    feats = station_features(train)
    n = len(train)
    print(f"training half: {n} rows; folds (origin, end): {fold_bounds(n)}")
    print(f"threshold grid for 'static': {list(_THRESHOLDS)}\n")
    for h in (48, 24):
        res = run_horizon(train, feats, h)
        text, means = table(h, res)
        print(text)
        for i, note in enumerate(res["notes"], 1):
            print(f"  fold {i}: {note}")
        bar = max(means["static"] or 0.0, means["persistence"] or 0.0) + MARGIN
        winners = [v for v, m in means.items() if m is not None and m >= bar and v != "static"]
        exact = ", ".join(f"{v} {m:.4f}" for v, m in means.items() if m is not None)
        print(f"  mean BA: {exact}")
        print(f"  bar max(static, persistence) + {MARGIN}: {bar:.4f}; qualify: {winners}\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1])
