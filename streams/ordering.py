"""Each partition's messages are processed in offset order, without holes.

The worker's per-device state remembers the last offset it absorbed and skips
anything at or below it as a replay. That is only safe if nothing below that
offset was ever skipped. Faust does not promise this around a rebalance:

- The ``take()`` buffer keeps events fetched before a rebalance and hands them
  over after it, mixed with the new generation's messages.
- Observed on Tansu (tests/streams/test_worker_scaleout.py): right after a
  rebalance, one batch ended at offset N and the next started at N + 2. The
  message at N + 1 was never delivered: Faust's fetch loop drops a message
  below the partition's "read offset", which its own seek after the rebalance
  and its fetch loop both set. Seeking again from an agent races the same way.

:class:`OffsetGuard` sorts each batch: a stale event (an older consumer
generation) is left unacknowledged, to be read again from the committed offset;
a hole before an event is reported, and :func:`fetch_hole` reads the missing
messages straight from the partition with a plain consumer (no group), so the
worker processes them first and acknowledges them to Faust like any other.
Offsets the log doesn't hold (Kafka's transaction markers, compaction) simply
don't come back, so a real gap in the log is stepped over.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.types.tuples import ConsumerMessage

log = logging.getLogger("citywatch.worker")


@dataclass
class Sorted:
    """One batch, sorted by :meth:`OffsetGuard.sort`."""

    in_order: list = field(default_factory=list)
    left: int = 0  # stale events, left unacknowledged
    holes: dict[Any, tuple[int, int]] = field(default_factory=dict)  # tp -> [start, end)


class OffsetGuard:
    """Remembers, per topic partition, the next offset this worker must process.

    Parameters
    ----------
    committed : callable, optional
        The partition's committed offset (the next one to read), or None when
        unknown. After a rebalance the guard starts each partition there, so a
        message dropped right at the committed offset is a hole too: Faust's own
        check lets it through (it refuses to commit past a gap at the head only
        when the gap is longer than one message), and the next checkpoint would
        commit past it. Seen once in tests/streams/test_worker_scaleout.py.
    """

    def __init__(self, committed: Callable[[Any], int | None] | None = None) -> None:
        self._next: dict[Any, int] = {}
        self._committed = committed
        self.holes = 0

    def forget(self) -> None:
        """After a rebalance, every partition starts again from its committed offset."""
        self._next.clear()

    def sort(self, events: Sequence[Any], generation: int | None) -> Sorted:
        """The events to process now (order kept), and the holes to fill before them.

        The caller must process each hole's messages before the batch: the guard
        expects the offsets after the hole next.
        """
        result = Sorted()
        for event in events:
            message = event.message
            if generation is not None and message.generation_id not in (None, generation):
                result.left += 1  # fetched before the rebalance: read again from the commit
                continue
            tp, offset = message.tp, message.offset
            expected = self._next.get(tp)
            if expected is None and self._committed is not None:
                expected = self._committed(tp)  # the first message since the rebalance
            if expected is not None and offset > expected:
                result.holes[tp] = (expected, offset)
                self.holes += 1
            if expected is None or offset >= expected:
                self._next[tp] = offset + 1
            # Below the expected offset: a replay, which the device state skips.
            result.in_order.append(event)
        return result


def faust_committed_offsets(consumer: Any) -> Callable[[Any], int | None]:
    """The committed offsets Faust's consumer keeps (set by its seek after every
    rebalance and by every commit); a private attribute, read only, as the
    guard needs the start of each partition and Faust offers no public accessor."""

    def lookup(tp: Any) -> int | None:
        offset = consumer._committed_offset.get(tp)
        return offset if isinstance(offset, int) and offset >= 0 else None

    return lookup


class RefetchedEvent:
    """A message read again by :func:`fetch_hole`, shaped like the Faust event it replaces."""

    __slots__ = ("message",)

    def __init__(self, message: ConsumerMessage) -> None:
        self.message = message

    @property
    def value(self) -> bytes | None:
        return self.message.value


async def fetch_hole(
    bootstrap: str, tp: Any, start: int, end: int, timeout_s: float = 30.0
) -> list[RefetchedEvent]:
    """The messages of ``tp`` at offsets ``start <= offset < end``, read directly."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    try:
        partition = TopicPartition(tp.topic, tp.partition)
        consumer.assign([partition])
        consumer.seek(partition, start)
        found: list[RefetchedEvent] = []
        deadline = time.monotonic() + timeout_s
        while await consumer.position(partition) < end:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{tp}: offsets {start}..{end - 1} not read in {timeout_s}s")
            records = await consumer.getmany(partition, timeout_ms=500, max_records=end - start)
            for record in records.get(partition, ()):
                if start <= record.offset < end:
                    found.append(RefetchedEvent(_message(record, tp)))
        log.warning(
            "%s: offsets %d..%d were not delivered by the consumer; read %d directly",
            tp,
            start,
            end - 1,
            len(found),
        )
        return found
    finally:
        await consumer.stop()


def _message(record: Any, tp: Any) -> ConsumerMessage:
    return ConsumerMessage(
        record.topic,
        record.partition,
        record.offset,
        (record.timestamp or 0) / 1000.0,
        record.timestamp_type,
        record.headers,
        record.key,
        record.value,
        record.checksum,
        tp=tp,
    )
