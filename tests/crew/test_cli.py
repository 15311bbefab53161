"""`citywatch alerts ...` and `citywatch bench alerts` against the session's stack."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from citywatch.cli import main
from crew.auth import authenticate, hash_token
from storage.sinks import PostgresSink, SinkBatch

from .conftest import alert_row

pytestmark = pytest.mark.stack


@pytest.fixture
def run(base_settings):
    def invoke(*args: str) -> str:
        result = CliRunner().invoke(
            main, list(args), env={"CITYWATCH_HOME": str(base_settings.home)}
        )
        assert result.exit_code == 0, result.output
        return result.stdout

    return invoke


def test_admin_commands(run, conn, crew_db):
    token = run("alerts", "user", "add", "dora", "--role", "crew", "--team", "east").strip()
    assert token.startswith("cw_")
    who = authenticate(crew_db, token)
    assert (who.user_name, who.role, who.team) == ("dora", "crew", "east")
    assert crew_db.execute(
        "SELECT count(*) FROM crew_tokens WHERE token_hash = %s", (hash_token(token),)
    ).fetchone() == (1,)
    assert run("alerts", "route", "add", "--team", "east", "--asset-type", "water_pump").startswith(
        "rule "
    )
    assert "type=water_pump zone=* severity>=info -> east" in run("alerts", "route", "list")
    run("alerts", "channel", "add", "east-mail", "email", "east@example.org", "--team", "east")
    run("alerts", "escalation", "--team", "east", "--ack-timeout", "600", "--escalate-to", "ops")
    policy = crew_db.execute(
        "SELECT ack_timeout_s, escalate_to FROM crew_teams WHERE team = 'east'"
    ).fetchone()
    assert policy == (600, "ops")
    sink = PostgresSink(conn.database_url)
    sink.write(SinkBatch(alerts=[alert_row("pump-c")]))
    sink.close()
    listed = json.loads(run("alerts", "list", "--json"))
    assert [(a["asset_id"], a["team"], a["status"]) for a in listed] == [("pump-c", "east", "open")]
    run("alerts", "user", "revoke", "dora")
    assert authenticate(crew_db, token) is None


def test_bench_alerts_prints_its_figures(run, crew_db):
    figures = json.loads(run("bench", "alerts", "--json", "--alerts", "5"))
    assert figures["lifecycle_ok"] is True
    assert figures["unauthorized_rejected"] is True
    assert figures["labels_from_outcomes"] == figures["labels_expected"] == 6
    assert figures["notify_delivered"] == 5
    assert figures["resolve_failures"] == {}
    assert figures["notify_p99_ms"] > 0 and figures["baseline_bare_post_p99_ms"] > 0
    # The benchmark cleans up after itself.
    assert crew_db.execute("SELECT count(*) FROM alerts").fetchone() == (0,)
    assert crew_db.execute("SELECT count(*) FROM labels").fetchone() == (0,)
    assert crew_db.execute("SELECT count(*) FROM crew_users").fetchone() == (0,)
