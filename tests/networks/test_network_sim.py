"""Network mode of the simulator: WNTR readings on the readings topic, leaks as truth."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner

from citywatch.cli import main
from ingest.network_sim import NetworkSimOptions, messages, parse_leak, simulate
from networks.assets import network_spec
from streams.topics import READINGS, ensure_topics
from tests.pipeline_helpers import consume


def test_parse_leak():
    abrupt = parse_leak("13:0.05:6")
    assert (abrupt.node, abrupt.diameter_m, abrupt.start, abrupt.peak) == ("13", 0.05, 12, 12)
    incipient = parse_leak("13:0.05:6:30:48")
    assert (incipient.start, incipient.peak, incipient.end) == (12, 60, 96)
    for bad in ("13:0.05", "13:x:6", "13:0.05:6:2", "13:2:6", "13:0.05:-1"):
        with pytest.raises(ValueError):
            parse_leak(bad)


def test_readings_carry_the_leak(leakdb_dir):
    inp = leakdb_dir / "Hanoi_CMH.inp"
    spec = network_spec(inp, "hanoi")
    opts = NetworkSimOptions(days=1, leaks=(parse_leak("21:0.1:12"),), seed=1)
    leaky = simulate(inp, spec, opts)
    free = simulate(inp, spec, NetworkSimOptions(days=1, seed=1))
    col = leaky.junctions.index("21")
    assert (leaky.pressure[:24] == free.pressure[:24]).all()
    assert (leaky.pressure[24:, col] < free.pressure[24:, col] - 1).all()
    out = list(messages(spec, leaky, datetime(2026, 1, 1, tzinfo=UTC)))
    assert len(out) == 48 * len(spec.sensors)
    step, key, value = out[-1]
    reading = json.loads(value)
    assert step == 47 and key.decode() == reading["device_id"]
    assert reading["asset_id"] == "hanoi.all" and reading["ts"] == "2026-01-01T23:30:00+00:00"
    with pytest.raises(ValueError, match="not a junction"):
        simulate(inp, spec, NetworkSimOptions(days=1, leaks=(parse_leak("1:0.1:1"),)))


@pytest.mark.stack
def test_simulate_network_streams_to_kafka_and_records_truth(db, conn, isolated, leakdb_dir):
    db.execute("TRUNCATE network_leaks")
    ensure_topics(conn.kafka, isolated)
    env = {
        "CITYWATCH_DATABASE_URL": conn.database_url,
        "CITYWATCH_KAFKA": conn.kafka,
        "CITYWATCH_TOPIC_PREFIX": isolated.topic_prefix,
    }
    out = CliRunner().invoke(
        main,
        [
            "simulate",
            "--network",
            "hanoi",
            "--inp",
            str(leakdb_dir / "Hanoi_CMH.inp"),
            "--days",
            "0.5",
            "--leak",
            "13:0.05:2:4",
            "--json",
        ],
        env=env,
    )
    assert out.exit_code == 0, out.output
    figures = json.loads(out.output)
    assert figures["readings"] == 24 * 32 and figures["sensors"] == 32
    records = consume(conn, isolated.topic(READINGS), until=figures["readings"])
    assert len(records) == figures["readings"]
    assert {json.loads(r.value)["asset_type"] for r in records} == {
        "network_pressure",
        "network_flow",
    }
    kind, node = db.execute("SELECT kind, node FROM network_leaks").fetchone()
    assert (kind, node) == ("incipient", "13")
    refused = CliRunner().invoke(
        main,
        [
            "simulate",
            "--network",
            "hanoi",
            "--inp",
            str(leakdb_dir / "Hanoi_CMH.inp"),
            "--leak",
            "13:nope:1",
        ],
        env=env,
    )
    assert refused.exit_code != 0 and "numbers" in refused.output
