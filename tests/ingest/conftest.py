"""Fixtures for ingest tests: the session's real Mosquitto, Kafka read-back, registry tables."""

from __future__ import annotations

import time

import pytest
from kafka import KafkaConsumer, TopicPartition


@pytest.fixture(scope="session")
def mqtt_url(stack) -> str:
    """The embedded stack's Mosquitto (started by `stack up` when the binary exists)."""
    url = stack.mqtt_url()
    if url is None:
        pytest.skip("mosquitto is not installed (apt install mosquitto); MQTT tests need it")
    return url


@pytest.fixture
def registry_db(db):
    """A clean database including the device registry's version table."""
    db.execute("TRUNCATE device_registry_versions RESTART IDENTITY")
    yield db


def read_topic(bootstrap: str, topic: str, expected: int, timeout_s: float = 30.0) -> list:
    """Every message of ``topic`` from the start, waiting until ``expected`` arrived.

    Returns what was read by the deadline (possibly more or fewer than expected).
    """
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        deadline = time.monotonic() + timeout_s
        partitions = None
        while partitions is None and time.monotonic() < deadline:
            partitions = consumer.partitions_for_topic(topic)
            if partitions is None:
                time.sleep(0.2)
        if partitions is None:
            return []
        consumer.assign([TopicPartition(topic, p) for p in partitions])
        consumer.seek_to_beginning()
        out: list = []
        while len(out) < expected and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=300).values():
                out.extend(records)
        # Anything beyond `expected` (a duplicate) arrives right behind; look briefly.
        for records in consumer.poll(timeout_ms=500).values():
            out.extend(records)
        return out
    finally:
        consumer.close()
