"""The worker's leak detection through a kill -9, on the real broker and PostgreSQL.

17 days of Hanoi stream in (a 5 cm leak at node 21 from day 15) while the worker
is killed on day 9 and started again. A district restarted without its state
would need two weeks of steps before it could alarm again, so it could not find
this leak at all; with the state restored from the ``leak-state`` changelog the
alert opens at the step an uninterrupted run opens it, and every reading and
every district score is stored once.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from ingest.network_sim import NetworkSimOptions, messages, parse_leak, simulate
from networks.assets import network_spec
from streams.alerting import AlertState, Hysteresis, step
from tests.networks.layouts import district_layout
from tests.pipeline_helpers import Worker

pytestmark = pytest.mark.stack

DAYS, LEAK_DAY, KILL_DAY = 17, 15, 9
STEP = timedelta(minutes=30)


def _uninterrupted(inp, spec, options, start, settings):
    """Scores and alert opening of one district fed every reading in order, offline."""
    from streams.leaks import build_district

    district = build_district("hanoi.all", district_layout(spec))
    risks = {}
    for _k, key, raw in messages(spec, simulate(inp, spec, options), start):
        reading = json.loads(raw)
        value = next(iter(reading["metrics"].values()))
        for r in district.add(key.decode(), datetime.fromisoformat(reading["ts"]), value):
            risks[r.ts] = r.risk
    rule = Hysteresis(
        open_after=settings.alert_open_after,
        close_after=settings.alert_close_after,
        open_at=settings.alert_open_threshold,
        close_at=settings.alert_close_threshold,
    )
    open_at, close_at = rule.thresholds(0.5)
    state, opened = AlertState(), None
    for ts, risk in sorted(risks.items()):
        kw = dict(asset_id="hanoi.all", device_id="-", ts=ts, risk=risk)
        change = step(state, **kw, open_at=open_at, close_at=close_at, rule=rule)
        if change is not None and change.kind == "open" and opened is None:
            opened = ts
    return risks, opened


def _wait(check, what: str, timeout_s: float, log_path) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.3)


def test_killed_worker_keeps_detecting_without_warming_up_again(
    db, conn, isolated, trained_models, leakdb_dir, tmp_path, monkeypatch
):
    from services.network_runs import run_network
    from streams.topics import ensure_topics

    monkeypatch.setenv("CITYWATCH_MAX_READING_AGE_DAYS", "0")  # weeks streamed in seconds
    db.execute("TRUNCATE water_networks CASCADE")
    db.execute("TRUNCATE network_leaks, leak_candidates")
    ensure_topics(conn.kafka, isolated)
    inp = leakdb_dir / "Hanoi_CMH.inp"
    origin = (21.0285, 105.8542)
    options = NetworkSimOptions(
        days=DAYS, leaks=(parse_leak(f"21:0.05:{LEAK_DAY * 24}"),), seed=2, speed=50_000
    )
    end = datetime.now(UTC).replace(microsecond=0)
    start = end - timedelta(days=DAYS)
    log_path = tmp_path / "worker.log"
    worker = Worker(isolated, conn, log_path).start()
    runs: list = []
    streaming = threading.Thread(
        target=lambda: runs.append(
            run_network(
                isolated, conn, inp, "hanoi", options, origin=origin, end=end, progress=False
            )
        ),
        daemon=True,
    )

    def decided_until() -> datetime | None:
        return db.execute("SELECT max(ts) FROM scores WHERE asset_id = 'hanoi.all'").fetchone()[0]

    try:
        streaming.start()
        kill_at = start + timedelta(days=KILL_DAY)
        _wait(lambda: (decided_until() or start) >= kill_at, "day 9 decided", 120, log_path)
        worker.kill()  # SIGKILL mid-stream: no shutdown, no final commit
        killed_at = decided_until()
        restarted_from = log_path.stat().st_size
        worker = Worker(isolated, conn, log_path).start()
        streaming.join(timeout=120)
        assert runs, "the simulator did not finish"
        run = runs[0]
        steps = DAYS * 48
        _wait(
            lambda: (
                db.execute("SELECT count(*) FROM scores WHERE asset_id = 'hanoi.all'").fetchone()[0]
                >= steps
            ),
            "every step decided",
            120,
            log_path,
        )
        time.sleep(2)  # anything decided twice would land now
    finally:
        worker.stop()
    after = log_path.read_bytes()[restarted_from:].decode(errors="replace")
    assert "hanoi.all restored, last step decided" in after, after[-3000:]
    assert "warms up" not in after
    assert killed_at < start + timedelta(days=KILL_DAY + 1)  # killed mid-stream, not after

    # Exactly once: every network reading, every district score.
    assert db.execute(
        "SELECT count(*), count(DISTINCT (device_id, ts)) FROM readings"
        " WHERE asset_id = 'hanoi.all'"
    ).fetchone() == (run.readings, run.readings)
    stored = dict(db.execute("SELECT ts, risk FROM scores WHERE asset_id = 'hanoi.all'").fetchall())
    assert (
        len(stored)
        == steps
        == db.execute("SELECT count(*) FROM scores WHERE asset_id = 'hanoi.all'").fetchone()[0]
    )

    # The same detector as a run that was never interrupted.
    spec = network_spec(inp, "hanoi", origin=origin)
    risks, opened_offline = _uninterrupted(inp, spec, options, run.start, isolated)
    assert opened_offline is not None and opened_offline >= run.start + timedelta(days=LEAK_DAY)
    differ = [ts for ts, risk in risks.items() if stored.get(ts) != risk]
    assert differ == [], differ[:10]
    leak_at = run.start + timedelta(days=LEAK_DAY)
    assert max(risk for ts, risk in stored.items() if ts < leak_at) < 0.5  # quiet before
    opened = db.execute(
        "SELECT opened_at FROM alerts WHERE asset_id = 'hanoi.all' ORDER BY opened_at LIMIT 1"
    ).fetchone()
    assert opened is not None, after[-3000:]
    assert abs(opened[0] - opened_offline) <= STEP, (opened[0], opened_offline)

    # Located: node 21 among the first three candidates once the alarm is up.
    top = db.execute(
        "SELECT node, lat FROM leak_candidates WHERE asset_id = 'hanoi.all'"
        " AND ts = (SELECT min(ts) FROM leak_candidates WHERE ts >= %s) ORDER BY rank LIMIT 3",
        (opened[0],),
    ).fetchall()
    assert "21" in [node for node, _ in top] and top[0][1] is not None
    _dashboard_panels_have_rows(db, run.start)


def _dashboard_panels_have_rows(db, start: datetime) -> None:
    """Every panel of the networks dashboard returns rows from this run, its SQL
    expanded as Grafana would."""
    from dashboards import networks
    from dashboards.catalog import queries
    from dashboards.check import run_query
    from dashboards.macros import Context
    from dashboards.sdk import dump

    board = json.loads(dump(networks.build()))
    ctx = Context(start=start, end=datetime.now(UTC) + timedelta(minutes=1))
    panels = {q.title: run_query(db, q, ctx) for q in queries(board)}
    assert len(panels) == 5
    for title, result in panels.items():
        assert result.error is None and result.rows_with_data > 0, (title, result.error)
