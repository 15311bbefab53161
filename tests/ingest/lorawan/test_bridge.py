"""The LoRaWAN bridge against the real broker (Tansu) and the real Mosquitto.

Processor: copies merge into one reading, bad input becomes ingest-stage dead
letters with reason and raw bytes, and (fuzzed) nothing escapes or goes
uncounted. MQTT: messages published while the bridge is down arrive when it
is back, and messages whose Kafka write failed are not acked, so the broker
redelivers them to the next bridge.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import paho.mqtt.client as mqtt
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion

from citywatch.stack import free_port
from ingest.lorawan.bridge import MqttBridge, UplinkProcessor, default_client_id, parse_mqtt_url
from ingest.lorawan.dedup import FrameDeduplicator
from ingest.lorawan.errors import REASONS
from ingest.lorawan.publisher import KafkaPublisher, deadletter_id
from ingest.lorawan.registry import parse_registry
from ingest.lorawan.uplink_sim import UplinkEncoder, sim_registry_rows
from ingest.simulator import FleetSimulator
from streams.topics import DEADLETTER, READINGS, ensure_topics
from tests.ingest.conftest import read_topic


@pytest.fixture(scope="module")
def fleet():
    return FleetSimulator(n_devices=8, seed=9)


@pytest.fixture(scope="module")
def registry(fleet):
    return parse_registry(sim_registry_rows(fleet.devices))


@pytest.fixture
def topics(conn, isolated):
    ensure_topics(conn.kafka, isolated)
    return isolated.topic(READINGS), isolated.topic(DEADLETTER)


def frames(fleet, encoder, ticks: int):
    out = []
    for _ in range(ticks):
        readings, _ = fleet.step(datetime.now(UTC))
        out += [encoder.encode(r.device.device_id, r.metrics, r.ts) for r in readings]
    return out


def test_processor_merges_copies_and_dead_letters_bad_input(conn, topics, fleet, registry):
    readings_topic, dl_topic = topics
    publisher = KafkaPublisher(conn.kafka, readings_topic, dl_topic)
    known = dict(registry)
    stranger = next(iter(known))
    del known[stranger]  # one simulated device is not registered
    processor = UplinkProcessor(publisher, known, dedup=FrameDeduplicator(window_s=0.2))
    encoder = UplinkEncoder("chirpstack", registry, gateways=3, seed=3)
    batches = frames(fleet, encoder, ticks=2)
    now = 0.0
    for copies in batches:
        for message in copies:
            processor.offer(message.topic, message.payload, now)
            now += 0.001
    # A redelivery long after its frame went out, and two kinds of garbage.
    late = batches[-1][0]
    processor.flush(now + 1.0)
    processor.offer(late.topic, late.payload, now + 2.0)
    processor.offer("application/a/device/70b3d57ed0000001/event/up", b"{not json", now + 2.0)
    processor.offer("application/a/device/70b3d57ed0000001/event/join", late.payload, now + 2.0)
    processor.drain()
    publisher.flush()

    n_frames = len(batches)
    stats = processor.stats
    assert stats.received == 3 * n_frames + 3
    assert stats.duplicates == 2 * n_frames + 1  # two merged copies per frame, one late copy
    assert dict(stats.deadletters) == {"unknown_device": 2, "malformed_json": 1, "not_uplink": 1}
    assert stats.published == n_frames - 2

    best = {}
    for copies in batches:
        docs = [json.loads(m.payload) for m in copies]
        best[(copies[0].dev_eui, copies[0].f_cnt)] = (
            max(d["rxInfo"][0]["rssi"] for d in docs),
            max(d["rxInfo"][0]["snr"] for d in docs),
        )
    readings = read_topic(conn.kafka, readings_topic, stats.published)
    publisher.close()
    assert len(readings) == stats.published
    for record in readings:
        body = json.loads(record.value)
        source = body["source"]
        assert record.key.decode() == body["device_id"]
        assert source["gateways"] == 3 and len(source["gateway_ids"]) == 3
        assert (source["rssi"], source["snr"]) == best[(body["device_id"], source["f_cnt"])]

    letters = read_topic(conn.kafka, dl_topic, 4)
    assert len(letters) == 4
    for record in letters:
        headers = dict(record.headers)
        assert headers["stage"] == b"ingest"
        assert headers["reason"].decode() in REASONS and headers["detail"]
        assert headers["deadletter_id"].decode().startswith("mqtt:")
    unknown = [r for r in letters if dict(r.headers)["reason"] == b"unknown_device"]
    assert {r.key for r in unknown} == {stranger.encode()}
    # The raw bytes are the first copy's, and the id is stable for the same bytes.
    first = next(c for c in batches[0] if c.dev_eui == stranger)
    assert first.payload in {r.value for r in unknown}
    ids = {dict(r.headers)["deadletter_id"].decode() for r in unknown}
    assert deadletter_id("mqtt", first.topic, first.payload) in ids


# -- fuzzing: bad payloads through the whole processor ------------------------------------


def _mutations(payload: bytes):
    doc = json.loads(payload)
    nasty = st.sampled_from(
        [None, "", 1.5, -1, 2**40, "zz", "AAA", [], {}, "2026-13-45T00:00:00Z", "!!"]
    )
    fields = st.sampled_from(
        [
            ("fCnt",),
            ("fPort",),
            ("data",),
            ("time",),
            ("deviceInfo",),
            ("deviceInfo", "devEui"),
            ("rxInfo",),
            ("txInfo",),
        ]
    )

    def mutate(path_value):
        path, value = path_value
        out = json.loads(payload)
        node = out
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        return json.dumps(out).encode()

    assert doc["deviceInfo"]
    return (
        st.tuples(fields, nasty).map(mutate)
        | st.binary(max_size=300)
        | st.integers(1, len(payload) - 1).map(lambda n: payload[:n])
    )


@pytest.fixture(scope="module")
def fuzz_setup(conn, base_settings, fleet, registry):
    prefix = base_settings.model_copy(update={"topic_prefix": "fuzz-bridge-"})
    ensure_topics(conn.kafka, prefix)
    publisher = KafkaPublisher(conn.kafka, prefix.topic(READINGS), prefix.topic(DEADLETTER))
    encoder = UplinkEncoder("chirpstack", registry, seed=8)
    good = frames(fleet, encoder, ticks=1)[0][0]
    yield publisher, good
    publisher.close()


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_fuzzed_uplinks_are_published_or_dead_lettered_never_raised(fuzz_setup, registry, data):
    publisher, good = fuzz_setup
    payload = data.draw(_mutations(good.payload))
    processor = UplinkProcessor(publisher, dict(registry), dedup=FrameDeduplicator(window_s=0))
    processor.offer(good.topic, payload, 0.0)  # must not raise
    processor.drain()
    stats = processor.stats
    dead = sum(stats.deadletters.values())
    assert stats.published + dead + stats.duplicates == 1
    if dead:
        (reason,) = stats.deadletters
        assert reason in REASONS
        assert processor.last_deadletter[1]  # a human-readable detail
    assert publisher.flush() == stats.published + dead  # Kafka acknowledged it


# -- MQTT: at-least-once across bridge restarts and Kafka failures ------------------------


def publish_all(url: str, messages) -> None:
    target = parse_mqtt_url(url)
    host, port = target.host, target.port
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=default_client_id("test-pub"))
    client.connect(host, port)
    client.loop_start()
    infos = [client.publish(m.topic, m.payload, qos=1) for m in messages]
    for info in infos:
        info.wait_for_publish(10)
    client.disconnect()
    client.loop_stop()


def run_until(bridge: MqttBridge, done, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not done() and time.monotonic() < deadline:
        if not bridge.step():
            time.sleep(0.02)


def test_messages_published_while_the_bridge_is_down_arrive(
    conn, topics, mqtt_url, fleet, registry
):
    readings_topic, dl_topic = topics
    client_id = default_client_id("test-bridge")
    app = f"app-{client_id}"
    publisher = KafkaPublisher(conn.kafka, readings_topic, dl_topic)
    processor = UplinkProcessor(publisher, dict(registry), dedup=FrameDeduplicator(window_s=0.1))
    first = MqttBridge(mqtt_url, "tts", processor, client_id=client_id)
    assert first.start(), "subscribed"
    first.stop()  # the session (and its subscription) stays on the broker

    encoder = UplinkEncoder("tts", registry, gateways=2, application_id=app, seed=4)
    batches = frames(fleet, encoder, ticks=3)
    publish_all(mqtt_url, [m for copies in batches for m in copies])

    processor = UplinkProcessor(publisher, dict(registry), dedup=FrameDeduplicator(window_s=0.1))
    again = MqttBridge(mqtt_url, "tts", processor, client_id=client_id)
    again.start()
    try:
        run_until(again, lambda: processor.stats.acked >= 2 * len(batches))
    finally:
        again.stop()
    assert processor.stats.received == 2 * len(batches)
    assert processor.stats.published == len(batches)
    assert processor.stats.acked == 2 * len(batches)
    stored = read_topic(conn.kafka, readings_topic, len(batches))
    publisher.close()
    assert sorted(json.loads(r.value)["source"]["f_cnt"] for r in stored) == sorted(
        copies[0].f_cnt for copies in batches
    )


def test_messages_are_not_acked_until_kafka_has_them(conn, topics, mqtt_url, fleet, registry):
    readings_topic, dl_topic = topics
    client_id = default_client_id("test-bridge")
    encoder = UplinkEncoder(
        "chirpstack", registry, gateways=1, application_id=f"app-{client_id}", seed=6
    )
    batches = frames(fleet, encoder, ticks=2)

    # Kafka is unreachable: deliveries fail after 1.5 s, so nothing may be acked.
    dead_kafka = KafkaPublisher(
        f"127.0.0.1:{free_port()}",
        readings_topic,
        dl_topic,
        # log_level 0: the refused connections are the point; keep them off stderr.
        **{"message.timeout.ms": 1500, "socket.connection.setup.timeout.ms": 1000, "log_level": 0},
    )
    down = UplinkProcessor(dead_kafka, dict(registry), dedup=FrameDeduplicator(window_s=0.05))
    bridge = MqttBridge(mqtt_url, "chirpstack", down, client_id=client_id)
    assert bridge.start()
    publish_all(mqtt_url, [m for copies in batches for m in copies])
    run_until(bridge, lambda: down.stats.received >= len(batches), timeout_s=20)
    bridge.step()
    bridge._client.disconnect()  # crash-like: no final flush attempt
    bridge._client.loop_stop()
    assert down.stats.received >= len(batches)
    assert down.stats.acked == 0
    dead_kafka.close(timeout=0)  # drop what it still holds; it would never deliver

    # Kafka is back: a new bridge on the same session gets every message again.
    publisher = KafkaPublisher(conn.kafka, readings_topic, dl_topic)
    up = UplinkProcessor(publisher, dict(registry), dedup=FrameDeduplicator(window_s=0.05))
    bridge = MqttBridge(mqtt_url, "chirpstack", up, client_id=client_id)
    bridge.start()
    try:
        run_until(bridge, lambda: up.stats.acked >= len(batches))
    finally:
        bridge.stop()
    assert up.stats.published == len(batches)
    stored = read_topic(conn.kafka, readings_topic, len(batches))
    publisher.close()
    assert len({(r.key, json.loads(r.value)["ts"]) for r in stored}) == len(batches)


def test_frames_are_stamped_with_their_network_time(conn, topics, fleet, registry):
    """The reading's ts is the network server's reception time, not the bridge's clock."""
    readings_topic, dl_topic = topics
    publisher = KafkaPublisher(conn.kafka, readings_topic, dl_topic)
    processor = UplinkProcessor(publisher, dict(registry), dedup=FrameDeduplicator(window_s=0))
    encoder = UplinkEncoder("chirpstack", registry, seed=2)
    when = datetime.now(UTC) - timedelta(minutes=3)
    reading = FleetSimulator(n_devices=8, seed=9).step(when)[0][1]
    (message,) = encoder.encode(reading.device.device_id, reading.metrics, when)
    processor.offer(message.topic, message.payload, 0.0)
    publisher.close()
    (record,) = read_topic(conn.kafka, readings_topic, 1)
    assert datetime.fromisoformat(json.loads(record.value)["ts"]) == when


