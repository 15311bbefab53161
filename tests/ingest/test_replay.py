"""`citywatch replay`: recorded files as readings, bad rows as dead letters, labels as truth."""

from __future__ import annotations

import itertools
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.assets import load_catalogue
from ingest.replay import REASONS, replay_file
from ingest.replay_parse import FORMATS, BadRow, Gap, ReplayRow, RowParser, detect_format
from models.water_quality import METRICS as METRICS_

REPO = Path(__file__).resolve().parents[2]
CATALOGUE = load_catalogue([REPO / "core/catalogues/water_quality_station.toml"])
STATION = CATALOGUE["water_quality_station"]
HEADER = "time,Tp,Cl,pH,Redox,Leit,Trueb,Cl_2,Fm,Fm_2,event"
GOOD = "2016-08-03T09:{m:02d}:00Z,6.5,0.17,8.36,749.0,211.0,0.011,0.118,1677.0,695.0,{e}"


class FakePublisher:
    """Collects what replay_file sends (the Kafka one is exercised against the broker below)."""

    def __init__(self) -> None:
        self.readings: list[tuple[bytes, bytes]] = []
        self.deadletters: list[dict] = []
        self.flushes = 0

    def reading(self, key: bytes, value: bytes) -> None:
        self.readings.append((key, value))

    def deadletter(self, **kw) -> None:
        self.deadletters.append(kw)

    def flush(self, timeout: float = 60.0) -> int:
        self.flushes += 1
        return 0


