"""The 48-hour outlook variants, compared on the validation part only (never the test half).

Run: ``PYTHONPATH=. python tools/wq_outlook_validation.py ../shared/datasets/gecco2018/train.csv``

Only the training half (the first 50 % of the rows) is read. Models are fitted
on its first 70 % and scored on its last 30 % (validation), where
``bench water-quality`` makes every choice. Variants, for each setting of the
bench's horizon grid:

* ``static``: the outlook fitted once on the fit part (what the bench runs);
* ``daily``: refitted every 24 h on every row before the refit, labels as
  known then (a window running past the refit counts only if it already
  holds an incident), as the detector's daily refits;
* ``daily-ended``: the same, trained only on windows that ended before the
  refit (no bias towards positives among the most recent rows);
* ``... | persistence``: "incident expected" when the model says so or an
  incident fell in the last H hours.

Prints AUC and the best balanced accuracy over the bench's threshold grid
(tuned on validation for every variant alike: fair between them, optimistic
in absolute terms), and persistence on the same rows.
"""

from __future__ import annotations

import sys

import numpy as np
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from models.water_quality import (
    METRICS,
    _epoch,
    horizon_feature_names,
    horizon_labels,
    load_gecco,
    persistence,
    station_features,
)
from models.water_quality_eval import _THRESHOLDS, HORIZON_GRID, VALIDATION_FRACTION, split_by_time
from models.water_quality_model import STRIDE, _classifier

DAY_S = 86_400.0


def refit_daily(x, ts, event, trainable, start, h, params, *, ended_only: bool):
    """Horizon-``h`` probabilities of rows ``start:``, refitted every day on the past."""
    t = _epoch(ts)
    n = len(t)
    p = np.full(n, np.nan)
    cut = start
    while cut < n:
        nxt = max(cut + 1, int(np.searchsorted(t, t[cut] + DAY_S)))
        # Labels as known at the refit: only incidents before it count.
        y, known = horizon_labels(ts[:cut], event[:cut], h)
        if ended_only:
            known = t[:cut] + h * 3600.0 <= t[cut - 1]
        rows = trainable[:cut] & known
        if 0 < y[rows].sum() < rows.sum():
            model = _classifier(params, y[rows], 0).fit(x[:cut][rows], y[rows])
            p[cut:nxt] = model.predict_proba(x[cut:nxt])[:, 1]
        cut = nxt
    return p


def main(path: str) -> None:
    train, _ = split_by_time(load_gecco(path))  # the test half is never read
    feats = station_features(train)
    ts, event = train["ts"], train["event"].to_numpy().astype(int)
    n = len(train)
    n_fit = round(n * (1.0 - VALIDATION_FRACTION))
    x = feats[list(horizon_feature_names(feats.columns))].to_numpy(dtype=float)
    trainable = feats["anomaly_level"].notna().to_numpy() & (np.arange(n) % STRIDE == 0)
    complete = train[list(METRICS)].notna().all(axis=1).to_numpy()
    val = (np.arange(n) >= n_fit) & complete
    for h in (48, 24):
        y, known = horizon_labels(ts, event, h)
        pers = persistence(ts, event, h)
        sel = val & known
        print(
            f"{h} h: validation rows {sel.sum()}, incident share {y[sel].mean():.3f}, "
            f"persistence BA {balanced_accuracy_score(y[sel], pers[sel]):.3f}"
        )
        for k, params in enumerate(HORIZON_GRID):
            y_fit, fit_known = horizon_labels(ts[:n_fit], event[:n_fit], h)
            rows = trainable[:n_fit] & fit_known
            static = _classifier(params, y_fit[rows], 0).fit(x[:n_fit][rows], y_fit[rows])
            variants = {
                "static": static.predict_proba(x)[:, 1],
                "daily": refit_daily(x, ts, event, trainable, n_fit, h, params, ended_only=False),
                "daily-ended": refit_daily(
                    x, ts, event, trainable, n_fit, h, params, ended_only=True
                ),
            }
            for name, p in variants.items():
                ok = sel & (p == p)
                for label, q in ((name, p), (name + " | persistence", np.where(pers > 0, 1.0, p))):
                    ba = max(balanced_accuracy_score(y[ok], q[ok] >= c) for c in _THRESHOLDS)
                    auc = roc_auc_score(y[ok], q[ok])
                    print(f"  grid {k} {label:27s} AUC {auc:.3f}  best BA {ba:.3f}")
            sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1])
