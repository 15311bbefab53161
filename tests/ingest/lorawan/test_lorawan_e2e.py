"""End to end: ChirpStack and TTS uplinks -> Mosquitto -> bridge -> Kafka -> worker -> PostgreSQL.

Everything is real: the session's Mosquitto, Tansu and PostgreSQL, the bridge's
MQTT loop (one per format, in threads) and the worker as its own process.
Each frame is heard by three gateways; exactly one row per frame must land,
carrying the merged radio metadata. Corrupted frames go to the deadletter
topic with stage=ingest and their reason.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import UTC, datetime

from ingest.lorawan.bridge import MqttBridge, UplinkProcessor, default_client_id
from ingest.lorawan.dedup import FrameDeduplicator
from ingest.lorawan.publisher import KafkaPublisher
from ingest.lorawan.uplink_sim import UplinkEncoder
from ingest.simulator import FleetSimulator
from services.fleet import register_lorawan_devices
from services.lorawan_ingest import DatabaseRegistry
from streams.topics import DEADLETTER, READINGS, ensure_topics
from tests.ingest.conftest import read_topic
from tests.ingest.lorawan.test_bridge import publish_all
from tests.pipeline_helpers import Worker

GATEWAYS = 3


def start_bridge(mqtt_url, fmt, conn, settings):
    publisher = KafkaPublisher(conn.kafka, settings.topic(READINGS), settings.topic(DEADLETTER))
    processor = UplinkProcessor(
        publisher,
        DatabaseRegistry(conn.database_url),  # as `citywatch ingest lorawan` does
        dedup=FrameDeduplicator(window_s=0.2),
    )
    bridge = MqttBridge(mqtt_url, fmt, processor, client_id=default_client_id(f"e2e-{fmt}"))
    assert bridge.start(), f"{fmt} bridge subscribed"
    stop = threading.Event()
    thread = threading.Thread(target=bridge.run, args=(stop.is_set,), daemon=True)
    thread.start()
    return processor, stop, thread


def test_chirpstack_and_tts_uplinks_become_rows(
    conn, registry_db, isolated, trained_models, mqtt_url, tmp_path
):
    db = registry_db
    ensure_topics(conn.kafka, isolated)
    fleet = FleetSimulator(n_devices=8, seed=12)
    registry = register_lorawan_devices(conn.database_url, fleet.devices)
    app = f"e2e-{isolated.topic_prefix}"
    encoders = {
        fmt: UplinkEncoder(fmt, registry, gateways=GATEWAYS, application_id=app, seed=s)
        for s, fmt in enumerate(("chirpstack", "tts"))
    }
    broken = UplinkEncoder("tts", registry, corrupt_rate=1.0, application_id=app, seed=3)

    worker = Worker(isolated, conn, tmp_path / "worker.log").start()
    bridges = {fmt: start_bridge(mqtt_url, fmt, conn, isolated) for fmt in encoders}
    try:
        messages, frames, corrupted = [], Counter(), Counter()
        for _ in range(3):
            readings, _ = fleet.step(datetime.now(UTC))
            for i, r in enumerate(readings):
                fmt = "chirpstack" if i % 2 == 0 else "tts"
                messages += encoders[fmt].encode(r.device.device_id, r.metrics, r.ts)
                frames[fmt] += 1
        for r in readings[:3]:
            (bad,) = broken.encode(r.device.device_id, r.metrics, r.ts)
            messages.append(bad)
            corrupted[bad.corruption] += 1
        publish_all(mqtt_url, messages)

        expected = sum(frames.values())
        deadline = time.monotonic() + 90
        stored = 0
        while stored < expected and time.monotonic() < deadline:
            time.sleep(0.3)
            stored = db.execute("SELECT count(*) FROM readings").fetchone()[0]
        time.sleep(1.5)  # a duplicate row would arrive right behind the originals
        assert worker.alive()
    finally:
        for processor, stop, thread in bridges.values():
            stop.set()
            thread.join(10)
            processor.publisher.close()
        worker.stop()

    rows = db.execute(
        "SELECT device_id, asset_id, source FROM readings ORDER BY device_id, ts"
    ).fetchall()
    assert len(rows) == expected
    by_network = Counter(source["network"] for _, _, source in rows)
    assert by_network == frames
    assert len({(d, s["f_cnt"]) for d, _, s in rows}) == expected, "one row per frame"
    for device_id, asset_id, source in rows:
        assert registry[device_id].asset_id == asset_id
        assert source["kind"] == "lorawan" and source["gateways"] == GATEWAYS
        assert len(source["gateway_ids"]) == GATEWAYS and source["rssi"] is not None
        assert source["codec"] == registry[device_id].codec and source["sf"] == 7
    scored = db.execute("SELECT count(*) FROM scores").fetchone()[0]
    assert scored == expected

    stats = {fmt: p.stats for fmt, (p, _, _) in bridges.items()}
    assert stats["chirpstack"].received == GATEWAYS * frames["chirpstack"]
    assert stats["tts"].received == GATEWAYS * frames["tts"] + sum(corrupted.values())
    assert stats["tts"].deadletters == corrupted
    assert sum(s.duplicates for s in stats.values()) == (GATEWAYS - 1) * expected

    letters = read_topic(conn.kafka, isolated.topic(DEADLETTER), sum(corrupted.values()))
    ingest_letters = [r for r in letters if dict(r.headers).get("stage") == b"ingest"]
    assert Counter(dict(r.headers)["reason"].decode() for r in ingest_letters) == corrupted
    assert {r.value for r in ingest_letters} == {
        m.payload for m in messages if m.corruption is not None
    }
