"""The bridge survives a broker restart: paho reconnects with backoff, the bridge resubscribes."""

from __future__ import annotations

import socket
import subprocess
import time
from datetime import UTC, datetime

import pytest

from citywatch.stack import free_port, mosquitto_binary, mosquitto_config
from ingest.lorawan.bridge import MqttBridge, UplinkProcessor, default_client_id
from ingest.lorawan.dedup import FrameDeduplicator
from ingest.lorawan.publisher import KafkaPublisher
from ingest.lorawan.registry import parse_registry
from ingest.lorawan.uplink_sim import UplinkEncoder, sim_registry_rows
from ingest.simulator import FleetSimulator
from streams.topics import DEADLETTER, READINGS, ensure_topics
from tests.ingest.lorawan.test_bridge import publish_all

pytestmark = pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto is not installed")


def start_broker(tmp_path, port: int) -> subprocess.Popen:
    config = tmp_path / "mosquitto.conf"
    config.write_text(mosquitto_config(port))
    proc = subprocess.Popen(
        [str(mosquitto_binary()), "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.05)
    raise RuntimeError("mosquitto did not start")


def stop_broker(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(10)


def test_bridge_reconnects_after_the_broker_restarts(conn, isolated, tmp_path):
    ensure_topics(conn.kafka, isolated)
    fleet = FleetSimulator(n_devices=4, seed=17)
    registry = parse_registry(sim_registry_rows(fleet.devices))
    port = free_port()
    url = f"mqtt://127.0.0.1:{port}"
    broker = start_broker(tmp_path, port)
    publisher = KafkaPublisher(conn.kafka, isolated.topic(READINGS), isolated.topic(DEADLETTER))
    processor = UplinkProcessor(publisher, dict(registry), dedup=FrameDeduplicator(window_s=0))
    bridge = MqttBridge(
        url,
        "chirpstack",
        processor,
        client_id=default_client_id("reconnect"),
        reconnect_min_s=0.2,
        reconnect_max_s=1.0,
    )
    try:
        assert bridge.start()
        stop_broker(broker)
        deadline = time.monotonic() + 10
        while bridge.connected and time.monotonic() < deadline:
            bridge.step()
            time.sleep(0.05)
        assert not bridge.connected
        broker = start_broker(tmp_path, port)
        deadline = time.monotonic() + 20
        while not bridge.connected and time.monotonic() < deadline:
            bridge.step()
            time.sleep(0.05)
        assert bridge.connected, "reconnected"
        assert bridge.wait_subscribed(10), "resubscribed after the reconnect"
        encoder = UplinkEncoder("chirpstack", registry, application_id="reconnect", seed=1)
        readings, _ = fleet.step(datetime.now(UTC))
        messages = [
            m for r in readings for m in encoder.encode(r.device.device_id, r.metrics, r.ts)
        ]
        publish_all(url, messages)
        deadline = time.monotonic() + 20
        while processor.stats.acked < len(messages) and time.monotonic() < deadline:
            if not bridge.step():
                time.sleep(0.05)
        assert processor.stats.published == len(messages)
    finally:
        bridge.stop()
        publisher.close()
        stop_broker(broker)
