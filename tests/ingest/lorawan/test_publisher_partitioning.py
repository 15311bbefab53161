"""The bridge's producer puts a device on the same partition as every other producer."""

from __future__ import annotations

import pytest

from ingest.lorawan.publisher import KafkaPublisher
from ingest.producer import ReadingProducer
from streams.pipeline import partition_of
from streams.topics import DEADLETTER, READINGS, ensure_topics
from tests.pipeline_helpers import consume

pytestmark = pytest.mark.stack


def test_same_key_same_partition_as_the_simulator_and_the_worker(conn, isolated) -> None:
    ensure_topics(conn.kafka, isolated)
    topic = isolated.topic(READINGS)
    keys = [f"70b3d57ed00000{i:02x}".encode() for i in range(16)]
    bridge = KafkaPublisher(conn.kafka, topic, isolated.topic(DEADLETTER))
    for key in keys:
        bridge.reading(key, b"bridge")
    bridge.flush()
    with ReadingProducer(conn.kafka, topic=topic) as simulator:
        for key in keys:
            simulator.send(key, b"simulator")

    seen: dict[tuple[bytes, bytes], int] = {
        (record.key, record.value): record.partition for record in consume(conn, topic)
    }
    assert len(seen) == 2 * len(keys)
    partitions = {seen[(k, b"bridge")] for k in keys}
    assert len(partitions) > 1  # the keys do spread
    for key in keys:
        expected = partition_of(key, isolated.partitions)
        assert seen[(key, b"bridge")] == seen[(key, b"simulator")] == expected
