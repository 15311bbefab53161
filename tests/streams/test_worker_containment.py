"""Containment in the real worker: a message the database refuses costs only itself, and
a batch that was not stored is never acknowledged, not even by a clean stop."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from ingest.simulator import FleetSimulator
from models.bundle_store import load_champion
from tests.pipeline_helpers import (
    Worker,
    as_messages,
    database_outage,
    offline_scores,
    past_history,
    produce,
    register_fleet,
    stored_scores,
    wait_for_total,
)

pytestmark = pytest.mark.stack

# A rule the database enforces and validation doesn't know: the worker can only learn
# that this row is unacceptable from PostgreSQL's error, inside its batch's transaction.
REFUSE_TRIGGER = """
CREATE OR REPLACE FUNCTION test_refuse_marked() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.source ? 'refuse_me' THEN RAISE EXCEPTION 'refused by a database rule'; END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER test_refuse_marked BEFORE INSERT ON readings
    FOR EACH ROW EXECUTE FUNCTION test_refuse_marked();
"""


@pytest.fixture
def refusing_database(db):
    db.execute(REFUSE_TRIGGER)
    try:
        yield db
    finally:
        db.execute("DROP TRIGGER IF EXISTS test_refuse_marked ON readings")
        db.execute("DROP FUNCTION IF EXISTS test_refuse_marked()")


def test_a_row_the_database_refuses_becomes_poison_and_its_batch_is_stored(
    conn, refusing_database, isolated, trained_models, tmp_path
):
    db = refusing_database
    fleet = FleetSimulator(n_devices=6, seed=21)
    register_fleet(conn, fleet)
    readings, _ = past_history(fleet, 100)
    messages = as_messages(readings)
    # Mark one reading in the middle of what will be one batch (batch_size=200).
    middle = len(messages) // 2
    key, value = messages[middle]
    marked = json.loads(value)
    marked["source"]["refuse_me"] = True
    messages[middle] = (key, json.dumps(marked).encode())
    produce(conn, isolated, messages)

    log = tmp_path / "worker.log"
    worker = Worker(isolated, conn, log).start()
    try:
        assert wait_for_total(conn, len(messages)) == len(messages)
        assert worker.alive()
    finally:
        worker.stop()
    assert db.execute("SELECT count(*) FROM readings").fetchone()[0] == len(messages) - 1
    rows = db.execute("SELECT reason, stage, detail, raw FROM deadletters").fetchall()
    assert len(rows) == 1
    reason, stage, detail, raw = rows[0]
    assert (reason, stage) == ("poison", "score")
    assert "refused by a database rule" in detail
    assert bytes(raw) == messages[middle][1]
    text = log.read_text()
    assert "isolating the message" in text
    assert "stopping the worker" not in text


def test_a_poison_message_after_unacknowledged_batches_keeps_every_score_exact(
    conn, refusing_database, isolated, trained_models, tmp_path
):
    """The device states move only at checkpoints (streams.checkpoints). A failed batch
    loses the live states, so the batches stored since the last checkpoint are
    processed again first: every score still equals the offline one, as if the
    poison message had never been sent."""
    db = refusing_database
    # Small batches and no checkpoint during the test: the poison meets six stored,
    # unacknowledged batches.
    settings = isolated.model_copy(update={"batch_size": 50, "checkpoint_interval_s": 600.0})
    fleet = FleetSimulator(n_devices=5, seed=23)
    register_fleet(conn, fleet)
    readings, _ = past_history(fleet, 80)
    messages = as_messages(readings)
    marked_at = 330  # in the seventh batch, not its first message
    key, value = messages[marked_at]
    marked = json.loads(value)
    marked["source"]["refuse_me"] = True
    messages[marked_at] = (key, json.dumps(marked).encode())
    produce(conn, settings, messages)

    worker = Worker(settings, conn, tmp_path / "worker.log").start()
    try:
        assert wait_for_total(conn, len(messages)) == len(messages)
        assert worker.alive()
    finally:
        worker.stop()
    reasons = db.execute("SELECT reason FROM deadletters").fetchall()
    assert reasons == [("poison",)]
    kept = readings[:marked_at] + readings[marked_at + 1 :]
    online = stored_scores(db)
    assert len(online) == len(kept)
    offline = offline_scores(load_champion(settings.models_path), kept, [])
    merged = online.merge(offline, on=["device_id", "ts"], suffixes=("_online", "_offline"))
    assert len(merged) == len(kept)
    np.testing.assert_array_equal(merged["risk_online"], merged["risk_offline"])
    np.testing.assert_array_equal(merged["anomaly_score_online"], merged["anomaly_score_offline"])


def test_a_clean_stop_during_an_outage_acknowledges_nothing(
    conn, db, isolated, trained_models, tmp_path
):
    """Faust's take_events acknowledges a batch whose body raised; a stop while the
    database is down must still leave the batch to be delivered again."""
    fleet = FleetSimulator(n_devices=6, seed=22)
    register_fleet(conn, fleet)
    readings, _ = past_history(fleet, 60)
    log = tmp_path / "worker.log"
    worker = Worker(isolated, conn, log).start()
    with database_outage(conn):
        produce(conn, isolated, as_messages(readings))
        deadline = time.monotonic() + 60
        while "retrying in" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "retrying in" in log.read_text()
        worker.stop()  # SIGTERM: Faust commits what was acknowledged on its way out
    assert db.execute("SELECT count(*) FROM readings").fetchone()[0] == 0

    worker = Worker(isolated, conn, log).start()
    try:
        assert wait_for_total(conn, len(readings)) == len(readings)
    finally:
        worker.stop()
    assert db.execute(
        "SELECT count(*), count(DISTINCT (device_id, ts)) FROM readings"
    ).fetchone() == (
        len(readings),
        len(readings),
    )
