"""The worker's water-quality model reloads in place, without a broker
(streams.water_quality.WaterQualityHook, models.water_quality_watch.ModelWatch)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from core.assets import ASSET_TYPES, load_catalogue
from models import water_quality_watch
from models.water_quality_model import (
    StationScorer,
    fit_water_quality,
    load_water_quality_model,
    save_water_quality_model,
)
from streams.water_quality import WaterQualityHook, station_scorer
from tests.models.test_water_quality import _station
from tests.streams.test_water_quality import SMALL, _positions, _readings

REPO = Path(__file__).resolve().parents[2]
BATCH = 200


@pytest.fixture(scope="module")
def models():
    """Two models on the same stream features: the first fit and a 'daily refit'."""
    from models.water_quality import station_features

    frame = _station()
    feats = station_features(frame)
    fit = [
        fit_water_quality(
            feats, frame["ts"], frame["event"].to_numpy(), params=p, horizons=(1, 6), seed=s
        )
        for p, s in ((SMALL, 0), ({**SMALL, "n_estimators": 30}, 1))
    ]
    assert fit[0].version != fit[1].version
    return fit


@pytest.fixture
def station_type(monkeypatch):
    station = load_catalogue([REPO / "core/catalogues/water_quality_station.toml"])
    monkeypatch.setitem(ASSET_TYPES, "water_quality_station", station["water_quality_station"])


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _hook(model_file: Path, clock: Clock, every_s: float = 30.0) -> WaterQualityHook:
    async def flush() -> None:
        return None

    app = SimpleNamespace(Table=lambda *a, **k: {}, producer=SimpleNamespace(flush=flush))
    settings = SimpleNamespace(
        water_quality_model=model_file, water_quality_reload_s=every_s, partitions=1
    )
    return WaterQualityHook(app, settings, clock=clock)


class Stream:
    """Batches of one station's readings through the hook, as the worker's agent runs them."""

    def __init__(self, hook: WaterQualityHook) -> None:
        self.hook = hook
        self.readings = _readings(_station(8000))
        self.at = 0
        self.outlook: list = []  # rows of the batches that went through

    def batch(self, *, fail: bool = False) -> list[str]:
        """Plan and finish the next batch; its model versions. ``fail``: the batch
        fails after planning (the worker calls ``forget`` and delivers it again)."""
        part = self.readings[self.at : self.at + BATCH]
        batch = SimpleNamespace(
            readings=part, reading_positions=_positions(part, self.at), scores=[]
        )
        plan = self.hook.plan(SimpleNamespace(batch=batch, champion_scores=[]))
        if fail:
            self.hook.forget()
        else:
            asyncio.run(self.hook.save(plan))
            self.at += len(part)
            self.outlook += plan.outlook
        assert [r.model_version for r in plan.outlook] == [s.model_version for s in plan.scores]
        return sorted({r.model_version for r in plan.outlook})


def _replace(path: Path, text: str | bytes) -> None:
    """Atomically, like save_water_quality_model."""
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(text.encode() if isinstance(text, str) else text)
    os.replace(tmp, path)


def _reloads(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "replaces" in r.getMessage()]


def test_a_new_file_scores_from_the_next_due_batch_on_the_live_state(
    models, station_type, tmp_path, caplog
):
    v1, v2 = models
    path = tmp_path / "wq.json"
    save_water_quality_model(v1, str(path))
    clock = Clock()
    stream = Stream(_hook(path, clock))
    caplog.set_level(logging.INFO, logger="citywatch.worker")
    assert stream.batch() == [v1.version]
    save_water_quality_model(v2, str(path))  # the daily refit
    clock.now += 29  # not due yet: no look at the file
    assert stream.batch() == [v1.version]
    clock.now += 1
    assert stream.batch() == [v1.version]  # due: the new file is being checked meanwhile
    stream.hook.watch.wait()
    assert stream.batch() == [v2.version]
    assert _reloads(caplog) == [
        f"water quality: model {v2.version} from {path} replaces {v1.version}"
    ]
    clock.now += 100
    assert stream.batch() == [v2.version]
    assert len(_reloads(caplog)) == 1

    # The stations' feature state went on through the switch: the same readings
    # through one offline scorer whose model changes after three batches, bit for bit.
    offline = StationScorer(v1)
    feed = [(r.device_id, r.ts, r.metrics, bool(r.source["label"])) for r in stream.readings]
    expect = offline.score_batch(feed[: 3 * BATCH])
    switched = StationScorer(v2)
    switched.states = offline.states
    expect += switched.score_batch(feed[3 * BATCH : 5 * BATCH])
    assert len(stream.outlook) == len(expect) == 5 * BATCH
    for row, res in zip(stream.outlook, expect, strict=True):
        assert (row.model_version, row.p_6h) == (res["model_version"], res["horizons"][6])
    np.testing.assert_array_equal(
        [r.event_probability for r in stream.outlook], [e["event_probability"] for e in expect]
    )


def test_bad_files_keep_the_old_model_with_one_warning_each(models, station_type, tmp_path, caplog):
    v1, v2 = models
    path = tmp_path / "wq.json"
    save_water_quality_model(v1, str(path))
    good = path.read_text()
    clock = Clock()
    stream = Stream(_hook(path, clock, every_s=0))
    caplog.set_level(logging.INFO, logger="citywatch.worker")
    other_features = json.loads(good)
    other_features["feature_names"] = other_features["feature_names"][::-1]  # another order
    extra_horizon = json.loads(good)
    extra_horizon["horizon_models"]["12"] = extra_horizon["horizon_models"]["1"]
    extra_horizon["horizon_thresholds"]["12"] = 0.5
    bad = {
        "truncated": good[: len(good) // 2],
        "not json": b"\xff\xfe garbage",
        "another format": json.dumps({"format": "something-else/1"}),
        "hostile nesting": "[" * 200_000 + "]" * 200_000,
        "damaged trees": good.replace("Tree=", "Tree=x", 3),
        "other features": json.dumps(other_features),
        "unknown horizon": json.dumps(extra_horizon),
        "NaN threshold": good.replace('"alarm_threshold": ', '"alarm_threshold": NaN, "x": '),
    }
    reasons = {}
    for name, text in bad.items():
        caplog.clear()
        _replace(path, text)
        assert stream.batch() == [v1.version], name  # noticed; a child process checks it
        stream.hook.watch.wait()
        assert stream.batch() == [v1.version], name  # refused
        assert stream.batch() == [v1.version], name  # the same bad file: no second warning
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1, (name, [w.getMessage() for w in warnings])
        said = warnings[0].getMessage()
        assert "refused" in said and v1.version in said, said
        reasons[name] = said.split(" refused (", 1)[1]
    assert reasons["damaged trees"].startswith("the model parser crashed"), reasons
    assert reasons["other features"].startswith("its features are not"), reasons
    # The file gone: one warning, the model keeps scoring.
    caplog.clear()
    path.unlink()
    assert stream.batch() == stream.batch() == [v1.version]
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
    # A good file after the bad ones is taken.
    save_water_quality_model(v2, str(path))
    assert stream.batch() == [v1.version]
    stream.hook.watch.wait()
    assert stream.batch() == [v2.version]
    # At start-up a bad file still stops the worker.
    _replace(path, json.dumps(other_features))
    with pytest.raises(ValueError, match="stream features"):
        station_scorer(path)
    _replace(path, good[:100])
    with pytest.raises(ValueError):
        _hook(path, Clock())


def test_an_unchanged_file_is_not_read_again(models, station_type, tmp_path, monkeypatch, caplog):
    v1, _ = models
    path = tmp_path / "wq.json"
    save_water_quality_model(v1, str(path))
    clock = Clock()
    stream = Stream(_hook(path, clock, every_s=5))
    loads = []
    real = water_quality_watch.parse_water_quality_model
    monkeypatch.setattr(
        water_quality_watch, "parse_water_quality_model", lambda *a: loads.append(a) or real(*a)
    )
    caplog.set_level(logging.INFO, logger="citywatch.worker")
    for _ in range(5):
        clock.now += 10
        assert stream.batch() == [v1.version]
    assert loads == []
    # Rewritten with the same model (a refit with nothing new): read once, no switch.
    save_water_quality_model(v1, str(path))
    clock.now += 10
    assert stream.batch() == [v1.version]
    stream.hook.watch.wait()
    assert stream.batch() == stream.batch() == [v1.version]
    assert len(loads) == 1 and _reloads(caplog) == []


def test_a_failed_batch_is_retried_with_the_model_that_planned_it(models, station_type, tmp_path):
    """The scores' key holds the model version: a batch delivered again must not
    get a second set of scores from a new model."""
    v1, v2 = models
    path = tmp_path / "wq.json"
    save_water_quality_model(v1, str(path))
    stream = Stream(_hook(path, Clock(), every_s=0))
    assert stream.batch(fail=True) == [v1.version]
    save_water_quality_model(v2, str(path))
    assert stream.batch(fail=True) == [v1.version]  # a retry: no reload
    assert not stream.hook.watch.checking
    assert stream.batch() == [v1.version]  # the retry goes through
    assert stream.batch() == [v1.version]  # the next batch notices the new file
    stream.hook.watch.wait()
    assert stream.batch() == [v2.version]


def test_the_model_file_is_replaced_atomically(models, tmp_path):
    v1, v2 = models
    path = tmp_path / "wq.json"
    save_water_quality_model(v1, str(path))
    os.chmod(path, 0o640)
    inode = path.stat().st_ino
    assert save_water_quality_model(v2, str(path)) == v2.version
    assert path.stat().st_ino != inode  # a new file renamed over the old one
    assert path.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["wq.json"]  # no temporary file left
    assert load_water_quality_model(str(path)).version == v2.version
