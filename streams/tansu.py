"""Work-arounds for the Tansu broker's known faults (see BRIEF.md).

Tansu 0.6 answers ListOffsets(latest) with the base offset of the last record
batch plus one, not the true end of the partition. Faust reads that value as
the changelog high-water mark, so table recovery stops early and restored
tables come up short. A Fetch response carries the true high-water mark, so we
fetch the last batch and read it from there.

Tansu also holds a Fetch for much of its wait even when data is ready: with
Faust's fixed ``fetch_max_wait_ms=1500`` a message waited 0.41 s (p50; p90
0.70 s) between send and receipt, against 0.012 s with 100 ms
(`scripts/tansu_fetch_wait.py`, 2026-11-30). A broker that honours
``fetch_min_bytes`` answers as soon as data arrives, so the shorter wait only
costs Tansu more empty fetches while idle.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

log = logging.getLogger(__name__)

_installed = False
_fetch_wait_installed = False

#: Longest time Tansu may hold a Fetch of the worker's consumer (Faust's own is 1500 ms).
FETCH_MAX_WAIT_MS = 100


async def true_end_offsets(
    bootstrap: str, reported: Mapping[TopicPartition, int], timeout_s: float = 10.0
) -> dict[TopicPartition, int]:
    """Correct ListOffsets(latest) answers with the high-water mark of a Fetch.

    Parameters
    ----------
    bootstrap : str
        ``host:port`` of the broker.
    reported : mapping
        ``TopicPartition -> offset`` as ListOffsets reported it.
    """
    result = {tp: int(off) for tp, off in reported.items()}
    to_probe = [tp for tp, off in result.items() if off > 0]
    if not to_probe:
        return result
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None
    )
    await consumer.start()
    try:
        consumer.assign(to_probe)
        for tp in to_probe:
            consumer.seek(tp, result[tp] - 1)  # the last batch starts here
        deadline = asyncio.get_running_loop().time() + timeout_s
        pending = set(to_probe)
        while pending and asyncio.get_running_loop().time() < deadline:
            await consumer.getmany(*pending, timeout_ms=200, max_records=1)
            for tp in list(pending):
                highwater = consumer.highwater(tp)
                if highwater is not None:
                    result[tp] = max(result[tp], highwater)
                    pending.discard(tp)
        if pending:
            log.warning("could not read the true end of %s; using ListOffsets", sorted(pending))
    finally:
        await consumer.stop()
    return result


def install_faust_highwater_fix(bootstrap: str) -> None:
    """Make Faust's changelog recovery use :func:`true_end_offsets`. Idempotent."""
    global _installed
    if _installed:
        return
    from faust.transport.drivers import aiokafka as faust_aiokafka

    thread_cls = faust_aiokafka.AIOKafkaConsumerThread
    original = thread_cls._highwaters

    async def _highwaters(self, partitions: Iterable[TopicPartition]):
        reported = await original(self, partitions)
        if self.consumer.in_transaction:
            return reported
        corrected = await true_end_offsets(bootstrap, reported)
        changed = {
            tp: (reported[tp], corrected[tp]) for tp in reported if reported[tp] != corrected[tp]
        }
        if changed:
            log.info("Tansu end-offset fix: corrected %d partition(s): %s", len(changed), changed)
        return corrected

    thread_cls._highwaters = _highwaters
    _installed = True


def install_faust_fetch_wait_fix(max_wait_ms: int = FETCH_MAX_WAIT_MS) -> None:
    """Give Faust's worker consumer a short Fetch wait (Faust fixes it at 1500 ms). Idempotent."""
    global _fetch_wait_installed
    if _fetch_wait_installed:
        return
    from faust.transport.drivers import aiokafka as faust_aiokafka

    thread_cls = faust_aiokafka.AIOKafkaConsumerThread
    original = thread_cls._create_worker_consumer

    def _create_worker_consumer(self, transport):
        consumer = original(self, transport)
        consumer._fetch_max_wait_ms = max_wait_ms  # read when its fetcher starts
        return consumer

    thread_cls._create_worker_consumer = _create_worker_consumer
    _fetch_wait_installed = True
