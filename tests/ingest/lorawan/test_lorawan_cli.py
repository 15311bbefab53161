"""`citywatch devices ...` and `citywatch ingest lorawan` as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from click.testing import CliRunner

from citywatch.cli import main
from citywatch.commands.bench_ingest import create_session, raw_receive_rate
from ingest.lorawan.bridge import TOPIC_FILTERS
from ingest.lorawan.uplink_sim import UplinkEncoder
from ingest.simulator import FleetSimulator
from streams.topics import READINGS, ensure_topics
from tests.ingest.conftest import read_topic
from tests.ingest.lorawan.test_bridge import publish_all

FIXTURES = Path(__file__).parent / "fixtures"


def env_for(conn, settings, mqtt_url=None) -> dict[str, str]:
    env = {
        "CITYWATCH_KAFKA": conn.kafka,
        "CITYWATCH_DATABASE_URL": conn.database_url,
        "CITYWATCH_HOME": str(settings.home),
        "CITYWATCH_TOPIC_PREFIX": settings.topic_prefix,
    }
    if mqtt_url:
        env["CITYWATCH_MQTT"] = mqtt_url
    return env


def test_devices_load_list_show_versions(conn, registry_db, base_settings) -> None:
    runner = CliRunner()
    env = env_for(conn, base_settings)
    first = runner.invoke(main, ["devices", "load", str(FIXTURES / "registry.yaml")], env=env)
    assert first.exit_code == 0, first.output
    assert "new version 1" in first.output
    again = runner.invoke(
        main, ["devices", "load", "--json", str(FIXTURES / "registry.yaml")], env=env
    )
    assert json.loads(again.output)["created"] is False
    listed = json.loads(runner.invoke(main, ["devices", "list", "--json"], env=env).output)
    assert listed["version"] == 1 and len(listed["devices"]) >= 4
    shown = runner.invoke(main, ["devices", "show", "70B3D57ED0000001"], env=env)
    assert json.loads(shown.output)["asset_id"] == "pump-0001"
    versions = json.loads(runner.invoke(main, ["devices", "versions", "--json"], env=env).output)
    assert [v["version"] for v in versions] == [1]


def test_bad_registry_file_is_refused_with_the_reason(conn, registry_db, base_settings, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "devices:\n  - {dev_eui: '70b3d57ed0000001', asset_id: x, asset_type: tram,"
        " codec: cayenne_lpp}\n"
    )
    result = CliRunner().invoke(
        main, ["devices", "load", str(bad)], env=env_for(conn, base_settings)
    )
    assert result.exit_code != 0 and "asset_type 'tram'" in result.output
    assert registry_db.execute("SELECT count(*) FROM device_registry_versions").fetchone()[0] == 0


def test_ingest_lorawan_command_bridges_uplinks(
    conn, registry_db, isolated, mqtt_url, tmp_path
) -> None:
    ensure_topics(conn.kafka, isolated)
    fleet = FleetSimulator(n_devices=4, seed=31)
    registry_file = tmp_path / "fleet.yaml"
    registry_file.write_text(
        "devices:\n"
        + "".join(
            f"  - {{dev_eui: '{d.device_id}', asset_id: {d.asset_id}, "
            f"asset_type: {d.asset_type}, codec: 'profile:{d.asset_type}'}}\n"
            for d in fleet.devices
        )
    )
    client_id = f"cli-{isolated.topic_prefix}"
    # The bridge's persistent session exists before it runs: nothing published is missed.
    create_session(mqtt_url, client_id, TOPIC_FILTERS["chirpstack"])
    env = {**os.environ, **env_for(conn, isolated, mqtt_url)}
    cmd = [
        sys.executable,
        "-m",
        "citywatch",
        "ingest",
        "lorawan",
        "--format",
        "chirpstack",
        "--client-id",
        client_id,
        "--registry",
        str(registry_file),
        "--duration",
        "12",
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        from ingest.lorawan.registry import load_registry

        encoder = UplinkEncoder(
            "chirpstack", load_registry(registry_file), gateways=2, application_id=client_id
        )
        readings, _ = fleet.step(datetime.now(UTC))
        messages = [
            m for r in readings for m in encoder.encode(r.device.device_id, r.metrics, r.ts)
        ]
        publish_all(mqtt_url, messages)
        records = read_topic(conn.kafka, isolated.topic(READINGS), len(readings), timeout_s=20)
        output, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, output.decode()[-2000:]
    assert len(records) == len(readings)
    assert b'"published": 4' in output and b'"duplicates": 4' in output


def test_simulate_publishes_uplinks_over_mqtt(conn, registry_db, isolated, mqtt_url) -> None:
    session = f"sim-{isolated.topic_prefix}"
    create_session(mqtt_url, session, TOPIC_FILTERS["tts"])
    args = [
        "simulate",
        "--mqtt",
        mqtt_url,
        "--format",
        "tts",
        "--gateways",
        "3",
        "--corrupt-rate",
        "0.1",
        "--devices",
        "8",
        "--rate",
        "80",
        "--duration",
        "1",
        "--json",
    ]
    result = CliRunner().invoke(main, args, env=env_for(conn, isolated))
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output[result.output.index("{") :])
    uplinks = figures["uplinks"]
    corrupted = sum(uplinks["corrupted"].values())
    assert uplinks["frames"] == figures["produced"] == 80
    assert uplinks["messages"] == 3 * (uplinks["frames"] - corrupted) + corrupted
    # Every message reached the broker: a waiting session receives them all.
    assert raw_receive_rate(mqtt_url, session, uplinks["messages"], timeout_s=30) > 0
    # The simulated devices were registered with their DevEUIs (a registry version).
    registered = registry_db.execute(
        "SELECT count(*) FROM devices WHERE dev_eui IS NOT NULL AND registry_version = 1"
    ).fetchone()[0]
    assert registered == 8
