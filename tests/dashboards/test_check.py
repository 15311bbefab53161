"""`citywatch dashboards check`: every panel's SQL, macro-expanded, against a real run."""

from __future__ import annotations

import json
import uuid

import pytest
from click.testing import CliRunner

from citywatch.cli import main
from dashboards import catalog
from dashboards.check import run_checks

pytestmark = pytest.mark.stack


def test_every_panel_returns_rows_from_a_real_pipeline_run(filled_db):
    result = CliRunner().invoke(
        main, ["dashboards", "check", "--json", "--database-url", filled_db]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["errors"] == []
    assert report["panels"] >= 12
    assert report["panels_with_rows"] == report["panels"], report["panels_without_rows"]
    assert report["variables"]["asset"]


@pytest.fixture(scope="module")
def empty_database_url(conn):
    """A second, freshly migrated database on the same server: every table empty."""
    import psycopg

    from storage.migrations import migrate

    name = f"dash_empty_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(conn.database_url, autocommit=True) as c:
        c.execute(f"CREATE DATABASE {name}")
    url = conn.database_url.rsplit("/", 1)[0] + f"/{name}"
    migrate(url)
    yield url
    with psycopg.connect(conn.database_url, autocommit=True) as c:
        c.execute(f"DROP DATABASE {name} WITH (FORCE)")


def test_check_fails_when_panels_come_back_empty(empty_database_url):
    result = CliRunner().invoke(
        main, ["dashboards", "check", "--json", "--database-url", empty_database_url]
    )
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    # Gap-filled series still return rows, but rows of zeros and NULLs are not data.
    assert report["panels_with_rows"] == 0
    assert len(report["panels_without_rows"]) == report["panels"]


def test_broken_sql_is_reported_per_query_not_raised(empty_database_url):
    board = json.loads((catalog.JSON_DIR / "fleet-overview.json").read_text())
    board["panels"][0]["targets"][0]["rawSql"] = "SELECT nope FROM $__timeFilter(ts)"
    board["panels"][1]["targets"][0]["rawSql"] = "SELECT * FROM no_such_table"
    report = run_checks(empty_database_url, boards=[board])
    failed = {e["title"]: e["error"] for e in report["errors"]}
    assert set(failed) == {board["panels"][0]["title"], board["panels"][1]["title"]}
    assert "SyntaxError" in failed[board["panels"][0]["title"]]
    assert "UndefinedTable" in failed[board["panels"][1]["title"]]
