"""Labels and resets from failure ticks: which readings precede a failure within the
horizon, and where a device was repaired (its feature baseline resets there)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

__all__ = ["failure_labels", "maintenance_resets"]


def _failure_ticks(failures: pd.DataFrame) -> dict[Any, np.ndarray]:
    return {
        dev: np.sort(g.to_numpy(dtype=np.int64))
        for dev, g in failures.groupby("device_id", sort=False)["failed_tick"]
    }


def failure_labels(history: pd.DataFrame, failures: pd.DataFrame, horizon: int) -> pd.Series:
    """1 where the reading's device fails within ``(tick, tick + horizon]``, else 0.

    Parameters
    ----------
    history : pandas.DataFrame
        Readings with ``device_id`` and integer ``tick``.
    failures : pandas.DataFrame
        ``device_id`` and ``failed_tick`` of every failure.
    horizon : int
        Look-ahead in ticks.

    Returns
    -------
    pandas.Series of int8, indexed like ``history``.
    """
    if horizon < 1:
        raise ValueError("horizon must be >= 1 tick")
    labels = np.zeros(len(history), dtype=np.int8)
    ticks = history["tick"].to_numpy(dtype=np.int64)
    by_device = _failure_ticks(failures)
    for dev, pos in history.groupby("device_id", sort=False).indices.items():
        f = by_device.get(dev)
        if f is None or len(f) == 0:
            continue
        t = ticks[pos]
        nxt = np.searchsorted(f, t, side="right")  # first failure strictly after t
        has = nxt < len(f)
        nxt_tick = np.where(has, f[np.minimum(nxt, len(f) - 1)], np.iinfo(np.int64).max)
        labels[pos] = (has & (nxt_tick <= t + horizon)).astype(np.int8)
    return pd.Series(labels, index=history.index, name="label")


def maintenance_resets(history: pd.DataFrame, failures: pd.DataFrame) -> pd.Series:
    """True at each device's first reading after a failure (it was repaired then).

    This is exactly where the worker resets online: the simulator marks that
    reading ``repaired`` and producers send a maintenance event right before
    it (:func:`ingest.sim_records.maintenance_bytes`); the worker calls
    :meth:`~models.features.DeviceFeatureState.reset_baseline` on the event,
    so the reset applies to that reading's features.
    """
    resets = np.zeros(len(history), dtype=bool)
    ticks = history["tick"].to_numpy(dtype=np.int64)
    by_device = _failure_ticks(failures)
    for dev, pos in history.groupby("device_id", sort=False).indices.items():
        f = by_device.get(dev)
        if f is None or len(f) == 0:
            continue
        pos = pos[np.argsort(ticks[pos], kind="stable")]
        n_before = np.searchsorted(f, ticks[pos], side="left")  # failures strictly before
        prev = np.concatenate([[0], n_before[:-1]])
        resets[pos] = n_before > prev
    return pd.Series(resets, index=history.index, name="reset")
