"""Nothing lost, whatever arrives: the LoRaWAN bridge on the real Mosquitto and Tansu.

A 2 MB message, hostile payloads (hypothesis), a Kafka client that refuses
messages and an unexpected exception mid-batch: every MQTT message becomes a
reading or a dead letter (counted on Kafka), the bridge keeps running, and no
message is acked before Kafka has what it became.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.lorawan.bridge import MqttBridge, UplinkProcessor, default_client_id
from ingest.lorawan.dedup import FrameDeduplicator
from ingest.lorawan.errors import TransientError
from ingest.lorawan.publisher import KafkaPublisher
from ingest.lorawan.registry import parse_registry
from ingest.lorawan.uplink import split_messages
from ingest.lorawan.uplink_sim import UplinkEncoder, sim_registry_rows
from ingest.simulator import FleetSimulator
from streams.topics import DEADLETTER, READINGS, ensure_topics
from tests.ingest.conftest import read_topic
from tests.ingest.lorawan.hostile import (
    assert_storable,
    check_deadletter_headers,
    hostile_kinds,
    mutate,
)
from tests.ingest.lorawan.test_bridge import publish_all, run_until

BIG = 2_000_000


@pytest.fixture(scope="module")
def fleet_registry():
    fleet = FleetSimulator(n_devices=6, seed=21)
    return fleet, parse_registry(sim_registry_rows(fleet.devices))


def good_frames(fleet, registry, app: str):
    """An endless supply of good single-copy uplinks, each a new frame."""
    encoder = UplinkEncoder("chirpstack", registry, application_id=app, seed=5)
    while True:
        for r in fleet.step(datetime.now(UTC))[0]:
            (message,) = encoder.encode(r.device.device_id, r.metrics, r.ts)
            yield message


def test_a_2mb_message_is_one_truncated_dead_letter_and_never_crash_loops(
    conn, isolated, mqtt_url, fleet_registry
):
    fleet, registry = fleet_registry
    ensure_topics(conn.kafka, isolated)
    readings_topic, dl_topic = isolated.topic(READINGS), isolated.topic(DEADLETTER)
    client_id = default_client_id("test-big")
    supply = good_frames(fleet, registry, f"app-{client_id}")
    before, after = [next(supply) for _ in range(5)], [next(supply) for _ in range(5)]
    big = b'{"deviceInfo": {"devEui": "' + b"7" * BIG + b'"}}'
    big_topic = before[0].topic

    publisher = KafkaPublisher(conn.kafka, readings_topic, dl_topic)
    # First bridge: subscribes, receives everything, then dies before processing any
    # of it. The persistent session must hand all of it to the next bridge.
    first = MqttBridge(mqtt_url, "chirpstack", UplinkProcessor(publisher, {}), client_id=client_id)
    assert first.start()
    sent = len(before) + 1 + len(after)

    publish_all(mqtt_url, [*before, SimpleNamespace(topic=big_topic, payload=big), *after])
    deadline = time.monotonic() + 20
    while first.backlog < sent and time.monotonic() < deadline:
        time.sleep(0.05)
    assert first.backlog == sent, "the 2 MB message passed Mosquitto's message_size_limit"
    first._client.disconnect()  # crash-like: nothing processed, nothing acked
    first._client.loop_stop()

    processor = UplinkProcessor(publisher, dict(registry), dedup=FrameDeduplicator(window_s=0.05))
    second = MqttBridge(mqtt_url, "chirpstack", processor, client_id=client_id)
    second.start()
    try:
        run_until(second, lambda: processor.stats.acked >= sent)
    finally:
        second.stop()
    assert processor.stats.published == len(before) + len(after)
    assert dict(processor.stats.deadletters) == {"too_large": 1}
    assert processor.stats.acked == sent

    # Third start on the same session: everything was acked, nothing comes back.
    third_processor = UplinkProcessor(publisher, dict(registry))
    third = MqttBridge(mqtt_url, "chirpstack", third_processor, client_id=client_id)
    assert third.start()
    run_until(third, lambda: False, timeout_s=1.0)
    third.stop()
    assert third_processor.stats.received == 0

    readings = read_topic(conn.kafka, readings_topic, len(before) + len(after))
    (letter,) = read_topic(conn.kafka, dl_topic, 1)
    publisher.close()
    assert sorted(json.loads(r.value)["source"]["f_cnt"] for r in readings) == sorted(
        m.f_cnt for m in before + after
    )
    headers = check_deadletter_headers(letter)
    assert headers["reason"] == b"too_large"
    assert int(headers["raw_size"]) == len(big)
    assert headers["raw_sha256"].decode() == hashlib.sha256(big).hexdigest()
    assert letter.value == big[: 64 << 10]


class FailsOnce:
    """A publisher whose first reading raises: a bug outside any one frame's handling."""

    def __init__(self, inner: KafkaPublisher) -> None:
        self.inner, self.failed = inner, False

    def reading(self, key: bytes, value: bytes) -> None:
        if not self.failed:
            self.failed = True
            raise RuntimeError("injected fault")
        self.inner.reading(key, value)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_an_unexpected_error_acks_nothing_and_the_next_bridge_gets_everything(
    conn, isolated, mqtt_url, fleet_registry
):
    fleet, registry = fleet_registry
    ensure_topics(conn.kafka, isolated)
    readings_topic, dl_topic = isolated.topic(READINGS), isolated.topic(DEADLETTER)
    client_id = default_client_id("test-bug")
    supply = good_frames(fleet, registry, f"app-{client_id}")
    messages = [next(supply) for _ in range(6)]
    publisher = KafkaPublisher(conn.kafka, readings_topic, dl_topic)

    # Frames are held for a window, so the fault fires in a flush, outside offer().
    broken = UplinkProcessor(
        FailsOnce(publisher), dict(registry), dedup=FrameDeduplicator(window_s=0.2)
    )
    bridge = MqttBridge(mqtt_url, "chirpstack", broken, client_id=client_id)
    assert bridge.start()
    publish_all(mqtt_url, messages)
    deadline = time.monotonic() + 20
    while bridge.backlog < len(messages) and time.monotonic() < deadline:
        time.sleep(0.02)
    with pytest.raises(RuntimeError, match="injected fault"):
        bridge.run(idle_sleep_s=0.01)  # run()'s finally calls stop(): it must ack nothing
    assert broken.stats.acked == 0

    processor = UplinkProcessor(publisher, dict(registry), dedup=FrameDeduplicator(window_s=0))
    again = MqttBridge(mqtt_url, "chirpstack", processor, client_id=client_id)
    again.start()
    try:
        run_until(again, lambda: processor.stats.acked >= len(messages))
    finally:
        again.stop()
    assert processor.stats.published == len(messages)
    stored = read_topic(conn.kafka, readings_topic, len(messages))
    publisher.close()
    assert {json.loads(r.value)["source"]["f_cnt"] for r in stored} == {m.f_cnt for m in messages}


