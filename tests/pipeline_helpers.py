"""Helpers for tests that run the real worker process against the real stack."""

from __future__ import annotations

import contextlib
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import psycopg
from kafka import KafkaConsumer, KafkaProducer

from citywatch.commands.simulate import register_fleet as register_database_fleet
from citywatch.processes import start_worker, stop_process, wait_for_log
from ingest.simulator import (
    FleetSimulator,
    failures_frame,
    history_frame,
    maintenance_bytes,
    reading_bytes,
)
from models.features import compute_features
from models.training import maintenance_resets
from storage.reports import messages_accounted_for
from streams.topics import READINGS, ensure_topics


def register_fleet(conn, fleet: FleetSimulator) -> None:
    register_database_fleet(conn.database_url, fleet)


def past_history(fleet: FleetSimulator, ticks: int, start: datetime | None = None):
    start = start or datetime.now(UTC) - timedelta(hours=6)
    return fleet.history(ticks, start, timedelta(seconds=1))


def produce(conn, settings, messages: list[tuple[bytes, bytes]]) -> None:
    ensure_topics(conn.kafka, settings)
    producer = KafkaProducer(bootstrap_servers=conn.kafka, acks="all", linger_ms=5)
    for key, value in messages:
        producer.send(settings.topic(READINGS), key=key, value=value)
    producer.flush()
    producer.close()


def consume(conn, topic: str, *, until: int | None = None, timeout_ms: int = 5000) -> list:
    """Every record on ``topic`` from the start (stops early at ``until`` records)."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=conn.kafka,
        auto_offset_reset="earliest",
        consumer_timeout_ms=timeout_ms,
        enable_auto_commit=False,
    )
    records = []
    try:
        for record in consumer:
            records.append(record)
            if until is not None and len(records) >= until:
                break
    finally:
        consumer.close()
    return records


def as_messages(readings, seq0: int = 0, *, maintenance: bool = False) -> list[tuple[bytes, bytes]]:
    """Readings as (key, value) messages; with ``maintenance``, each repaired reading is
    preceded by its maintenance event, as ``run_simulation`` sends them."""
    out = []
    for i, r in enumerate(readings):
        key = r.device.device_id.encode()
        if maintenance and r.repaired:
            out.append((key, maintenance_bytes(r)))
        out.append((key, reading_bytes(r, seq0 + i)))
    return out


def stored_total(conn) -> int:
    return messages_accounted_for(conn.database_url)


def wait_for_total(conn, expected: int, timeout_s: float = 120.0) -> int:
    deadline = time.monotonic() + timeout_s
    seen = stored_total(conn)
    while seen < expected and time.monotonic() < deadline:
        time.sleep(0.3)
        seen = stored_total(conn)
    return seen


def offline_scores(bundle, readings, failures) -> pd.DataFrame:
    """The scores a single worker must store for ``readings``, computed offline.

    Same feature code as the worker, replayed per device over the whole
    history, with training's resets (the first reading after each failure,
    where producers send a maintenance event). One row per reading:
    ``device_id, ts, risk, reset``, sorted by device and time.
    """
    frame = history_frame(readings)
    frame["_reset"] = maintenance_resets(frame, failures_frame(failures))
    parts = []
    for asset_type, part in frame.groupby("asset_type"):
        part = part.sort_values(["device_id", "ts"], kind="stable")
        features = compute_features(part, bundle.feature_spec(asset_type), reset_col="_reset")
        parts.append(
            pd.DataFrame(
                {
                    "device_id": part["device_id"].to_numpy(),
                    "ts": part["ts"].to_numpy(),
                    "risk": bundle.predict_proba(asset_type, features.to_numpy(dtype=float)),
                    "reset": part["_reset"].to_numpy(),
                }
            )
        )
    offline = pd.concat(parts).sort_values(["device_id", "ts"]).reset_index(drop=True)
    offline["ts"] = pd.to_datetime(offline["ts"], utc=True)
    return offline


def stored_scores(db) -> pd.DataFrame:
    """The champion scores in the database: ``device_id, ts, risk``, sorted like offline_scores."""
    rows = db.execute(
        "SELECT device_id, ts, risk FROM scores WHERE role = 'champion' ORDER BY device_id, ts"
    ).fetchall()
    online = pd.DataFrame(rows, columns=["device_id", "ts", "risk"])
    online["ts"] = pd.to_datetime(online["ts"], utc=True)
    return online


class Worker:
    """``citywatch worker`` as a child process."""

    def __init__(self, settings, conn, log_path: Path) -> None:
        self.settings, self.conn, self.log_path = settings, conn, log_path
        self.proc = None

    def start(self) -> Worker:
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.proc = start_worker(self.settings, self.conn, self.log_path)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            text = self.log_path.read_bytes()[offset:].decode(errors="replace")
            if "Worker ready" in text:
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker died:\n{text[-3000:]}")
            time.sleep(0.2)
        raise RuntimeError(f"worker not ready:\n{self.log_path.read_text()[-3000:]}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks, no final commit."""
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)


__all__ = ["Worker", "wait_for_log"]


@contextlib.contextmanager
def database_outage(conn):
    """PostgreSQL refuses the pipeline database and drops the sinks' connections,
    until the block ends."""
    admin_url = conn.database_url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute("ALTER DATABASE citywatch ALLOW_CONNECTIONS false")
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = 'citywatch' AND application_name = 'citywatch-sink'"
        )
    try:
        yield
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute("ALTER DATABASE citywatch ALLOW_CONNECTIONS true")
