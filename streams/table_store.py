"""Where the worker's Faust tables live on disk, so a restart doesn't replay every changelog.

With Faust's memory store a restarted worker reads each table's whole changelog
back, one event at a time: 17.9 s for 200 devices after 80,000 readings, 37 s
for a city of 100,000 devices (docs/performance.md). With a RocksDB store
(``rocksdict``) each partition's table is a database on the worker's volume
that remembers the changelog offset it holds, so a restart reads only the tail.

Two things Faust's own RocksDB store gets wrong for our tables, fixed here:

- A table with ``use_partitioner=True`` (ours: a batch mixes partitions, so the
  changelog partition comes from the key) is still filed locally under the
  *current event's* partition, and must be written inside an event. We file
  each key under the partition its changelog message goes to, the same one
  recovery writes it to.
- Two workers on one machine must not share a data directory (RocksDB locks
  it). :func:`claim_datadir` gives each worker process its own slot under the
  configured directory, held with a lock the kernel releases when the process
  dies, so a restarted worker takes its predecessor's slot and state back.

And one thing it leaves to the operator: a local table that claims more of
its changelog than the broker holds (the topic was deleted and recreated, or
the broker's data lost) makes Faust refuse to start, or, when the new
changelog is empty, silently keeps the old state. :func:`discard_stale_partitions`
drops such a partition's local copy before the worker starts; the changelog
is the truth and recovery rebuilds it.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import shutil
from pathlib import Path
from typing import IO

import faust
import rocksdict
from aiokafka.structs import TopicPartition as AioTopicPartition
from faust import stores
from faust.stores.rocksdb import Store as RocksDBStore
from kafka import KafkaConsumer, TopicPartition

from .pipeline import partition_of
from .tansu import true_end_offsets

log = logging.getLogger(__name__)

#: The store URL scheme of :class:`KeyPartitionedStore` (Faust's store registry).
SCHEME = "citywatch-rocksdb"
stores.STORES.aliases[SCHEME] = f"{__name__}:KeyPartitionedStore"

_MAX_SLOTS = 64
_held: list[IO] = []  # lock files of claimed slots: open for the process's lifetime


class KeyPartitionedStore(RocksDBStore):
    """Faust's RocksDB store, with keys of ``use_partitioner`` tables filed by key."""

    def _partition_for(self, key: bytes) -> int | None:
        if not self.table.use_partitioner:
            return None
        return partition_of(key, self.table.partitions or self.app.conf.topic_partitions)

    def _set(self, key: bytes, value: bytes | None) -> None:
        partition = self._partition_for(key)
        if partition is None:
            return super()._set(key, value)
        self._db_for_partition(partition).put(key, value)

    def _get(self, key: bytes) -> bytes | None:
        partition = self._partition_for(key)
        if partition is None:
            return super()._get(key)
        return self._db_for_partition(partition).get(key)

    def _del(self, key: bytes) -> None:
        partition = self._partition_for(key)
        if partition is None:
            return super()._del(key)
        self._db_for_partition(partition).delete(key)

    def _contains(self, key: bytes) -> bool:
        partition = self._partition_for(key)
        if partition is None:
            return super()._contains(key)
        return self._db_for_partition(partition).get(key) is not None


def claim_datadir(base: Path) -> Path:
    """The first free slot ``base/slot-N`` for this process, locked until it exits.

    A slot's lock is an ``flock`` on ``slot-N.lock``: the kernel drops it when
    the process dies, even by kill -9, so the next worker started on this
    volume takes the slot and the table databases in it.
    """
    base.mkdir(parents=True, exist_ok=True)
    for n in range(_MAX_SLOTS):
        lock = open(base / f"slot-{n}.lock", "a")  # noqa: SIM115 - held for the process's life
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        _held.append(lock)
        slot = base / f"slot-{n}"
        slot.mkdir(exist_ok=True)
        log.info("table data in %s (pid %d)", slot, os.getpid())
        return slot
    raise RuntimeError(f"all {_MAX_SLOTS} worker slots under {base} are taken")


def discard_stale_partitions(app: faust.App, bootstrap: str, *, tansu: bool) -> list[str]:
    """Remove local table partitions whose stored offset the changelog doesn't reach.

    Run before the worker starts (Faust opens the databases then). Returns the
    removed paths, for the log.
    """
    local: dict[TopicPartition, Path] = {}
    for table in app.tables.values():
        store = table.data
        if not isinstance(store, KeyPartitionedStore):
            continue
        topic = table.changelog_topic.get_topic_name()
        for partition in range(table.partitions or app.conf.topic_partitions):
            path = store.partition_path(partition)
            if path.exists():
                local[TopicPartition(topic, partition)] = path
    if not local:
        return []
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, client_id="citywatch-table-check")
    try:
        ends = consumer.end_offsets(list(local))
    finally:
        consumer.close()
    if tansu:  # its ListOffsets answer falls short of the end (streams/tansu.py)
        reported = {AioTopicPartition(tp.topic, tp.partition): end for tp, end in ends.items()}
        true_ends = asyncio.run(true_end_offsets(bootstrap, reported))
        ends = {TopicPartition(tp.topic, tp.partition): end for tp, end in true_ends.items()}
    removed = []
    for tp, path in local.items():
        db = rocksdict.Rdict(str(path))
        try:
            persisted = db.get(KeyPartitionedStore.offset_key)
        finally:
            db.close()
        # The stored offset is the last changelog message applied; the end is one past the last.
        if persisted is not None and int(persisted) >= ends.get(tp, 0):
            shutil.rmtree(path)
            removed.append(str(path))
            log.warning(
                "%s: local table holds changelog offset %s but %s ends at %s "
                "(topic recreated?); discarded, recovery rebuilds it from the changelog",
                path.name,
                int(persisted),
                tp.topic,
                ends.get(tp, 0),
            )
    return removed
