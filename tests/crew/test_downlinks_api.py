"""Crews ask a sensor for a fresh reading from the inbox; the commands show per alert."""

from __future__ import annotations

import httpx
import pytest

from crew.routing import add_rule
from storage.sinks import PostgresSink, SinkBatch

from .conftest import add_device, alert_row

pytestmark = pytest.mark.stack


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_request_a_fresh_reading_and_see_the_commands(api, tokens, conn, crew_db):
    crew_db.execute("TRUNCATE downlink_commands")
    add_rule(crew_db, "north", zone="north")
    add_rule(crew_db, "south", zone="south")
    add_device(crew_db, "pump-n", "north")
    add_device(crew_db, "pump-s", "south")
    north, south = alert_row("pump-n"), alert_row("pump-s")
    sink = PostgresSink(conn.database_url)
    sink.write(SinkBatch(alerts=[north, south]))
    sink.close()
    with httpx.Client(base_url=api) as client:
        path = f"/api/v1/alerts/{north.alert_id}"
        made = client.post(path + "/request-reading", headers=bearer(tokens["ana"]))
        assert made.status_code == 202, made.text
        body = made.json()
        assert (body["status"], body["command"], body["requested_by"]) == (
            "requested",
            "request_reading",
            "ana",
        )
        assert body["device_id"] == "dev-pump-n" and body["alert_id"] == north.alert_id
        # Another team's alert stays invisible, and so do its commands.
        other = f"/api/v1/alerts/{south.alert_id}"
        assert (
            client.post(other + "/request-reading", headers=bearer(tokens["ana"])).status_code
            == 404
        )
        assert client.get(other + "/commands", headers=bearer(tokens["ana"])).status_code == 404
        assert client.post(path + "/request-reading").status_code == 401
        listed = client.get(path + "/commands", headers=bearer(tokens["ben"])).json()
        assert [c["command_id"] for c in listed] == [body["command_id"]]
    (status,) = crew_db.execute("SELECT status FROM downlink_commands").fetchone()
    assert status == "requested"  # the downlink service sends it (tests/ingest/lorawan)
