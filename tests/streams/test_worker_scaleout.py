"""Two workers in one consumer group on the real Tansu broker and PostgreSQL.

A second worker joins while the first is processing (a rebalance hands it
some partitions and their table state), then the first is killed with -9
mid-stream and the second takes over everything. Storage must still be
exactly-once and every score bit-equal to what a single worker computes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from itertools import pairwise

import numpy as np
import psycopg
import pytest
from kafka import KafkaProducer

from ingest.simulator import FleetSimulator
from models.bundle_store import load_champion
from streams.pipeline import partition_of
from streams.topics import READINGS, ensure_topics
from tests.pipeline_helpers import (
    Worker,
    as_messages,
    offline_scores,
    past_history,
    register_fleet,
    stored_scores,
    stored_total,
    wait_for_total,
)

pytestmark = pytest.mark.stack

RATE = 400  # messages/s: slow enough that both workers see a live stream, not a backlog
CHUNK = 40  # flushed together; one producer and a flush per chunk keep each key in order


class PacedProducer(threading.Thread):
    """Sends parts of a stream at ``RATE``, each part only once its gate is open.

    The gates tie the stream to observed progress (worker 2 storing rows,
    worker 1 killed) rather than to timing, so each phase really happens
    while messages are arriving, however slow the machine is.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        parts: list[tuple[threading.Event | None, list[tuple[bytes, bytes]]]],
    ) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.parts = bootstrap, topic, parts
        self.sent = 0
        self.error: BaseException | None = None
        self.halt = threading.Event()

    def run(self) -> None:
        producer = KafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=5)
        try:
            for gate, messages in self.parts:
                while gate is not None and not gate.wait(0.2):
                    if self.halt.is_set():
                        return
                for start in range(0, len(messages), CHUNK):
                    began = time.monotonic()
                    chunk = messages[start : start + CHUNK]
                    for key, value in chunk:
                        producer.send(self.topic, key=key, value=value)
                    producer.flush()
                    self.sent += len(chunk)
                    time.sleep(max(0.0, len(chunk) / RATE - (time.monotonic() - began)))
        except BaseException as exc:  # surfaced by the test, not lost in a thread
            self.error = exc
        finally:
            producer.close()


