"""A water-quality station's stored history as a training frame (the daily refit).

Readings come from the ``readings`` table, labels from the ``failures`` ground
truth (``citywatch replay`` stores a labelled file's incidents there; crews'
confirmed incidents belong there too): a minute is an incident minute when it
lies inside a recorded incident of the device's asset.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import psycopg

from models.water_quality import METRICS

__all__ = ["station_history"]


def station_history(database_url: str, device_id: str) -> pd.DataFrame:
    """``ts``, the :data:`~models.water_quality.METRICS` columns and ``event`` (0/1),
    one row per stored reading of ``device_id`` in time order."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT ts, metrics FROM readings WHERE device_id = %s ORDER BY ts", (device_id,)
        ).fetchall()
        incidents = conn.execute(
            "SELECT degradation_started_at, coalesce(failed_at, degradation_started_at)"
            " FROM failures WHERE device_id = %s",
            (device_id,),
        ).fetchall()
    frame = pd.DataFrame(
        [{"ts": ts, **{m: metrics.get(m) for m in METRICS}} for ts, metrics in rows],
        columns=["ts", *METRICS],
    )
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    for m in METRICS:
        frame[m] = pd.to_numeric(frame[m], errors="coerce")
    event = np.zeros(len(frame), dtype=int)
    ts = frame["ts"]
    for start, end in incidents:
        event[((ts >= pd.Timestamp(start)) & (ts <= pd.Timestamp(end))).to_numpy()] = 1
    frame["event"] = event
    return frame
