"""The citywatch worker: readings in, scores and alerts out. Reads top to bottom.

    readings (raw bytes, key = device)
      -> validate                      Reading | Rejection
      -> per-device features           Faust table ``device-state``
      -> batch scoring (LightGBM)      Score, key = asset
      -> PostgreSQL (readings, scores, dead letters) in one transaction
    scores (key = asset)
      -> hysteresis per asset          Faust table ``alert-state``
      -> alerts topic + PostgreSQL

Delivery: at-least-once from Kafka, exactly-once in PostgreSQL. A batch is
written to the database *before* table state is updated and offsets are
acknowledged; the per-key state remembers the last offset it absorbed, so a
replay after a crash skips work it has already stored.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import faust
import numpy as np
import psycopg

from citywatch.settings import Settings
from models.features import DeviceFeatureState, FeatureSpec
from models.registry import RiskModelBundle, load_champion
from storage.sinks import (
    AlertRow,
    DeadLetterRow,
    PostgresSink,
    ReadingRow,
    ScoreRow,
    SinkBatch,
    SinkUnavailableError,
    load_devices,
)

from . import topics
from .alerting import AlertState, Hysteresis, step
from .records import AlertEvent, Reading, Score
from .tansu import install_faust_highwater_fix
from .validation import Rejection, validate_reading

log = logging.getLogger("citywatch.worker")


# -- step helpers ----------------------------------------------------------


class DeviceDirectory:
    """Registered devices, reloaded from the database when an unknown id shows up."""

    def __init__(self, database_url: str, min_reload_interval_s: float = 1.0) -> None:
        self._database_url = database_url
        self._min_reload = min_reload_interval_s
        self._devices: dict[str, tuple[str, str]] = {}
        self._loaded_at = float("-inf")

    def lookup(self, device_id: str) -> tuple[str, str] | None:
        found = self._devices.get(device_id)
        if found is None and time.monotonic() - self._loaded_at >= self._min_reload:
            self.reload()
            found = self._devices.get(device_id)
        return found

    def reload(self) -> None:
        try:
            self._devices = load_devices(self._database_url)
        except psycopg.OperationalError as exc:
            raise SinkUnavailableError(f"cannot load devices: {exc}") from exc
        self._loaded_at = time.monotonic()


class ChampionModel:
    """The promoted model, swapped in without a restart when the champion changes."""

    def __init__(self, models_path, check_every_s: float = 2.0) -> None:
        self._path = models_path
        self._check_every = check_every_s
        self._checked_at = float("-inf")
        self._pointer: str | None = None
        self.bundle: RiskModelBundle | None = None

    def current(self) -> RiskModelBundle:
        now = time.monotonic()
        if now - self._checked_at >= self._check_every:
            self._checked_at = now
            pointer_file = self._path / "CHAMPION"
            pointer = pointer_file.read_text().strip() if pointer_file.exists() else None
            if pointer != self._pointer or self.bundle is None:
                bundle = load_champion(self._path)
                if bundle is not None:
                    if self.bundle is not None:
                        log.info("model %s promoted; now scoring with it", bundle.version)
                    self.bundle, self._pointer = bundle, pointer
        if self.bundle is None:
            raise RuntimeError(
                f"no champion model in {self._path}; run `citywatch train --synthetic` first"
            )
        return self.bundle


@dataclass
class WorkerStats:
    """Counters the worker logs periodically."""

    processed: int = 0
    stored: int = 0
    scored: int = 0
    deadletters: Counter = field(default_factory=Counter)
    alerts_opened: int = 0
    alerts_closed: int = 0
    started: float = field(default_factory=time.monotonic)


def deadletter_row(rejection: Rejection, message, raw: bytes | None) -> DeadLetterRow:
    return DeadLetterRow(
        deadletter_id=f"{message.topic}:{message.partition}:{message.offset}",
        stage="validate",
        reason=rejection.reason,
        detail=rejection.detail,
        source_topic=message.topic,
        source_partition=message.partition,
        source_offset=message.offset,
        device_id=rejection.device_id,
        raw=raw or b"",
    )


async def until_stored(process, events, stopping) -> None:
    """Run ``process(events)`` until the database takes it: backpressure, never data loss.

    ``process`` stores before it publishes or moves state, so a failed attempt
    leaves nothing behind and the whole batch can simply run again.
    """
    delay = 0.5
    while True:
        try:
            await process(events)
            return
        except SinkUnavailableError as exc:
            if stopping():
                raise
            log.warning("database unavailable, retrying in %.1fs: %s", delay, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)


# -- the app ---------------------------------------------------------------


def create_app(settings: Settings, kafka: str, database_url: str, *, tansu: bool) -> faust.App:
    """Build the Faust app with its topics, tables and agents."""
    if tansu:
        install_faust_highwater_fix(kafka)
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{kafka}",
        store="memory://",
        topic_partitions=settings.partitions,
        topic_replication_factor=1,
        consumer_auto_offset_reset="earliest",
        processing_guarantee="at_least_once",
        producer_acks=-1,
        web_enabled=False,
        # Tansu needs half the session timeout to form a group: keep it short.
        broker_session_timeout=6.0 if tansu else 30.0,
        broker_heartbeat_interval=1.0 if tansu else 3.0,
        broker_commit_interval=1.0,
        stream_buffer_maxsize=8 * settings.batch_size,
        table_standby_replicas=0,
    )

    readings_topic = app.topic(
        settings.topic(topics.READINGS), key_serializer="raw", value_serializer="raw"
    )
    scores_topic = app.topic(
        settings.topic(topics.SCORES), key_type=str, key_serializer="raw", value_type=Score
    )
    alerts_topic = app.topic(
        settings.topic(topics.ALERTS), key_type=str, key_serializer="raw", value_type=AlertEvent
    )
    deadletter_topic = app.topic(
        settings.topic(topics.DEADLETTER), key_serializer="raw", value_serializer="raw"
    )

    # use_partitioner: a batch mixes partitions, so the changelog partition must
    # come from the key (same murmur2 partitioner as the producers), not the event.
    device_state = app.Table(
        "device-state",
        default=None,
        key_type=bytes,  # raw key bytes, partitioned exactly like the source topic
        partitions=settings.partitions,
        use_partitioner=True,
    )
    alert_state = app.Table(
        "alert-state",
        default=None,
        key_type=bytes,  # raw key bytes, partitioned exactly like the source topic
        partitions=settings.partitions,
        use_partitioner=True,
    )

    devices = DeviceDirectory(database_url)
    model = ChampionModel(settings.models_path)
    rule = Hysteresis(
        open_after=settings.alert_open_after,
        close_after=settings.alert_close_after,
        open_at=settings.alert_open_threshold,
        close_at=settings.alert_close_threshold,
    )
    reading_sink = PostgresSink(database_url)
    alert_sink = PostgresSink(database_url)
    stats = WorkerStats()
    max_skew = timedelta(seconds=settings.max_clock_skew_s)
    specs: dict[str, FeatureSpec] = {}

    def stopping() -> bool:
        return app.should_stop

    @app.agent(readings_topic)
    async def score_readings(stream):
        async for events in stream.take_events(settings.batch_size, within=settings.batch_within_s):
            await until_stored(process_readings, events, stopping)

    async def process_readings(events) -> None:
        now = datetime.now(UTC)
        bundle = model.current()
        batch = SinkBatch()
        dead_messages: list[tuple[bytes, bytes, str]] = []
        by_device: dict[str, list[tuple[Reading, object]]] = defaultdict(list)

        # 1. validate: Reading or dead letter
        for event in events:
            message = event.message
            raw = message.value
            checked = validate_reading(raw, devices.lookup, now=now, max_skew=max_skew)
            if isinstance(checked, Rejection):
                row = deadletter_row(checked, message, raw)
                batch.deadletters.append(row)
                dead_messages.append((message.key or b"", raw or b"", checked.reason))
            else:
                by_device[checked.device_id].append((checked, message))

        # 2. features from per-device state; duplicates and replays are decided here
        new_state: dict[str, dict] = {}
        to_score: dict[str, list[tuple[Reading, list[float]]]] = defaultdict(list)
        for device_id, items in by_device.items():
            saved = device_state.get(device_id.encode())
            last_offset = saved["last_offset"] if saved else -1
            last_ts = datetime.fromisoformat(saved["last_ts"]) if saved else None
            asset_type = items[0][0].asset_type
            spec = specs.get(asset_type) or specs.setdefault(
                asset_type, bundle.feature_spec(asset_type)
            )
            features = (
                DeviceFeatureState.from_dict(saved["features"])
                if saved
                else DeviceFeatureState(spec)
            )
            touched = False
            for reading, message in items:
                if message.offset <= last_offset:
                    continue  # replay of a message already stored before a restart
                last_offset = message.offset
                touched = True
                if last_ts is not None and reading.ts == last_ts:
                    rejection = Rejection("duplicate", f"second reading at {reading.ts}", device_id)
                    batch.deadletters.append(deadletter_row(rejection, message, message.value))
                    dead_messages.append((message.key or b"", message.value, "duplicate"))
                    continue
                batch.readings.append(
                    ReadingRow(
                        reading.ts,
                        device_id,
                        reading.asset_id,
                        reading.asset_type,
                        dict(reading.metrics),
                        dict(reading.source),
                    )
                )
                if last_ts is not None and reading.ts < last_ts:
                    continue  # late reading: stored, but features only move forward
                last_ts = reading.ts
                to_score[asset_type].append((reading, features.update(reading.metrics)))
            if touched:
                new_state[device_id] = {
                    "last_offset": last_offset,
                    "last_ts": last_ts.isoformat() if last_ts else None,
                    "features": features.to_dict(),
                }

        # 3. score in batches, one LightGBM call per asset type
        scores: list[Score] = []
        for asset_type, rows in to_score.items():
            risks = bundle.predict_proba(asset_type, np.asarray([f for _, f in rows], dtype=float))
            threshold = float(bundle.threshold(asset_type))
            for (reading, _), risk in zip(rows, risks, strict=True):
                scores.append(
                    Score(
                        asset_id=reading.asset_id,
                        device_id=reading.device_id,
                        asset_type=asset_type,
                        ts=reading.ts,
                        risk=float(risk),
                        threshold=threshold,
                        model_version=bundle.version,
                    )
                )
                batch.scores.append(
                    ScoreRow(
                        reading.ts,
                        reading.device_id,
                        reading.asset_id,
                        asset_type,
                        bundle.version,
                        float(risk),
                        threshold,
                    )
                )

        # 4. store, then publish, then move state forward (crash-safe order)
        await asyncio.to_thread(reading_sink.write, batch)
        for score in scores:
            await scores_topic.send(key=score.asset_id, value=score)
        for key, raw, reason in dead_messages:
            await deadletter_topic.send(key=key, value=raw, headers={"reason": reason.encode()})
        await app.producer.flush()
        for device_id, state in new_state.items():
            device_state[device_id.encode()] = state

        stats.processed += len(events)
        stats.stored += len(batch.readings)
        stats.scored += len(batch.scores)
        stats.deadletters.update(d.reason for d in batch.deadletters)

    @app.agent(scores_topic)
    async def raise_alerts(stream):
        async for events in stream.take_events(settings.batch_size, within=settings.batch_within_s):
            await until_stored(process_scores, events, stopping)

    async def process_scores(events) -> None:
        states: dict[str, AlertState] = {}
        rows: list[AlertRow] = []
        published: list[AlertEvent] = []
        for event in events:
            score: Score = event.value
            if score.asset_id not in states:
                states[score.asset_id] = AlertState.from_dict(
                    alert_state.get(score.asset_id.encode())
                )
            state = states[score.asset_id]
            if state.last_ts is not None and score.ts <= datetime.fromisoformat(state.last_ts):
                continue  # replayed or stale score
            open_at, close_at = rule.thresholds(score.threshold)
            transition = step(
                state,
                asset_id=score.asset_id,
                device_id=score.device_id,
                ts=score.ts,
                risk=score.risk,
                open_at=open_at,
                close_at=close_at,
                rule=rule,
            )
            if transition is None:
                continue
            status = "open" if transition.kind == "open" else "closed"
            row = AlertRow(
                transition.alert_id,
                score.asset_id,
                score.device_id,
                score.asset_type,
                status,
                transition.opened_at,
                transition.closed_at,
                transition.peak_risk,
                score.risk,
                open_at,
                score.model_version,
            )
            rows.append(row)
            published.append(
                AlertEvent(
                    alert_id=row.alert_id,
                    transition=transition.kind,
                    asset_id=row.asset_id,
                    device_id=row.device_id,
                    asset_type=row.asset_type,
                    opened_at=row.opened_at,
                    closed_at=row.closed_at,
                    peak_risk=row.peak_risk,
                    last_risk=row.last_risk,
                    threshold=row.threshold,
                    model_version=row.model_version,
                )
            )
            if transition.kind == "open":
                stats.alerts_opened += 1
                log.info("alert OPEN  %s risk=%.2f (%s)", score.asset_id, score.risk, row.alert_id)
            else:
                stats.alerts_closed += 1
                log.info("alert CLOSE %s (%s)", score.asset_id, row.alert_id)
        if rows:
            await asyncio.to_thread(alert_sink.write, SinkBatch(alerts=rows))
            for alert in published:
                await alerts_topic.send(key=alert.asset_id, value=alert)
            await app.producer.flush()
        for asset_id, state in states.items():
            alert_state[asset_id.encode()] = state.to_dict()

    @app.timer(interval=10.0)
    async def report_progress() -> None:
        elapsed = max(time.monotonic() - stats.started, 1e-9)
        log.info(
            "processed=%d (%.0f/s) stored=%d scored=%d deadletters=%d alerts open/closed=%d/%d",
            stats.processed,
            stats.processed / elapsed,
            stats.stored,
            stats.scored,
            sum(stats.deadletters.values()),
            stats.alerts_opened,
            stats.alerts_closed,
        )

    @app.on_before_shutdown.connect
    async def close_sinks(app, **kwargs) -> None:
        reading_sink.close()
        alert_sink.close()

    app.citywatch_stats = stats  # type: ignore[attr-defined]
    return app


def run_worker(settings: Settings, kafka: str, database_url: str, *, tansu: bool) -> None:
    """Run the worker until SIGINT/SIGTERM (blocking)."""
    topics.ensure_topics(kafka, settings)
    app = create_app(settings, kafka, database_url, tansu=tansu)
    worker = faust.Worker(app, loglevel=settings.log_level.upper(), quiet=True)
    worker.execute_from_commandline()