def wait_until(check: Callable[[], bool], what: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def stored_by(conn, worker: Worker) -> int:
    """Readings a worker process reports it stored (its latest ``worker_stats`` row)."""
    with psycopg.connect(conn.database_url) as c:
        row = c.execute(
            "SELECT stored FROM worker_stats WHERE worker_id LIKE %s ORDER BY ts DESC LIMIT 1",
            (f"%:{worker.proc.pid}",),
        ).fetchone()
    return 0 if row is None else row[0]


def missing_report(db, readings, partitions: int) -> str:
    """Which readings never reached the database, with their partition and offset."""
    stored = set(db.execute("SELECT device_id, ts FROM readings").fetchall())
    offsets: dict[int, int] = {}
    missing = []
    for r in readings:
        key = r.device.device_id.encode()
        p = partition_of(key, partitions)
        # A maintenance event goes right before a repaired reading, on the same partition.
        offset = offsets[p] = offsets.get(p, -1) + 1 + int(r.repaired)
        if (r.device.device_id, r.ts) not in stored:
            missing.append(f"{r.device.device_id} {r.ts:%H:%M:%S} partition {p} offset {offset}")
    return f"{len(missing)} readings lost: " + "; ".join(missing[:20])


def test_second_worker_joins_then_first_is_killed_and_nothing_changes(
    conn, db, isolated, trained_models, tmp_path
):
    # 4 partitions spread the devices over both workers; stats every second
    # show which worker stored what.
    settings = isolated.model_copy(update={"partitions": 4, "stats_interval_s": 1.0})
    fleet = FleetSimulator(n_devices=24, seed=19, initial_degrading_fraction=0.3)
    # Devices on every partition, so whichever two a worker owns carry a live stream.
    assert {partition_of(d.device_id.encode(), 4) for d in fleet.devices} == {0, 1, 2, 3}
    register_fleet(conn, fleet)
    readings, failures = past_history(fleet, 300)
    n = len(readings)
    cuts = [0, n // 5, n // 2, n * 7 // 10, n]
    parts = [as_messages(readings[a:b], seq0=a, maintenance=True) for a, b in pairwise(cuts)]
    # Repairs (maintenance events) in every phase: their feature resets must
    # survive the hand-over of device state between workers too.
    for a, b in pairwise(cuts):
        assert any(r.repaired for r in readings[a:b])
    expected = sum(len(p) for p in parts)
    ensure_topics(conn.kafka, settings)

    second_stores, first_killed = threading.Event(), threading.Event()
    producer = PacedProducer(
        conn.kafka,
        settings.topic(READINGS),
        [(None, parts[0]), (None, parts[1]), (second_stores, parts[2]), (first_killed, parts[3])],
    )
    first = Worker(settings, conn, tmp_path / "worker1.log").start()
    second = None
    try:
        producer.start()
        wait_until(lambda: stored_total(conn) > 0, "worker 1 to store readings")
        # Worker 2 joins the group while the stream flows: a rebalance splits the partitions.
        second = Worker(settings, conn, tmp_path / "worker2.log").start()
        wait_until(lambda: stored_by(conn, second) > 0, "worker 2 to store readings")
        second_stores.set()
        # Both own partitions now: worker 1 keeps storing after the rebalance.
        after_join = stored_by(conn, first)
        wait_until(lambda: stored_by(conn, first) > after_join, "worker 1 to store after join")
        # Kill worker 1 in mid-stream, with part 3 arriving: offsets it stored
        # but did not commit yet are replayed to worker 2.
        sent_before_kill = sum(len(p) for p in parts[:2]) + len(parts[2]) // 2
        wait_until(lambda: producer.sent >= sent_before_kill, "half of part 3 to be sent")
        assert first.alive() and second.alive()
        first.kill()
        first_killed.set()
        assert stored_total(conn) < expected
        # Worker 2 notices the death after the session timeout and takes over every partition.
        total = wait_for_total(conn, expected, timeout_s=150)
        assert total == expected, missing_report(db, readings, 4)
        producer.join(timeout=30)
        assert producer.error is None, producer.error
        assert producer.sent == expected
        assert second.alive(), "the surviving worker must not stop"
    finally:
        producer.halt.set()
        first.stop()
        if second is not None:
            second.stop()
    worker2_log = (tmp_path / "worker2.log").read_text(errors="replace")
    assert "failed; stopping the worker" not in worker2_log
    # A "Worker ready" per completed assignment: the join, then the takeover.
    assert worker2_log.count("Worker ready") >= 2

    # Exactly once in storage: every reading, maintenance event and score once.
    assert db.execute(
        "SELECT count(*), count(DISTINCT (device_id, ts)) FROM readings"
    ).fetchone() == (
        n,
        n,
    )
    assert db.execute("SELECT count(*) FROM deadletters").fetchone()[0] == 0
    repaired = sorted((r.device.device_id, r.ts) for r in readings if r.repaired)
    events = db.execute("SELECT device_id, ts FROM maintenance_events ORDER BY 1, 2").fetchall()
    assert events == repaired
    assert db.execute(
        "SELECT count(*), count(DISTINCT (device_id, ts)) FROM scores WHERE role = 'champion'"
    ).fetchone() == (n, n)

    # Bit-equal to a single worker: the offline replay of the whole history
    # with the same feature code and the same resets.
    bundle = load_champion(settings.models_path)
    offline = offline_scores(bundle, readings, failures)
    assert offline["reset"].sum() == len(repaired)
    online = stored_scores(db)
    merged = online.merge(offline, on=["device_id", "ts"], suffixes=("_online", "_offline"))
    assert len(merged) == n
    np.testing.assert_array_equal(merged["risk_online"], merged["risk_offline"])
    # The cold-start health baselines too (restored from their own table): NaN while
    # a device is learning, the same figure afterwards, and which model alerted.
    np.testing.assert_array_equal(merged["anomaly_score_online"], merged["anomaly_score_offline"])
    assert (merged["model_kind_online"] == merged["model_kind_offline"]).all()
    # and the time to failure (days, with its interval) of every score
    for c in ("ttf_low", "ttf_median", "ttf_high"):
        np.testing.assert_array_equal(merged[f"{c}_online"], merged[f"{c}_offline"])
    assert merged["ttf_median_online"].notna().all()
    assert (merged["ttf_low_online"] <= merged["ttf_high_online"]).all()