def test_auto_registration_is_opt_in(conn, registry_db, topics, fleet, registry):
    """Unknown devices are dead letters, unless the operator allowed self-registration."""
    from ingest.lorawan.bridge import AutoRegister
    from ingest.lorawan.registry import entry_to_row
    from storage.device_registry import auto_register_device

    readings_topic, dl_topic = topics
    publisher = KafkaPublisher(conn.kafka, readings_topic, dl_topic)
    encoder = UplinkEncoder("chirpstack", registry, seed=11)
    readings = FleetSimulator(n_devices=8, seed=9).step(datetime.now(UTC))[0]
    reading = next(r for r in readings if r.device.asset_type == "bridge")
    (message,) = encoder.encode(reading.device.device_id, reading.metrics, reading.ts)

    strict = UplinkProcessor(publisher, {}, dedup=FrameDeduplicator(window_s=0))
    strict.offer(message.topic, message.payload, 0.0)
    assert dict(strict.stats.deadletters) == {"unknown_device": 1}

    registered = []

    def on_register(entry) -> None:
        registered.append(entry.dev_eui)
        with psycopg.connect(conn.database_url) as pg:
            auto_register_device(pg, entry_to_row(entry))

    known: dict = {}
    relaxed = UplinkProcessor(
        publisher,
        known,
        dedup=FrameDeduplicator(window_s=0),
        auto_register=AutoRegister("bridge", "profile:bridge"),
        on_register=on_register,
    )
    relaxed.offer(message.topic, message.payload, 0.0)
    publisher.close()
    assert relaxed.stats.published == 1 and relaxed.stats.auto_registered == 1
    assert registered == [reading.device.device_id] and reading.device.device_id in known
    row = registry_db.execute(
        "SELECT asset_id, asset_type, codec, registry_version FROM devices WHERE dev_eui = %s",
        (reading.device.device_id,),
    ).fetchone()
    assert row == (f"auto-{reading.device.device_id}", "bridge", "profile:bridge", None)
    (record,) = read_topic(conn.kafka, readings_topic, 1)
    assert json.loads(record.value)["asset_id"] == f"auto-{reading.device.device_id}"
