"""Nothing lost, whatever arrives: the webhooks over real HTTP (uvicorn) with Tansu behind.

Hostile bodies (hypothesis) between good ones each become one reading or one
dead letter; oversized bodies are answered 413 and dead-lettered with their
size and sha256; a frame whose handling failed (Kafka or the registry's
database down: 503 + Retry-After) is forgotten, so the network server's retry
is stored.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from datetime import UTC, datetime

import httpx
import pytest
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from citywatch.stack import free_port
from ingest.lorawan.bridge import UplinkProcessor
from ingest.lorawan.dedup import FrameDeduplicator
from ingest.lorawan.publisher import KafkaPublisher
from ingest.lorawan.registry import entry_to_row, parse_registry
from ingest.lorawan.uplink_sim import UplinkEncoder, sim_registry_rows
from ingest.lorawan.webhook import SECRET_HEADER, create_webhook_app
from ingest.simulator import FleetSimulator
from services.lorawan_ingest import DatabaseRegistry
from storage.device_registry import store_registry
from streams.topics import DEADLETTER, READINGS, ensure_topics
from tests.ingest.conftest import read_topic
from tests.ingest.lorawan.hostile import (
    assert_storable,
    check_deadletter_headers,
    hostile_kinds,
    mutate,
)

SECRET = "containment-secret"
HEADERS = {SECRET_HEADER: SECRET}
PATH = "/api/v1/lorawan/chirpstack?event=up"


@pytest.fixture(scope="module")
def fleet_registry():
    fleet = FleetSimulator(n_devices=6, seed=33)
    return fleet, parse_registry(sim_registry_rows(fleet.devices))


def processors_for(publisher, registry) -> dict[str, UplinkProcessor]:
    return {
        fmt: UplinkProcessor(
            publisher, registry, network=fmt, channel="http", dedup=FrameDeduplicator(window_s=0)
        )
        for fmt in ("chirpstack", "tts")
    }


class Served:
    """The app on uvicorn in a thread, on a free loopback port."""

    def __init__(self, app) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> httpx.Client:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        assert self.server.started
        self.client = httpx.Client(base_url=self.url, timeout=30)
        return self.client

    def __exit__(self, *exc) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(10)

    @property
    def alive(self) -> bool:
        return self.thread.is_alive()


def supply(fleet, registry, seed: int):
    encoder = UplinkEncoder("chirpstack", registry, seed=seed)
    while True:
        for r in fleet.step(datetime.now(UTC))[0]:
            (message,) = encoder.encode(r.device.device_id, r.metrics, r.ts)
            yield message


def test_hostile_bodies_through_the_running_webhook(conn, isolated, fleet_registry):
    fleet, registry = fleet_registry
    ensure_topics(conn.kafka, isolated)
    publisher = KafkaPublisher(conn.kafka, isolated.topic(READINGS), isolated.topic(DEADLETTER))
    processors = processors_for(publisher, dict(registry))
    frames = supply(fleet, registry, seed=4)
    served = Served(create_webhook_app(processors, SECRET))
    posted = {"reading": 0, "dead": 0}
    with served as client:

        @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
        @given(kinds=st.lists(hostile_kinds, min_size=1, max_size=3))
        def one_example(kinds) -> None:
            for kind, choice in kinds:
                good = client.post(PATH, content=next(frames).payload, headers=HEADERS)
                assert good.status_code == 202 and good.json()["readings"] == 1
                fresh = next(frames)
                bad = client.post(
                    PATH, content=mutate(kind, choice, fresh.payload), headers=HEADERS
                )
                assert bad.status_code in (202, 400, 413), bad.text
                if bad.status_code == 202:
                    # Never mistaken for a repeat; an array's bad elements are counted.
                    assert bad.json()["readings"] >= 1
                    posted["reading"] += bad.json()["readings"]
                    posted["dead"] += bad.json()["deadletters"]
                else:
                    assert bad.json()["reason"] and bad.json()["detail"]
                    posted["dead"] += bad.json()["count"]
                posted["reading"] += 1
            assert served.alive

        one_example()
        stats = client.get("/api/v1/lorawan/stats").json()["chirpstack"]
    publisher.close()
    assert stats["published"] == posted["reading"] and stats["deadletters"] == posted["dead"]
    assert stats["duplicates"] == 0
    readings = read_topic(conn.kafka, isolated.topic(READINGS), posted["reading"])
    letters = read_topic(conn.kafka, isolated.topic(DEADLETTER), posted["dead"])
    assert (len(readings), len(letters)) == (posted["reading"], posted["dead"])
    for record in readings:
        assert_storable(record.value)
    for record in letters:
        assert check_deadletter_headers(record)["deadletter_id"].startswith(b"http:")


def test_oversized_bodies_get_413_and_a_truncated_dead_letter(conn, isolated, fleet_registry):
    _, registry = fleet_registry
    ensure_topics(conn.kafka, isolated)
    publisher = KafkaPublisher(conn.kafka, isolated.topic(READINGS), isolated.topic(DEADLETTER))
    processors = processors_for(publisher, dict(registry))
    app = create_webhook_app(processors, SECRET, max_read=1 << 20)
    big = b'{"end_device_ids": "' + b"x" * 300_000 + b'"}'
    with Served(app) as client:
        answer = client.post("/api/v1/lorawan/tts", content=big, headers=HEADERS)
        assert answer.status_code == 413 and answer.json()["reason"] == "too_large"
        # Declared larger than max_read: refused before a byte of the body is read.
        unread = client.post("/api/v1/lorawan/tts", content=b"y" * (2 << 20), headers=HEADERS)
        assert unread.status_code == 413
        stats = client.get("/api/v1/lorawan/stats").json()["tts"]
    publisher.close()
    assert stats["deadletters_by_reason"] == {"too_large": 1} and stats["unread"] == 1
    (letter,) = read_topic(conn.kafka, isolated.topic(DEADLETTER), 1)
    headers = check_deadletter_headers(letter)
    assert letter.value == big[: 64 << 10]
    assert int(headers["raw_size"]) == len(big)
    assert headers["raw_sha256"].decode() == hashlib.sha256(big).hexdigest()


def test_a_frame_that_failed_is_stored_when_the_network_server_retries(
    conn, registry_db, isolated, fleet_registry
):
    fleet, registry = fleet_registry
    ensure_topics(conn.kafka, isolated)
    good = KafkaPublisher(conn.kafka, isolated.topic(READINGS), isolated.topic(DEADLETTER))
    dead_kafka = KafkaPublisher(
        f"127.0.0.1:{free_port()}",
        isolated.topic(READINGS),
        isolated.topic(DEADLETTER),
        **{"message.timeout.ms": 500, "log_level": 0},  # refusals expected: keep stderr quiet
    )
    # The registry lives in the real database; the device is loaded only later.
    devices = DatabaseRegistry(conn.database_url, min_reload_s=0)
    processors = processors_for(dead_kafka, devices)
    frames = supply(fleet, registry, seed=8)
    first, second = next(frames), next(frames)
    with Served(create_webhook_app(processors, SECRET)) as client:
        store_registry(conn.database_url, [entry_to_row(e) for e in registry.values()], source="t")
        # 1. Kafka is down: 503 with Retry-After, and the frame is forgotten.
        answer = client.post(PATH, content=first.payload, headers=HEADERS)
        assert answer.status_code == 503 and int(answer.headers["retry-after"]) > 0
        processors["chirpstack"].publisher = good  # Kafka is back
        retry = client.post(PATH, content=first.payload, headers=HEADERS)
        assert retry.status_code == 202 and retry.json()["readings"] == 1
        # 2. The registry's database is down for an unknown device: 503, not unknown_device.
        devices.clear()  # forget the devices: the next frame needs the database
        devices.database_url = f"postgresql://citywatch@127.0.0.1:{free_port()}/none"
        answer = client.post(PATH, content=second.payload, headers=HEADERS)
        assert answer.status_code == 503, answer.text
        devices.database_url = conn.database_url  # the database is back
        retry = client.post(PATH, content=second.payload, headers=HEADERS)
        assert retry.status_code == 202 and retry.json()["readings"] == 1
        stats = client.get("/api/v1/lorawan/stats").json()["chirpstack"]
    dead_kafka.close(timeout=0)
    good.close()
    assert stats["transient_failures"] == 2 and stats["deadletters"] == 0
    stored = read_topic(conn.kafka, isolated.topic(READINGS), 2)
    assert sorted(json.loads(r.value)["source"]["f_cnt"] for r in stored) == sorted(
        [first.f_cnt, second.f_cnt]
    )
