"""Water-quality stream features, scorer and `citywatch bench water-quality`."""

from __future__ import annotations

import json
from datetime import datetime

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from citywatch.cli import main
from core.wire import encode_reading
from models.water_quality import (
    METRICS,
    StationState,
    horizon_labels,
    load_gecco,
    persistence,
    station_features,
)
from models.water_quality_model import StationScorer, fit_water_quality


def _station(n: int = 3000, seed: int = 0) -> pd.DataFrame:
    """A minute-by-minute station with two incidents (chlorine drop, turbidity spike)
    and an outage of 90 rows with no values."""
    rng = np.random.default_rng(seed)
    ts = pd.date_range("2016-08-03T09:49:00Z", periods=n, freq="min")
    base = {
        "temperature": 8.0, "chlorine_1": 0.17, "ph": 8.36, "redox": 750.0,
        "conductivity": 211.0, "turbidity": 0.02, "chlorine_2": 0.11,
        "flow_1": 1500.0, "flow_2": 900.0,
    }  # fmt: skip
    frame = pd.DataFrame({"ts": ts})
    for m, v in base.items():
        frame[m] = v * (1 + 0.01 * rng.normal(size=n))
    event = np.zeros(n, dtype=int)
    event[1800:1830] = 1
    event[2500:2540] = 1
    frame.loc[event == 1, "chlorine_1"] *= 0.5
    frame.loc[2500:2539, "turbidity"] *= 5
    frame["event"] = event
    frame.loc[1000:1089, list(METRICS)] = np.nan
    return frame


def test_online_features_equal_offline():
    """The worker path (wire JSON, one reading at a time, state saved and
    restored through JSON half-way) gives bit-identical features."""
    frame = _station()
    offline = station_features(frame).to_numpy()
    state = StationState()
    online = []
    for i, row in enumerate(frame.itertuples(index=False)):
        metrics = {m: getattr(row, m) for m in METRICS}
        # Gaps travel as absent metrics; the wire has no NaN for a missing value.
        metrics = {m: v for m, v in metrics.items() if v == v}
        wire = json.loads(
            encode_reading(
                device_id="wq-1", asset_id="wq-1", asset_type="water_quality_station",
                ts=row.ts.to_pydatetime(), metrics=metrics,
                source={"kind": "replay", "label": int(row.event)},
            )
        )  # fmt: skip
        ts = datetime.fromisoformat(wire["ts"])
        online.append(state.update(ts, wire["metrics"], bool(wire["source"]["label"])))
        if i == 1500:
            state = StationState.from_dict(json.loads(json.dumps(state.to_dict())))
    np.testing.assert_array_equal(np.asarray(online), offline)


def test_gaps_are_gaps_not_zeros():
    frame = _station()
    feats = station_features(frame)
    gap = feats.iloc[1000:1090]
    sensor_cols = [c for c in feats.columns if c.split("__")[0] in METRICS]
    assert gap[sensor_cols].isna().all().all()
    assert gap["anomaly_level"].isna().all()
    # Zeros would be a huge jump in every metric; a gap is none at all.
    after = feats.iloc[1090:1100]["anomaly_level"]
    assert after.max() < 3.0


def test_horizon_labels_and_persistence():
    ts = pd.Series(pd.date_range("2020-01-01", periods=10, freq="h", tz="UTC"))
    event = np.array([0, 0, 0, 1, 0, 0, 0, 0, 0, 0])
    y, known = horizon_labels(ts, event, 2)
    assert y.tolist() == [0, 1, 1, 0, 0, 0, 0, 0, 0, 0]
    assert known.tolist() == [True] * 8 + [False, False]
    assert persistence(ts, event, 2).tolist() == [0, 0, 0, 1, 1, 0, 0, 0, 0, 0]


def test_scorer_unsupervised_then_supervised():
    frame = _station()
    feats = station_features(frame)
    unsup = StationScorer()
    outs = [
        unsup.score("wq-1", r.ts.to_pydatetime(), {m: getattr(r, m) for m in METRICS})
        for r in frame.itertuples(index=False)
    ]
    p = np.array([o["event_probability"] for o in outs])
    ev = frame["event"].to_numpy()
    assert np.isnan(p[1000:1090]).all()
    assert np.nanmean(p[ev == 1]) > np.nanmean(p[ev == 0]) + 0.2
    assert all(o["horizons"][48] is None for o in outs)

    model = fit_water_quality(feats, frame["ts"], ev, horizons=(1,))
    sup = StationScorer(model)
    out = None
    for r in frame.itertuples(index=False):
        out = sup.score(
            "wq-1", r.ts.to_pydatetime(), {m: getattr(r, m) for m in METRICS}, bool(r.event)
        )
    assert 0.0 <= out["horizons"][1] <= 1.0 and out["horizons"][48] is None
    batch = model.event_probability(feats.iloc[[-1]])[0]
    assert out["event_probability"] == pytest.approx(batch)
    assert out["model_version"] == model.version


