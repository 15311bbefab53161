"""The shared real-server examples through the real bridge (Mosquitto) and webhook (HTTP).

Every file of ``lorawan-examples/manifest.csv`` is published on MQTT (with its
topic, or one built from its body) and posted to the webhook. Each ``reading``
file becomes its readings on Kafka, each ``deadletter`` file one dead letter
with the manifest's reason. Then hypothesis builds hostile arrays, zero times
and stripped identities, and every element still ends as exactly one reading
or one dead letter, through both entry points.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.lorawan.bridge import MqttBridge, UplinkProcessor, default_client_id
from ingest.lorawan.conformance import check_directory, read_manifest
from ingest.lorawan.dedup import FrameDeduplicator
from ingest.lorawan.publisher import KafkaPublisher
from ingest.lorawan.registry import parse_registry
from ingest.lorawan.uplink import parse_uplink, split_messages
from ingest.lorawan.webhook import SECRET_HEADER, create_webhook_app
from streams.topics import DEADLETTER, READINGS, ensure_topics
from tests.ingest.conftest import read_topic
from tests.ingest.lorawan.hostile import assert_storable, check_deadletter_headers, json_values
from tests.ingest.lorawan.test_bridge import publish_all, run_until
from tests.ingest.lorawan.test_webhook_containment import Served

EXAMPLES = Path(__file__).resolve().parents[3].parent / "shared" / "datasets" / "lorawan-examples"
pytestmark = pytest.mark.skipif(not EXAMPLES.is_dir(), reason="shared examples not present")
SECRET = "examples-secret"
ZERO = "0001-01-01T00:00:00Z"
# A test profile: the first payload byte as a pump's flow, so every example decodes.
PROBE = """name: probe
asset_type: water_pump
fields:
  - {name: flow, type: u8, metric: flow}
