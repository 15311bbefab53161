"""``citywatch storage ...`` and ``citywatch bench sink`` against a real database."""

from __future__ import annotations

import json

import psycopg
import pytest
from click.testing import CliRunner
from psycopg.conninfo import make_conninfo

from citywatch.cli import main

pytestmark = pytest.mark.stack


def run(args: list[str], database_url: str, **env: str) -> str:
    result = CliRunner().invoke(
        main, args, env={"CITYWATCH_DATABASE_URL": database_url, **env}, catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    return result.output


def test_status_and_maintain_report_partitions_and_rollups(fresh_db):
    status = json.loads(run(["storage", "status", "--json"], fresh_db))
    assert status["flavour"] == "postgres"
    assert {6, 7, 8, 9} <= {m["version"] for m in status["migrations"]}
    assert status["partitions"]["readings"]["days_ready_ahead"] == 7

    done = json.loads(
        run(["storage", "maintain", "--json"], fresh_db, CITYWATCH_PARTITION_DAYS_AHEAD="8")
    )
    assert done["partitions_created"] == 2 and done["flavour"] == "postgres"
    text = run(["storage", "status"], fresh_db)
    assert "days_ready_ahead=8" in text and "pending" in text


def test_bench_sink_prints_sink_and_both_raw_copy_rates(fresh_db):
    admin = make_conninfo(fresh_db, dbname="postgres")
    scratch = "SELECT datname FROM pg_database WHERE datname LIKE 'citywatch_bench_%'"
    with psycopg.connect(admin) as c:
        before = set(c.execute(scratch).fetchall())
    out = run(
        ["bench", "sink", "--json", "--batches", "3", "--batch-size", "100", "--devices", "20"],
        fresh_db,
    )
    figures = json.loads(out)
    assert figures["rows"] == 600
    assert figures["sink_rows_per_s"] > 0 and figures["raw_copy_rows_per_s"] > 0
    assert figures["sink_vs_raw_copy"] == pytest.approx(
        figures["sink_rows_per_s"] / figures["raw_copy_rows_per_s"], rel=0.01
    )
    # The second baseline: the same rows into the real tables of a second scratch database.
    for key in (
        "raw_copy_same_tables_rows_per_s",
        "raw_copy_same_tables_batch_ms",
        "sink_vs_raw_copy_same_tables",
        "raw_copy_batch_ms",
    ):
        assert figures[key] > 0, key
    assert figures["sink_vs_raw_copy"] > 0
    assert figures["sink_vs_raw_copy_same_tables"] == pytest.approx(
        figures["sink_rows_per_s"] / figures["raw_copy_same_tables_rows_per_s"], rel=0.01
    )
    assert figures["rollup_minutes_refreshed"] >= 1
    with psycopg.connect(admin) as c:  # both scratch databases are dropped
        assert set(c.execute(scratch).fetchall()) == before


def test_storage_commands_explain_a_missing_database(tmp_path):
    result = CliRunner().invoke(main, ["storage", "status"], env={"CITYWATCH_HOME": str(tmp_path)})
    assert result.exit_code != 0
    assert "CITYWATCH_DATABASE_URL" in result.output