def test_batches_saved_models_and_outlook_rows(tmp_path, db):
    """Batch scoring equals one-by-one; a saved model (JSON, no pickle) loads to the
    same probabilities and version; results land in station_outlook once."""
    from models.water_quality_model import (
        load_water_quality_model,
        outlook_row,
        save_water_quality_model,
    )
    from storage.outlook import write_outlook

    db.execute("TRUNCATE station_outlook")
    frame = _station()
    feats = station_features(frame)
    model = fit_water_quality(feats, frame["ts"], frame["event"].to_numpy(), horizons=(1, 6))
    path = tmp_path / "wq.json"
    version = save_water_quality_model(model, str(path))
    loaded = load_water_quality_model(str(path))
    assert loaded.version == version == model.version
    np.testing.assert_allclose(loaded.event_probability(feats), model.event_probability(feats))
    np.testing.assert_allclose(
        loaded.horizon_probability(feats, 6), model.horizon_probability(feats, 6)
    )
    items = [
        ("wq-1", r.ts.to_pydatetime(), {m: getattr(r, m) for m in METRICS}, bool(r.event))
        for r in frame.itertuples(index=False)
    ]
    one = StationScorer(loaded)
    singles = [one.score(*item) for item in items[:300]]
    batched = StationScorer(loaded).score_batch(items[:300])
    assert [s["event_probability"] for s in singles] == pytest.approx(
        [b["event_probability"] for b in batched], nan_ok=True
    )
    rows = [
        outlook_row("wq-1", "station-1", it[1], res)
        for it, res in zip(items, batched, strict=False)
    ]
    with db.cursor() as cur:
        assert write_outlook(cur, rows) == 300
        assert write_outlook(cur, rows) == 0  # a replayed batch stores nothing twice
    got = db.execute(
        "SELECT count(*), min(event_probability), max(p_6h), bool_and(p_48h IS NULL)"
        " FROM station_outlook"
    ).fetchone()
    assert got[0] == 300 and got[1] >= 0.0 and got[2] <= 1.0 and got[3]
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "pickle"}')
    with pytest.raises(ValueError, match="not a citywatch water-quality model"):
        load_water_quality_model(str(bad))
    bad.write_bytes(b"\xff\x00not json")
    with pytest.raises(ValueError, match="not a citywatch water-quality model"):
        load_water_quality_model(str(bad))
    doc = json.loads(path.read_text())
    doc["event_model"] = "tree\nversion=v4\nnonsense"
    bad.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="damaged"):
        load_water_quality_model(str(bad))
    doc = json.loads(path.read_text())
    doc["feature_names"] = doc["feature_names"][:-9]
    bad.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="does not match"):
        load_water_quality_model(str(bad))


def test_load_gecco_keeps_gaps(tmp_path):
    path = tmp_path / "g.csv"
    path.write_text(
        "time,Tp,Cl,pH,Redox,Leit,Trueb,Cl_2,Fm,Fm_2,event\n"
        "2016-08-03T09:49:00Z,6.5,0.17,8.36,749.0,211.0,0.011,0.118,1677.0,695.0,0\n"
        "2016-08-03T09:50:00Z,,,,,,,,,,0\n"
        "2016-08-03T09:51:00Z,6.5,,8.36,749.0,211.0,0.011,0.118,1677.0,695.0,1\n"
    )
    frame = load_gecco(str(path))
    assert frame[list(METRICS)].iloc[1].isna().all()
    assert np.isnan(frame["chlorine_1"].iloc[2]) and frame["event"].tolist() == [0, 0, 1]
    bad = tmp_path / "bad.csv"
    bad.write_text("time,Tp\n2016-08-03T09:49:00Z,1\n")
    with pytest.raises(ValueError, match="missing columns"):
        load_gecco(str(bad))


def test_bench_water_quality_on_a_slice(datasets_dir, tmp_path):
    """Two slices of the real record: the command runs end to end and reports
    every figure next to persistence; the full run is `citywatch bench water-quality`."""
    src = datasets_dir / "gecco2018" / "train.csv"
    if not src.is_file():
        pytest.skip("gecco2018/train.csv not found")
    raw = pd.read_csv(src)
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    raw.iloc[10_000:20_000].to_csv(train, index=False)
    raw.iloc[39_000:45_000].to_csv(test, index=False)
    saved = tmp_path / "wq.json"
    res = CliRunner().invoke(
        main,
        ["bench", "water-quality", "--train", str(train), "--test", str(test), "--json",
         "--save", str(saved), "--plot", str(tmp_path / "test.png")],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    from models.water_quality_model import load_water_quality_model

    assert load_water_quality_model(str(saved)).version == out["saved_model"]["version"]
    assert (tmp_path / "test.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert 0.0 < out["vus_pr"] <= 1.0 and 0.0 <= out["f1"] <= 1.0
    assert 0.0 < out["prequential"]["vus_pr"] <= 1.0
    assert set(out["horizons"]) == {"1", "6", "24", "48"}
    for fig in out["horizons"].values():
        assert {"balanced_accuracy", "auc", "persistence_balanced_accuracy"} <= set(fig)
    assert out["split"]["train_events"] == 8 and out["split"]["test_events"] == 5
    bad = CliRunner().invoke(main, ["bench", "water-quality", "--train", str(train)])
    assert bad.exit_code != 0 and "go together" in bad.output


def test_catalogue_file_defines_the_station_the_scorer_reads():
    from pathlib import Path

    from core.assets import load_catalogue
    from models.water_quality import ASSET_TYPE

    path = Path(__file__).resolve().parents[2] / "core/catalogues/water_quality_station.toml"
    station = load_catalogue([path])[ASSET_TYPE]
    assert station.metric_names == METRICS
    assert station.metric("ph").unit == "pH" and station.metric("turbidity").unit == "NTU"
    # Every real GECCO reading lies inside the physical ranges.
    assert station.metric("flow_1").in_range(3923.0) and station.metric("redox").in_range(895.0)
    assert not station.metric("ph").in_range(15.0)
