"""The HTTP webhooks (FastAPI app) with the real Kafka behind them.

The app is served in-process through Starlette's TestClient (real ASGI stack,
real request parsing); the Kafka writes go to the session's Tansu broker.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from citywatch.stack import free_port
from ingest.lorawan.bridge import UplinkProcessor
from ingest.lorawan.dedup import FrameDeduplicator
from ingest.lorawan.publisher import KafkaPublisher
from ingest.lorawan.registry import parse_registry
from ingest.lorawan.uplink_sim import UplinkEncoder, sim_registry_rows
from ingest.lorawan.webhook import SECRET_HEADER, create_webhook_app
from ingest.simulator import FleetSimulator
from streams.topics import DEADLETTER, READINGS, ensure_topics
from tests.ingest.conftest import read_topic

SECRET = "s3cr3t-for-tests"


@pytest.fixture
def fleet_registry():
    fleet = FleetSimulator(n_devices=4, seed=2)
    return fleet, parse_registry(sim_registry_rows(fleet.devices))


def make_app(bootstrap: str, settings, registry):
    publisher = KafkaPublisher(bootstrap, settings.topic(READINGS), settings.topic(DEADLETTER))
    processors = {
        fmt: UplinkProcessor(
            publisher,
            dict(registry),
            network=fmt,
            channel="http",
            dedup=FrameDeduplicator(window_s=0),
        )
        for fmt in ("chirpstack", "tts")
    }
    return create_webhook_app(processors, SECRET), publisher


def test_both_formats_become_readings_and_repeats_are_counted(conn, isolated, fleet_registry):
    fleet, registry = fleet_registry
    ensure_topics(conn.kafka, isolated)
    app, publisher = make_app(conn.kafka, isolated, registry)
    readings, _ = fleet.step(datetime.now(UTC))
    headers = {SECRET_HEADER: SECRET}
    with TestClient(app) as client:
        for fmt, path in (
            ("chirpstack", "/api/v1/lorawan/chirpstack?event=up"),
            ("tts", "/api/v1/lorawan/tts"),
        ):
            encoder = UplinkEncoder(fmt, registry, gateways=2, seed=1)
            first, second = encoder.encode(
                readings[0].device.device_id, readings[0].metrics, readings[0].ts
            )
            answer = client.post(path, content=first.payload, headers=headers)
            assert answer.status_code == 202 and answer.json()["readings"] == 1
            repeat = client.post(path, content=second.payload, headers=headers)
            assert repeat.status_code == 202 and repeat.json()["readings"] == 0
        stats = client.get("/api/v1/lorawan/stats").json()
    publisher.close()
    assert stats["chirpstack"]["published"] == stats["tts"]["published"] == 1
    assert stats["chirpstack"]["duplicates"] == stats["tts"]["duplicates"] == 1
    records = read_topic(conn.kafka, isolated.topic(READINGS), 2)
    assert sorted(json.loads(r.value)["source"]["network"] for r in records) == [
        "chirpstack",
        "tts",
    ]


def test_secret_is_required(conn, isolated, fleet_registry):
    _, registry = fleet_registry
    app, publisher = make_app(conn.kafka, isolated, registry)
    with TestClient(app) as client:
        for headers in ({}, {SECRET_HEADER: "wrong"}, {SECRET_HEADER: SECRET + "x"}):
            answer = client.post("/api/v1/lorawan/tts", content=b"{}", headers=headers)
            assert answer.status_code == 401
        assert client.get("/api/v1/lorawan/stats").json()["tts"]["received"] == 0
    publisher.close()
    with pytest.raises(ValueError):
        create_webhook_app({}, "")


def test_bad_bodies_are_dead_lettered_with_their_reason(conn, isolated, fleet_registry):
    fleet, registry = fleet_registry
    ensure_topics(conn.kafka, isolated)
    app, publisher = make_app(conn.kafka, isolated, registry)
    headers = {SECRET_HEADER: SECRET}
    unknown = UplinkEncoder("chirpstack", registry)
    reading = fleet.step(datetime.now(UTC))[0][0]
    (good,) = unknown.encode(reading.device.device_id, reading.metrics, reading.ts)
    body = json.loads(good.payload)
    body["deviceInfo"]["devEui"] = "0102030405060708"
    cases = {
        b"{not json": "malformed_json",
        json.dumps({"deviceInfo": {"devEui": "zz"}, "rxInfo": []}).encode(): "schema",
        json.dumps(body).encode(): "unknown_device",
    }
    with TestClient(app) as client:
        for payload, reason in cases.items():
            answer = client.post(
                "/api/v1/lorawan/chirpstack?event=up", content=payload, headers=headers
            )
            assert answer.status_code == 400
            assert answer.json()["reason"] == reason and answer.json()["detail"]
        ignored = client.post(
            "/api/v1/lorawan/chirpstack?event=join", content=b"{}", headers=headers
        )
        assert ignored.status_code == 204
        stats = client.get("/api/v1/lorawan/stats").json()["chirpstack"]
    publisher.close()
    assert stats["deadletters"] == 3 and stats["ignored"] == {"join": 1}
    letters = read_topic(conn.kafka, isolated.topic(DEADLETTER), 3)
    assert {bytes(r.value) for r in letters} == set(cases)
    assert all(dict(r.headers)["deadletter_id"].startswith(b"http:") for r in letters)


def test_kafka_down_answers_503_so_the_server_retries(isolated, fleet_registry):
    fleet, registry = fleet_registry
    publisher = KafkaPublisher(
        f"127.0.0.1:{free_port()}",
        isolated.topic(READINGS),
        isolated.topic(DEADLETTER),
        **{"message.timeout.ms": 1000, "log_level": 0},  # refusals expected: keep stderr quiet
    )
    processors = {
        "tts": UplinkProcessor(
            publisher,
            dict(registry),
            network="tts",
            channel="http",
            dedup=FrameDeduplicator(window_s=0),
        )
    }
    app = create_webhook_app(processors, SECRET)
    reading = fleet.step(datetime.now(UTC))[0][0]
    (message,) = UplinkEncoder("tts", registry).encode(
        reading.device.device_id, reading.metrics, reading.ts
    )
    with TestClient(app) as client:
        answer = client.post(
            "/api/v1/lorawan/tts", content=message.payload, headers={SECRET_HEADER: SECRET}
        )
        assert answer.status_code == 503
        # The retry is not mistaken for a duplicate: the processor forgot the frame.
        publisher.close(timeout=0)
    assert len(processors["tts"].dedup) == 0
    assert answer.headers["retry-after"].isdigit()
