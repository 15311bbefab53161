"""A replayed record as the worker stored it, lined up with the record itself.

``citywatch bench water-quality-replay`` replays a GECCO file through Kafka and
the running worker, reads back what the worker stored, and runs the same
evaluation on it as on the file. :func:`stored_frame` rebuilds the record from
the stored readings (timestamps shifted back, labels from each reading's
``source.label``) on the file's own minute grid, so a reading the pipeline lost
or altered shows up as a gap or a different value, and changes the figures.

:func:`worker_figures` scores what the worker itself decided: the
``station_outlook`` rows it wrote and the alerts it raised, on the record's own
test part, with the figures ``bench water-quality`` computes offline.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from models.vus import point_f1, vus_pr
from models.water_quality import METRICS, horizon_labels, persistence

__all__ = ["in_spans", "outlook_on_grid", "stored_frame", "worker_figures"]

_OUTLOOK = ("event_probability", "alarm", "p_1h", "p_6h", "p_24h", "p_48h")


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


def outlook_on_grid(
    record: pd.DataFrame, rows: Iterable[tuple[datetime, ...]], shift_s: float
) -> pd.DataFrame:
    """Stored ``station_outlook`` rows ``(ts, event_probability, alarm, p_1h, p_6h,
    p_24h, p_48h)`` on the record's minute grid (times shifted back); NaN where the
    worker stored nothing."""
    shift = timedelta(seconds=shift_s)
    got = pd.DataFrame(
        [(pd.Timestamp(r[0] - shift), *r[1:]) for r in rows], columns=["ts", *_OUTLOOK]
    )
    if len(got):
        got["ts"] = pd.to_datetime(got["ts"], utc=True)
    out = record[["ts"]].merge(got, on="ts", how="left")
    for c in _OUTLOOK:
        out[c] = pd.to_numeric(out[c], errors="coerce").astype(float)
    return out


def in_spans(ts: pd.Series, spans: Iterable[tuple[datetime, datetime | None]]) -> np.ndarray:
    """Whether each time lies in one of the ``[start, end)`` spans (end None: still open)."""
    t = pd.DatetimeIndex(pd.to_datetime(ts, utc=True)).tz_localize(None).to_numpy()

    def naive(x: datetime) -> np.datetime64:
        return pd.Timestamp(x).tz_convert("UTC").tz_localize(None).to_datetime64()

    inside = np.zeros(len(t), dtype=bool)
    for start, end in spans:
        inside |= (t >= naive(start)) & (True if end is None else t < naive(end))
    return inside


def worker_figures(
    record: pd.DataFrame,
    grid: pd.DataFrame,
    alerted: np.ndarray,
    rows: np.ndarray,
    window: int,
    horizon_thresholds: Mapping[int, float],
) -> dict[str, Any]:
    """The held-out figures of what the worker stored.

    Parameters
    ----------
    record : pandas.DataFrame
        The replayed file (``load_gecco``), the source of the labels.
    grid : pandas.DataFrame
        :func:`outlook_on_grid` of the worker's rows.
    alerted : array of bool
        Minutes inside an alert the worker raised (:func:`in_spans`).
    rows : array of bool
        The rows scored offline (the test part's complete rows).
    window : int
        The VUS-PR window of the offline evaluation.
    horizon_thresholds : mapping
        The model's outlook thresholds.

    Rows the worker left without a score count as "no alarm" for F1 and are
    counted in ``unscored_rows``; VUS-PR and the outlook use the scored ones.
    """
    event = record["event"].to_numpy().astype(int)
    p = grid["event_probability"].to_numpy()
    scored = rows & (p == p)
    alarm = np.nan_to_num(grid["alarm"].to_numpy()) > 0
    f1_alarm = point_f1(event[rows], alarm[rows])
    f1_alert = point_f1(event[rows], alerted[rows])
    out: dict[str, Any] = {
        "vus_pr": vus_pr(event[scored], p[scored], window),
        "alarm_f1": f1_alarm["f1"],
        "alert_f1": f1_alert["f1"],
        "alert_precision": f1_alert["precision"],
        "alert_recall": f1_alert["recall"],
        "unscored_rows": int((rows & (p != p)).sum()),
        "horizons": {},
    }
    for h, threshold in sorted(horizon_thresholds.items()):
        ph = grid[f"p_{h}h"].to_numpy()
        y, known = horizon_labels(record["ts"], event, h)
        sel = rows & known & (ph == ph)
        if not 0 < y[sel].sum() < sel.sum():
            continue
        out["horizons"][str(h)] = {
            "balanced_accuracy": float(balanced_accuracy_score(y[sel], ph[sel] >= threshold)),
            "auc": float(roc_auc_score(y[sel], ph[sel])),
            "persistence_balanced_accuracy": float(
                balanced_accuracy_score(y[sel], persistence(record["ts"], event, h)[sel])
            ),
            "rows": int(sel.sum()),
        }
    return out
