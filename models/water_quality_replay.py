"""A replayed record as the worker stored it, lined up with the record itself.

``citywatch bench water-quality-replay`` replays a GECCO file through Kafka and
the running worker, reads back what the worker stored, and runs the same
evaluation on it as on the file. :func:`stored_frame` rebuilds the record from
the stored readings (timestamps shifted back, labels from each reading's
``source.label``) on the file's own minute grid, so a reading the pipeline lost
or altered shows up as a gap or a different value, and changes the figures.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from models.water_quality import METRICS

__all__ = ["stored_frame"]


def stored_frame(
    record: pd.DataFrame,
    stored: Iterable[tuple[datetime, Mapping[str, Any], Mapping[str, Any]]],
    shift_s: float,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The record rebuilt from stored ``(ts, metrics, source)`` rows.

    Parameters
    ----------
    record : pandas.DataFrame
        :func:`models.water_quality.load_gecco` of the replayed file.
    stored : iterable of (ts, metrics, source)
        The device's rows of the ``readings`` table.
    shift_s : float
        The replay's time shift (``ReplayStats.shift_s``).

    Returns
    -------
    (frame, check)
        ``frame`` has the record's columns and rows; ``check`` counts stored
        rows, rows missing from the store, rows stored at a time not in the
        record, and the largest metric difference.
    """
    shift = timedelta(seconds=shift_s)
    rows = [
        {
            "ts": pd.Timestamp(ts - shift),
            **{m: metrics.get(m) for m in METRICS},
            "label": source.get("label"),
        }
        for ts, metrics, source in stored
    ]
    got = pd.DataFrame(rows, columns=["ts", *METRICS, "label"])
    if len(got):
        got["ts"] = pd.to_datetime(got["ts"], utc=True)
    frame = record[["ts"]].merge(got, on="ts", how="left")
    for m in METRICS:
        frame[m] = pd.to_numeric(frame[m], errors="coerce")
    # Labels travel with the readings; a gap row (nothing sent) keeps the file's label.
    frame["event"] = frame["label"].fillna(pd.Series(record["event"].to_numpy())).astype(int)
    frame = frame.drop(columns="label")
    sent = record[list(METRICS)].notna().any(axis=1).to_numpy()
    have = frame[list(METRICS)].notna().any(axis=1).to_numpy()
    diff = (frame[list(METRICS)].to_numpy() - record[list(METRICS)].to_numpy())[sent & have]
    check = {
        "stored": len(got),
        "missing": int((sent & ~have).sum()),
        "not_in_record": int(len(got) - (sent & have).sum()),
        "max_abs_difference": float(np.nanmax(np.abs(diff))) if diff.size else 0.0,
        "label_mismatches": int((frame["event"].to_numpy() != record["event"].to_numpy()).sum()),
    }
    return frame, check
