"""The leak agent: network-readings -> each district's detector, its state durable in a table.

    network-readings (keyed by district, sent by LeakDetection.forward)
      -> read_forwarded and the district's checks
           refused: a dead letter (stage "leaks") with its reason, counted
      -> DistrictLeaks.add                   held, unacknowledged, until its step is decided
      -> a decided step: score and candidates to PostgreSQL, the score to the scores
         topic (flushed), then the district's state to the ``leak-state`` table
         (streams.leak_state), then every message that state contains is acknowledged

Delivery: at-least-once from Kafka, exactly-once in PostgreSQL. A message is
acknowledged only once a state that absorbed it is in the table, and Faust
flushes the table's changelog before it commits offsets. After a kill -9 the
restarted worker restores each district from the changelog and reads again from
the committed offset: a reading the restored state holds already is ignored (the
district takes one reading per sensor and step, and none for a decided step), the
rest is absorbed. A step whose score was stored but whose state never reached the
table is decided again from the same readings: PostgreSQL keeps the first score
(its natural key), and the hysteresis skips a score time it has seen.

Containment: each message is processed alone under streams.containment. A failed
attempt drops the district's live object, rebuilt from the table and the held
messages before the retry, so no half-done step survives; a message that keeps
raising becomes a ``poison`` dead letter. The agent itself never stops on input.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from core.wire import Rejection, encode_score_batch
from storage.sinks import PostgresSink, SinkBatch
from storage.water_networks import district_layouts, store_candidates

from .containment import Containment, fail_fast, release
from .deadletters import MAX_REPUBLISHED_RAW, deadletter_headers, deadletter_row, poison_row
from .leak_state import LeakStateStore
from .leaks import (
    NETWORK_TYPES,
    DistrictLeaks,
    Forwarded,
    StepResult,
    build_district,
    forward_value,
    read_forwarded,
    result_rows,
)

log = logging.getLogger(__name__)

STAGE = "leaks"
LAYOUT_REFRESH_S = 5.0  # a district registered while the worker runs is found this soon


class LeakDetection:
    """The leak agent, its table and the topic that feeds it, on the worker's Faust app.

    The scoring agent calls :meth:`forward` with each stored batch: network
    readings are re-keyed by their district onto ``network-readings`` (a
    group_by done at the producer, so the readings topic keeps one consumer and
    the scoring agent's offset-ordered batches are untouched).
    """

    def __init__(
        self, app, settings, database_url: str, scores_topic, deadletters: Counter | None = None
    ) -> None:
        from .pipeline import partition_of
        from .topics import DEADLETTER, NETWORK_READINGS

        self._app, self._database_url = app, database_url
        self._partitions = settings.partitions
        self._partition_of = partition_of
        self._max_skew = timedelta(seconds=settings.max_clock_skew_s)
        self._scores_topic = scores_topic
        self._topic = app.topic(
            settings.topic(NETWORK_READINGS), key_serializer="raw", value_serializer="raw"
        )
        self._deadletter_topic = app.topic(
            settings.topic(DEADLETTER), key_serializer="raw", value_serializer="raw"
        )
        # Keys and values are bytes (streams.leak_state). No partitioner: every key of a
        # district goes to the partition of the message being processed, the district's.
        table = app.Table(
            "leak-state",
            default=None,
            key_type=bytes,
            value_type=bytes,
            partitions=settings.partitions,
        )
        self._store = LeakStateStore(table)
        self._sink = PostgresSink(database_url)  # its own connection: agents write from threads
        self._containment = Containment(
            "leak detection", lambda: app.should_stop, settings.poison_attempts
        )
        self._districts: dict[str, DistrictLeaks] = {}
        self._unwatched: set[str] = set()  # registered, but a layout the detector can't use
        self._held: dict[str, list] = {}  # district -> messages absorbed since its last save
        self._layouts: dict[str, dict[str, Any]] = {}
        self._layouts_at = -LAYOUT_REFRESH_S
        self._stream = None
        self.deadletters = deadletters if deadletters is not None else Counter()
        self.skipped = 0  # readings of districts not watched
        self.decided = 0

        @app.on_before_shutdown.connect
        async def close_leak_sink(app, **kwargs) -> None:
            self._sink.close()

        @app.on_partitions_revoked.connect
        async def forget_districts(app, revoked, **kwargs) -> None:
            # Every partition is read again from its committed offset, and each
            # district comes back from the table: nothing held is acknowledged.
            self._districts.clear()
            self._held.clear()
            self._store.forget()

        @app.agent(self._topic)
        async def detect_leaks(stream):
            self._stream = stream
            async for event in stream.events():
                # Held: acknowledged once a saved state contains it (or it is refused).
                event.message.incref()
                generation = app.consumer_generation_id
                if event.message.generation_id not in (None, generation):
                    continue  # fetched before a rebalance: read again from the commit
                async with fail_fast(app, "leak detection"):
                    await self._containment.run([event], self._process, self._poison)

    # -- one message ------------------------------------------------------------

    async def _process(self, events) -> None:
        event = events[0]
        key = event.message.key or b""  # a keyless message names no district: refused
        reading = read_forwarded(event.message.value, key)
        if isinstance(reading, Rejection):
            await self._refuse(event, reading)
            return
        home = self._partition_of(key, self._partitions)
        if event.message.partition != home:
            # The district's state lives in its key's partition: elsewhere it would split.
            detail = f"arrived on partition {event.message.partition}, its key's is {home}"
            await self._refuse(event, Rejection("asset_mismatch", detail, reading.device_id))
            return
        district = await self._district(reading.asset_id)
        if isinstance(district, Rejection):
            await self._refuse(event, district)
            return
        if district is None:
            self.skipped += 1
            await release(self._stream, [event], self._app.consumer)
            return
        refused = self._check(district, reading)
        if refused is not None:
            await self._refuse(event, refused)
            return
        try:
            results = district.add(reading.device_id, reading.ts, reading.value, reading.partition)
            for result in results:
                await self._publish(district, result)
            if results:
                # Once per decided step; the event being processed is the district's
                # partition, so the changelog keeps all of the district together.
                self._store.save(district.asset_id, district.to_state())
        except BaseException:
            # The live object moved ahead of the table: rebuild it for the retry.
            self._districts.pop(district.asset_id, None)
            raise
        held = self._held.setdefault(district.asset_id, [])
        held.append(event)
        if results:
            self.decided += len(results)
            await release(self._stream, held, self._app.consumer)
            held.clear()

    def _check(self, district: DistrictLeaks, reading: Forwarded) -> Rejection | None:
        if reading.device_id not in district.devices:
            return Rejection(
                "unknown_device",
                f"{reading.device_id} is not a sensor of {district.asset_id}",
                reading.device_id,
            )
        if reading.ts > datetime.now(UTC) + self._max_skew:
            return Rejection("clock_skew", f"{reading.ts.isoformat()} is ahead", reading.device_id)
        return None

    async def _refuse(self, event, rejection: Rejection) -> None:
        message = event.message
        raw = message.value or b""
        row = deadletter_row(rejection, message, raw, stage=STAGE)
        await asyncio.to_thread(self._sink.write, SinkBatch(deadletters=[row]))
        await self._deadletter_topic.send(
            key=message.key,
            value=raw[:MAX_REPUBLISHED_RAW],
            headers=deadletter_headers(rejection.reason, raw),
        )
        self.deadletters[rejection.reason] += 1
        await release(self._stream, [event], self._app.consumer)

    async def _poison(self, event, exc: BaseException) -> None:
        row = poison_row(event, STAGE, exc)
        await asyncio.to_thread(self._sink.write, SinkBatch(deadletters=[row]))
        self.deadletters["poison"] += 1
        await release(self._stream, [event], self._app.consumer)

    # -- districts --------------------------------------------------------------

    async def _district(self, asset_id: str) -> DistrictLeaks | Rejection | None:
        """The live district; rebuilt from its saved state and held messages if need be.
        None for a district not watched, a Rejection for an asset that is no district."""
        district = self._districts.get(asset_id)
        if district is not None:
            return district
        layout = await self._layout(asset_id)
        if layout is None:
            return Rejection("unknown_device", f"{asset_id[:128]} is not a registered district")
        if asset_id in self._unwatched:
            return None
        district = await asyncio.to_thread(build_district, asset_id, layout)
        if district is None:
            self._unwatched.add(asset_id)
            return None
        self._restore(district)
        self._districts[asset_id] = district
        return district

    async def _layout(self, asset_id: str) -> dict[str, Any] | None:
        # Reloaded at most every few seconds, so unknown assets can't hammer the database.
        if asset_id not in self._layouts and time.monotonic() - self._layouts_at > LAYOUT_REFRESH_S:
            self._layouts = await asyncio.to_thread(district_layouts, self._database_url)
            self._layouts_at = time.monotonic()
        return self._layouts.get(asset_id)

    def _restore(self, district: DistrictLeaks) -> None:
        asset_id = district.asset_id
        try:
            state = self._store.load(asset_id)
            if state is not None:
                district.restore(state)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("leaks: %s: saved state not usable (%s); starting afresh", asset_id, exc)
            state = None
        if state is None:
            log.info("leaks: watching %s (warms up for two weeks of steps)", asset_id)
        else:
            log.info("leaks: %s restored, last step decided %s", asset_id, district.done_ts)
        # Absorbed since the last save and not acknowledged: absorbed again.
        for event in self._held.get(asset_id, []):
            reading = read_forwarded(event.message.value, event.message.key)
            district.add(reading.device_id, reading.ts, reading.value, reading.partition)

    async def _publish(self, district: DistrictLeaks, result: StepResult) -> None:
        score, candidates = result_rows(district, result)
        await asyncio.to_thread(self._sink.write, SinkBatch(scores=[score]))
        if candidates:
            await asyncio.to_thread(store_candidates, self._database_url, candidates)
        await self._scores_topic.send(
            value=encode_score_batch([score]),
            partition=self._partition_of(score.asset_id.encode(), self._partitions),
        )
        await self._app.producer.flush()  # on the topic before the state says "decided"
        if result.ts.hour == 0 and result.ts.minute == 0:  # a line per district and day
            log.info(
                "leaks: %s %s statistic=%.1f alarm=%s incomplete=%d late=%d repeated=%d",
                district.asset_id,
                result.ts.date(),
                result.statistic,
                result.alarm,
                district.incomplete,
                district.late,
                district.repeated,
            )
        if result.alarm and candidates:
            log.info(
                "leak suspected on %s: %s",
                district.asset_id,
                ", ".join(node for node, *_ in result.candidates[:3]),
            )

    async def forward(self, readings, positions=None) -> None:
        """Send the batch's stored network readings to the district topic, keyed by district;
        ``positions`` (topic, partition, offset) tell each reading's source partition.

        Sent in offset order (the batch holds its readings grouped by device): the
        district relies on each source partition arriving in its own order."""
        order = range(len(readings))
        if positions:
            order = sorted(order, key=lambda i: (positions[i][1], positions[i][2]))
        for i in order:
            row = readings[i]
            if row.asset_type in NETWORK_TYPES:
                key = row.asset_id.encode()
                await self._topic.send(
                    key=key,
                    value=forward_value(row, positions[i][1] if positions else None),
                    partition=self._partition_of(key, self._partitions),
                )
