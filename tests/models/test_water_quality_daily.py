"""The daily-refit replay cuts the record where the offline daily refits do."""

from __future__ import annotations

import numpy as np

from models import water_quality_eval
from models.water_quality import station_features
from services.water_quality_daily import day_cuts
from tests.models.test_water_quality import _station


def test_day_cuts_are_the_offline_refit_points(monkeypatch):
    frame = _station(9000)  # ~6 days of minutes, two incidents and an outage first
    feats = station_features(frame)
    event = frame["event"].to_numpy()
    seen: list[int] = []
    real = water_quality_eval.fit_water_quality

    def fit(features, ts, ev, **kw):
        seen.append(len(features))
        return real(features, ts, ev, **{**kw, "params": {"n_estimators": 2, "verbose": -1}})

    monkeypatch.setattr(water_quality_eval, "fit_water_quality", fit)
    water_quality_eval.prequential_event_probability(
        feats, frame["ts"], event, 3000, len(frame), params={}
    )
    cuts = day_cuts(frame["ts"], 3000)
    assert cuts[:-1] == seen and cuts[-1] == len(frame)
    assert np.all(np.diff(cuts) > 0)
