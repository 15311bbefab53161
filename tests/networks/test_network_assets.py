"""Water networks as assets: spec from an EPANET model, stored as devices with coordinates."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from citywatch.cli import main
from core.assets import ASSET_TYPES
from networks.assets import NetworkSpecError, network_spec
from storage.water_networks import district_sensors, list_networks, store_network

HANOI_CENTRE = (21.0285, 105.8542)


def test_sensor_types_come_from_the_catalogue():
    assert ASSET_TYPES["network_pressure"].metric("pressure").unit == "m"
    assert ASSET_TYPES["network_flow"].metric("flow").in_range(-10.0)
    assert ASSET_TYPES["network_level"].metric_names == ("level",)


def test_default_spec_is_one_district_metered_at_the_source(leakdb_dir):
    spec = network_spec(leakdb_dir / "Hanoi_CMH.inp", "hanoi", origin=HANOI_CENTRE)
    assert [d.district_id for d in spec.districts] == ["all"]
    kinds = [s.asset_type for s in spec.sensors]
    assert kinds.count("network_pressure") == 31 and kinds.count("network_flow") == 1
    inlet = next(s for s in spec.sensors if s.asset_type == "network_flow")
    assert inlet.element_kind == "link" and inlet.element_id == "1"
    lats = [s.lat for s in spec.sensors]
    # Hanoi's model spans a few km: the sensors sit around the given centre.
    assert max(lats) - min(lats) < 0.1 and abs(sum(lats) / len(lats) - HANOI_CENTRE[0]) < 0.05


def test_net1_tank_gets_a_level_sensor(leakdb_dir):
    spec = network_spec(leakdb_dir / "Net1.inp", "net1")
    level = [s for s in spec.sensors if s.asset_type == "network_level"]
    assert [s.element_id for s in level] == ["2"] and level[0].lat is None


def test_districts_file_is_checked(leakdb_dir, tmp_path):
    bad = tmp_path / "d.toml"
    bad.write_text('[districts.north]\nnodes = ["2", "99"]\n')
    with pytest.raises(NetworkSpecError, match="'99' is not a junction"):
        network_spec(leakdb_dir / "Hanoi_CMH.inp", "hanoi", districts_file=bad)
    bad.write_text('[districts.a]\nnodes = ["2"]\n[districts.b]\nnodes = ["2"]\n')
    with pytest.raises(NetworkSpecError, match="already in a"):
        network_spec(leakdb_dir / "Hanoi_CMH.inp", "hanoi", districts_file=bad)
    with pytest.raises(NetworkSpecError, match="network id"):
        network_spec(leakdb_dir / "Hanoi_CMH.inp", "Hanoi City")


@pytest.mark.stack
def test_register_stores_devices_and_sensors_idempotently(db, conn, leakdb_dir, tmp_path):
    db.execute("TRUNCATE water_networks CASCADE")
    districts = tmp_path / "districts.toml"
    districts.write_text(
        '[districts.north]\nnodes = ["2", "3", "4"]\ninlets = ["1"]\n'
        '[districts.south]\nnodes = ["20", "21"]\ninlets = ["20"]\n'
    )
    spec = network_spec(
        leakdb_dir / "Hanoi_CMH.inp", "hanoi", districts_file=districts, origin=HANOI_CENTRE
    )
    assert store_network(conn.database_url, spec) == {"districts": 2, "sensors": 7}
    assert store_network(conn.database_url, spec) == {"districts": 2, "sensors": 7}
    sensors = district_sensors(conn.database_url, "hanoi")
    assert len(sensors) == 7
    p21 = next(s for s in sensors if s["device_id"] == "hanoi-p-21")
    assert p21["asset_id"] == "hanoi.south" and p21["asset_type"] == "network_pressure"
    assert p21["lat"] is not None and p21["lon"] is not None
    zone = db.execute("SELECT zone FROM devices WHERE device_id = 'hanoi-q-1'").fetchone()[0]
    assert zone == "hanoi.north"
    # Registering with one district removes the other and its sensors (not the devices).
    out = CliRunner().invoke(
        main,
        [
            "networks",
            "register",
            str(leakdb_dir / "Hanoi_CMH.inp"),
            "--network",
            "hanoi",
            "--origin",
            "21.0285,105.8542",
            "--json",
        ],
        obj=None,
        env={"CITYWATCH_DATABASE_URL": conn.database_url, "CITYWATCH_KAFKA": conn.kafka},
    )
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["districts"] == 1
    assert {r["network_id"]: r["sensors"] for r in list_networks(conn.database_url)} == {
        "hanoi": 32
    }
