"""Water-quality stations in the worker's batch step, without a broker (streams.water_quality)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import psycopg
import pytest

from core.records import Reading
from models.water_quality import ASSET_TYPE, METRICS
from models.water_quality_model import StationScorer, fit_water_quality
from storage.outlook import OutlookRow, OutlookSink
from storage.sinks import SinkBatch
from streams.water_quality import StationStates, plan_stations
from tests.models.test_water_quality import _station

SMALL = {"n_estimators": 20, "num_leaves": 7, "min_child_samples": 20, "verbose": -1}


def _readings(frame: pd.DataFrame, device: str = "wq-1") -> list[Reading]:
    """The frame as the worker stores it: gap rows are never sent, labels in ``source``."""
    out = []
    for row in frame.itertuples(index=False):
        metrics = {m: getattr(row, m) for m in METRICS if getattr(row, m) == getattr(row, m)}
        if metrics:
            source = {"kind": "replay", "label": int(row.event)}
            out.append(Reading(row.ts.to_pydatetime(), device, device, ASSET_TYPE, metrics, source))
    return out


@pytest.fixture(scope="module")
def model():
    from models.water_quality import station_features

    frame = _station()
    return fit_water_quality(
        station_features(frame),
        frame["ts"],
        frame["event"].to_numpy(),
        params=SMALL,
        horizons=(1, 6),
    )


def _positions(readings, start: int = 0, partition: int = 0):
    return [("readings", partition, start + i) for i in range(len(readings))]


def test_batches_and_a_restart_score_as_one_offline_pass(model):
    """Train = serve: batches of the stream, with the table restored half-way
    (a restart), give exactly the scorer's results on the whole record."""
    readings = _readings(_station())
    offline = StationScorer(model).score_batch(
        [(r.device_id, r.ts, r.metrics, bool(r.source["label"])) for r in readings]
    )
    table: dict = {}
    states, scorer = StationStates(table), StationScorer(model)
    online = []
    restarted = False
    for start in range(0, len(readings), 337):
        if start > len(readings) // 2 and not restarted:
            # A restart: a new process, the table restored from its changelog.
            table = dict(table)
            states, scorer, restarted = StationStates(table), StationScorer(model), True
        part = readings[start : start + 337]
        plan = plan_stations(part, _positions(part, start), states, scorer)
        states.save(plan.marks)
        online += plan.outlook
    assert len(online) == len(offline) == len(readings)
    for row, res in zip(online, offline, strict=True):
        assert row.event_probability == res["event_probability"]
        assert row.p_6h == res["horizons"][6] and row.alarm == res["alarm"]


def test_replayed_late_and_foreign_readings_are_not_scored_again(model):
    readings = _readings(_station(600))
    states, scorer = StationStates({}), StationScorer(model)
    plan = plan_stations(readings[:300], _positions(readings[:300]), states, scorer)
    assert len(plan.outlook) == len(plan.scores) == 300
    assert {s.threshold for s in plan.scores} == {model.alarm_threshold}
    assert {s.model_kind for s in plan.scores} == {"water_quality"}
    states.save(plan.marks)
    # The same batch delivered again after a crash: already absorbed, nothing to score.
    again = plan_stations(readings[:300], _positions(readings[:300]), states, scorer)
    assert again.outlook == [] and again.scores == []
    # A later message carrying an old time (late, or a second copy), and another
    # asset type's reading: stored by the pipeline, not scored here.
    pump = Reading(readings[300].ts, "pump-1", "pump-1", "water_pump", {"flow": 1.0}, {})
    mixed = [readings[10], pump, *readings[300:310]]
    plan = plan_stations(mixed, _positions(mixed, start=300), states, scorer)
    assert [r.ts for r in plan.outlook] == [r.ts for r in readings[300:310]]


def test_without_a_model_the_score_is_unsupervised():
    readings = _readings(_station(200))
    scorer = StationScorer(None)
    plan = plan_stations(readings, _positions(readings), StationStates({}), scorer)
    assert {s.model_kind for s in plan.scores} == {"anomaly"}
    assert all(r.p_48h is None for r in plan.outlook)


def test_outlook_rows_are_stored_in_the_batch_transaction(conn, db, model):
    """The outlook commits with its readings, once; a failing outlook undoes the batch."""
    db.execute("TRUNCATE station_outlook")
    readings = _readings(_station(50), device="wq-sink")
    plan = plan_stations(readings, _positions(readings), StationStates({}), StationScorer(model))
    sink = OutlookSink(conn.database_url)
    try:
        batch = SinkBatch(readings=readings, scores=plan.scores)
        result, written = sink.write_with_outlook(batch, plan.outlook)
        assert (result.readings, written) == (50, 50)
        _, again = sink.write_with_outlook(
            SinkBatch(readings=readings, scores=plan.scores), plan.outlook
        )
        assert again == 0
        # A row the table refuses (no asset) rolls back the readings written before it.
        later = _readings(_station(60), device="wq-sink-2")[50:]
        bad = OutlookRow(later[0].ts, "wq-sink-2", None, "v", 0.5, False)  # type: ignore[arg-type]
        with pytest.raises(psycopg.errors.NotNullViolation):
            sink.write_with_outlook(SinkBatch(readings=later), [bad])
        # ...and the sink's connection is usable for the next batch.
        sink.write_with_outlook(SinkBatch(readings=later[:1]), [])
    finally:
        sink.close()
    stored = db.execute(
        "SELECT device_id, count(*) FROM readings WHERE device_id LIKE 'wq-sink%' GROUP BY 1"
    ).fetchall()
    assert sorted(stored) == [("wq-sink", 50), ("wq-sink-2", 1)]
    p = db.execute(
        "SELECT event_probability FROM station_outlook WHERE device_id = 'wq-sink' ORDER BY ts"
    ).fetchall()
    np.testing.assert_array_equal([x for (x,) in p], [r.event_probability for r in plan.outlook])


def test_offline_alert_spans_follow_the_worker_hysteresis():
    from datetime import UTC, datetime, timedelta

    from models.water_quality_replay import in_spans
    from streams.alerting import Hysteresis
    from streams.water_quality import alert_spans

    t0 = datetime(2016, 8, 3, tzinfo=UTC)
    ts = [t0 + timedelta(minutes=i) for i in range(20)]
    risks = [0.1, 0.9, 0.9, 0.9, 0.9, float("nan"), 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]
    risks += [0.9] * 8  # opens again and stays open to the end
    spans = alert_spans(ts, risks, 0.5, Hysteresis(open_after=3, close_after=5))
    assert spans == [(ts[3], ts[10]), (ts[14], None)]
    inside = in_spans(pd.Series(ts), spans)
    assert np.flatnonzero(inside).tolist() == [*range(3, 10), *range(14, 20)]
