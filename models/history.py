"""Training data from the database: stored readings plus every kind of failure label.

Labels come from three places:

* ``failures`` (completed rows): the simulator's ground truth, or failures
  recorded by other means.
* ``labels`` with ``source='work_order'`` (``citywatch labels import``) and
  ``source='alert'`` (crews' outcomes of alerts). ``fault_confirmed`` marks a
  failure at ``observed_at`` on the device (or, without a device, on every
  device of the asset). ``false_alarm``, ``no_access`` and ``maintenance`` do
  not create positives: a reading is negative unless a failure follows within
  the horizon, so a false alarm is already a negative. They are counted in the
  card so its reader sees what the crews reported.

Readings become the frame :func:`models.training.train_risk_bundle` expects,
with ``tick`` = the reading's position in its device's time order, and each
failure time is mapped to the tick of the device's first reading at or after it.

Feature resets come from ``maintenance_events``, the repairs the worker saw on
the stream: each resets the device's features at its first reading at or after
the event's ``ts``, which is where the worker reset them (the event travels just
before that reading). Resets are *not* inferred from failures here: a failure
the worker never saw as a maintenance event did not reset anything online.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import psycopg

from storage import training_data as sql

__all__ = ["TrainingData", "load_training_data", "maintenance_reset_flags", "readings_frame"]


@dataclass
class TrainingData:
    """``history`` and ``failures`` for :func:`~models.training.train_risk_bundle`, plus notes."""

    history: pd.DataFrame
    failures: pd.DataFrame
    notes: dict[str, Any] = field(default_factory=dict)
    #: True where a maintenance event resets the device's features (see module doc)
    resets: pd.Series | None = None


def readings_frame(rows: list[tuple[str, str, str, datetime, str]]) -> pd.DataFrame:
    """Rows of :func:`storage.training_data.fetch_readings` as one wide frame.

    Columns: ``device_id, asset_id, asset_type, ts, tick`` and one float column
    per metric name seen (NaN where a reading lacks it). Rows must come ordered
    by device and time.
    """
    if not rows:
        return pd.DataFrame(columns=["device_id", "asset_id", "asset_type", "ts", "tick"])
    device, asset, kind, ts, metrics = zip(*rows, strict=True)
    # One json.loads of the joined text is ~3x faster than one per row.
    parsed = json.loads("[" + ",".join(metrics) + "]")
    values = pd.DataFrame.from_records(parsed).apply(pd.to_numeric, errors="coerce")
    frame = pd.DataFrame(
        {
            "device_id": np.asarray(device, dtype=object),
            "asset_id": np.asarray(asset, dtype=object),
            "asset_type": np.asarray(kind, dtype=object),
            "ts": pd.to_datetime(list(ts), utc=True),
        }
    )
    frame["tick"] = frame.groupby("device_id", sort=False).cumcount().astype(np.int64)
    values = values.astype(np.float64).set_axis(frame.index)
    return pd.concat([frame, values[sorted(values.columns)]], axis=1)


def maintenance_reset_flags(history: pd.DataFrame, events: pd.DataFrame) -> pd.Series:
    """True at each device's first reading at or after each maintenance event.

    Parameters
    ----------
    history : pandas.DataFrame
        ``device_id`` and ``ts``, ordered by device and time (as :func:`readings_frame`).
    events : pandas.DataFrame
        ``device_id`` and ``ts`` of each maintenance event. Events after a
        device's last reading reset nothing yet.
    """
    resets = np.zeros(len(history), dtype=bool)
    if len(history) and len(events):
        ts_all = pd.to_datetime(history["ts"], utc=True).to_numpy()
        groups = history.groupby("device_id", sort=False).indices
        for dev, g in events.groupby("device_id", sort=False):
            pos = groups.get(dev)
            if pos is None:
                continue
            at = pd.to_datetime(g["ts"], utc=True).to_numpy()
            idx = np.searchsorted(ts_all[pos], at, side="left")
            resets[pos[idx[idx < len(pos)]]] = True
    return pd.Series(resets, index=history.index, name="reset")


def _failure_ticks(history: pd.DataFrame, events: pd.DataFrame, horizon: int) -> pd.DataFrame:
    """Map ``(device_id, failed_at)`` events to ticks; drop those outside the data."""
    out = []
    dropped = 0
    by_device = {d: g["ts"].to_numpy() for d, g in history.groupby("device_id", sort=False)}
    for dev, g in events.groupby("device_id", sort=False):
        ts = by_device.get(dev)
        if ts is None or len(ts) == 0:
            dropped += len(g)
            continue
        step = np.median(np.diff(ts)) if len(ts) > 1 else np.timedelta64(0, "ns")
        failed_at = pd.to_datetime(g["failed_at"], utc=True).to_numpy()
        ticks = np.searchsorted(ts, failed_at, side="left")
        # A failure after the last reading is kept only if it is near enough that
        # the last readings are its precursors; a failure before the first reading
        # says nothing about any reading.
        late_ok = failed_at <= ts[-1] + step * horizon
        ok = (failed_at >= ts[0]) & late_ok
        dropped += int((~ok).sum())
        for t, at in zip(ticks[ok], failed_at[ok], strict=True):
            out.append((dev, int(t), at))
    frame = pd.DataFrame(out, columns=["device_id", "failed_tick", "failed_at"])
    frame = frame.drop_duplicates(["device_id", "failed_tick"]).reset_index(drop=True)
    frame.attrs["dropped"] = dropped
    return frame


def load_training_data(
    database_url: str,
    *,
    horizon: int,
    since: datetime | None = None,
    until: datetime | None = None,
    asset_types: list[str] | None = None,
    include_simulated: bool = False,
) -> TrainingData:
    """Readings and failure labels stored in the database, ready for training.

    Parameters
    ----------
    database_url : str
    horizon : int
        Label horizon in readings (decides how late after the last reading a
        failure may be and still label it).
    since, until : datetime, optional
        Reading time range (``since`` inclusive, ``until`` exclusive).
    asset_types : list of str, optional
        Only these asset types.
    include_simulated : bool
        Also train on uplinks the network server marked simulated (off by default).
    """
    with psycopg.connect(database_url) as conn:
        rows = sql.fetch_readings(
            conn,
            since=since,
            until=until,
            asset_types=asset_types,
            include_simulated=include_simulated,
        )
        failure_rows = sql.fetch_failures(conn)
        label_rows = sql.fetch_labels(conn)
        maintenance_rows = sql.fetch_maintenance_events(conn)
    history = readings_frame(rows)
    resets = maintenance_reset_flags(
        history, pd.DataFrame(maintenance_rows, columns=["device_id", "ts"])
    )

    events = [(d, at, f"failures:{src}") for d, _a, _t, at, src in failure_rows]
    devices_of = history.groupby("asset_id", sort=False)["device_id"].unique().to_dict()
    outcomes: Counter[str] = Counter()
    for lab in label_rows:
        outcomes[f"{lab['source']}:{lab['outcome']}"] += 1
        if lab["outcome"] != "fault_confirmed":
            continue
        devs = [lab["device_id"]] if lab["device_id"] else devices_of.get(lab["asset_id"], [])
        events.extend((d, lab["observed_at"], f"labels:{lab['source']}") for d in devs)
    event_frame = pd.DataFrame(events, columns=["device_id", "failed_at", "origin"])
    failures = _failure_ticks(history, event_frame, horizon)
    notes = {
        "source": "database (readings, failures, labels, maintenance_events)",
        "maintenance_resets": int(resets.sum()),
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
        "labels": {
            "failure_events": dict(Counter(event_frame["origin"])),
            "label_outcomes": dict(outcomes),
            "failures_used": len(failures),
            "failures_outside_data": int(failures.attrs.get("dropped", 0)),
        },
    }
    return TrainingData(history=history, failures=failures, notes=notes, resets=resets)
