"""OffsetGuard: each partition's messages in offset order, without holes."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest
from faust.types import TP

from streams.ordering import OffsetGuard, fetch_hole
from streams.topics import READINGS
from tests.pipeline_helpers import consume, produce


@dataclass
class Message:
    tp: str
    offset: int
    generation_id: int | None = 1


@dataclass
class Event:
    message: Message


def batch(tp: str, offsets, generation: int = 1) -> list[Event]:
    return [Event(Message(tp, o, generation)) for o in offsets]


def offsets(events) -> list[int]:
    return [e.message.offset for e in events]


def test_contiguous_batches_pass_untouched():
    guard = OffsetGuard()
    assert offsets(guard.sort(batch("p0", range(10, 20)), 1).in_order) == list(range(10, 20))
    second = guard.sort(batch("p0", range(20, 25)) + batch("p1", [7, 8]), 1)
    assert offsets(second.in_order) == [20, 21, 22, 23, 24, 7, 8]
    assert second.holes == {} and second.left == 0


def test_a_message_never_delivered_is_reported_as_a_hole_to_fill_first():
    # What Tansu + Faust did after a rebalance: ... 1749 | 1751 ... (1750 never came).
    guard = OffsetGuard()
    guard.sort(batch("p1", range(1700, 1750)), 1)
    hole = guard.sort(batch("p1", range(1751, 1800)) + batch("p0", [5]), 1)
    assert hole.holes == {"p1": (1750, 1751)}
    assert offsets(hole.in_order) == [*range(1751, 1800), 5]
    # Filled by the caller: the guard goes on after the hole.
    assert guard.sort(batch("p1", range(1800, 1810)), 1).holes == {}
    assert guard.holes == 1


def test_after_a_rebalance_a_message_dropped_at_the_committed_offset_is_a_hole():
    # Seen in test_worker_scaleout: after the rebalance, partition 1 was committed at
    # 1760 and Faust delivered 1761 first. Without the committed offset the guard
    # took 1761 as the start, and the next checkpoint committed past 1760.
    committed = {"p1": 1760, "p0": 40}
    guard = OffsetGuard(committed=committed.get)
    guard.sort(batch("p1", range(1700, 1760)), 1)
    guard.forget()  # the rebalance
    first = guard.sort(batch("p1", range(1761, 1800)) + batch("p0", [40, 41]), 1)
    assert first.holes == {"p1": (1760, 1761)}
    assert offsets(first.in_order) == [*range(1761, 1800), 40, 41]
    # Unknown (no commit yet): the first message delivered is the start, as before.
    unknown = OffsetGuard(committed=lambda tp: None)
    assert unknown.sort(batch("p2", range(5, 9)), 1).holes == {}
    # Messages below the commit (delivered again) are replays, not holes.
    again = OffsetGuard(committed=committed.get)
    replay = again.sort(batch("p1", range(1750, 1765)), 1)
    assert replay.holes == {} and offsets(replay.in_order) == list(range(1750, 1765))


def test_faust_committed_offsets_reads_the_consumers_own_record():
    from collections import defaultdict

    from streams.ordering import faust_committed_offsets

    class Consumer:  # the one attribute read, as faust.transport.consumer.Consumer has it
        _committed_offset = defaultdict(lambda: None, {"p0": 12, "p1": None})

    lookup = faust_committed_offsets(Consumer())
    assert lookup("p0") == 12 and lookup("p1") is None and lookup("p9") is None


def test_replays_below_the_expected_offset_pass_for_the_device_state_to_skip():
    guard = OffsetGuard()
    guard.sort(batch("p0", range(0, 10)), 1)
    again = guard.sort(batch("p0", range(5, 12)), 1)
    assert offsets(again.in_order) == list(range(5, 12)) and again.holes == {}


def test_events_of_an_older_generation_are_left_to_be_read_again():
    guard = OffsetGuard()
    mixed = batch("p0", [40, 41], generation=1) + batch("p0", [38, 39, 40], generation=2)
    result = guard.sort(mixed, 2)
    assert offsets(result.in_order) == [38, 39, 40] and result.left == 2


def test_after_a_rebalance_a_partition_starts_where_its_first_message_is():
    guard = OffsetGuard()
    guard.sort(batch("p0", range(0, 10)), 1)
    guard.forget()
    result = guard.sort(batch("p0", range(30, 33), 2), 2)
    assert offsets(result.in_order) == [30, 31, 32] and result.holes == {}


@pytest.mark.stack
def test_a_hole_is_read_straight_from_the_partition(conn, isolated):
    produce(conn, isolated, [(b"k", f"m{i}".encode()) for i in range(12)])
    topic = isolated.topic(READINGS)
    # Every message went to one partition (one key); find it.
    records = consume(conn, topic)
    tp = TP(topic, records[0].partition)
    found = asyncio.run(fetch_hole(conn.kafka, tp, 3, 7))
    assert [e.message.offset for e in found] == [3, 4, 5, 6]
    assert [e.value for e in found] == [b"m3", b"m4", b"m5", b"m6"]
    assert all(e.message.tp == tp for e in found)