def _gecco(tmp_path: Path, lines: list[str], name: str = "g.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(("\n".join([HEADER, *lines]) + "\n").encode())
    return path


def _replay(path: Path, **kw):
    pub = FakePublisher()
    kw = {"asset_type": STATION, "device_id": "wq-1", "asset_id": "wq-1", "speed": 0, **kw}
    return replay_file(path, pub, **kw), pub


def test_each_bad_row_gets_its_reason_and_the_replay_goes_on(tmp_path):
    lines = [
        GOOD.format(m=0, e=0),
        "2016-08-03T09:01:00Z,,,,,,,,,,0",  # a gap: no values at all
        "2016-08-03T09:02:00Z,6.5,,8.36,749.0,211.0,0.011,0.118,1677.0,695.0,1",  # one missing
        "2016-08-03T09:03:00Z,6.5,0.17",  # too few fields
        "yesterday,6.5,0.17,8.36,749.0,211.0,0.011,0.118,1677.0,695.0,0",
        "2016-08-03T09:01:30Z,6.5,0.17,8.36,749.0,211.0,0.011,0.118,1677.0,695.0,0",  # back in time
        "2016-08-03T09:04:00Z,6.5,abc,8.36,749.0,211.0,0.011,0.118,1677.0,695.0,0",
        "2016-08-03T09:05:00Z,6.5,inf,8.36,749.0,211.0,0.011,0.118,1677.0,695.0,0",
        "2016-08-03T09:06:00Z,6.5,0.17,8.36,749.0,211.0,0.011,0.118,1677.0,695.0,maybe",
        GOOD.format(m=7, e=1),
        GOOD.format(m=8, e=0),
    ]
    path = _gecco(tmp_path, lines)
    with path.open("ab") as f:
        f.write(b"2016-08-03T09:09:00Z,\xff\xfe,1,1,1,1,1,1,1,1,0\n")
        f.write(b"2016-08-03T09:10:00Z," + b"9" * 70_000 + b",1,1,1,1,1,1,1,1,0\n")
        f.write((GOOD.format(m=11, e=0) + "\n").encode())
    stats, pub = _replay(path)
    assert stats.bad_by_reason == {
        "replay_bad_label": 1,
        "replay_bad_number": 1,
        "replay_bad_time": 1,
        "replay_fields": 1,
        "replay_line_too_long": 1,
        "replay_non_finite": 1,
        "replay_not_utf8": 1,
        "replay_time_order": 1,
    }
    assert (stats.rows, stats.readings, stats.gaps) == (14, 5, 1)
    assert stats.rows == stats.readings + stats.gaps + stats.bad
    assert len(pub.deadletters) == stats.bad
    letter = next(d for d in pub.deadletters if d["reason"] == "replay_bad_number")
    assert (
        letter["raw"].startswith(b"2016-08-03T09:04:00Z,6.5,abc") and "Cl='abc'" in letter["detail"]
    )
    assert "g.csv line 8" in letter["detail"]
    docs = [json.loads(v) for _, v in pub.readings]
    assert "chlorine_1" not in docs[1]["metrics"] and docs[1]["metrics"]["ph"] == 8.36
    assert [d["source"]["label"] for d in docs] == [0, 1, 1, 0, 0]
    # One labelled run, minutes 2 to 7: the bad rows between are unknown, not "no incident".
    (incident,) = stats.incidents
    assert incident.end - incident.start == timedelta(minutes=5)
    # Stable dead-letter ids: a second replay of the same file stores nothing twice.
    _, again = _replay(path)
    assert [d["dl_id"] for d in again.deadletters] == [d["dl_id"] for d in pub.deadletters]


def test_shift_to_now_keeps_spacing_and_is_never_ahead_of_the_clock(tmp_path):
    path = _gecco(tmp_path, [GOOD.format(m=m, e=0) for m in range(0, 60, 5)])
    t = [0.0]
    start = datetime(2030, 1, 1, tzinfo=UTC)
    sent_at = []

    def sleep(s):
        t[0] += s

    pub = FakePublisher()
    orig = pub.reading

    def reading(key, value):
        sent_at.append(start + timedelta(seconds=t[0]))
        orig(key, value)

    pub.reading = reading
    stats = replay_file(
        path, pub, asset_type=STATION, device_id="wq-1", asset_id="wq-1", speed=60.0,
        clock=lambda: t[0], sleep=sleep, now=lambda: start,
    )  # fmt: skip
    ts = [datetime.fromisoformat(json.loads(v)["ts"]) for _, v in pub.readings]
    assert all(b - a == timedelta(minutes=5) for a, b in itertools.pairwise(ts))
    assert stats.readings == 12 and stats.shift_s == int(stats.shift_s)
    assert pub.flushes >= 11  # delivered while waiting, not only at the end
    assert all(stamp <= wall for stamp, wall in zip(ts, sent_at, strict=True))
    # 55 recorded minutes at 60x: 55 s of replay, ending now.
    assert t[0] == pytest.approx(55.0)
    assert abs((ts[-1] - (start + timedelta(seconds=55))).total_seconds()) < 1.0
    kept, pub2 = _replay(path, keep_time=True)
    assert json.loads(pub2.readings[0][1])["ts"] == "2016-08-03T09:00:00+00:00"
    assert kept.shift_s == 0


def test_formats_are_detected_and_parsed(tmp_path):
    from tests.conftest import DATASETS

    skab = DATASETS / "skab" / "valve1" / "0.csv"
    cmapss = DATASETS / "cmapss" / "train_FD001.txt"
    if not (skab.is_file() and cmapss.is_file()):
        pytest.skip("SKAB or C-MAPSS files not found")
    assert detect_format(HEADER) == "gecco"
    assert detect_format(skab.read_text().splitlines()[0]) == "skab"
    assert detect_format(cmapss.read_text().splitlines()[0]) == "cmapss"

    head = tmp_path / "skab.csv"
    head.write_text("\n".join(skab.read_text().splitlines()[:200]) + "\n")
    stats, pub = _replay(head, asset_type=load_catalogue()["water_pump"])
    assert stats.readings == 199 and stats.bad == 0
    doc = json.loads(pub.readings[0][1])
    assert set(doc["metrics"]) == {
        "vibration_rms",
        "motor_current",
        "pressure",
        "bearing_temp",
        "flow",
    }

    turbofan = tmp_path / "turbofan.toml"
    turbofan.write_text(
        '[types.turbofan]\ndescription = "Engine"\nmetrics = [\n'
        + ",\n".join(
            f'{{ name = "s{i}", unit = "", low = -1e6, high = 1e6 }}' for i in range(1, 22)
        )
        + "\n]\n"
    )
    engine = load_catalogue([turbofan])["turbofan"]
    rows = tmp_path / "fd.txt"
    rows.write_text("\n".join(cmapss.read_text().splitlines()[:400]) + "\n")
    stats, pub = _replay(rows, asset_type=engine, unit=2, failure_at_end=True)
    docs = [json.loads(v) for _, v in pub.readings]
    assert {d["source"]["unit"] for d in docs} == {2} and len(docs) == stats.readings
    assert len(stats.incidents) == 1  # engine 2 ran to failure at its last cycle
    assert stats.incidents[0].start == datetime.fromisoformat(docs[-1]["ts"])


def test_unusable_files_are_refused_before_anything_is_sent(tmp_path):
    from ingest.replay import ReplayError

    no_time = tmp_path / "a.csv"
    no_time.write_text("when,Tp\n1,2\n")
    with pytest.raises(ReplayError, match="time column"):
        _replay(no_time, fmt="gecco")
    nothing = tmp_path / "b.csv"
    nothing.write_text("time,foo,bar\n2020-01-01T00:00:00Z,1,2\n")
    with pytest.raises(ReplayError, match="no column maps"):
        _replay(nothing)
    with pytest.raises(ReplayError, match="not metrics of"):
        _replay(nothing, mapping={"foo": "nonsense"})
    # A plain CSV names its own time and label columns.
    plain = tmp_path / "c.csv"
    plain.write_text("at,ph,bad\n2020-01-01 00:00:00,7.1,0\n2020-01-01 00:01:00,7.2,1\n")
    stats, pub = _replay(plain, time_column="at", label_column="bad")
    assert stats.readings == 2 and len(stats.incidents) == 1
    assert json.loads(pub.readings[1][1])["metrics"] == {"ph": 7.2}


_cells = st.one_of(
    st.sampled_from(
        ["", "1.5", "-3", "nan", "inf", "-inf", "1e308", "abc", "0", "1", "true", '"x,y"']
    ),
    st.text(max_size=12),
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.lists(
        st.one_of(
            st.lists(_cells, min_size=0, max_size=14).map(",".join),
            st.binary(max_size=60).map(lambda b: b.decode("latin-1")),
            st.integers(0, 59).map(lambda m: GOOD.format(m=m, e=m % 2)),
        ),
        max_size=40,
    )
)
def test_fuzzed_rows_each_get_one_outcome_and_never_stop_the_replay(tmp_path, rows):
    parser = RowParser(FORMATS["gecco"], STATION)
    parser.set_header(HEADER)
    for i, text in enumerate(rows, start=2):
        out = parser.parse(i, text.encode("utf-8", "surrogateescape") + b"\n")
        assert out is None or isinstance(out, ReplayRow | Gap | BadRow)
        if isinstance(out, BadRow):
            assert out.reason in REASONS and out.detail
        if isinstance(out, ReplayRow):
            assert set(out.metrics) <= set(STATION.metric_names)
            assert all(v == v and abs(v) != float("inf") for v in out.metrics.values())
    path = tmp_path / "fuzz.csv"
    body = "\n".join(
        [GOOD.format(m=0, e=0), *(r.replace("\n", " ").replace("\r", " ") for r in rows)]
    )
    path.write_bytes((HEADER + "\n" + body + "\n").encode("utf-8", "surrogateescape"))
    stats, pub = _replay(path)
    assert stats.rows == stats.readings + stats.gaps + stats.bad
    assert len(pub.readings) == stats.readings and len(pub.deadletters) == stats.bad


def test_replay_through_the_real_worker(conn, db, isolated, trained_models, tmp_path, monkeypatch):
    """A slice of GECCO 2018 with an incident, plus hostile rows, through Kafka into
    the running worker: every reading stored, every bad row a dead letter with its
    reason, the incident in the failures table."""
    from click.testing import CliRunner

    from citywatch.commands.replay import replay as replay_command
    from core.assets import ASSET_TYPES
    from tests.conftest import DATASETS
    from tests.pipeline_helpers import Worker

    src = DATASETS / "gecco2018" / "train.csv"
    if not src.is_file():
        pytest.skip("gecco2018/train.csv not found")
    with src.open() as f:
        lines = [next(f) for _ in range(16_400)]
    # Data rows 16262..16398: the first labelled event (from row 16265) and the minutes around it.
    body = [lines[0], *lines[16_263:16_400]]
    body.insert(5, "2016-09-01T00:00:00Z,not,a,row\n")
    body.insert(9, body[8])  # the same minute twice
    path = tmp_path / "gecco-slice.csv"
    path.write_text("".join(body))
    catalogue = REPO / "core/catalogues/water_quality_station.toml"
    monkeypatch.setenv("CITYWATCH_ASSET_CATALOGUE", str(catalogue))  # for the worker process
    monkeypatch.setitem(ASSET_TYPES, "water_quality_station", STATION)  # for this one

    worker = Worker(isolated, conn, tmp_path / "worker.log").start()
    try:
        res = CliRunner().invoke(
            replay_command,
            [str(path), "--asset-type", "water_quality_station", "--device", "wq-7",
             "--speed", "0", "--json"],
            obj=isolated,
        )  # fmt: skip
        assert res.exit_code == 0, res.output
        summary = json.loads(res.output)
        expected = summary["readings"] + summary["bad"]
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            stored = db.execute("SELECT count(*) FROM readings").fetchone()[0]
            letters = db.execute("SELECT count(*) FROM deadletters").fetchone()[0]
            if stored + letters >= expected:
                break
            time.sleep(0.3)
        assert worker.alive()
    finally:
        worker.stop()
    assert summary["readings"] == 137 and summary["bad"] == 2
    assert db.execute("SELECT count(*) FROM readings WHERE device_id = 'wq-7'").fetchone()[0] == 137
    reasons = db.execute("SELECT reason, stage, raw FROM deadletters ORDER BY reason").fetchall()
    assert [(r, s) for r, s, _ in reasons] == [
        ("replay_fields", "ingest"),
        ("replay_time_order", "ingest"),
    ]
    assert any(raw.startswith(b"2016-09-01T00:00:00Z,not") for _, _, raw in reasons)
    (incident,) = db.execute(
        "SELECT asset_type, mode, degradation_started_at, failed_at, source FROM failures"
    ).fetchall()
    assert incident[0] == "water_quality_station" and incident[4] == "replay:gecco-slice.csv"
    assert (incident[3] - incident[2]).total_seconds() == 17 * 60  # rows 16265..16282

    # What the worker stored scores as the file does offline (the demo's leg does this).
    from models.water_quality import load_gecco, station_features
    from models.water_quality_model import fit_water_quality
    from services.water_quality_demo import score_stored

    db.execute("TRUNCATE station_outlook")
    clean = tmp_path / "clean.csv"
    clean.write_text("".join([lines[0], *lines[16_263:16_400]]))
    frame = load_gecco(str(clean))
    feats = station_features(frame)
    model = fit_water_quality(feats, frame["ts"], frame["event"].to_numpy(), horizons=(1,))
    out = score_stored(conn, model, device_id="wq-7", asset_id="wq-7")

    # The record rebuilt from the store is the record (bench water-quality-replay).
    from models.water_quality_replay import stored_frame

    stored_rows = db.execute(
        "SELECT ts, metrics, source FROM readings WHERE device_id = 'wq-7' ORDER BY ts"
    ).fetchall()
    rebuilt, check = stored_frame(frame, stored_rows, summary["shift_s"])
    assert check == {"stored": 137, "missing": 0, "not_in_record": 0,
                     "max_abs_difference": 0.0, "label_mismatches": 0}  # fmt: skip
    assert rebuilt["event"].tolist() == frame["event"].tolist()
    # The daily refit: the station's stored readings and failures-table labels.
    from citywatch.commands.water_quality import water_quality
    from models.water_quality_model import load_water_quality_model

    model_file = tmp_path / "refit.json"
    res = CliRunner().invoke(
        water_quality,
        ["train", "--device", "wq-7", "--out", str(model_file), "--json"],
        obj=isolated,
    )
    assert res.exit_code == 0, res.output
    refit = json.loads(res.output)
    assert (refit["readings"], refit["incident_minutes"]) == (137, 18)
    # 137 minutes: the 1 h horizon is learnable, the 48 h one (all one class) is left out.
    assert refit["horizons"] == [1]
    assert load_water_quality_model(str(model_file)).version == refit["version"]
    lost, lost_check = stored_frame(
        frame, stored_rows[:100] + stored_rows[101:], summary["shift_s"]
    )
    assert lost_check["missing"] == 1 and lost[list(METRICS_)].iloc[100].isna().all()
    assert out["water_quality_outlook_rows"] == 137
    stored = [r[0] for r in db.execute("SELECT event_probability FROM station_outlook ORDER BY ts")]
    np.testing.assert_allclose(stored, model.event_probability(feats), rtol=1e-9)
