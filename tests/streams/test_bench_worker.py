"""``citywatch bench worker`` on a small slice: every figure it promises is measured."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from citywatch.cli import main

pytestmark = pytest.mark.stack


def test_bench_worker_reports_throughput_latency_cpu_memory_and_restart(
    conn, db, base_settings, trained_models
):
    result = CliRunner().invoke(
        main,
        [
            "bench",
            "worker",
            "--json",
            "--messages",
            "600",
            "--devices",
            "30",
            "--latency-seconds",
            "2",
        ],
        env={"CITYWATCH_HOME": str(base_settings.home), "CITYWATCH_PARTITIONS": "2"},
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert figures["worker_stored"] == figures["messages"]  # simulator readings are all valid
    assert figures["worker_readings_per_s"] > 0
    assert figures["baseline_trivial_agent_per_s"] > 0
    # The batch agent: take_events at the worker's batch size, JSON parse, ack.
    assert figures["baseline_batch_agent_per_s"] > 0
    assert figures["worker_vs_batch_agent"] > 0
    assert figures["worker_vs_batch_agent"] == pytest.approx(
        figures["worker_readings_per_s"] / figures["baseline_batch_agent_per_s"], rel=0.01
    )
    # The I/O floor stored and published every message, and left the tables to the worker.
    assert figures["io_floor_stored"] == figures["io_floor_published"] == figures["messages"]
    assert figures["io_floor_state_bytes"] > 100
    assert figures["worker_vs_io_floor"] == pytest.approx(
        figures["worker_readings_per_s"] / figures["baseline_io_floor_per_s"], rel=0.01
    )
    assert figures["worker_cpu_us_per_reading"] > 0
    assert figures["worker_rss_mb"] > 50
    assert figures["restart_ready_s"] > 0
    # Every latency-phase reading was scored, each after it was sent.
    assert figures["latency_scored"] == figures["latency_sent"] > 0
    assert 0 < figures["latency_p50_s"] <= figures["latency_p99_s"] < 30


def test_bench_pipeline_reports_cpu_per_reading_beside_json_parsing(base_settings, trained_models):
    result = CliRunner().invoke(
        main,
        ["bench", "pipeline", "--json", "--devices", "20", "--readings-per-device", "30"],
        env={"CITYWATCH_HOME": str(base_settings.home)},
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert figures["readings"] == 600
    assert figures["pipeline_us_per_reading"] > figures["baseline_json_loads_us_per_reading"] > 0