def test_messages_kafka_refuses_become_small_dead_letters(conn, isolated):
    """librdkafka refuses what exceeds message.max.bytes (KafkaException at produce)."""
    ensure_topics(conn.kafka, isolated)
    dl_topic = isolated.topic(DEADLETTER)
    raw = bytes(range(256)) * 200  # 51,200 bytes: under keep_raw, over the client's limit
    for limit in (4000, 1000):  # 1000: even the 1 KiB replacement + headers is refused
        publisher = KafkaPublisher(
            conn.kafka, isolated.topic(READINGS), dl_topic, **{"message.max.bytes": limit}
        )
        processor = UplinkProcessor(publisher, {}, dedup=FrameDeduplicator(window_s=0))
        processor.offer("application/a/device/70b3d57ed0000001/event/up", raw, 0.0)
        assert processor.confirm() == 1
        assert dict(+processor.stats.deadletters) == {"kafka_refused": 1}
        publisher.close()
    letters = read_topic(conn.kafka, dl_topic, 2)
    assert sorted(len(r.value or b"") for r in letters) == [0, 1024]
    for record in letters:
        headers = check_deadletter_headers(record)
        assert headers["reason"] == b"kafka_refused"
        assert int(headers["raw_size"]) == len(raw)
        assert headers["raw_sha256"].decode() == hashlib.sha256(raw).hexdigest()


# -- hostile payloads through the running bridge ------------------------------------------


