"""The alert lifecycle in the database: worker writes, people's actions, routing, labels."""

from __future__ import annotations

import psycopg
import pytest

from crew.lifecycle import apply_grafana_payload, transition
from crew.routing import add_rule
from storage.alerts.access import Actor, NotFoundError, TransitionError
from storage.sinks import PostgresSink, SinkBatch

from .conftest import T0, add_device, alert_row

pytestmark = pytest.mark.stack

ANA = Actor("ana", "crew", "north")
SAM = Actor("sam", "crew", "south")


def actions(db, alert_id):
    return [
        (a, s, who)
        for a, s, who in db.execute(
            "SELECT action, to_status, actor FROM alert_transitions WHERE alert_id = %s"
            " ORDER BY transition_id",
            (alert_id,),
        )
    ]


def test_worker_open_close_is_idempotent_and_never_reopens(conn, crew_db):
    add_rule(crew_db, "north", zone="north")
    add_device(crew_db, "pump-1", "north")
    sink = PostgresSink(conn.database_url)
    opened, closed = alert_row("pump-1", risk=0.95), alert_row("pump-1", status="closed")
    assert sink.write(SinkBatch(alerts=[opened])).alerts == 1
    assert sink.write(SinkBatch(alerts=[opened])).alerts == 0  # replay
    row = crew_db.execute(
        "SELECT status, team, zone, severity FROM alerts WHERE alert_id = %s", (opened.alert_id,)
    ).fetchone()
    assert row == ("open", "north", "north", "critical")
    assert sink.write(SinkBatch(alerts=[closed])).alerts == 1
    sink.write(SinkBatch(alerts=[closed, opened]))  # late replays change nothing
    sink.close()
    row = crew_db.execute(
        "SELECT status, resolved_by, outcome, closed_at FROM alerts WHERE alert_id = %s",
        (opened.alert_id,),
    ).fetchone()
    assert row == ("resolved", "system", "auto", closed.closed_at)
    assert actions(crew_db, opened.alert_id) == [
        ("open", "open", "system"),
        ("resolve", "resolved", "system"),
    ]
    # Automatic resolutions are not crew outcomes: no label.
    assert crew_db.execute("SELECT count(*) FROM labels").fetchone()[0] == 0


def test_people_walk_the_lifecycle_and_the_outcome_becomes_a_label(conn, crew_db, tokens):
    add_rule(crew_db, "north")
    sink = PostgresSink(conn.database_url)
    a = alert_row("pump-2")
    sink.write(SinkBatch(alerts=[a]))
    with psycopg.connect(conn.database_url) as c:
        assert transition(c, a.alert_id, "acknowledge", ANA)["status"] == "acknowledged"
        with pytest.raises(TransitionError):
            transition(c, a.alert_id, "acknowledge", ANA)  # not from 'acknowledged'
        with pytest.raises(TransitionError):
            transition(c, a.alert_id, "assign", ANA, assignee="sam")  # another team
        assert transition(c, a.alert_id, "assign", ANA, assignee="ben")["assigned_to"] == "ben"
        with pytest.raises(NotFoundError):
            transition(c, a.alert_id, "resolve", SAM, outcome="false_alarm")
        with pytest.raises(TransitionError):
            transition(c, a.alert_id, "resolve", ANA, outcome="auto")  # crews give real outcomes
        done = transition(c, a.alert_id, "resolve", ANA, outcome="fault_confirmed")
        with pytest.raises(TransitionError):
            transition(c, a.alert_id, "resolve", ANA, outcome="false_alarm")
    # The worker's close arrives afterwards: the crew's outcome stands.
    sink.write(SinkBatch(alerts=[alert_row("pump-2", status="closed")]))
    sink.close()
    assert done["status"] == "resolved"
    row = crew_db.execute(
        "SELECT status, outcome, resolved_by, acknowledged_by, assigned_by FROM alerts"
    ).fetchone()
    assert row == ("resolved", "fault_confirmed", "ana", "ana", "ana")
    assert actions(crew_db, a.alert_id) == [
        ("open", "open", "system"),
        ("acknowledge", "acknowledged", "ana"),
        ("assign", "assigned", "ana"),
        ("resolve", "resolved", "ana"),
    ]
    label = crew_db.execute(
        "SELECT label_id, asset_id, device_id, outcome, source, window_start,"
        " observed_at = (SELECT closed_at FROM alerts) FROM labels"
    ).fetchall()
    assert label == [
        (f"alert:{a.alert_id}", "pump-2", "dev-pump-2", "fault_confirmed", "alert", T0, True)
    ]


def test_routing_by_asset_type_zone_and_severity(conn, crew_db):
    add_rule(crew_db, "fallback", priority=1000)
    add_rule(crew_db, "lifts", asset_type="lift")
    add_rule(crew_db, "north-critical", zone="north", min_severity="critical", priority=10)
    add_rule(crew_db, "north", zone="north", priority=20)
    for asset, zone, kind in (("p1", "north", "water_pump"), ("p2", "north", "water_pump")):
        add_device(crew_db, asset, zone, kind)
    add_device(crew_db, "l1", "south", "lift")
    add_device(crew_db, "s1", "south", "streetlight")
    sink = PostgresSink(conn.database_url)
    sink.write(
        SinkBatch(
            alerts=[
                alert_row("p1", risk=0.95),
                alert_row("p2", risk=0.75),
                alert_row("l1", risk=0.8, asset_type="lift"),
                alert_row("s1", risk=0.8, asset_type="streetlight"),
            ]
        )
    )
    sink.close()
    teams = dict(crew_db.execute("SELECT asset_id, team FROM alerts"))
    assert teams == {"p1": "north-critical", "p2": "north", "l1": "lifts", "s1": "fallback"}


def test_one_live_alert_per_asset_across_sources(conn, crew_db):
    eve = Actor("eve", "engineer", None)
    payload = {
        "status": "firing",
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "HighVibration", "asset_id": "pump-3"},
                "annotations": {"summary": "vibration high"},
                "startsAt": T0,
                "fingerprint": "abc",
            }
        ],
    }
    with psycopg.connect(conn.database_url) as c:
        [first] = apply_grafana_payload(c, payload, eve)
        assert first["result"] == "opened"
        assert apply_grafana_payload(c, payload, eve)[0]["result"] == "unchanged"
    # The model now flags the same asset: no second live alert, no error.
    sink = PostgresSink(conn.database_url)
    assert sink.write(SinkBatch(alerts=[alert_row("pump-3")])).alerts == 0
    sink.close()
    live = crew_db.execute(
        "SELECT alert_id, source FROM alerts WHERE status <> 'resolved'"
    ).fetchall()
    assert live == [(first["alert_id"], "grafana")]
    with pytest.raises(psycopg.errors.UniqueViolation):
        crew_db.execute(
            "INSERT INTO alerts (alert_id, asset_id, device_id, asset_type, status, opened_at,"
            " peak_risk, last_risk, threshold, model_version)"
            " VALUES ('x', 'pump-3', 'd', 'water_pump', 'acknowledged', now(), 1, 1, 1, 'v')"
        )
    resolved = {**payload, "status": "resolved"}
    resolved["alerts"] = [{**payload["alerts"][0], "status": "resolved", "endsAt": T0}]
    with psycopg.connect(conn.database_url) as c:
        assert apply_grafana_payload(c, resolved, eve)[0]["result"] == "resolved"
    assert crew_db.execute("SELECT status, outcome FROM alerts").fetchone() == (
        "resolved",
        "auto",
    )
