"""Helpers for tests that run the real worker process against the real stack."""

from __future__ import annotations

import contextlib
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import psycopg
from kafka import KafkaConsumer, KafkaProducer

from ingest.history_tables import failures_frame, history_frame
from ingest.sim_records import maintenance_bytes, reading_bytes
from ingest.simulator import FleetSimulator
from models.failure_labels import maintenance_resets
from models.features import compute_features
from models.health import DeviceHealthState
from models.remaining_life import time_to_failure_days
from services.fleet import register_fleet as register_database_fleet
from services.processes import start_worker, stop_process, wait_for_log
from storage.reports import messages_accounted_for
from streams.health_book import blend, health_spec, policy_kind
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


def offline_health(part: pd.DataFrame, spec) -> list:
    """The worker's health scores for one asset type's readings (sorted by device, ts),
    replayed per device with the same resets as the features."""
    out = []
    for _, dev in part.groupby("device_id", sort=False):
        state = DeviceHealthState(spec)
        for reset, values in zip(
            dev["_reset"].tolist(), dev[list(spec.metrics)].to_dict("records"), strict=True
        ):
            if reset:
                state.reset()
            out.append(state.update(values))
    return out


def offline_scores(bundle, readings, failures) -> pd.DataFrame:
    """The scores a single worker must store for ``readings``, computed offline.

    Same feature and health code as the worker, replayed per device over the
    whole history, with training's resets (the first reading after each
    failure, where producers send a maintenance event). One row per reading:
    ``device_id, ts, risk, reset, model_kind, anomaly_score`` (NaN while a
    device learns its baseline) and ``ttf_low/median/high`` (days), sorted by
    device and time.
    """
    frame = history_frame(readings)
    frame["_reset"] = maintenance_resets(frame, failures_frame(failures))
    parts = []
    for asset_type, part in frame.groupby("asset_type"):
        part = part.sort_values(["device_id", "ts"], kind="stable")
        spec = bundle.feature_spec(asset_type)
        features = compute_features(part, spec, reset_col="_reset")
        X = features.to_numpy(dtype=float)
        ttf = time_to_failure_days(bundle, asset_type, X) or [(None,) * 3] * len(part)
        kind = policy_kind(bundle.card, asset_type)
        risk, _, anomaly = blend(
            kind,
            bundle.predict_proba(asset_type, X).tolist(),
            bundle.threshold(asset_type),
            offline_health(part, health_spec(bundle.card, asset_type, spec.metrics)),
        )
        parts.append(
            pd.DataFrame(
                {
                    "device_id": part["device_id"].to_numpy(),
                    "ts": part["ts"].to_numpy(),
                    "risk": risk,
                    "reset": part["_reset"].to_numpy(),
                    "model_kind": kind,
                    "anomaly_score": [float("nan") if a is None else a for a in anomaly],
                    **{
                        f"ttf_{name}": [float("nan") if t[i] is None else t[i] for t in ttf]
                        for i, name in enumerate(("low", "median", "high"))
                    },
                }
            )
        )
    offline = pd.concat(parts).sort_values(["device_id", "ts"]).reset_index(drop=True)
    offline["ts"] = pd.to_datetime(offline["ts"], utc=True)
    return offline


def stored_scores(db) -> pd.DataFrame:
    """The champion scores in the database, columns as offline_scores (NULL as NaN)."""
    rows = db.execute(
        "SELECT device_id, ts, risk, model_kind, anomaly_score,"
        " ttf_low_days, ttf_median_days, ttf_high_days FROM scores"
        " WHERE role = 'champion' ORDER BY device_id, ts"
    ).fetchall()
    ttf = ["ttf_low", "ttf_median", "ttf_high"]
    columns = ["device_id", "ts", "risk", "model_kind", "anomaly_score", *ttf]
    online = pd.DataFrame(rows, columns=columns)
    online["ts"] = pd.to_datetime(online["ts"], utc=True)
    for c in ("anomaly_score", *ttf):
        online[c] = online[c].astype(float)
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
