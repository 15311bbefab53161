"""The citywatch worker: Faust topics, tables and agents around the batch pipeline.

    readings (raw bytes, key = device)
      -> streams.pipeline.plan_readings    validate, per-device features, score
                                           (champion, plus a challenger in shadow)
      -> PostgreSQL (readings, scores, explanations, dead letters) in one transaction
      -> scores topic                      one ScoreBatch per partition, keyed by asset
      -> device-state table                packed per-device state (streams.state)
    scores
      -> streams.pipeline.plan_alerts      hysteresis per asset (table ``alert-state``)
      -> PostgreSQL, then the alerts topic
    deadletter (stage=ingest, from the LoRaWAN bridge and webhooks)
      -> PostgreSQL deadletters

The steps are plain functions in streams.pipeline; this module only wires them
to Kafka and carries each plan out in the crash-safe order: store, publish,
move state, acknowledge. Delivery: at-least-once from Kafka, exactly-once in
PostgreSQL; the per-key state remembers the last offset it absorbed, so a
replay after a crash skips work it has already stored. Containment of poison
messages and outages is streams.containment's job (docs/delivery.md).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import faust
import psycopg

from core.settings import Settings
from core.wire import encode_score_batch
from models.catalog import ActiveBundles, ModelCatalog
from storage.deadletters import ingest_deadletter_row
from storage.maintenance import run_maintenance
from storage.outlook import OutlookSink
from storage.sinks import (
    PostgresSink,
    SinkBatch,
    SinkUnavailableError,
    record_worker_stats,
)

from . import topics
from .alerting import Hysteresis
from .checkpoints import Checkpoint
from .containment import Containment, fail_fast, hold, release, retry_until_done
from .deadletters import (
    MAX_REPUBLISHED_RAW,
    deadletter_headers,
    poison_row,
)
from .device_states import DeviceStates
from .devices import DeviceDirectory
from .explanations import ExplainPolicy
from .heap import HeapFreezer, collect_on_schedule
from .ordering import OffsetGuard, faust_committed_offsets, fetch_hole
from .pipeline import Limits, plan_alerts, plan_readings
from .records import AlertEvent
from .table_store import SCHEME, claim_datadir, discard_stale_partitions
from .tansu import install_faust_fetch_wait_fix, install_faust_highwater_fix
from .water_quality import WaterQualityHook
from .worker_stats import WorkerStats

log = logging.getLogger("citywatch.worker")


# -- step helpers ----------------------------------------------------------


class ModelsUnavailableError(SinkUnavailableError):
    """No model to score with yet (none promoted, or the registry unreachable)."""


def current_models(models: ActiveBundles):
    """Champion and challenger; a batch waits while there is no champion, like an outage."""
    try:
        return models.current()
    except RuntimeError as exc:
        raise ModelsUnavailableError(str(exc)) from exc


# -- the app ---------------------------------------------------------------


def create_app(
    settings: Settings,
    kafka: str,
    database_url: str,
    *,
    tansu: bool,
    models: ActiveBundles | None = None,
    datadir: Path | None = None,
) -> faust.App:
    """Build the Faust app with its topics, tables and agents."""
    if tansu:
        install_faust_highwater_fix(kafka)
        install_faust_fetch_wait_fix()
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{kafka}",
        store=f"{SCHEME}://" if settings.table_store == "rocksdb" else "memory://",
        # Faust's default is "{id}-data" in the CWD: /app in the image, not writable by uid 10001.
        datadir=str(datadir if datadir is not None else settings.faust_path),
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
        models = ActiveBundles(ModelCatalog(database_url, settings.models_path))
    rule = Hysteresis(
        open_after=settings.alert_open_after,
        close_after=settings.alert_close_after,
        open_at=settings.alert_open_threshold,
        close_at=settings.alert_close_threshold,
    )
    # One sink (one connection) per agent: agents write from their own threads.
    reading_sink = OutlookSink(database_url)  # readings, scores and station_outlook
    alert_sink = PostgresSink(database_url)
    deadletter_sink = PostgresSink(database_url)
    stats = WorkerStats()
    device_states = DeviceStates(device_state)
    explain = ExplainPolicy(timedelta(seconds=settings.explain_interval_s))
    limits = Limits(
        max_skew=timedelta(seconds=settings.max_clock_skew_s),
        max_age=timedelta(days=settings.max_reading_age_days)
        if settings.max_reading_age_days
        else None,
        max_bytes=settings.max_message_bytes,
    )
    worker_id = f"{socket.gethostname()}:{os.getpid()}"
    # Water networks: stored network readings, re-keyed by district, feed a district's
    # leak statistic and candidates (streams/leaks.py).
    from .leak_agent import LeakDetection

    leaks = LeakDetection(app, settings, database_url, scores_topic, stats.deadletters)
    # Water-quality stations: incident probability and 1-48 h outlook (streams/water_quality.py).
    water_quality = WaterQualityHook(app, settings)

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
    checkpoint = Checkpoint(settings.checkpoint_interval_s)
    heap = HeapFreezer()
    checkpoint_lock = asyncio.Lock()  # a checkpoint never runs in the middle of a batch

    async def settle_batches(
        stream, containment: Containment, process, on_poison, timings=None, at_checkpoints=False
    ):
        """Every agent's loop: take a batch, settle it (contained), acknowledge what settled.

        Only events in offset order are processed (streams.ordering); the others
        stay unacknowledged and are read again. ``at_checkpoints`` (the readings
        agent): settled events are acknowledged at the next checkpoint instead.
        """
        guard = OffsetGuard(committed=faust_committed_offsets(app.consumer))
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
            if not at_checkpoints:
                async with fail_fast(app, containment.step):
                    settled = await containment.run(todo, process, on_poison)
                await release(stream, settled, app.consumer)
            else:
                async with checkpoint_lock, fail_fast(app, containment.step):
                    epoch = checkpoint.epoch
                    settled = await containment.run(todo, process, on_poison)
                    if epoch == checkpoint.epoch:  # else a rebalance discarded the batch
                        checkpoint.stream = stream
                        checkpoint.settle(settled)
                        if checkpoint.due():
                            await write_checkpoint()
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
        # After a rebalance every partition is read again from its committed offset,
        # and from the device states of the last checkpoint (streams.checkpoints).
        for guard in guards:
            guard.forget()
        checkpoint.discard()
        device_states.forget_live_objects()
        water_quality.forget()

    @app.agent(readings_topic)
    async def score_readings(stream):
        await settle_batches(
            stream,
            scoring,
            process_readings,
            store_poison(reading_sink, "score"),
            timings=stats.batch_ms,
            at_checkpoints=True,
        )

    async def process_readings(events) -> None:
        epoch = checkpoint.epoch
        try:
            if checkpoint.replay_needed:
                await _process_readings(checkpoint.stored, replay=True)
                checkpoint.replay_needed = False
            if events:
                await _process_readings(events)
        except BaseException:
            device_states.forget_live_objects()  # restore from the table on retry
            water_quality.forget()
            checkpoint.lost_live_states()
            raise
        if not checkpoint.processed(epoch, events):
            device_states.forget_live_objects()  # a rebalance came in between

    async def write_checkpoint() -> None:
        """Write the states moved since the last checkpoint, then acknowledge (locked)."""
        if checkpoint.replay_needed:  # the last batch's poison message lost the live states
            replay = functools.partial(process_readings, [])  # replays ``stored`` only
            if not await retry_until_done(replay, stopping, "scoring: cannot replay yet"):
                return
        device_states.write(device_states.checkpoint())
        # The changelog holds the states before their messages' offsets are committed.
        if not await retry_until_done(
            app.producer.flush, stopping, "scoring: cannot write the checkpoint yet"
        ):
            return
        await release(checkpoint.stream, checkpoint.settled, app.consumer)
        checkpoint.done()
        heap.after_checkpoint()

    @app.task
    async def keep_checkpoints() -> None:
        # Not a Faust timer: timers end when the app starts stopping, and Faust's stop
        # (and every rebalance) waits for all held messages to be acknowledged first.
        while True:
            await asyncio.sleep(0.2)
            if not checkpoint.due() and not (checkpoint.settled and waiting_for_acks()):
                continue
            async with checkpoint_lock, fail_fast(app, "checkpoint"):
                if checkpoint.settled:
                    await write_checkpoint()

    def waiting_for_acks() -> bool:
        return app.should_stop or app.rebalancing

    async def _process_readings(events, replay: bool = False) -> None:
        champion, challenger = current_models(models)
        for event in events:
            stats.last_offsets[event.message.tp] = event.message.offset
        plan = plan_readings(
            [event.message for event in events],
            lookup=devices.lookup,
            limits=limits,
            now=datetime.now(UTC),
            states=device_states,
            champion=champion,
            challenger=challenger,
            explain=explain,
            scored_elsewhere=water_quality.asset_types,
        )
        stations = water_quality.plan(plan)
        # Store, then publish; the states move at the next checkpoint (crash-safe
        # order). While the sink thread stores (PostgreSQL works on the other core),
        # this thread encodes the score batches: nothing leaves before the batch is stored.
        # run_in_executor submits now; a to_thread task would start only at the next await.
        storing = asyncio.get_running_loop().run_in_executor(
            None, reading_sink.write_with_outlook, plan.batch, stations.outlook
        )
        try:
            score_batches = [
                (partition, encode_score_batch(part))
                for partition, part in plan.scores_by_partition(settings.partitions).items()
            ]
        finally:
            written, _ = await storing
        plan.conflicts_stored(written.conflicts)
        for partition, value in score_batches:
            await scores_topic.send(value=value, partition=partition)
        await leaks.forward(plan.batch.readings, plan.batch.reading_positions)
        for key, raw, reason in plan.republish:
            await deadletter_topic.send(
                key=key,
                value=raw[:MAX_REPUBLISHED_RAW],
                headers=deadletter_headers(reason, raw),
            )
        await app.producer.flush()
        await water_quality.save(stations)  # durable before the device states move
        device_states.moved(plan.states)
        if replay:
            return  # counted the first time
        stats.processed += len(events)
        stats.stored += len(plan.batch.readings) - len(written.conflicts)
        stats.maintenance += len(plan.batch.maintenance)
        stats.scored += len(plan.champion_scores)
        stats.unscored += plan.unscored
        stats.deadletters.update(d.reason for d in plan.batch.deadletters)

    @app.agent(scores_topic)
    async def raise_alerts(stream):
        await settle_batches(stream, alerting, process_scores, store_poison(alert_sink, "alert"))

    async def process_scores(events) -> None:
        plan = plan_alerts((e.value for e in events), alert_state.get, rule)
        if plan.rows:
            await asyncio.to_thread(alert_sink.write, SinkBatch(alerts=plan.rows))
            for alert in plan.events:
                await alerts_topic.send(key=alert.asset_id, value=alert)
            await app.producer.flush()
        for row in plan.rows:
            if row.status == "open":
                stats.alerts_opened += 1
                log.info("alert OPEN  %s risk=%.2f (%s)", row.asset_id, row.last_risk, row.alert_id)
            else:
                stats.alerts_closed += 1
                log.info("alert CLOSE %s (%s)", row.asset_id, row.alert_id)
        for asset_id, state in plan.states.items():
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
        sample = stats.report(app, worker_id)
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
        devices.close()

    app.citywatch_stats = stats  # type: ignore[attr-defined]
    return app


def run_worker(settings: Settings, kafka: str, database_url: str, *, tansu: bool) -> None:
    """Run the worker until SIGINT/SIGTERM (blocking)."""
    topics.ensure_topics(kafka, settings)
    # Each worker process its own slot of the volume: RocksDB locks a table's files.
    rocksdb = settings.table_store == "rocksdb"
    # Tables of different apps (consumer groups) must not share files: table names repeat.
    datadir = claim_datadir(settings.faust_path / settings.app_id) if rocksdb else None
    app = create_app(settings, kafka, database_url, tansu=tansu, datadir=datadir)
    if rocksdb:
        discard_stale_partitions(app, kafka, tansu=tansu)
    # The ~230k objects of the imports (sklearn, lightgbm, pandas, Faust) never die:
    # freezing them keeps every full collection from walking them again (py-spy: about
    # 10 us per reading of the pipeline was the collector); see streams/heap.py.
    collect_on_schedule()
    worker = faust.Worker(app, loglevel=settings.log_level.upper(), quiet=True)
    worker.execute_from_commandline()