def test_hostile_payloads_through_the_running_bridge(conn, isolated, mqtt_url, fleet_registry):
    """Hypothesis-made hostile messages between good ones, through a bridge running in its
    own thread as `citywatch ingest lorawan` runs it: one output per message, no crash."""
    fleet, registry = fleet_registry
    ensure_topics(conn.kafka, isolated)
    publisher = KafkaPublisher(conn.kafka, isolated.topic(READINGS), isolated.topic(DEADLETTER))
    processor = UplinkProcessor(publisher, dict(registry), dedup=FrameDeduplicator(window_s=0.02))
    client_id = default_client_id("test-hostile")
    bridge = MqttBridge(mqtt_url, "chirpstack", processor, client_id=client_id)
    assert bridge.start()
    stop, crashed = threading.Event(), []

    def loop() -> None:
        try:
            bridge.run(stop.is_set, idle_sleep_s=0.005)
        except BaseException as exc:  # recorded: the test asserts there is none
            crashed.append(exc)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    supply = good_frames(fleet, registry, f"app-{client_id}")
    sent = [0]
    # A message holding a JSON array is one output per element.
    expected = [0]

    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
    @given(kinds=st.lists(hostile_kinds, min_size=1, max_size=3))
    def one_example(kinds) -> None:
        messages = []
        for kind, choice in kinds:  # good, hostile, good, hostile, ..., good
            messages.append(next(supply))
            fresh = next(supply)
            messages.append(
                SimpleNamespace(topic=fresh.topic, payload=mutate(kind, choice, fresh.payload))
            )
        messages.append(next(supply))
        publish_all(mqtt_url, messages)
        sent[0] += len(messages)
        expected[0] += sum(len(split_messages(m.payload) or [m]) for m in messages)
        deadline = time.monotonic() + 20
        while processor.stats.acked < sent[0] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not crashed and thread.is_alive()
        assert processor.stats.acked == sent[0]
        outputs = processor.stats.published + sum(processor.stats.deadletters.values())
        assert outputs == expected[0] and processor.stats.duplicates == 0

    try:
        one_example()
    finally:
        stop.set()
        thread.join(30)
    assert not crashed
    # Kafka holds exactly one reading or dead letter per message (array element) sent.
    dead = sum(processor.stats.deadletters.values())
    readings = read_topic(conn.kafka, isolated.topic(READINGS), processor.stats.published)
    letters = read_topic(conn.kafka, isolated.topic(DEADLETTER), dead)
    publisher.close()
    assert len(readings) == processor.stats.published
    assert len(readings) + len(letters) == expected[0]
    reasons = {check_deadletter_headers(r)["reason"].decode() for r in letters}
    assert reasons == set(+processor.stats.deadletters)
    for record in readings:
        assert_storable(record.value)


class FlakyRegistry(dict):
    """Registry lookups that hit a bug for one device and an outage once for another."""

    def __init__(self, entries, broken: str, down_once: str) -> None:
        super().__init__(entries)
        self.broken, self.down_once = broken, down_once

    def get(self, key, default=None):
        if key == self.broken:
            raise KeyError(f"bug for {key}")
        if key == self.down_once:
            self.down_once = ""
            raise TransientError("registry database unavailable")
        return super().get(key, default)


def test_a_bug_is_one_dead_letter_and_an_outage_holds_and_replays(
    conn, isolated, mqtt_url, fleet_registry
):
    fleet, registry = fleet_registry
    ensure_topics(conn.kafka, isolated)
    client_id = default_client_id("test-flaky")
    supply = good_frames(fleet, registry, f"app-{client_id}")
    messages = [next(supply) for _ in range(12)]
    broken, down = messages[0].dev_eui, messages[1].dev_eui
    publisher = KafkaPublisher(conn.kafka, isolated.topic(READINGS), isolated.topic(DEADLETTER))
    processor = UplinkProcessor(
        publisher, FlakyRegistry(registry, broken, down), dedup=FrameDeduplicator(window_s=0)
    )
    bridge = MqttBridge(mqtt_url, "chirpstack", processor, client_id=client_id)
    assert bridge.start()
    publish_all(mqtt_url, messages)
    try:
        run_until(bridge, lambda: processor.stats.acked >= len(messages))
    finally:
        bridge.stop()
    n_broken = sum(m.dev_eui == broken for m in messages)
    assert processor.stats.transient_failures == 1
    assert processor.stats.acked == len(messages)
    # A frame dead-lettered before the outage is dead-lettered again on replay
    # (at-least-once); its deadletter_id is the same, so it is stored once.
    (reason,) = +processor.stats.deadletters
    assert reason == "internal_error"
    letters = read_topic(conn.kafka, isolated.topic(DEADLETTER), n_broken)
    readings = read_topic(conn.kafka, isolated.topic(READINGS), len(messages) - n_broken)
    publisher.close()
    assert len(letters) == processor.stats.deadletters[reason] >= n_broken
    assert len({check_deadletter_headers(r)["deadletter_id"] for r in letters}) == n_broken
    assert {dict(r.headers)["reason"] for r in letters} == {b"internal_error"}
    assert b"KeyError" in dict(letters[0].headers)["detail"]
    # The held batch was replayed: every good frame is there (repeats removed downstream).
    stored = {json.loads(r.value)["source"]["f_cnt"] for r in readings}
    assert stored == {m.f_cnt for m in messages if m.dev_eui != broken}
