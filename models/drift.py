"""Feature drift: population stability index (PSI) against the training reference.

At training time :func:`reference_profile` stores, per asset type and feature,
decile bin edges of the training feature values and the share of rows in each
bin (and, for information, the share of missing values). Later, :func:`psi`
compares a recent window's non-missing values with that reference:
``sum((a - e) * ln(a / e))`` over the bins, with both shares floored at
``1e-4`` so an empty bin gives a large but finite figure. The usual reading:
below 0.1 stable, 0.1-0.2 moderate shift, above 0.2 a real shift.

Missing values are left out of the PSI on purpose: every device starts with
NaN baseline features during its warm-up, so the missing share depends on how
many devices were installed recently, not on the sensors; gaps and bad input
are watched through dead letters instead.

:func:`compute_drift` recomputes features from the readings stored in the
database with the shared feature code (so exactly as the worker computes them)
and scores one window against the champion's reference.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["DriftResult", "compute_drift", "feature_reference", "psi", "reference_profile"]

_FLOOR = 1e-4


def feature_reference(values: np.ndarray, bins: int = 10) -> dict[str, Any]:
    """Bin edges (inner quantiles) and shares of one feature's training values.

    Returns
    -------
    dict
        ``edges`` (ascending, distinct inner cut points; a value ``v`` falls in
        bin ``searchsorted(edges, v, side="right")``), ``proportions`` (one more
        than ``edges``, over the non-missing values), ``missing`` (share of NaN)
        and ``n`` (non-missing values).
    """
    v = np.asarray(values, dtype=np.float64)
    finite = v[np.isfinite(v)]
    if len(finite) == 0:
        return {"edges": [], "proportions": [1.0], "missing": 1.0 if len(v) else 0.0, "n": 0}
    edges = np.unique(np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1]))
    counts = _bin_counts(finite, edges)
    return {
        "edges": [float(e) for e in edges],
        "proportions": [float(c) / len(finite) for c in counts],
        "missing": float(len(v) - len(finite)) / len(v),
        "n": len(finite),
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


def psi(reference: Mapping[str, Any], values: np.ndarray) -> tuple[float, int]:
    """Population stability index of the non-missing ``values`` against a reference.

    Returns
    -------
    psi : float
        NaN when there are no non-missing values or the reference has none.
    n : int
        Non-missing values compared.
    """
    v = np.asarray(values, dtype=np.float64)
    finite = v[np.isfinite(v)]
    if len(finite) == 0 or not reference.get("n"):
        return math.nan, len(finite)
    edges = np.asarray(reference["edges"], dtype=np.float64)
    actual = _bin_counts(finite, edges) / len(finite)
    expected = np.asarray(reference["proportions"], dtype=np.float64)
    a = np.maximum(actual, _FLOOR)
    e = np.maximum(expected, _FLOOR)
    return float(np.sum((a - e) * np.log(a / e))), len(finite)


# Readings since installation or maintenance grows with time by construction, so
# its "drift" says nothing about the sensors.
UNMONITORED_FEATURES = frozenset({"readings_since_maintenance"})


@dataclass
class DriftResult:
    """One window's PSI per asset type and feature, and the alerts it raised."""

    model_version: str
    window_start: datetime
    window_end: datetime
    rows: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    new_alerts: int = 0

    def max_psi(self) -> float:
        values = [r["psi"] for r in self.rows if math.isfinite(r["psi"])]
        return max(values) if values else math.nan


def _resolve_model(database_url: str, models_path: Path, version: str | None):
    from models.bundle_store import load_bundle, read_champion
    from models.catalog import ModelCatalog

    if version is None:
        version = ModelCatalog(database_url, models_path).active().champion
    if version is None:
        version = read_champion(models_path)
    if version is None:
        raise ValueError("no champion model to compare with (train and promote one first)")
    return load_bundle(models_path, version)


def compute_drift(
    database_url: str,
    models_path: Path,
    *,
    window: timedelta,
    end: datetime | None = None,
    context: timedelta | None = None,
    threshold: float = 0.2,
    min_rows: int = 50,
    version: str | None = None,
    store: bool = True,
) -> DriftResult:
    """PSI of every feature over ``[end - window, end)`` against the model's training reference.

    Parameters
    ----------
    database_url : str
    models_path : Path
        The file model store (the champion's bundle holds its reference).
    window : timedelta
        The recent window scored.
    end : datetime, optional
        Window end (exclusive); default now (UTC).
    context : timedelta, optional
        Readings before the window replayed through the feature code first,
        so rolling windows and baselines are warm as in the worker. Default:
        four times ``window``.
    threshold : float, default=0.2
        PSI at or above which a ``drift_alerts`` row is written and a warning logged.
    min_rows : int, default=50
        Features with fewer non-missing values in the window are stored but
        never alert (a handful of readings gives a noisy PSI).
    version : str, optional
        Model version; default the registry's champion (else the file pointer).
    store : bool, default=True
        Write ``feature_drift`` and ``drift_alerts`` rows (idempotent per window end).

    Raises
    ------
    ValueError
        If there is no model, or its card has no drift reference (trained
        before drift monitoring existed: retrain it).
    """
    import psycopg

    from models.features import compute_features
    from models.history import readings_frame
    from storage import model_registry as sql

    end = end or datetime.now(UTC)
    start = end - window
    context = context if context is not None else 4 * window
    bundle = _resolve_model(database_url, Path(models_path), version)
    reference = bundle.card.get("drift_reference")
    if not reference:
        raise ValueError(
            f"model {bundle.version} has no drift reference in its card; retrain it "
            "(`citywatch train`) to monitor drift"
        )
    with psycopg.connect(database_url) as conn:
        rows = sql.fetch_readings(
            conn, since=start - context, until=end, asset_types=list(bundle.asset_types)
        )
    history = readings_frame(rows)
    result = DriftResult(bundle.version, start, end)
    for asset_type in bundle.asset_types:
        sub = history[history["asset_type"] == asset_type]
        if sub.empty or asset_type not in reference:
            continue
        feats = compute_features(sub, bundle.feature_spec(asset_type), order_col="tick")
        in_window = (sub.loc[feats.index, "ts"] >= start).to_numpy()
        X = feats.to_numpy()[in_window]
        for j, feature in enumerate(feats.columns):
            if feature in UNMONITORED_FEATURES or feature not in reference[asset_type]:
                continue
            value, n = psi(reference[asset_type][feature], X[:, j])
            if not math.isfinite(value):
                continue
            row = {"asset_type": asset_type, "feature": feature, "psi": value, "n": n}
            result.rows.append(row)
            if value >= threshold and n >= min_rows:
                result.alerts.append(row)
                log.warning(
                    "feature drift: %s %s PSI %.3f >= %.3f over %s .. %s (model %s, %d values)",
                    asset_type,
                    feature,
                    value,
                    threshold,
                    start.isoformat(),
                    end.isoformat(),
                    bundle.version,
                    n,
                )
    if store:
        with psycopg.connect(database_url) as conn, conn.transaction():
            sql.insert_feature_drift(
                conn,
                (
                    (start, end, bundle.version, r["asset_type"], r["feature"], r["psi"], r["n"])
                    for r in result.rows
                ),
            )
            result.new_alerts = sql.insert_drift_alerts(
                conn,
                (
                    (bundle.version, r["asset_type"], r["feature"], start, end, r["psi"], threshold)
                    for r in result.alerts
                ),
            )
    return result
