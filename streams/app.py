"""The citywatch worker: readings in, scores and alerts out. Reads top to bottom.

    readings (raw bytes, key = device)
      -> validate                      Reading | Maintenance | Rejection
      -> per-device features           Faust table ``device-state`` (packed bytes);
                                       a Maintenance event resets the device's baseline
      -> batch scoring (LightGBM)      champion, plus a challenger in shadow
      -> PostgreSQL (readings, scores, explanations, dead letters) in one transaction
      -> scores topic                  one ScoreBatch per partition, keyed by asset
    scores
      -> hysteresis per asset          Faust table ``alert-state``
      -> alerts topic + PostgreSQL
    deadletter (stage=ingest, from the LoRaWAN bridge and webhooks)
      -> PostgreSQL deadletters

Delivery: at-least-once from Kafka, exactly-once in PostgreSQL. A batch is
written to the database *before* table state is updated and offsets are
acknowledged; the per-key state remembers the last offset it absorbed, so a
replay after a crash skips work it has already stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import faust
import numpy as np
import psycopg
from aiokafka.partitioner import murmur2

from citywatch.settings import Settings
from models.catalog import ActiveBundles, ModelRegistry
from models.features import DeviceFeatureState, FeatureSpec
from storage.ingest_deadletters import ingest_deadletter_row
from storage.maintenance import run_maintenance
from storage.sinks import (
    AlertRow,
    ExplanationRow,
    MaintenanceRow,
    PostgresSink,
    ReadingRow,
    ScoreRow,
    SinkBatch,
    SinkUnavailableError,
    load_devices,
    record_worker_stats,
)

from . import topics
from .alerting import AlertState, Hysteresis, step
from .containment import Containment, hold, release, retry_until_done
from .deadletters import (
    MAX_REPUBLISHED_RAW,
    deadletter_headers,
    deadletter_row,
    duplicate_deadletter,
    poison_row,
)
from .ordering import OffsetGuard, fetch_hole
from .records import AlertEvent, Maintenance, Reading, decode_score_batch, encode_score_batch
from .state import (
    DeviceState,
    StateCache,
    decode_offsets,
    decode_state,
    encode_state,
    spec_fingerprint,
)
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


@dataclass
class WorkerStats:
    """Counters the worker logs and stores in ``worker_stats`` periodically."""

    processed: int = 0
    stored: int = 0
    maintenance: int = 0
    scored: int = 0
    unscored: int = 0  # stored, but the champion has no model for the asset type
    deadletters: Counter = field(default_factory=Counter)
    alerts_opened: int = 0
    alerts_closed: int = 0
    batch_ms: list[float] = field(default_factory=list)  # since the last report
    last_offsets: dict = field(default_factory=dict)  # TopicPartition -> offset
    started: float = field(default_factory=time.monotonic)


class ModelsUnavailableError(SinkUnavailableError):
    """No model to score with yet (none promoted, or the registry unreachable)."""


def current_models(models: ActiveBundles):
    """Champion and challenger; a batch waits while there is no champion, like an outage."""
    try:
        return models.current()
    except RuntimeError as exc:
        raise ModelsUnavailableError(str(exc)) from exc


@contextlib.asynccontextmanager
async def fail_fast(app: faust.App, step_name: str):
    """Stop the whole worker if containment itself fails, instead of a dead agent.

    Containment settles or holds every message, so this only catches a bug in
    it. Faust restarts a crashed agent a few times and then gives up while the
    process stays up, which looks healthy but processes nothing. Stopping lets
    the supervisor restart the worker; the held batch was never acknowledged,
    so it is delivered again.
    """
    try:
        yield
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception(
            "%s failed; stopping the worker so it restarts from committed offsets", step_name
        )
        os.kill(os.getpid(), signal.SIGTERM)
        raise


_moved_warned: set[str] = set()


def _warn_moved(device_id: str, old: int, new: int) -> None:
    # Replay detection compares offsets within one partition. A device whose
    # messages arrive on two partitions means producers partition differently
    # (every citywatch producer uses murmur2, as Kafka's Java client does).
    if device_id not in _moved_warned:
        _moved_warned.add(device_id)
        log.warning(
            "device %s moved from partition %d to %d: check the producers' partitioner",
            device_id,
            old,
            new,
        )


def partition_of(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner (murmur2), as every producer and Faust table uses it."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


# -- the app ---------------------------------------------------------------


def create_app(
    settings: Settings,
    kafka: str,
    database_url: str,
    *,
    tansu: bool,
    models: ActiveBundles | None = None,
) -> faust.App:
    """Build the Faust app with its topics, tables and agents."""
    if tansu:
        install_faust_highwater_fix(kafka)
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{kafka}",
        store="memory://",
        # Faust's default is "{id}-data" in the CWD: /app in the image, not writable by uid 10001.
        datadir=str(settings.faust_path),
        topic_partitions=settings.partitions,
        topic_replication_factor=1,
        consumer_auto_offset_reset="earliest",
        processing_guarantee="at_least_once",
        producer_acks=-1,
        # Batch the many small changelog and score messages of one batch into few requests.
        producer_linger=0.005,
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
        settings.topic(topics.SCORES), key_serializer="raw", value_serializer="raw"
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
        value_type=bytes,  # streams.state's packed snapshot
        partitions=settings.partitions,
        use_partitioner=True,
    )
    alert_state = app.Table(
        "alert-state",
        default=None,
        key_type=bytes,
        partitions=settings.partitions,
        use_partitioner=True,
    )

    devices = DeviceDirectory(database_url)
    if models is None:
        # The database registry (`citywatch model promote`), polled every 2 s.
        models = ActiveBundles(ModelRegistry(database_url, settings.models_path))
    rule = Hysteresis(
        open_after=settings.alert_open_after,
        close_after=settings.alert_close_after,
        open_at=settings.alert_open_threshold,
        close_at=settings.alert_close_threshold,
    )
    # One sink (one connection) per agent: agents write from their own threads.
    reading_sink = PostgresSink(database_url)
    alert_sink = PostgresSink(database_url)
    deadletter_sink = PostgresSink(database_url)
    stats = WorkerStats()
    cache = StateCache()
    max_skew = timedelta(seconds=settings.max_clock_skew_s)
    worker_id = f"{socket.gethostname()}:{os.getpid()}"

    def stopping() -> bool:
        return app.should_stop

    scoring = Containment("scoring", stopping, settings.poison_attempts)
    alerting = Containment("alerting", stopping, settings.poison_attempts)
    ingest_deadletters = Containment("ingest dead letters", stopping, settings.poison_attempts)

    def store_poison(sink: PostgresSink, stage: str):
        async def store(event, exc: BaseException) -> None:
            await asyncio.to_thread(
                sink.write, SinkBatch(deadletters=[poison_row(event, stage, exc)])
            )
            stats.deadletters["poison"] += 1

        return store

    guards: list[OffsetGuard] = []

    async def settle_batches(stream, containment: Containment, process, on_poison, timings=None):
        """Every agent's loop: take a batch, settle it (contained), acknowledge what settled.

        Only events in offset order are processed (streams.ordering); the others
        stay unacknowledged and are read again.
        """
        guard = OffsetGuard()
        guards.append(guard)
        async for events in stream.take_events(settings.batch_size, within=settings.batch_within_s):
            hold(events)  # acknowledged below, once settled; see streams.containment
            started = time.perf_counter()
            batch = guard.sort(events, app.consumer_generation_id)
            todo = await fill_holes(batch.holes)
            if todo is None:
                continue  # stopping: nothing settled, nothing acknowledged
            todo.extend(batch.in_order)
            if not todo:
                continue
            async with fail_fast(app, containment.step):
                settled = await containment.run(todo, process, on_poison)
            await release(stream, settled, app.consumer)
            if timings is not None:
                timings.append((time.perf_counter() - started) * 1000)

    async def fill_holes(holes: dict) -> list | None:
        """The messages Faust skipped, read directly; None when stopping."""
        found: list = []
        for tp, (start, end) in holes.items():

            async def read(tp=tp, start=start, end=end) -> None:
                found.extend(await fetch_hole(kafka, tp, start, end))

            what = f"{tp}: cannot read offsets {start}..{end - 1} yet"
            if not await retry_until_done(read, stopping, what):
                return None
        return found

    @app.on_partitions_revoked.connect
    async def restart_offset_order(app, revoked, **kwargs) -> None:
        # After a rebalance every partition is read again from its committed offset.
        for guard in guards:
            guard.forget()

    @app.agent(readings_topic)
    async def score_readings(stream):
        await settle_batches(
            stream,
            scoring,
            process_readings,
            store_poison(reading_sink, "score"),
            timings=stats.batch_ms,
        )

    async def process_readings(events) -> None:
        try:
            await _process_readings(events)
        except BaseException:
            cache.clear()  # features moved ahead of the table; restore from it on retry
            raise

    async def _process_readings(events) -> None:
        now = datetime.now(UTC)
        max_age = (
            timedelta(days=settings.max_reading_age_days) if settings.max_reading_age_days else None
        )
        champion, challenger = current_models(models)
        batch = SinkBatch()
        dead_messages: list[tuple[bytes, bytes, str]] = []
        by_device: dict[str, list[tuple[Reading | Maintenance, object]]] = defaultdict(list)

        # 1. validate: Reading, Maintenance or dead letter
        for event in events:
            message = event.message
            stats.last_offsets[message.tp] = message.offset
            raw = message.value
            checked = validate_reading(
                raw,
                devices.lookup,
                now=now,
                max_skew=max_skew,
                max_age=max_age,
                max_bytes=settings.max_message_bytes,
            )
            if isinstance(checked, Rejection):
                batch.deadletters.append(deadletter_row(checked, message, raw))
                dead_messages.append((message.key or b"", raw or b"", checked.reason))
            else:
                by_device[checked.device_id].append((checked, message))

        # 2. features from per-device state; duplicates and replays are decided here
        touched: dict[bytes, DeviceState] = {}
        reading_messages: list = []  # the message of each batch.readings row
        batch_keys: set[tuple[str, datetime]] = set()  # the sink needs them unique
        to_score: dict[str, list[tuple[Reading, list[float]]]] = defaultdict(list)
        unscored = 0
        for device_id, items in by_device.items():
            key = device_id.encode()
            asset_type = items[0][0].asset_type
            state = _device_state(key, asset_type, champion)
            for reading, message in items:
                if message.partition != state.last_partition:
                    if state.last_partition >= 0:
                        _warn_moved(device_id, state.last_partition, message.partition)
                    state.last_partition = message.partition
                elif message.offset <= state.last_offset:
                    continue  # replay of a message already stored before a restart
                state.last_offset = message.offset
                touched[key] = state
                if isinstance(reading, Maintenance):
                    # A repair. Features restart at the device's first reading at or
                    # after the event's time, exactly where training resets them
                    # (models.history); a repeated event (producer retry) is ignored.
                    if state.reset_ts is None or reading.ts > state.reset_ts:
                        state.reset_ts, state.reset_pending = reading.ts, True
                    batch.maintenance.append(
                        MaintenanceRow(
                            reading.ts,
                            device_id,
                            reading.asset_id,
                            reading.asset_type,
                            reading.source,
                        )
                    )
                    continue
                repeated = (device_id, reading.ts) in batch_keys
                if repeated or (state.last_ts is not None and reading.ts == state.last_ts):
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
                        reading.metrics,
                        reading.source,
                    )
                )
                reading_messages.append(message)
                batch_keys.add((device_id, reading.ts))
                if state.last_ts is not None and now >= state.last_ts > reading.ts:
                    # Late: stored, but features only move forward. A last reading
                    # ahead of our clock (forged or skewed) makes nothing late, so
                    # it cannot mute the device's real readings.
                    continue
                state.last_ts = reading.ts
                if state.reset_pending and reading.ts >= state.reset_ts:
                    state.features.reset_baseline()
                    state.reset_pending = False
                features = state.features.update(reading.metrics)
                if asset_type in champion.asset_types:
                    to_score[asset_type].append((reading, features))
                else:
                    unscored += 1
                    _warn_unscored(asset_type, champion.version)

        # 3. score in batches, one LightGBM call per asset type and model
        # Champion rows are stored and also published (they alert); challenger rows are stored only.
        champion_scores: list[ScoreRow] = []
        for asset_type, rows in to_score.items():
            X = np.asarray([f for _, f in rows], dtype=float)
            risks = champion.predict_proba(asset_type, X)
            threshold = float(champion.threshold(asset_type))
            champion_scores.extend(
                ScoreRow(
                    reading.ts,
                    reading.device_id,
                    reading.asset_id,
                    asset_type,
                    champion.version,
                    risk,
                    threshold,
                )
                for (reading, _), risk in zip(rows, risks.tolist(), strict=True)
            )
            high = np.flatnonzero(risks >= threshold)
            for i, contributions in zip(
                high.tolist(), champion.explain(asset_type, X[high]), strict=True
            ):
                reading = rows[i][0]
                batch.explanations.append(
                    ExplanationRow(
                        reading.ts,
                        reading.device_id,
                        reading.asset_id,
                        champion.version,
                        float(risks[i]),
                        contributions,
                    )
                )
            if challenger is not None and _same_features(challenger, champion, asset_type):
                shadow = challenger.predict_proba(asset_type, X).tolist()
                shadow_threshold = float(challenger.threshold(asset_type))
                batch.scores.extend(
                    ScoreRow(
                        reading.ts,
                        reading.device_id,
                        reading.asset_id,
                        asset_type,
                        challenger.version,
                        risk,
                        shadow_threshold,
                        "challenger",
                    )
                    for (reading, _), risk in zip(rows, shadow, strict=True)
                )

        # 4. store, then publish, then move state forward (crash-safe order)
        batch.scores.extend(champion_scores)
        batch.reading_positions = [(m.topic, m.partition, m.offset) for m in reading_messages]
        # A reading whose (device, ts) another message's reading holds in the database
        # becomes a duplicate dead letter in the same transaction: never a silent no-op.
        batch.conflict_deadletter = lambda i: duplicate_deadletter(
            batch.readings[i], reading_messages[i]
        )
        written = await asyncio.to_thread(reading_sink.write, batch)
        for i in written.conflicts:
            message = reading_messages[i]
            dead_messages.append((message.key or b"", message.value, "duplicate"))
        stored_readings = len(batch.readings) - len(written.conflicts)
        by_partition: dict[int, list[ScoreRow]] = defaultdict(list)
        for score in champion_scores:
            by_partition[partition_of(score.asset_id.encode(), settings.partitions)].append(score)
        for partition, part in by_partition.items():
            await scores_topic.send(value=encode_score_batch(part), partition=partition)
        for key, raw, reason in dead_messages:
            await deadletter_topic.send(
                key=key,
                value=raw[:MAX_REPUBLISHED_RAW],
                headers=deadletter_headers(reason, raw),
            )
        await app.producer.flush()
        for key, state in touched.items():
            packed = encode_state(state, spec_fingerprint(state.features.spec))
            device_state[key] = packed
            cache.put(key, packed, state)

        stats.processed += len(events)
        stats.stored += stored_readings
        stats.maintenance += len(batch.maintenance)
        stats.scored += len(champion_scores)
        stats.unscored += unscored
        stats.deadletters.update(d.reason for d in batch.deadletters)

    spec_changes_logged: set[tuple[str, str]] = set()

    unscored_logged: set[tuple[str, str]] = set()

    def _warn_unscored(asset_type: str, version: str) -> None:
        # A catalogue type with no trained model yet: its readings are stored and
        # its features kept, so a model promoted later starts from real history.
        if (version, asset_type) not in unscored_logged:
            unscored_logged.add((version, asset_type))
            log.warning(
                "model %s has no %s model: its readings are stored, not scored", version, asset_type
            )

    def _device_state(key: bytes, asset_type: str, champion) -> DeviceState:
        saved = device_state.get(key)
        cached = cache.get(key, saved)
        if asset_type in champion.asset_types:
            spec = champion.feature_spec(asset_type)
        else:
            spec = FeatureSpec.for_asset_type(asset_type)
        if cached is not None and cached.features.spec == spec:
            return cached
        if saved is None:
            return DeviceState(-1, None, DeviceFeatureState(spec))
        restored = decode_state(saved, spec, spec_fingerprint(spec))
        if restored is not None:
            return restored
        # The champion's features changed: offsets stay, features start afresh.
        if (champion.version, asset_type) not in spec_changes_logged:
            spec_changes_logged.add((champion.version, asset_type))
            log.info(
                "model %s computes other %s features; devices start fresh feature state",
                champion.version,
                asset_type,
            )
        marks = decode_offsets(saved)
        return DeviceState(
            marks.last_offset,
            marks.last_ts,
            DeviceFeatureState(spec),
            marks.last_partition,
            marks.reset_ts,
            False,  # fresh features: nothing left to reset
        )

    @app.agent(scores_topic)
    async def raise_alerts(stream):
        await settle_batches(stream, alerting, process_scores, store_poison(alert_sink, "alert"))

    async def process_scores(events) -> None:
        states: dict[str, AlertState] = {}
        rows: list[AlertRow] = []
        published: list[AlertEvent] = []
        for event in events:
            for score in decode_score_batch(event.value):
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
                row = AlertRow(
                    transition.alert_id,
                    score.asset_id,
                    score.device_id,
                    score.asset_type,
                    "open" if transition.kind == "open" else "closed",
                    transition.opened_at,
                    transition.closed_at,
                    transition.peak_risk,
                    score.risk,
                    open_at,
                    score.model_version,
                )
                rows.append(row)
                published.append(alert_event(row, transition.kind))
                if transition.kind == "open":
                    stats.alerts_opened += 1
                    log.info(
                        "alert OPEN  %s risk=%.2f (%s)", score.asset_id, score.risk, row.alert_id
                    )
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

    @app.agent(deadletter_topic)
    async def store_ingest_deadletters(stream):
        await settle_batches(
            stream,
            ingest_deadletters,
            process_ingest_deadletters,
            store_poison(deadletter_sink, "ingest"),
        )

    async def process_ingest_deadletters(events) -> None:
        rows = [
            row
            for row in (
                ingest_deadletter_row(
                    topic=e.message.topic,
                    partition=e.message.partition,
                    offset=e.message.offset,
                    key=e.message.key,
                    value=e.message.value,
                    headers=e.message.headers,
                )
                for e in events
            )
            if row is not None
        ]
        if rows:
            await asyncio.to_thread(deadletter_sink.write, SinkBatch(deadletters=rows))
            stats.deadletters.update(r.reason for r in rows)

    @app.timer(interval=settings.stats_interval_s)
    async def report_progress() -> None:
        elapsed = max(time.monotonic() - stats.started, 1e-9)
        durations = np.asarray(stats.batch_ms) if stats.batch_ms else None
        stats.batch_ms = []
        lag = consumer_lag(app, stats.last_offsets)
        log.info(
            "processed=%d (%.0f/s) stored=%d maintenance=%d scored=%d unscored=%d"
            " deadletters=%d alerts open/closed=%d/%d lag=%s",
            stats.processed,
            stats.processed / elapsed,
            stats.stored,
            stats.maintenance,
            stats.scored,
            stats.unscored,
            sum(stats.deadletters.values()),
            stats.alerts_opened,
            stats.alerts_closed,
            "?" if lag is None else lag,
        )
        sample = {
            "ts": datetime.now(UTC),
            "worker_id": worker_id,
            "consumed": stats.processed,
            "stored": stats.stored,
            "scored": stats.scored,
            "deadletters": sum(stats.deadletters.values()),
            "consumer_lag": lag,
            "batch_ms_p50": None if durations is None else float(np.percentile(durations, 50)),
            "batch_ms_p99": None if durations is None else float(np.percentile(durations, 99)),
        }
        try:
            await asyncio.to_thread(record_worker_stats, database_url, sample)
        except psycopg.Error as exc:  # stats are best effort; the data path has its own retry
            log.warning("could not store worker stats: %s", exc)

    @app.timer(interval=settings.maintenance_interval_s, on_leader=True)
    async def maintain_storage() -> None:
        # One worker (the leader) keeps partitions ahead and rollups fresh, so a
        # deployment needs no cron job; `citywatch storage maintain` does the same.
        try:
            await asyncio.to_thread(
                run_maintenance,
                database_url,
                days_ahead=settings.partition_days_ahead,
                retention_days=settings.retention_days,
            )
        except psycopg.Error as exc:
            log.warning("storage maintenance failed (will retry): %s", exc)

    @app.on_before_shutdown.connect
    async def close_sinks(app, **kwargs) -> None:
        for sink in (reading_sink, alert_sink, deadletter_sink):
            sink.close()

    app.citywatch_stats = stats  # type: ignore[attr-defined]
    return app


def _same_features(a, b, asset_type: str) -> bool:
    # Shadow scoring reuses the champion's feature rows; a challenger with other
    # features would need its own device state, which the worker doesn't keep.
    return asset_type in a.asset_types and a.feature_spec(asset_type) == b.feature_spec(asset_type)


def alert_event(row: AlertRow, kind: str) -> AlertEvent:
    return AlertEvent(
        alert_id=row.alert_id,
        transition=kind,
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


def consumer_lag(app: faust.App, last_offsets: dict) -> int | None:
    """Readings not yet processed on this worker's partitions (None if unknown)."""
    try:
        total = 0
        for tp, offset in last_offsets.items():
            highwater = app.consumer.highwater(tp)
            if highwater is None:
                return None
            total += max(0, highwater - offset - 1)
        return total
    except Exception:  # lag is diagnostics; never let it break the worker
        return None


def run_worker(settings: Settings, kafka: str, database_url: str, *, tansu: bool) -> None:
    """Run the worker until SIGINT/SIGTERM (blocking)."""
    topics.ensure_topics(kafka, settings)
    app = create_app(settings, kafka, database_url, tansu=tansu)
    worker = faust.Worker(app, loglevel=settings.log_level.upper(), quiet=True)
    worker.execute_from_commandline()
