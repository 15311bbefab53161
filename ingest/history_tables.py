"""Simulated history as training tables: readings one row each, failures one row each."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import fields

import numpy as np
import pandas as pd

from core.assets import ASSET_TYPES

from .asset_signals import SIMULATED_TYPES
from .sim_records import FailureEvent, SimReading

#: Every metric name of the simulated types, in catalogue order, each once.
METRIC_COLUMNS: tuple[str, ...] = tuple(
    dict.fromkeys(name for t in SIMULATED_TYPES for name in ASSET_TYPES[t].metric_names)
)


def history_frame(readings: Iterable[SimReading]) -> pd.DataFrame:
    """Readings as a long table: one row per reading, one column per metric.

    Columns are ``device_id, asset_id, asset_type, tick, ts, health`` and then
    every metric in the catalogue (NaN where the asset type lacks it). ``ts``
    is ``datetime64[ns, UTC]``.
    """
    readings = list(readings)
    col = {name: k for k, name in enumerate(METRIC_COLUMNS)}
    values = np.full((len(readings), len(METRIC_COLUMNS)), np.nan)
    # Fill per asset type with fancy indexing rather than per cell.
    by_type: dict[tuple[str, ...], list[int]] = {}
    for row, r in enumerate(readings):
        by_type.setdefault(tuple(r.metrics), []).append(row)
    for names, rows in by_type.items():
        cols = [col[name] for name in names]
        block = [list(readings[row].metrics.values()) for row in rows]
        values[np.ix_(rows, cols)] = np.asarray(block, dtype=float).reshape(len(rows), len(cols))
    frame = pd.DataFrame(
        {
            "device_id": [r.device.device_id for r in readings],
            "asset_id": [r.device.asset_id for r in readings],
            "asset_type": [r.device.asset_type for r in readings],
            "tick": np.fromiter((r.tick for r in readings), dtype=np.int64, count=len(readings)),
            # Fixed to ns: pandas 3 would infer us from datetime objects.
            "ts": pd.to_datetime([r.ts for r in readings], utc=True).as_unit("ns"),
            "health": np.fromiter((r.health for r in readings), dtype=float, count=len(readings)),
        }
    )
    metrics = pd.DataFrame(values, columns=list(METRIC_COLUMNS), index=frame.index)
    return pd.concat([frame, metrics], axis=1)


def failures_frame(failures: Iterable[FailureEvent]) -> pd.DataFrame:
    """Failure events as a table, one row each, columns as :class:`FailureEvent`'s fields."""
    columns = [f.name for f in fields(FailureEvent)]
    rows = [[getattr(e, c) for c in columns] for e in failures]
    frame = pd.DataFrame(rows, columns=columns)
    for c in ("degradation_started_at", "failed_at"):
        frame[c] = pd.to_datetime(frame[c], utc=True).dt.as_unit("ns")
    for c in ("degradation_started_tick", "failed_tick"):
        frame[c] = frame[c].astype(np.int64)
    return frame