"""


def uplinks_of(raw: bytes, network: str, topic: str | None):
    return [parse_uplink(p, network=network, topic=topic) for p in split_messages(raw) or [raw]]


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    """(manifest rows, registry with every example device, profile dirs)."""
    profiles = tmp_path_factory.mktemp("profiles")
    (profiles / "probe.yaml").write_text(PROBE)
    rows, seen = read_manifest(EXAMPLES), {}
    for row in rows:
        if row.expect == "reading":
            raw = (EXAMPLES / row.file).read_bytes()
            for up in uplinks_of(raw, row.network, row.mqtt_topic):
                ident = {"dev_eui": up.dev_eui} if up.dev_eui else {"device_id": up.device_name}
                seen[up.device] = ident | {"asset_id": f"ex-{up.device}"}
                if up.f_port == 0:  # no application port: use the server's decoded object
                    key = next(k for k, v in up.decoded.items() if isinstance(v, float))
                    seen[up.device] |= {"codec": "passthrough", "metric_map": {key: "flow"}}
    base = {"asset_type": "water_pump", "codec": "profile:probe"}
    registry = parse_registry([base | r for r in seen.values()], profile_dirs=[profiles])
    return rows, registry, [profiles]


def topic_for(row, raw: bytes) -> str:
    if row.mqtt_topic:
        return row.mqtt_topic
    try:
        doc = json.loads(raw)
    except ValueError:
        doc = {}
    doc = (doc[0] if doc else {}) if isinstance(doc, list) else doc
    doc = doc.get("result", doc)
    if row.network == "chirpstack":
        info = doc.get("deviceInfo", {})
        app, eui = info.get("applicationId", "x"), info.get("devEui", "x")
        return f"application/{app}/device/{eui}/event/up"
    ids = doc.get("end_device_ids", {})
    app = ids.get("application_ids", {}).get("application_id", "x")
    return f"v3/{app}/devices/{ids.get('device_id', 'x')}/up"


def expected(rows, registry) -> tuple[Counter, Counter]:
    readings, reasons = Counter(), Counter()
    for row in rows:
        if row.expect == "reading":
            raw = (EXAMPLES / row.file).read_bytes()
            for up in uplinks_of(raw, row.network, row.mqtt_topic):
                readings[f"ex-{up.device}"] += 1
        else:
            reasons[row.note.split(":")[0]] += 1
    return readings, reasons


def test_check_command_with_a_registry_is_strict_and_agrees(examples):
    _rows, registry, dirs = examples
    results = check_directory(EXAMPLES, registry=registry, strict=True, profile_dirs=dirs)
    assert len(results) == 21 and all(r["agrees"] for r in results), results
    assert all(u["registered"] for r in results for u in r.get("uplinks", []))


def test_examples_through_the_real_bridge(conn, isolated, mqtt_url, examples):
    rows, registry, dirs = examples
    ensure_topics(conn.kafka, isolated)
    publisher = KafkaPublisher(conn.kafka, isolated.topic(READINGS), isolated.topic(DEADLETTER))
    bridges, sent = {}, Counter()
    for fmt in ("chirpstack", "tts"):
        processor = UplinkProcessor(
            publisher, dict(registry), dedup=FrameDeduplicator(window_s=0.05), profile_dirs=dirs
        )
        bridges[fmt] = MqttBridge(
            mqtt_url, fmt, processor, client_id=default_client_id(f"test-ex-{fmt}")
        )
        assert bridges[fmt].start()
    messages = []
    for row in rows:
        raw = (EXAMPLES / row.file).read_bytes()
        messages.append(SimpleNamespace(topic=topic_for(row, raw), payload=raw))
        sent[row.network] += 1
    publish_all(mqtt_url, messages)
    try:
        for fmt, bridge in bridges.items():
            run_until(bridge, lambda b=bridge, f=fmt: b.processor.stats.acked >= sent[f])
    finally:
        for bridge in bridges.values():
            bridge.stop()
    want_readings, want_reasons = expected(rows, registry)
    n_read, n_dead = sum(want_readings.values()), sum(want_reasons.values())
    readings = read_topic(conn.kafka, isolated.topic(READINGS), n_read)
    letters = read_topic(conn.kafka, isolated.topic(DEADLETTER), n_dead)
    publisher.close()
    assert Counter(json.loads(r.value)["asset_id"] for r in readings) == want_readings
    assert Counter(check_deadletter_headers(r)["reason"].decode() for r in letters) == want_reasons
    for record in readings:
        assert_storable(record.value)
        source = json.loads(record.value)["source"]
        assert source["snr"] is None or isinstance(source["snr"], int | float)
        assert not json.loads(record.value)["ts"].startswith("0001")
    # The dead letters keep the file's bytes.
    dead_files = {(EXAMPLES / r.file).read_bytes() for r in rows if r.expect == "deadletter"}
    assert {r.value for r in letters} == dead_files


def test_examples_through_the_real_webhook(conn, isolated, examples):
    rows, registry, dirs = examples
    ensure_topics(conn.kafka, isolated)
    publisher = KafkaPublisher(conn.kafka, isolated.topic(READINGS), isolated.topic(DEADLETTER))
    processors = {
        fmt: UplinkProcessor(
            publisher,
            dict(registry),
            network=fmt,
            channel="http",
            dedup=FrameDeduplicator(window_s=0),
            profile_dirs=dirs,
        )
        for fmt in ("chirpstack", "tts")
    }
    paths = {"chirpstack": "/api/v1/lorawan/chirpstack?event=up", "tts": "/api/v1/lorawan/tts"}
    with Served(create_webhook_app(processors, SECRET)) as client:
        for row in rows:
            raw = (EXAMPLES / row.file).read_bytes()
            answer = client.post(paths[row.network], content=raw, headers={SECRET_HEADER: SECRET})
            if row.expect == "reading":
                n = len(uplinks_of(raw, row.network, row.mqtt_topic))
                assert answer.status_code == 202, (row.file, answer.text)
                assert answer.json() == {"status": "accepted", "readings": n, "deadletters": 0}
            else:
                assert answer.status_code == 400, (row.file, answer.text)
                assert answer.json()["reason"] == row.note.split(":")[0], row.file
    want_readings, want_reasons = expected(rows, registry)
    readings = read_topic(conn.kafka, isolated.topic(READINGS), sum(want_readings.values()))
    letters = read_topic(conn.kafka, isolated.topic(DEADLETTER), sum(want_reasons.values()))
    publisher.close()
    assert Counter(json.loads(r.value)["asset_id"] for r in readings) == want_readings
    assert Counter(check_deadletter_headers(r)["reason"].decode() for r in letters) == want_reasons


def good_tts(device: str, f_cnt: int) -> dict:
    return {
        "end_device_ids": {"device_id": device, "application_ids": {"application_id": "fz"}},
        "received_at": f"2026-01-01T00:{f_cnt // 60 % 60:02d}:{f_cnt % 60:02d}Z",
        "uplink_message": {"f_port": 3, "f_cnt": f_cnt, "frm_payload": "Kg==", "received_at": ZERO},
    }


def hostile_element(kind: str, value, good: dict):
    doc = json.loads(json.dumps(good))
    if kind == "json":
        return value
    if kind == "no_ids":
        doc["end_device_ids"] = {"application_ids": {"application_id": "fz"}}
    elif kind == "zero_times":
        doc["received_at"] = ZERO  # no valid time anywhere: the ingest moment
    elif kind == "bad_time":
        doc["received_at"] = value
    return doc


element_kinds = st.one_of(
    st.tuples(st.just("good"), st.none()),
    st.tuples(st.just("json"), json_values),
    st.tuples(st.just("no_ids"), st.none()),
    st.tuples(st.just("zero_times"), st.none()),
    st.tuples(st.just("bad_time"), st.text(max_size=30) | st.integers()),
)


def fuzz_registry(profile_dirs):
    row = {"device_id": "fz-dev", "asset_id": "fz", "asset_type": "water_pump"}
    return parse_registry([row | {"codec": "profile:probe"}], profile_dirs=profile_dirs)


def test_hostile_arrays_through_the_webhook(conn, isolated, examples):
    _, _, dirs = examples
    ensure_topics(conn.kafka, isolated)
    publisher = KafkaPublisher(conn.kafka, isolated.topic(READINGS), isolated.topic(DEADLETTER))
    processors = {
        fmt: UplinkProcessor(
            publisher,
            fuzz_registry(dirs),
            network=fmt,
            channel="http",
            dedup=FrameDeduplicator(window_s=0),
            profile_dirs=dirs,
        )
        for fmt in ("chirpstack", "tts")
    }
    counter, totals = iter(range(1, 10**6)), Counter()
    with Served(create_webhook_app(processors, SECRET)) as client:

        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
        @given(kinds=st.lists(element_kinds, min_size=0, max_size=5))
        def one_example(kinds) -> None:
            body = [hostile_element(k, v, good_tts("fz-dev", next(counter))) for k, v in kinds]
            answer = client.post(
                "/api/v1/lorawan/tts", content=json.dumps(body), headers={SECRET_HEADER: SECRET}
            )
            assert answer.status_code in (202, 400), answer.text
            reply = answer.json()
            readings = reply.get("readings", 0)
            dead = reply.get("deadletters", reply.get("count", 0))
            # Every element once; an empty array is one dead letter.
            assert readings + dead == max(len(body), 1)
            good = sum(1 for k, _ in kinds if k in ("good", "zero_times"))
            assert readings >= good
            totals["readings"] += readings
            totals["dead"] += dead

        one_example()
    publisher.close()
    readings = read_topic(conn.kafka, isolated.topic(READINGS), totals["readings"])
    letters = read_topic(conn.kafka, isolated.topic(DEADLETTER), totals["dead"])
    assert (len(readings), len(letters)) == (totals["readings"], totals["dead"])
    for record in readings:
        assert_storable(record.value)
        assert json.loads(record.value)["device_id"] == "fz-dev"


def test_hostile_arrays_through_the_running_bridge(conn, isolated, mqtt_url, examples):
    _, _, dirs = examples
    ensure_topics(conn.kafka, isolated)
    publisher = KafkaPublisher(conn.kafka, isolated.topic(READINGS), isolated.topic(DEADLETTER))
    processor = UplinkProcessor(
        publisher, fuzz_registry(dirs), dedup=FrameDeduplicator(window_s=0.02), profile_dirs=dirs
    )
    bridge = MqttBridge(mqtt_url, "tts", processor, client_id=default_client_id("test-ex-fz"))
    assert bridge.start()
    stop, crashed = threading.Event(), []

    def loop() -> None:
        try:
            bridge.run(stop.is_set, idle_sleep_s=0.005)
        except BaseException as exc:  # recorded: the test asserts there is none
            crashed.append(exc)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    counter, sent, elements = iter(range(1, 10**6)), [0], [0]

    @settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
    @given(kinds=st.lists(element_kinds, min_size=1, max_size=5))
    def one_example(kinds) -> None:
        body = [hostile_element(k, v, good_tts("fz-dev", next(counter))) for k, v in kinds]
        payload = json.dumps(body).encode()
        publish_all(mqtt_url, [SimpleNamespace(topic="v3/fz/devices/fz-dev/up", payload=payload)])
        sent[0] += 1
        elements[0] += max(len(body), 1)
        deadline = time.monotonic() + 20
        while processor.stats.acked < sent[0] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not crashed and thread.is_alive()
        outputs = processor.stats.published + sum(processor.stats.deadletters.values())
        assert outputs + processor.stats.duplicates == elements[0]

    try:
        one_example()
    finally:
        stop.set()
        thread.join(30)
    assert not crashed
    dead = sum(processor.stats.deadletters.values())
    readings = read_topic(conn.kafka, isolated.topic(READINGS), processor.stats.published)
    letters = read_topic(conn.kafka, isolated.topic(DEADLETTER), dead)
    publisher.close()
    assert (len(readings), len(letters)) == (processor.stats.published, dead)
    assert processor.stats.acked == sent[0]
