"""Feature drift: population stability index (PSI) against the training reference.

At training time :func:`reference_profile` stores, per asset type and feature,
decile bin edges of the training feature values and the share of rows in each
bin (plus the share of missing values, since a sensor going quiet is drift
too). Later, :func:`psi` compares a recent window's values with that
reference: ``sum((a - e) * ln(a / e))`` over the bins, with both shares floored
at ``1e-4`` so an empty bin gives a large but finite figure. The usual reading:
below 0.1 stable, 0.1-0.2 moderate shift, above 0.2 a real shift.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["feature_reference", "psi", "reference_profile"]

_FLOOR = 1e-4


def feature_reference(values: np.ndarray, bins: int = 10) -> dict[str, Any]:
    """Bin edges (inner quantiles) and shares of one feature's training values.

    Returns
    -------
    dict
        ``edges`` (ascending, distinct inner cut points; a value ``v`` falls in
        bin ``searchsorted(edges, v, side="right")``), ``proportions`` (one more
        than ``edges``, summing to the non-missing share), ``missing`` (share of
        NaN) and ``n``.
    """
    v = np.asarray(values, dtype=np.float64)
    n = len(v)
    finite = v[np.isfinite(v)]
    if n == 0:
        return {"edges": [], "proportions": [0.0], "missing": 1.0, "n": 0}
    edges = np.unique(np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1])) if len(finite) else []
    counts = _bin_counts(finite, np.asarray(edges, dtype=np.float64))
    return {
        "edges": [float(e) for e in edges],
        "proportions": [float(c) / n for c in counts],
        "missing": float(n - len(finite)) / n,
        "n": int(n),
    }


def _bin_counts(finite: np.ndarray, edges: np.ndarray) -> np.ndarray:
    idx = np.searchsorted(edges, finite, side="right")
    return np.bincount(idx, minlength=len(edges) + 1)


def reference_profile(
    X: np.ndarray, feature_names: Sequence[str], bins: int = 10
) -> dict[str, dict[str, Any]]:
    """:func:`feature_reference` for every column of ``X``, keyed by feature name."""
    X = np.asarray(X, dtype=np.float64)
    return {name: feature_reference(X[:, j], bins) for j, name in enumerate(feature_names)}


def psi(reference: Mapping[str, Any], values: np.ndarray) -> float:
    """Population stability index of ``values`` against a :func:`feature_reference`.

    NaN when ``values`` is empty. Missing values form their own bin.
    """
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 0:
        return math.nan
    finite = v[np.isfinite(v)]
    edges = np.asarray(reference["edges"], dtype=np.float64)
    actual = np.append(_bin_counts(finite, edges), len(v) - len(finite)) / len(v)
    expected = np.append(
        np.asarray(reference["proportions"], dtype=np.float64), float(reference["missing"])
    )
    a = np.maximum(actual, _FLOOR)
    e = np.maximum(expected, _FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))
