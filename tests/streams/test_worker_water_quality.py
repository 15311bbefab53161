"""A real GECCO 2018 slice through `citywatch replay`, Kafka and the worker, killed mid-stream:
the station's outlook is stored exactly once, equals the offline scorer's, and its
labelled incidents open alerts through the usual lifecycle."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from click.testing import CliRunner

from citywatch.commands.replay import replay as replay_command
from core.assets import ASSET_TYPES, load_catalogue
from core.files import write_text_atomic
from models.water_quality import load_gecco, station_features
from models.water_quality_model import (
    StationScorer,
    fit_water_quality,
    save_water_quality_model,
)
from tests.conftest import DATASETS, REPO
from tests.pipeline_helpers import Worker

# Data rows 15500..17599: two days before and around the first five labelled incidents.
FIRST, LAST = 15_500, 17_600
SMALL = {"n_estimators": 30, "num_leaves": 7, "min_child_samples": 20, "verbose": -1}


def _count(db, sql: str, *args) -> int:
    return db.execute(sql, args).fetchone()[0]


def test_killed_worker_stores_the_outlook_once_and_alerts_on_incidents(
    conn, db, isolated, trained_models, tmp_path, monkeypatch
):
    header, rows = _incident_rows()
    path = tmp_path / "gecco-incidents.csv"
    path.write_text("".join([header, *rows]))
    frame = load_gecco(str(path))
    # Fitted on the slice itself: this test is about the wiring, not the model's skill.
    model = fit_water_quality(
        station_features(frame), frame["ts"], frame["event"].to_numpy(), params=SMALL,
        horizons=(1, 6),
    )  # fmt: skip
    model_file = tmp_path / "wq.json"
    save_water_quality_model(model, str(model_file))

    station, settings, device = _station_worker(monkeypatch, isolated, model_file)
    outlook_sql = "SELECT count(*) FROM station_outlook WHERE device_id = %s"

    log = tmp_path / "worker.log"
    worker = Worker(settings, conn, log).start()
    try:
        res = CliRunner().invoke(
            replay_command,
            [str(path), "--asset-type", "water_quality_station", "--device", device,
             "--speed", "0", "--json"],
            obj=settings,
        )  # fmt: skip
        assert res.exit_code == 0, res.output
        sent = json.loads(res.output)["readings"]
        # Kill -9 in mid-stream: some of the station's outlook stored, not all.
        deadline = time.monotonic() + 60
        while _count(db, outlook_sql, device) < 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        worker.kill()
        at_kill = _count(db, outlook_sql, device)
        assert 0 < at_kill < sent
        worker = Worker(settings, conn, log).start()
        deadline = time.monotonic() + 90
        while _count(db, outlook_sql, device) < sent and time.monotonic() < deadline:
            time.sleep(0.3)
        assert worker.alive()
    finally:
        worker.stop()

    rows = db.execute(
        "SELECT ts, event_probability, alarm, p_1h, p_6h, p_48h, model_version"
        " FROM station_outlook WHERE device_id = %s ORDER BY ts",
        (device,),
    ).fetchall()
    stored = _count(db, "SELECT count(*) FROM readings WHERE device_id = %s", device)
    assert len(rows) == stored == sent  # every reading scored once, across the kill
    assert {r[6] for r in rows} == {model.version}
    # Train = serve across the restart: the offline scorer on the same readings
    # (gap rows are never sent), bit for bit.
    sent_rows = frame[frame[list(station.metric_names)].notna().any(axis=1)]
    offline = StationScorer(model).score_batch(
        [
            ("d", ts.to_pydatetime(), {m: v for m, v in metrics.items() if v == v}, bool(ev))
            for ts, metrics, ev in zip(
                sent_rows["ts"],
                sent_rows[list(station.metric_names)].to_dict("records"),
                sent_rows["event"],
                strict=True,
            )
        ]
    )
    np.testing.assert_array_equal([r[1] for r in rows], [o["event_probability"] for o in offline])
    np.testing.assert_array_equal([r[4] for r in rows], [o["horizons"][6] for o in offline])
    assert [r[5] for r in rows] == [None] * len(rows)  # no 48 h model in this file
    assert _count(
        db, "SELECT count(*) FROM scores WHERE device_id = %s AND model_version = %s",
        device, model.version,
    ) == len(rows)  # fmt: skip

    # Alerts: opened through the usual hysteresis while a labelled incident runs.
    incidents = db.execute(
        "SELECT degradation_started_at, failed_at FROM failures WHERE device_id = %s", (device,)
    ).fetchall()
    alerts = db.execute(
        "SELECT opened_at, model_kind, model_version FROM alerts WHERE device_id = %s", (device,)
    ).fetchall()
    assert len(incidents) == 5 and alerts
    assert {(k, v) for _, k, v in alerts} == {("water_quality", model.version)}
    hit = {start for start, end in incidents for opened, _, _ in alerts if start <= opened <= end}
    assert len(hit) >= 4  # fitted on the slice: it finds (nearly) every incident


def test_worker_takes_a_new_model_file_mid_stream(
    conn, db, isolated, trained_models, tmp_path, monkeypatch
):
    """A daily refit replaces the model file while the worker runs: a hostile file
    first is refused and v1 goes on; then the stations' rows switch to the new
    version at one batch boundary, nothing is lost or scored twice, and every row
    equals an offline scorer whose model switches at the same reading (the feature
    state goes on)."""
    header, rows = _incident_rows()
    path = tmp_path / "gecco-incidents.csv"
    path.write_text("".join([header, *rows]))
    frame = load_gecco(str(path))
    feats = station_features(frame)
    v1, v2 = (
        fit_water_quality(
            feats, frame["ts"], frame["event"].to_numpy(), params=p, horizons=(1, 6), seed=s
        )
        for p, s in ((SMALL, 0), ({**SMALL, "n_estimators": 40}, 1))
    )
    model_file = tmp_path / "wq.json"
    save_water_quality_model(v1, str(model_file))

    monkeypatch.setenv("CITYWATCH_WATER_QUALITY_RELOAD_S", "0")  # look before every batch
    monkeypatch.setenv("CITYWATCH_MAX_READING_AGE_DAYS", "0")  # the record's own times
    station, settings, device = _station_worker(monkeypatch, isolated, model_file)
    outlook_sql = "SELECT count(*) FROM station_outlook WHERE device_id = %s"
    log = tmp_path / "worker.log"

    def replay(part: list[str], name: str) -> int:
        chunk = tmp_path / f"{name}.csv"
        chunk.write_text("".join([header, *part]))
        res = CliRunner().invoke(
            replay_command,
            [str(chunk), "--asset-type", "water_quality_station", "--device", device,
             "--speed", "0", "--keep-time", "--json"],
            obj=settings,
        )  # fmt: skip
        assert res.exit_code == 0, res.output
        return json.loads(res.output)["readings"]

    def stored_all(n: int, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while _count(db, outlook_sql, device) < n and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _count(db, outlook_sql, device) == n

    switch = f"model {v2.version} from {model_file} replaces {v1.version}"
    worker = Worker(settings, conn, log).start()
    try:
        sent = replay(rows[:700], "part-1")
        stored_all(sent)  # all scored by v1
        # First a hostile file: tree text that aborts LightGBM's parser. The worker
        # refuses it (checked in a child process) and goes on scoring with v1.
        damaged = model_file.read_text().replace("Tree=", "Tree=x", 3)
        write_text_atomic(str(model_file), damaged, new_file_mode=0o644)
        # The check runs beside the worker; its verdict is taken at a batch boundary.
        at, deadline = 700, time.monotonic() + 60
        while "refused (the model parser crashed" not in log.read_text() and at < 1200:
            sent += replay(rows[at : at + 25], f"part-{at}")
            at += 25
            stored_all(sent)
            time.sleep(max(0.0, min(1.0, deadline - time.monotonic())))
        assert "refused (the model parser crashed" in log.read_text(), log.read_text()[-3000:]
        assert worker.alive()
        refused_at = sent
        save_water_quality_model(v2, str(model_file))  # the daily refit, atomically
        # More of the record in small parts until the worker has switched: the new
        # file is checked in a child process while the worker goes on with v1.
        while switch not in log.read_text() and at < len(rows) - 200:
            sent += replay(rows[at : at + 100], f"part-{at}")
            at += 100
            stored_all(sent)
        assert switch in log.read_text(), log.read_text()[-3000:]
        sent += replay(rows[at:], "rest")
        stored_all(sent)
        assert worker.alive()
    finally:
        worker.stop()

    got = db.execute(
        "SELECT o.ts, o.event_probability, o.p_6h, o.model_version,"
        " (SELECT array_agg(s.model_version) FROM scores s"
        "   WHERE s.device_id = o.device_id AND s.ts = o.ts)"
        " FROM station_outlook o WHERE o.device_id = %s ORDER BY o.ts",
        (device,),
    ).fetchall()
    stored = _count(db, "SELECT count(*) FROM readings WHERE device_id = %s", device)
    assert len(got) == stored == sent  # every reading exactly one outlook row
    versions = [r[3] for r in got]
    k = versions.index(v2.version)  # the first row of the new model
    assert refused_at <= k < sent and versions == [v1.version] * k + [v2.version] * (sent - k)
    # One score per reading, by the model of its outlook row.
    assert [r[4] for r in got] == [[v] for v in versions]
    assert _count(db, "SELECT count(*) FROM scores WHERE device_id = %s", device) == sent

    # Train = serve across the switch: one offline pass whose model changes at row k.
    sent_rows = frame[frame[list(station.metric_names)].notna().any(axis=1)]
    feed = [
        ("d", ts.to_pydatetime(), {m: v for m, v in metrics.items() if v == v}, bool(ev))
        for ts, metrics, ev in zip(
            sent_rows["ts"],
            sent_rows[list(station.metric_names)].to_dict("records"),
            sent_rows["event"],
            strict=True,
        )
    ]
    first = StationScorer(v1)
    offline = first.score_batch(feed[:k])
    second = StationScorer(v2)
    second.states = first.states
    offline += second.score_batch(feed[k:])
    np.testing.assert_array_equal([r[1] for r in got], [o["event_probability"] for o in offline])
    np.testing.assert_array_equal([r[2] for r in got], [o["horizons"][6] for o in offline])
    assert [o["model_version"] for o in offline] == versions


def _incident_rows() -> tuple[str, list[str]]:
    """The GECCO file's header and its data rows FIRST..LAST (skips without the file)."""
    src = DATASETS / "gecco2018" / "train.csv"
    if not src.is_file():
        pytest.skip("gecco2018/train.csv not found")
    with src.open() as f:
        lines = [next(f) for _ in range(LAST + 1)]
    return lines[0], lines[FIRST + 1 : LAST + 1]


def _station_worker(monkeypatch, isolated, model_file):
    """The station type for this process and the worker's, the model file the worker
    reads, and settings with small batches: (station type, settings, device id)."""
    catalogue = REPO / "core/catalogues/water_quality_station.toml"
    station = load_catalogue([catalogue])["water_quality_station"]
    monkeypatch.setenv("CITYWATCH_ASSET_CATALOGUE", str(catalogue))  # for the worker process
    monkeypatch.setenv("CITYWATCH_WATER_QUALITY_MODEL", str(model_file))
    monkeypatch.setitem(ASSET_TYPES, "water_quality_station", station)  # for this one
    settings = isolated.model_copy(update={"batch_size": 20, "batch_within_s": 0.1})
    return station, settings, f"wq-{settings.app_id[-8:]}"
