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

from models.water_quality import METRICS, station_features
from models.water_quality_model import WaterQualityModel, fit_water_quality

__all__ = ["refit_station", "station_history"]


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


def refit_station(
    database_url: str, device_id: str, template: WaterQualityModel | None
) -> tuple[WaterQualityModel, pd.DataFrame]:
    """The daily refit (``citywatch water-quality train``): detector and outlook
    fitted on every stored reading and label of ``device_id``.

    ``template`` lends its LightGBM settings and thresholds (chosen on
    validation); without one, citywatch's defaults and 0.5. A horizon whose
    labels are still one class is left out. Raises ``ValueError`` with no
    readings or no incident yet. Returns the model and the training frame.
    """
    frame = station_history(database_url, device_id)
    if frame.empty:
        raise ValueError(f"no stored readings of device {device_id!r}")
    model = fit_water_quality(
        station_features(frame, incident_col="event"),
        frame["ts"],
        frame["event"].to_numpy(),
        params=template.params if template else None,
        strict=False,
    )
    if template is not None:
        model.alarm_threshold = template.alarm_threshold
        model.horizon_thresholds = dict(template.horizon_thresholds)
    else:
        model.horizon_thresholds = dict.fromkeys(model.horizon_models, 0.5)
    return model, frame
