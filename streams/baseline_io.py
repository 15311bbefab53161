"""The worker's I/O floor: per batch, only the I/O that storing and publishing need.

``streams.baseline --batch=N:WITHIN --io`` runs this after parsing each batch:

* one ``Reading`` and one ``Score`` per message, taken from the parsed JSON as
  it is (no validation, no features, no model: the risk is a constant);
* one transaction with a binary COPY of the readings and one of the scores into
  the real ``readings`` and ``scores`` tables (same partitions, keys, indexes and
  trigger as the worker's sink), in a thread, overlapping the next batch's intake;
* one score batch per scores-topic partition, produced on a topic of its own,
  so that no worker's alert agent reads it.

Then take_events acknowledges the batch. It writes no offsets, dead letters or
alerts, so it is a floor under any exactly-once worker on this broker and
database, not a competitor.

With ``state_bytes``, it also keeps per-device state the Faust way: a table
with a changelog (``use_partitioner``, as the worker's ``device-state``), where
every device seen since the last write gets a value of that many bytes, written
every ``checkpoint_s`` as the worker's checkpoints write moved states. That is
the cost of recoverable per-device state, whatever the state holds. The database URL comes from
``CITYWATCH_BASELINE_DATABASE_URL`` (never the command line, where ``ps`` shows it).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import psycopg
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError

from core.records import Reading, Score
from core.wire import encode_score_batch
from storage.tables import READINGS, SCORES, copy_rows

from .pipeline import scores_by_partition

DATABASE_ENV = "CITYWATCH_BASELINE_DATABASE_URL"
_VERSION = "io-floor"


def create_scores_topic(bootstrap: str, name: str, partitions: int) -> None:
    """The floor's own scores topic, with the worker's partition count."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="citywatch-baseline")
    try:
        with contextlib.suppress(TopicAlreadyExistsError):
            admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    finally:
        admin.close()


def rows_of(parsed: list[dict[str, Any]]) -> tuple[list[Reading], list[Score]]:
    """A reading and a constant score per parsed reading: the rows, with no work."""
    readings, scores = [], []
    for d in parsed:
        if "metrics" not in d:  # a maintenance event: the worker stores it elsewhere
            continue
        ts = datetime.fromisoformat(d["ts"])
        device, asset, kind = d["device_id"], d["asset_id"], d["asset_type"]
        readings.append(Reading(ts, device, asset, kind, d["metrics"], d["source"]))
        scores.append(Score(ts, device, asset, kind, _VERSION, 0.0, 1.0))
    return readings, scores


class IOFloor:
    """Stores and publishes each batch the way the worker must, and nothing more."""

    def __init__(
        self,
        app: Any,
        scores_topic: str,
        partitions: int,
        state_bytes: int = 0,
        checkpoint_s: float = 2.0,
    ) -> None:
        self.db = psycopg.connect(os.environ[DATABASE_ENV], autocommit=True)
        self.topic = app.topic(scores_topic, key_serializer="raw", value_serializer="raw")
        self.partitions = partitions
        self.table = None
        if state_bytes:
            self.table = app.Table(
                "io-floor-state",
                default=None,
                key_type=bytes,
                value_type=bytes,
                partitions=partitions,
                use_partitioner=True,
            )
        self.value = os.urandom(state_bytes)  # incompressible, as packed floats are
        self.checkpoint_s = checkpoint_s
        self.moved: set[bytes] = set()
        self.written_at = time.monotonic()
        self.stored = self.published = self.states_written = 0  # the caller reports them
        self._pending: tuple[asyncio.Future, list[Reading], list[Score]] | None = None
        self._store = ThreadPoolExecutor(1)  # one connection: its transactions in turn

    def _copy(self, readings: list[Reading], scores: list[Score]) -> None:
        with self.db.transaction(), self.db.cursor() as cur:
            copy_rows(cur, READINGS, readings)
            copy_rows(cur, SCORES, scores)

    async def handle(self, parsed: list[dict[str, Any]]) -> None:
        """Start storing this batch; settle the one before (the store overlaps the next
        batch's intake, which the worker cannot do: a floor, not a design)."""
        readings, scores = rows_of(parsed)
        loop = asyncio.get_running_loop()
        storing = loop.run_in_executor(self._store, self._copy, readings, scores)
        await self.settle()
        self._pending = (storing, readings, scores)

    async def settle(self) -> None:
        """Wait for the batch being stored, then publish its scores (the worker's order)."""
        if self._pending is None:
            return
        storing, readings, scores = self._pending
        self._pending = None
        await storing
        self.stored += len(readings)
        # Not flushed here: the worker flushes at its checkpoints, every few seconds.
        for partition, part in scores_by_partition(scores, self.partitions).items():
            await self.topic.send(value=encode_score_batch(part), partition=partition)
            self.published += len(part)
        if self.table is not None:
            self.moved.update(r.device_id.encode() for r in readings)
            if time.monotonic() - self.written_at >= self.checkpoint_s:
                for key in self.moved:
                    self.table[key] = self.value
                self.states_written += len(self.moved)
                self.moved.clear()
                self.written_at = time.monotonic()
