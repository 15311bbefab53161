"""The closed loop on real parts: Tansu (scores, alerts), PostgreSQL, Mosquitto.

Scores above the level and an alert's close go in on Kafka, the service sends
reporting-interval commands in each network server's format over MQTT, and
simulated sensors decode them and change their interval. A device whose codec
has no downlink encoder is refused, and a crew's request is sent.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from kafka import KafkaProducer
from psycopg.types.json import Jsonb

from ingest.lorawan.adaptive import SamplingPolicy
from ingest.lorawan.registry import parse_registry
from ingest.lorawan.sim_devices import SimulatedRadios
from services.downlinks import DownlinkService
from storage.device_registry import store_registry
from storage.downlink_store import commands_for_asset, request_reading
from streams.records import Score, encode_score_batch
from streams.topics import ALERTS, SCORES, ensure_topics

CS, TTS, LPP = "70b3d57ed00000c1", "70b3d57ed00000c2", "70b3d57ed00000c3"
T0 = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture
def fleet(registry_db):
    rows = [
        {"dev_eui": CS, "asset_id": "pump-c1", "asset_type": "water_pump",
         "codec": "profile:water_pump"},
        {"dev_eui": TTS, "asset_id": "pump-c2", "asset_type": "water_pump",
         "codec": "profile:water_pump"},
        {"dev_eui": LPP, "asset_id": "pump-c3", "asset_type": "water_pump", "codec": "cayenne_lpp",
         "metric_map": {"temperature_1": "bearing_temp"}},
    ]  # fmt: skip
    store_registry(registry_db.info.dsn, rows, source="test")
    routes = {
        CS: {"network": "chirpstack", "application_id": "app-cs"},
        TTS: {"network": "tts", "application_id": "app-tts", "ns_device_id": f"eui-{TTS}",
              "tenant": "city"},
        LPP: {"network": "chirpstack", "application_id": "app-cs"},
    }  # fmt: skip
    for dev, route in routes.items():
        registry_db.execute(
            "INSERT INTO readings (ts, device_id, asset_id, asset_type, metrics, source)"
            " VALUES (%s, %s, %s, 'water_pump', '{}', %s)",
            (T0, dev, f"pump-{dev[-2:]}", Jsonb({"kind": "lorawan", **route})),
        )
    yield parse_registry(rows)
    registry_db.execute("TRUNCATE downlink_commands")


def wait(predicate, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.05)
    return predicate()


def test_the_loop_over_kafka_mqtt_and_postgres(conn, isolated, mqtt_url, fleet, registry_db):
    ensure_topics(conn.kafka, isolated)
    policy = SamplingPolicy(risk_level=0.6, fast_interval_s=300, normal_interval_s=900, min_gap_s=0)
    radios = SimulatedRadios(mqtt_url, fleet, normal_interval_s=900)
    service = DownlinkService(isolated, conn, mqtt_url, policy)
    producer = KafkaProducer(bootstrap_servers=conn.kafka)
    try:
        scores = [
            Score(f"pump-{d[-2:]}", d, "water_pump", T0 + timedelta(minutes=5), 0.8, 0.7, "m1")
            for d in (CS, TTS, LPP)
        ]
        producer.send(isolated.topic(SCORES), encode_score_batch(scores))
        producer.flush()
        assert wait(lambda: (service.step(200), radios.received >= 2)[1])
        assert (radios.interval(CS), radios.interval(TTS), radios.interval(LPP)) == (300, 300, 900)
        # The sensors now transmit every 300 s of reading time, the LPP one every 900 s.
        t = T0 + timedelta(hours=1)
        for dev in (TTS, LPP):
            assert radios.due(dev, t)
            assert not radios.due(dev, t + timedelta(seconds=200))
        assert radios.due(TTS, t + timedelta(seconds=300))
        assert not radios.due(LPP, t + timedelta(seconds=300))

        closed = {
            "alert_id": "al-1", "transition": "close", "asset_id": "pump-c1", "device_id": CS,
            "asset_type": "water_pump", "opened_at": (T0 + timedelta(minutes=5)).isoformat(),
            "closed_at": (T0 + timedelta(hours=3)).isoformat(), "peak_risk": 0.9,
            "last_risk": 0.2, "threshold": 0.7, "model_version": "m1",
        }  # fmt: skip
        producer.send(isolated.topic(ALERTS), json.dumps(closed).encode())
        producer.send(isolated.topic(ALERTS), b"{not an alert")  # skipped, not fatal
        producer.flush()
        assert wait(lambda: (service.step(200), radios.interval(CS) == 900)[1])
        assert radios.interval(TTS) == 300  # its alert is still open

        # A crew asks for a fresh reading from the inbox: stored, then sent by the service.
        with psycopg.connect(conn.database_url, autocommit=True) as db:
            request_reading(
                db, device_id=TTS, asset_id="pump-c2", requested_by="crew-anna",
                alert_id=None, reason="crew-anna asked for a fresh reading",
            )  # fmt: skip
        assert wait(lambda: (service.step(200), TTS in radios.requested)[1])
    finally:
        producer.close()
        service.close()
        radios.close()

    with psycopg.connect(conn.database_url) as db:
        c1 = commands_for_asset(db, "pump-c1")
        c2 = commands_for_asset(db, "pump-c2")
        c3 = commands_for_asset(db, "pump-c3")
    assert [(r["status"], r["args"]) for r in c1] == [
        ("sent", {"interval_s": 900}),
        ("sent", {"interval_s": 300}),
    ]
    assert c1[0]["topic"] == f"application/app-cs/device/{CS}/command/down"
    assert "alert al-1 closed" in c1[0]["reason"] and c1[1]["reason"].startswith("risk 0.80")
    assert [r["command"] for r in c2] == ["request_reading", "set_interval"]
    assert c2[0]["status"] == "sent" and c2[0]["requested_by"] == "crew-anna"
    assert c2[1]["topic"] == f"v3/app-tts@city/devices/eui-{TTS}/down/push"
    ((status, detail),) = [(r["status"], r["detail"]) for r in c3]
    assert status == "refused" and "encoder" in detail
    assert radios.loops() == [{"device": CS, "intervals_s": [900, 300, 900],
                               "changed_at": [None, None]}]  # fmt: skip


def test_tts_downlinks_through_the_webhook_api(conn, isolated, mqtt_url, fleet, registry_db):
    import httpx
    from pydantic import SecretStr

    from services.downlinks import TtsWebhookApi

    # The Things Stack cannot run here: a transport answering as its documented API does
    # (lorawan-stack-docs webhooks/scheduling-downlinks.md), first a 503, then 200.
    seen, answers = [], [503, 200]

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(answers.pop(0) if answers else 200, json={})

    api = TtsWebhookApi(
        "https://tts.example.org",
        "wh1",
        SecretStr("NNSXS.TEST"),
        httpx.Client(transport=httpx.MockTransport(handler)),
    )
    ensure_topics(conn.kafka, isolated)
    policy = SamplingPolicy(risk_level=0.6, min_gap_s=0)
    service = DownlinkService(isolated, conn, mqtt_url, policy, tts_http=api)
    producer = KafkaProducer(bootstrap_servers=conn.kafka)
    try:
        for minutes in (5, 10):  # the second score retries the failed send
            score = Score(
                "pump-c2", TTS, "water_pump", T0 + timedelta(minutes=minutes), 0.9, 0.7, "m"
            )
            producer.send(isolated.topic(SCORES), encode_score_batch([score]))
            producer.flush()
            assert wait(lambda n=minutes: (service.step(200), len(seen) >= n // 5)[1])
    finally:
        producer.close()
        service.close()
    assert [str(r.url) for r in seen] == [
        f"https://tts.example.org/api/v3/as/applications/app-tts/webhooks/wh1/devices/eui-{TTS}/down/push"
    ] * 2
    assert seen[0].headers["authorization"] == "Bearer NNSXS.TEST"
    assert json.loads(seen[0].content)["downlinks"][0]["f_port"] == 11
    with psycopg.connect(conn.database_url) as db:
        rows = commands_for_asset(db, "pump-c2")
    assert [(r["status"], r["detail"]) for r in rows] == [
        ("sent", None),
        ("failed", "The Things Stack API answered HTTP 503"),
    ]


def test_simulated_sensors_ignore_what_they_cannot_read(mqtt_url, fleet):
    from types import SimpleNamespace

    from tests.ingest.lorawan.test_bridge import publish_all

    radios = SimulatedRadios(mqtt_url, fleet)
    try:
        junk = [
            ("application/a/device/" + CS + "/command/down", b"{not json"),
            ("application/a/device/" + CS + "/command/down", b'{"fPort": 11, "data": "!!"}'),
            ("application/a/device/" + CS + "/command/down", b'{"fPort": 10, "data": "AQAF"}'),
            ("application/a/device/" + LPP + "/command/down", b'{"fPort": 11, "data": "AQAF"}'),
            ("v3/a@t/devices/eui-" + TTS + "/down/push", b'{"downlinks": [{"f_port": 11}]}'),
        ]
        publish_all(mqtt_url, [SimpleNamespace(topic=t, payload=p) for t, p in junk])
        assert wait(lambda: sum(radios.ignored.values()) == len(junk))
        assert radios.ignored == {"malformed": 3, "undecodable": 1, "no_encoder": 1}
        assert radios.received == 0 and radios.intervals == {}
    finally:
        radios.close()
