"""Scheduled refits (``water-quality train --every``) against a real PostgreSQL:
the loop refits and replaces the file, keeps it through failed runs, leaves an
unchanged model alone, and the command stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from models.water_quality import METRICS, station_features
from models.water_quality_model import (
    fit_water_quality,
    load_water_quality_model,
    save_water_quality_model,
)
from models.water_quality_watch import serving_problem
from services.water_quality_refit import RefitResult, file_version, refit_every
from tests.conftest import REPO
from tests.models.test_water_quality import _station

pytestmark = pytest.mark.stack

DEVICE = "wq-refit"
FAST = {"n_estimators": 3, "num_leaves": 4, "min_child_samples": 20, "verbose": -1, "n_jobs": 1}


@pytest.fixture(scope="module")
def station():
    """Two days of minutes with two incidents, and a template of tiny trees (fast refits)."""
    frame = _station(3000)
    template = fit_water_quality(
        station_features(frame, incident_col="event"), frame["ts"], frame["event"].to_numpy(),
        params=FAST, strict=False,
    )  # fmt: skip
    return frame, template


def _store_readings(url: str, frame, start: int = 0, stop: int | None = None) -> None:
    with (
        psycopg.connect(url) as c,
        c.cursor() as cur,
        cur.copy("COPY readings (ts, device_id, asset_id, asset_type, metrics) FROM STDIN") as cp,
    ):
        for row in frame.iloc[start:stop].itertuples(index=False):
            metrics = {m: getattr(row, m) for m in METRICS if getattr(row, m) == getattr(row, m)}
            cp.write_row((row.ts.to_pydatetime(), DEVICE, DEVICE, "water_quality_station",
                          json.dumps(metrics)))  # fmt: skip


def _store_incidents(url: str, frame, start: int = 0, stop: int | None = None) -> None:
    """Each run of event minutes in rows [start, stop) as one incident in ``failures``."""
    part = frame.iloc[start:stop]
    begins = part.index[(part["event"] == 1) & (part["event"].shift(fill_value=0) == 0)]
    ends = part.index[(part["event"] == 1) & (part["event"].shift(-1, fill_value=0) == 0)]
    with psycopg.connect(url) as c:
        for b, e in zip(begins, ends, strict=True):
            c.execute(
                "INSERT INTO failures (asset_id, device_id, asset_type, mode,"
                " degradation_started_at, failed_at, source) VALUES (%s, %s, %s, 'quality', %s, %s,"
                " 'test')",
                (DEVICE, DEVICE, "water_quality_station", frame["ts"][b].to_pydatetime(),
                 frame["ts"][e].to_pydatetime()),
            )  # fmt: skip


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_ino, st.st_mtime_ns


class _Loop:
    """``refit_every`` in a thread, as the CLI runs it, with its results collected."""

    def __init__(self, url: str, out: Path, template, every_s: float, **kw) -> None:
        self.stop, self.results = threading.Event(), []
        self.thread = threading.Thread(
            target=refit_every, args=(url, DEVICE, out, every_s),
            kwargs={"template": template, "stop": self.stop, "report": self.results.append, **kw},
            daemon=True,
        )  # fmt: skip
        self.thread.start()

    def until(self, done: Callable[[], bool], timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not done():
            assert self.thread.is_alive(), "the loop ended"
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.02)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive()


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_refits_on_schedule_and_replaces_the_file(db, conn, station, tmp_path, caplog):
    frame, template = station
    _store_readings(conn.database_url, frame, 0, 2000)
    _store_incidents(conn.database_url, frame, 0, 2000)
    out = tmp_path / "wq.json"
    caplog.set_level(logging.INFO, logger="services.water_quality_refit")
    results: list[RefitResult] = []
    stop = threading.Event()

    def report(result: RefitResult) -> None:
        results.append(result)
        if len(results) == 1:  # a day of new readings and an incident before the next run
            _store_readings(conn.database_url, frame, 2000)
            _store_incidents(conn.database_url, frame, 2000)
        else:
            stop.set()

    started = time.monotonic()
    done = refit_every(conn.database_url, DEVICE, out, 0.5, template=template, stop=stop,
                       report=report)  # fmt: skip
    assert done == 2 and time.monotonic() - started >= 0.5  # the second run waited its turn
    first, second = results
    assert (first.readings, first.incident_minutes) == (2000, 30)
    assert (second.readings, second.incident_minutes) == (3000, 70)
    assert first.written and second.written and first.version != second.version
    model = load_water_quality_model(str(out))
    assert model.version == second.version == file_version(out)
    assert serving_problem(model) is None
    assert model.params == template.params and model.alarm_threshold == template.alarm_threshold
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any(f"3000 readings, 70 incident minutes, model {second.version} written" in ln
               and "next run 20" in ln for ln in lines)  # fmt: skip


def test_unchanged_model_is_not_rewritten(db, conn, station, tmp_path):
    frame, template = station
    _store_readings(conn.database_url, frame)
    _store_incidents(conn.database_url, frame)
    out = tmp_path / "wq.json"
    loop = _Loop(conn.database_url, out, template, 0.2)
    try:
        loop.until(lambda: len(loop.results) >= 1)
        stamp = _stamp(out)
        loop.until(lambda: len(loop.results) >= 3)
    finally:
        loop.close()
    assert [r.written for r in loop.results[:3]] == [True, False, False]
    assert len({r.version for r in loop.results}) == 1
    assert _stamp(out) == stamp  # same inode, same mtime: the worker has nothing to reload


def test_a_failed_run_keeps_the_file_and_the_loop_goes_on(db, conn, station, tmp_path, caplog):
    frame, template = station
    out = tmp_path / "wq.json"
    out.write_text("the previous model\n")
    stamp = _stamp(out)
    caplog.set_level(logging.INFO, logger="services.water_quality_refit")
    loop = _Loop(conn.database_url, out, template, 0.2)
    try:
        # No readings, then readings but no incident label yet: two kinds of failed run.
        loop.until(lambda: any("no stored readings" in w for w in _warnings(caplog)))
        _store_readings(conn.database_url, frame)
        loop.until(lambda: any("no incident" in w for w in _warnings(caplog)))
        assert loop.results == [] and _stamp(out) == stamp
        assert out.read_text() == "the previous model\n"
        assert not list(tmp_path.glob(".wq.json.*"))  # no temporary file left behind
        _store_incidents(conn.database_url, frame)
        loop.until(lambda: len(loop.results) >= 1)
    finally:
        loop.close()
    assert loop.results[0].written and file_version(out) == loop.results[0].version
    assert all(f"{out} kept" in w for w in _warnings(caplog))


def test_database_unreachable_retries_sooner_and_keeps_the_file(station, tmp_path, caplog):
    _frame, template = station
    out = tmp_path / "wq.json"
    out.write_text("the previous model\n")
    stamp = _stamp(out)
    caplog.set_level(logging.INFO, logger="services.water_quality_refit")
    url = "postgresql://nobody@127.0.0.1:1/citywatch?connect_timeout=2"  # nothing listens
    loop = _Loop(url, out, template, 3600.0, retry_first_s=0.05, retry_max_s=0.2)
    try:  # the next run is an hour away: these tries are the back-off's
        loop.until(lambda: len(_warnings(caplog)) >= 4, timeout_s=20)
    finally:
        loop.close()
    assert loop.results == [] and _stamp(out) == stamp
    assert all("database not reachable" in w and "next try" in w for w in _warnings(caplog))


def test_cli_stops_cleanly_on_sigterm(db, conn, station, stack_home, tmp_path):
    frame, template = station
    _store_readings(conn.database_url, frame)
    _store_incidents(conn.database_url, frame)
    like = tmp_path / "like.json"
    save_water_quality_model(template, str(like))
    out = tmp_path / "wq.json"
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "CITYWATCH_HOME": str(stack_home),
        "CITYWATCH_DATABASE_URL": conn.database_url,
        "CITYWATCH_WQ_REFIT_EVERY": "1h",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "citywatch", "water-quality", "train", "--device", DEVICE,
         "--out", str(out), "--like", str(like), "--json"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        line = proc.stdout.readline()  # the first refit, at once
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    result = json.loads(line)
    assert result["readings"] == 3000 and result["written"] and "Traceback" not in err
    assert file_version(out) == result["version"]
    assert "scheduled refits stopped (1 done)" in err
