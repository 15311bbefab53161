"""A district's leak alert in the crew API: its ranked candidates with coordinates."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest

from crew.routing import add_rule
from storage.sinks import PostgresSink, SinkBatch
from storage.water_networks import store_candidates

from .conftest import T0, add_device, alert_row

pytestmark = pytest.mark.stack


def test_alert_context_carries_leak_candidates(api, tokens, crew_db, conn):
    crew_db.execute("TRUNCATE leak_candidates")
    add_rule(crew_db, "north", zone="hanoi.all")
    add_device(crew_db, "hanoi.all", "hanoi.all", asset_type="network_flow")
    alert = alert_row("hanoi.all", asset_type="network_flow")
    sink = PostgresSink(conn.database_url)
    sink.write(SinkBatch(alerts=[alert]))
    sink.close()
    at = T0 + timedelta(hours=1)
    store_candidates(
        conn.database_url,
        [
            (T0 - timedelta(days=3), "hanoi.all", 1, "5", 9.0, 21.0, 105.8, 1.0, 2.0),  # older
            (at, "hanoi.all", 1, "21", 12.5, 21.03, 105.85, 5000.0, 3000.0),
            (at, "hanoi.all", 2, "22", 11.0, 21.04, 105.86, 5200.0, 3100.0),
        ],
    )
    got = httpx.get(
        f"{api}/api/v1/alerts/{alert.alert_id}/context",
        headers={"Authorization": f"Bearer {tokens['ana']}"},
    )
    assert got.status_code == 200, got.text
    cands = got.json()["leak_candidates"]
    assert [(c["rank"], c["node"]) for c in cands] == [(1, "21"), (2, "22")]
    assert cands[0]["lat"] == 21.03 and cands[0]["x"] == 5000.0
    # The crew's outcome and where they found the leak become a label of the district.
    done = httpx.post(
        f"{api}/api/v1/alerts/{alert.alert_id}/resolve",
        json={"outcome": "fault_confirmed", "note": "leak found at node 21"},
        headers={"Authorization": f"Bearer {tokens['ana']}"},
    )
    assert done.status_code == 200, done.text
    outcome, detail = crew_db.execute(
        "SELECT outcome, detail FROM labels WHERE asset_id = 'hanoi.all'"
    ).fetchone()
    assert outcome == "fault_confirmed" and detail["note"] == "leak found at node 21"
