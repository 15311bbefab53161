"""Bridge dead letters, read back from Kafka, become deadletters rows (once)."""

from __future__ import annotations

from datetime import UTC, datetime

from ingest.lorawan.bridge import UplinkProcessor
from ingest.lorawan.dedup import FrameDeduplicator
from ingest.lorawan.publisher import KafkaPublisher
from ingest.lorawan.registry import parse_registry
from ingest.lorawan.uplink_sim import UplinkEncoder, sim_registry_rows
from ingest.simulator import FleetSimulator
from storage.deadletters import ingest_deadletter_row
from storage.sinks import PostgresSink, SinkBatch
from streams.topics import DEADLETTER, READINGS, ensure_topics
from tests.ingest.conftest import read_topic


def test_stage_ingest_messages_are_stored_once(conn, db, isolated) -> None:
    ensure_topics(conn.kafka, isolated)
    fleet = FleetSimulator(n_devices=4, seed=3)
    registry = parse_registry(sim_registry_rows(fleet.devices))
    publisher = KafkaPublisher(conn.kafka, isolated.topic(READINGS), isolated.topic(DEADLETTER))
    processor = UplinkProcessor(publisher, {}, dedup=FrameDeduplicator(window_s=0))
    encoder = UplinkEncoder("tts", registry, corrupt_rate=0.5, seed=1)
    readings, _ = fleet.step(datetime.now(UTC))
    messages = [m for r in readings for m in encoder.encode(r.device.device_id, r.metrics, r.ts)]
    for m in messages:
        processor.offer(m.topic, m.payload, 0.0)
    publisher.close()
    # A message of the worker's own (no stage header) is left to the worker.
    assert (
        ingest_deadletter_row(
            topic="t", partition=0, offset=1, key=None, value=b"x", headers=[("reason", b"schema")]
        )
        is None
    )

    records = read_topic(conn.kafka, isolated.topic(DEADLETTER), len(messages))
    rows = [
        ingest_deadletter_row(
            topic=r.topic,
            partition=r.partition,
            offset=r.offset,
            key=r.key,
            value=r.value,
            headers=r.headers,
        )
        for r in records
    ]
    assert all(row is not None for row in rows) and len(rows) == len(messages)
    sink = PostgresSink(conn.database_url)
    try:
        first = sink.write(SinkBatch(deadletters=rows))
        again = sink.write(SinkBatch(deadletters=rows))  # a redelivery
    finally:
        sink.close()
    assert first.deadletters == len(messages) and again.deadletters == 0
    stored = db.execute(
        "SELECT reason, stage, device_id, raw FROM deadletters ORDER BY deadletter_id"
    ).fetchall()
    # With an empty registry every parseable frame is an unknown device.
    parse_errors = ("malformed_json", "bad_base64")
    expected_reasons = {
        m.corruption if m.corruption in parse_errors else "unknown_device" for m in messages
    }
    assert {s[0] for s in stored} == expected_reasons
    assert {s[1] for s in stored} == {"ingest"}
    assert {bytes(s[3]) for s in stored} == {m.payload for m in messages}
