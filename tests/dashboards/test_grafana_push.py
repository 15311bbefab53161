"""`citywatch grafana push` against a local fake of Grafana's documented HTTP API."""

from __future__ import annotations

import json

from click.testing import CliRunner

from citywatch.cli import main
from dashboards import alerting, catalog
from dashboards.sdk import DATASOURCE_UID

from .fake_grafana import FakeGrafana

TOKEN = "glsa_test_token"


def _push(fake: FakeGrafana, token: str = TOKEN) -> dict:
    result = CliRunner().invoke(
        main,
        [
            "grafana", "push", "--url", fake.url, "--token", token,
            "--db-password", "s3cret", "--webhook-token", "hook-token",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_push_provisions_everything_then_changes_nothing_the_second_time():
    with FakeGrafana(TOKEN) as fake:
        first = _push(fake)
        assert len(first["created"]) == 1 + 1 + 6 + 4 + 1  # folder, ds, dashboards, rules, cp
        assert first["updated"] == ["policy:root"]  # Grafana's default tree is replaced
        assert fake.folders[alerting.FOLDER_UID]["title"] == alerting.FOLDER_TITLE
        assert fake.secrets[DATASOURCE_UID] == {"password": "s3cret"}
        assert fake.datasources[DATASOURCE_UID]["type"] == "grafana-postgresql-datasource"
        assert set(fake.dashboards) == {b["uid"] for b in catalog.load_boards()}
        assert all(d["meta"]["folderUid"] == "citywatch" for d in fake.dashboards.values())
        assert set(fake.rules) == {r["uid"] for r in alerting.alert_rules()}
        hook = fake.contact_points[alerting.CONTACT_POINT_UID]["settings"]
        assert hook["url"] == "http://alerts:8080/api/v1/grafana/webhook"
        assert (hook["authorization_scheme"], hook["authorization_credentials"]) == (
            "Bearer",
            "hook-token",
        )
        assert fake.policy["receiver"] == alerting.CONTACT_POINT

        fake.requests.clear()
        second = _push(fake)
        assert fake.writes() == []
        assert second["writes"] == 0 and second["created"] == second["updated"] == []
        assert len(second["unchanged"]) == first["writes"]


def test_push_rewrites_only_what_drifted():
    with FakeGrafana(TOKEN) as fake:
        _push(fake)
        # Someone edits a dashboard and a rule by hand in Grafana.
        fake.dashboards["citywatch-fleet"]["dashboard"]["title"] = "edited"
        fake.rules["citywatch-pipeline-stalled"]["for"] = "1h"
        fake.requests.clear()
        report = _push(fake)
        assert sorted(report["updated"]) == [
            "alert-rule:citywatch-pipeline-stalled",
            "dashboard:citywatch-fleet",
        ]
        assert sorted(fake.writes()) == [
            ("POST", "/api/dashboards/db"),
            ("PUT", "/api/v1/provisioning/alert-rules/citywatch-pipeline-stalled"),
        ]
        assert fake.dashboards["citywatch-fleet"]["dashboard"]["title"] != "edited"


def test_push_with_a_wrong_token_fails_clearly():
    with FakeGrafana(TOKEN) as fake:
        result = CliRunner().invoke(
            main,
            ["grafana", "push", "--url", fake.url, "--token", "wrong", "--webhook-token", "x"],
        )
        assert result.exit_code == 1
        assert "answered 401" in result.output
        assert fake.writes() == []
