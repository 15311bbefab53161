"""The committed JSON is what the code builds, and it round-trips through the SDK."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from dashboards import catalog, provision
from dashboards.macros import Context, MacroError, expand
from dashboards.sdk import DATASOURCE_TYPE, DATASOURCE_UID, dump, from_json


def test_committed_json_matches_the_code():
    assert catalog.drift() == [], "run `citywatch dashboards build` and commit dashboards/json"
    assert provision.drift() == [], "run `citywatch dashboards build` and commit provisioning"


def test_drift_is_detected(tmp_path):
    catalog.write_json(tmp_path)
    path = tmp_path / "fleet-overview.json"
    path.write_text(path.read_text().replace("Riskiest", "Safest"))
    assert catalog.drift(tmp_path) == ["fleet-overview.json"]


@pytest.mark.parametrize("name", sorted(catalog.render_all()))
def test_json_round_trips_through_the_sdk(name):
    text = (catalog.JSON_DIR / name).read_text()
    board = from_json(json.loads(text))
    assert dump(board) == text


def test_five_dashboards_with_at_least_twelve_panels_on_one_datasource():
    boards = catalog.load_boards()
    assert len(boards) == 6
    assert sum(len(b["panels"]) for b in boards) >= 12
    for board in boards:
        for panel in board["panels"]:
            assert panel["datasource"] == {"type": DATASOURCE_TYPE, "uid": DATASOURCE_UID}
            assert panel["targets"], panel["title"]
            if panel["type"] == "timeseries":
                # Bounded points: Grafana's $__interval = range / maxDataPoints.
                assert panel["maxDataPoints"] <= 500


def test_sql_avoids_timescale_only_functions():
    for board in catalog.load_boards():
        for q in catalog.queries(board):
            assert "time_bucket" not in q.sql, (board["uid"], q.title)


def test_gapfill_sql_bucket_count_stays_bounded_for_long_ranges():
    end = datetime(2026, 1, 1, tzinfo=UTC)
    for days in (1, 30, 365):
        ctx = Context(end - timedelta(days=days), end, max_points=300, min_interval="10s")
        assert (days * 86_400_000) / ctx.interval_ms <= 300


def test_macros_expand_as_grafana_documents():
    end = datetime(2026, 1, 1, 12, tzinfo=UTC)
    ctx = Context(end - timedelta(hours=1), end, 360, "10s", {"asset": "pump-7"})
    sql = expand(
        "SELECT $__timeGroupAlias(ts, '5m'), $__timeGroup(ts, $__interval) FROM t"
        " WHERE $__timeFilter(ts) AND a = '$asset' AND b = '${asset}'"
        " AND $__unixEpochFilter(e) AND x > $__timeFrom() AND y < $__timeTo()"
        " AND z = $__interval_ms AND w = '$__interval'",
        ctx,
    )
    assert 'floor(extract(epoch from ts)/300)*300 AS "time"' in sql
    assert "floor(extract(epoch from ts)/10)*10" in sql
    assert "ts BETWEEN '2026-01-01T11:00:00.000Z' AND '2026-01-01T12:00:00.000Z'" in sql
    assert "a = 'pump-7' AND b = 'pump-7'" in sql
    assert (
        f"e >= {int((end - timedelta(hours=1)).timestamp())} AND e <= {int(end.timestamp())}" in sql
    )
    assert "z = 10000 AND w = '10s'" in sql
    with pytest.raises(MacroError):
        expand("SELECT $__nope(x)", ctx)
