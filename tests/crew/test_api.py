"""The HTTP API over a real server and database: auth, roles, lifecycle, Grafana webhooks."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from citywatch.stack import free_port
from crew.api import create_app
from crew.routing import add_rule
from crew.server import BackgroundServer
from storage.sinks import PostgresSink, SinkBatch

from .conftest import add_device, alert_row

pytestmark = pytest.mark.stack
FIXTURES = Path(__file__).parent / "fixtures"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def two_alerts(conn, crew_db):
    add_rule(crew_db, "north", zone="north")
    add_rule(crew_db, "south", zone="south")
    add_device(crew_db, "pump-n", "north")
    add_device(crew_db, "pump-s", "south")
    north, south = alert_row("pump-n", risk=0.8), alert_row("pump-s", risk=0.9)
    sink = PostgresSink(conn.database_url)
    sink.write(SinkBatch(alerts=[north, south]))
    sink.close()
    return north.alert_id, south.alert_id


def test_tokens_roles_and_team_visibility(api, tokens, two_alerts):
    north, south = two_alerts
    with httpx.Client(base_url=api) as http:
        assert http.get("/api/v1/alerts").status_code == 401
        assert http.get("/api/v1/alerts", headers=bearer("cw_wrong")).status_code == 401
        ana = http.get("/api/v1/alerts", headers=bearer(tokens["ana"])).json()
        assert [a["alert_id"] for a in ana] == [north]
        eve = http.get("/api/v1/alerts", headers=bearer(tokens["eve"])).json()
        assert [a["alert_id"] for a in eve] == [south, north]  # riskiest first
        # Another team's alert does not exist for a crew, not even to comment on.
        assert http.get(f"/api/v1/alerts/{south}", headers=bearer(tokens["ana"])).status_code == 404
        r = http.post(
            f"/api/v1/alerts/{south}/comments", json={"body": "hi"}, headers=bearer(tokens["ana"])
        )
        assert r.status_code == 404
        assert http.get("/api/v1/me", headers=bearer(tokens["ana"])).json() == {
            "user_name": "ana",
            "role": "crew",
            "team": "north",
        }


def test_tokens_are_stored_hashed(crew_db, tokens):
    stored = {h for (h,) in crew_db.execute("SELECT token_hash FROM crew_tokens")}
    assert len(stored) == len(tokens)
    assert not stored & set(tokens.values())


def test_lifecycle_over_http_with_validation(api, tokens, two_alerts, crew_db):
    north, _ = two_alerts
    h = bearer(tokens["ana"])
    with httpx.Client(base_url=api) as http:
        assert http.post(f"/api/v1/alerts/{north}/resolve", json={}, headers=h).status_code == 422
        bad = http.post(f"/api/v1/alerts/{north}/resolve", json={"outcome": "meh"}, headers=h)
        assert bad.status_code == 422
        extra = http.post(f"/api/v1/alerts/{north}/acknowledge", json={"x": 1}, headers=h)
        assert extra.status_code == 422
        ack = http.post(f"/api/v1/alerts/{north}/acknowledge", json={"note": "seen"}, headers=h)
        assert ack.status_code == 200 and ack.json()["status"] == "acknowledged"
        again = http.post(f"/api/v1/alerts/{north}/acknowledge", json={}, headers=h)
        assert again.status_code == 409
        nobody = http.post(f"/api/v1/alerts/{north}/assign", json={"assignee": "zed"}, headers=h)
        assert nobody.status_code == 409
        assigned = http.post(f"/api/v1/alerts/{north}/assign", json={"assignee": "ben"}, headers=h)
        assert assigned.json()["assigned_to"] == "ben"
        c = http.post(f"/api/v1/alerts/{north}/comments", json={"body": "valve"}, headers=h)
        assert c.status_code == 201
        done = http.post(
            f"/api/v1/alerts/{north}/resolve", json={"outcome": "false_alarm"}, headers=h
        )
        assert done.json()["outcome"] == "false_alarm"
        detail = http.get(f"/api/v1/alerts/{north}", headers=h).json()
        live = http.get("/api/v1/alerts?live=true", headers=h).json()
    assert [t["action"] for t in detail["transitions"]] == [
        "open",
        "acknowledge",
        "assign",
        "resolve",
    ]
    assert detail["transitions"][1]["detail"] == {"note": "seen"}
    assert [c["body"] for c in detail["comments"]] == ["valve"]
    assert live == []
    assert crew_db.execute("SELECT label_id, outcome FROM labels").fetchall() == [
        (f"alert:{north}", "false_alarm")
    ]


def test_grafana_webhook_opens_and_resolves_alerts(api, tokens, crew_db):
    add_rule(crew_db, "north", zone="north")
    add_device(crew_db, "pump-g", "north")
    # Grafana's documented webhook body, with our asset labels on the rule.
    firing = json.loads((FIXTURES / "grafana_firing.json").read_text())
    with httpx.Client(base_url=api) as http:
        crew = http.post("/api/v1/grafana/webhook", json=firing, headers=bearer(tokens["ana"]))
        assert crew.status_code == 403
        r = http.post("/api/v1/grafana/webhook", json=firing, headers=bearer(tokens["eve"]))
        assert r.status_code == 200
        [opened] = r.json()["results"]
        assert opened["result"] == "opened"
        again = http.post("/api/v1/grafana/webhook", json=firing, headers=bearer(tokens["eve"]))
        assert again.json()["results"][0]["result"] == "unchanged"
        seen = http.get("/api/v1/alerts", headers=bearer(tokens["ana"])).json()
        assert [(a["source"], a["team"], a["severity"]) for a in seen] == [
            ("grafana", "north", "critical")
        ]
        resolved = json.loads((FIXTURES / "grafana_resolved.json").read_text())
        r = http.post("/api/v1/grafana/webhook", json=resolved, headers=bearer(tokens["eve"]))
        assert r.json()["results"] == [{"alert_id": opened["alert_id"], "result": "resolved"}]
        broken = http.post(
            "/api/v1/grafana/webhook", json={"alerts": "nope"}, headers=bearer(tokens["eve"])
        )
        assert broken.status_code == 422


def test_rate_limit_per_client(conn, crew_db, tokens):
    # One client is one bucket whatever token it shows; a trusted proxy's
    # X-Forwarded-For names the client, so clients behind it get their own.
    app = create_app(conn.database_url, rate_per_s=0.5, burst=3, trusted_proxies=["127.0.0.1"])
    with BackgroundServer(app, free_port()) as server, httpx.Client(base_url=server.url) as http:
        codes = [
            http.get("/api/v1/me", headers=bearer(tokens["ana"])).status_code for _ in range(5)
        ]
        same_client = http.get("/api/v1/me", headers=bearer(tokens["ben"]))
        elsewhere = {**bearer(tokens["ben"]), "X-Forwarded-For": "203.0.113.7"}
        other_client = http.get("/api/v1/me", headers=elsewhere).status_code
    assert codes == [200, 200, 200, 429, 429]
    assert same_client.status_code == 429
    assert int(same_client.headers["Retry-After"]) >= 1
    assert other_client == 200


def test_text_postgres_cannot_store_is_a_422_not_a_500(api, tokens, two_alerts):
    # Found by schemathesis: NUL characters in JSON strings.
    north, _ = two_alerts
    with httpx.Client(base_url=api) as http:
        r = http.post(
            f"/api/v1/alerts/{north}/comments",
            json={"body": "a\u0000b"},
            headers=bearer(tokens["ana"]),
        )
        assert r.status_code == 422
        assert "NUL" in r.json()["detail"][0]["msg"]
        assert http.get("/api/v1/me", headers=bearer(tokens["ana"])).status_code == 200


def test_a_query_parameter_outside_the_spec_is_a_422(api, tokens, two_alerts):
    # Found by schemathesis: FastAPI silently ignored unknown and repeated parameters.
    with httpx.Client(base_url=api, headers=bearer(tokens["ana"])) as http:
        assert (
            http.get("/api/v1/alerts", params={"status": ["open", "resolved"]}).status_code == 200
        )
        typo = http.get("/api/v1/alerts", params={"staus": "open"})
        assert typo.status_code == 422
        assert typo.json()["detail"][0]["loc"] == ["query", "staus"]
        twice = http.get("/api/v1/alerts?zone=north&zone=south")
        assert twice.status_code == 422
        assert twice.json()["detail"][0]["msg"] == "given more than once"
        assert http.get("/api/v1/me?x=1").status_code == 422
        assert http.get("/api/v1/alerts", params={"limit": 5, "zone": "north"}).status_code == 200
