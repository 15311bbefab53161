"""Device registry loading and uplink -> citywatch reading mapping."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from core.assets import ASSET_TYPES
from core.wire import READING_FIELDS
from ingest.lorawan.codecs import BinaryProfileCodec, get_codec
from ingest.lorawan.codecs.cayenne_lpp import encode_lpp
from ingest.lorawan.errors import UplinkError
from ingest.lorawan.mapping import flatten, map_uplink, map_with_registry
from ingest.lorawan.registry import DeviceEntry, RegistryError, load_registry, parse_registry
from ingest.lorawan.uplink import parse_uplink

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def registry() -> dict[str, DeviceEntry]:
    return load_registry(FIXTURES / "registry.yaml")


def fixture_uplink(name: str, **changes: Any) -> Any:
    uplink = parse_uplink((FIXTURES / name).read_bytes())
    return dataclasses.replace(uplink, **changes) if changes else uplink


# --------------------------------------------------------------------------- registry


def test_yaml_registry(registry: dict[str, DeviceEntry]) -> None:
    assert set(registry) == {
        "70b3d57ed0000001",
        "70b3d57ed0000002",
        "70b3d57ed0000042",
        "70b3d57ed0000010",
        "70b3d57ed0000020",
    }
    pump = registry["70b3d57ed0000001"]
    assert (pump.asset_id, pump.asset_type, pump.codec) == (
        "pump-0001",
        "water_pump",
        "profile:water_pump",
    )
    assert (pump.lat, pump.lon) == (52.3731, 4.8922)
    assert pump.installed_at == datetime(2024, 3, 1, 9, tzinfo=UTC)
    lpp = registry["70b3d57ed0000002"]
    assert lpp.installed_at == datetime(2024, 5, 17, tzinfo=UTC)  # a bare date is midnight UTC
    assert dict(lpp.metric_map) == {"temperature_3": "bearing_temp", "analog_in_4": "vibration_rms"}
    with pytest.raises(TypeError):
        lpp.metric_map["x"] = "y"  # type: ignore[index]


def test_csv_registry_matches_yaml(registry: dict[str, DeviceEntry]) -> None:
    from_csv = load_registry(FIXTURES / "registry.csv")
    assert from_csv and all(from_csv[k] == registry[k] for k in from_csv)


def _row(**changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "dev_eui": "70b3d57ed00000aa",
        "asset_id": "pump-9",
        "asset_type": "water_pump",
        "codec": "profile:water_pump",
    }
    row.update(changes)
    return {k: v for k, v in row.items() if v is not ...}


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("not a mapping", "expected a mapping"),
        (_row(dev_eui=...), "dev_eui or device_id is required"),
        (_row(dev_eui="70b3d57ed00000a"), "16 hex digits"),
        (_row(dev_eui=101010101010101), "quote it"),
        (_row(asset_id=""), "asset_id is required"),
        (_row(asset_type="tram"), "asset_type 'tram'"),
        (_row(codec="lpp"), "unknown codec 'lpp'"),
        (_row(codec="profile:lift"), "decodes lift sensors, not water_pump"),
        (_row(lat=91), r"lat must be a number in \[-90"),
        (_row(lon="east"), "lon must be a number"),
        (_row(lat=True), "lat must be a number"),
        (_row(installed_at="2024-03-01T09:00:00"), "needs a timezone"),
        (_row(installed_at="soon"), "not ISO 8601"),
        (_row(metric_map={"temperature_3": "temp"}), "'temp' is not a water_pump metric"),
        (_row(metric_map="temperature_3"), "expected key=value"),
        (_row(metric_map=["a"]), "must be a mapping"),
        (_row(colour="red"), "unknown keys"),
    ],
)
def test_invalid_registry_rows(row: Any, message: str) -> None:
    with pytest.raises(RegistryError, match=message):
        parse_registry([row], source="devices.yaml")


def test_duplicate_dev_euis_are_refused() -> None:
    with pytest.raises(RegistryError, match="registered twice"):
        parse_registry([_row(), _row(dev_eui="70B3D57ED00000AA")])


def test_registry_errors_name_file_and_device(tmp_path: Path) -> None:
    path = tmp_path / "devices.yaml"
    path.write_text(
        "- {dev_eui: 70b3d57ed00000aa, asset_id: x, asset_type: bus, codec: passthrough}\n"
    )
    with pytest.raises(
        RegistryError, match=r"devices\.yaml: device 1 \(70b3d57ed00000aa\): asset_type"
    ):
        load_registry(path)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("devices.json", "[]", "must be .yaml, .yml or .csv"),
        ("devices.yaml", "devices: {a: 1}", "expected a list"),
        ("devices.yaml", "[unclosed", "not valid YAML"),
        ("devices.csv", "dev_eui,asset_id\n", "CSV lacks columns"),
    ],
)
def test_bad_registry_files(tmp_path: Path, name: str, text: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(RegistryError, match=message):
        load_registry(path)
    with pytest.raises(RegistryError, match="cannot read"):
        load_registry(tmp_path / "missing.yaml")


# --------------------------------------------------------------------------- mapping


def test_profile_device_maps_to_a_full_reading(registry: dict[str, DeviceEntry]) -> None:
    reading = map_with_registry(fixture_uplink("chirpstack_up.json"), registry)
    assert reading.key == b"70b3d57ed0000001"
    doc = json.loads(reading.value)
    assert tuple(doc) == READING_FIELDS
    assert doc["device_id"] == "70b3d57ed0000001"
    assert (doc["asset_id"], doc["asset_type"]) == ("pump-0001", "water_pump")
    assert doc["ts"] == "2026-11-24T21:00:00.123456+00:00"
    assert doc["metrics"] == {
        "vibration_rms": 2.31,
        "bearing_temp": 41.5,
        "motor_current": 12.34,
        "pressure": 4.2,
        "flow": 150.5,
    }
    assert doc["source"] == {
        "kind": "lorawan",
        "network": "chirpstack",
        "f_cnt": 1207,
        "f_port": 10,
        "gateways": 2,
        "rssi": -97,
        "snr": 7.5,
        "sf": 9,
        "frequency": 867500000,
        "gateway_ids": ["0016c001f153a14c", "0016c001f1500812"],
        "codec": "profile:water_pump",
        "application_id": "17c82e96-be03-4f38-aef3-f83d48582d97",  # where downlinks go
    }


def test_tts_streetlight_reading(registry: dict[str, DeviceEntry]) -> None:
    reading = map_with_registry(fixture_uplink("tts_up.json"), registry)
    doc = json.loads(reading.value)
    assert set(doc["metrics"]) == set(ASSET_TYPES["streetlight"].metric_names)
    assert doc["source"]["network"] == "tts"
    assert doc["source"]["gateways"] == 2
    assert doc["source"]["rssi"] == -103


def test_lpp_device_uses_the_metric_map_and_lists_dropped_keys(
    registry: dict[str, DeviceEntry],
) -> None:
    payload = encode_lpp(
        {
            "temperature_3": 44.1,
            "analog_in_4": 3.75,
            "temperature_5": 19.0,
            "gps_1": {"latitude": 52.1, "longitude": 4.3, "altitude": 2.5},
        }
    )
    uplink = fixture_uplink(
        "chirpstack_up.json", dev_eui="70b3d57ed0000002", payload=payload, f_port=1
    )
    reading = map_with_registry(uplink, registry)
    assert reading.metrics == {"bearing_temp": 44.1, "vibration_rms": 3.75}
    assert reading.dropped == (
        "temperature_5",
        "gps_1.latitude",
        "gps_1.longitude",
        "gps_1.altitude",
    )
    assert json.loads(reading.value)["source"]["dropped_metrics"] == list(reading.dropped)


def test_passthrough_uses_the_network_server_object() -> None:
    entry = DeviceEntry(
        dev_eui="70b3d57ed0000002",
        asset_id="pump-0002",
        asset_type="water_pump",
        codec="passthrough",
        metric_map={"temperatureSensor.3": "bearing_temp"},
    )
    reading = map_uplink(fixture_uplink("chirpstack_up_object.json"), entry)
    assert reading.metrics == {"bearing_temp": 27.2}
    assert reading.dropped == ("temperatureSensor.5",)


def test_codec_warnings_travel_in_the_source(registry: dict[str, DeviceEntry]) -> None:
    payload = bytes.fromhex("00E7 7FFF 04D2 1068 05E1")  # bearing probe missing
    reading = map_with_registry(fixture_uplink("chirpstack_up.json", payload=payload), registry)
    assert "bearing_temp" not in reading.metrics
    source = json.loads(reading.value)["source"]
    assert source["codec_warnings"] == ["bearing_temp: raw value 32767 means no reading; omitted"]


def test_two_keys_mapped_to_one_metric_keep_the_first() -> None:
    entry = DeviceEntry(
        dev_eui="70b3d57ed0000002",
        asset_id="p",
        asset_type="water_pump",
        codec="cayenne_lpp",
        metric_map={"temperature_1": "bearing_temp", "temperature_2": "bearing_temp"},
    )
    payload = encode_lpp({"temperature_1": 30.0, "temperature_2": 31.0})
    reading = map_uplink(fixture_uplink("chirpstack_up.json", payload=payload), entry)
    assert reading.metrics == {"bearing_temp": 30.0}
    assert "already set" in reading.warnings[0]


def test_unknown_device(registry: dict[str, DeviceEntry]) -> None:
    with pytest.raises(UplinkError) as info:
        map_with_registry(fixture_uplink("chirpstack_up_docs_example.json"), registry)
    assert info.value.reason == "unknown_device"


def test_decode_errors_become_uplink_errors(registry: dict[str, DeviceEntry]) -> None:
    with pytest.raises(UplinkError) as info:
        map_with_registry(fixture_uplink("chirpstack_up.json", payload=b"\x00\x01"), registry)
    assert info.value.reason == "decode_error"
    assert info.value.detail.startswith("profile:water_pump: payload too short")
    lift = registry["70b3d57ed0000020"]  # passthrough, but the server sent no object
    with pytest.raises(UplinkError) as info:
        map_uplink(fixture_uplink("chirpstack_up.json", dev_eui=lift.dev_eui), lift)
    assert info.value.reason == "decode_error"


def test_nothing_left_to_publish_is_no_metrics(registry: dict[str, DeviceEntry]) -> None:
    uplink = fixture_uplink(
        "chirpstack_up.json", dev_eui="70b3d57ed0000002", payload=encode_lpp({"temperature_9": 1.0})
    )
    with pytest.raises(UplinkError) as info:
        map_with_registry(uplink, registry)
    assert info.value.reason == "no_metrics"
    assert "temperature_9" in info.value.detail


@pytest.mark.parametrize("asset_type", sorted(ASSET_TYPES))
def test_every_shipped_profile_yields_a_complete_reading(asset_type: str) -> None:
    codec = get_codec(f"profile:{asset_type}")
    assert isinstance(codec, BinaryProfileCodec)
    port = min(codec.profile.fports or ())
    values = {
        m.name: (m.low + m.high) / 4 if m.low >= 0 else 0.5 for m in ASSET_TYPES[asset_type].metrics
    }
    payload = codec.encode(values, port)
    entry = DeviceEntry("70b3d57ed00000ff", f"{asset_type}-1", asset_type, f"profile:{asset_type}")
    reading = map_uplink(fixture_uplink("chirpstack_up.json", payload=payload, f_port=port), entry)
    assert set(reading.metrics) == set(ASSET_TYPES[asset_type].metric_names)
    assert reading.dropped == ()


def test_flatten_keeps_numbers_only() -> None:
    assert flatten({"a": {"b": 1, "c": "x"}, "d": True, "e": [1]}) == {"a.b": 1, "d": 1}
