"""A fault a crew confirms becomes one maintenance event for the worker, on the real broker."""

from __future__ import annotations

import json

import psycopg
import pytest

from crew.lifecycle import transition
from crew.repairs import RepairEvents
from storage.alerts.access import Actor
from storage.sinks import PostgresSink, SinkBatch
from streams.topics import READINGS, ensure_topics
from tests.pipeline_helpers import consume

from .conftest import add_device, alert_row

pytestmark = pytest.mark.stack

ENGINEER = Actor("erin", "engineer", None)


def test_confirmed_faults_become_one_maintenance_event_each(conn, crew_db, isolated):
    ensure_topics(conn.kafka, isolated)
    topic = isolated.topic(READINGS)
    for asset in ("pump-1", "pump-2"):
        add_device(crew_db, asset, "north")
    PostgresSink(conn.database_url).write(
        SinkBatch(alerts=[alert_row("pump-1"), alert_row("pump-2", minutes=1)])
    )
    with psycopg.connect(conn.database_url, autocommit=True) as c:
        fixed = transition(
            c, alert_row("pump-1").alert_id, "resolve", ENGINEER, outcome="fault_confirmed"
        )
        transition(
            c, alert_row("pump-2", minutes=1).alert_id, "resolve", ENGINEER, outcome="false_alarm"
        )

    repairs = RepairEvents(conn.kafka, topic)
    try:
        with psycopg.connect(conn.database_url) as c:
            assert repairs.publish_pending(c) == 1
            assert repairs.publish_pending(c) == 0  # marked: never sent twice
    finally:
        repairs.close()

    messages = consume(conn, topic, timeout_ms=4000)
    assert len(messages) == 1
    event = json.loads(messages[0].value)
    assert messages[0].key == b"dev-pump-1"
    assert event["type"] == "maintenance"
    assert (event["device_id"], event["asset_id"], event["asset_type"]) == (
        "dev-pump-1",
        "pump-1",
        "water_pump",
    )
    assert event["ts"] == fixed["closed_at"].isoformat()  # when the crew resolved it
    assert event["source"] == {"kind": "crew", "label_id": f"alert:{fixed['alert_id']}"}
