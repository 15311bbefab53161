"""What real network servers send: identity without DevEUI, time rules, absent radio
values, arrays of uplinks, simulated uplinks, and the conformance check."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner
from psycopg.types.json import Jsonb

from citywatch.cli import main
from ingest.lorawan.conformance import RecordingPublisher, check_message
from ingest.lorawan.dedup import FrameDeduplicator
from ingest.lorawan.processor import AutoRegister, UplinkProcessor
from ingest.lorawan.registry import RegistryError, find_entry, parse_registry
from ingest.lorawan.uplink import parse_uplink, split_messages
from storage.training_data import fetch_readings

FIXTURES = Path(__file__).parent / "fixtures"
EXAMPLES = Path(__file__).resolve().parents[3].parent / "shared" / "datasets" / "lorawan-examples"
ZERO = "0001-01-01T00:00:00Z"


def tts(**over) -> dict:
    doc = json.loads((FIXTURES / "tts_up.json").read_text())
    doc.update(over)
    return doc


def registry(*rows) -> dict:
    base = {"asset_type": "water_pump", "codec": "passthrough", "metric_map": {"t": "flow"}}
    return parse_registry([base | r for r in rows])


def tts_sim(device_id: str, value: float, received: str, **ids) -> dict:
    return {
        "end_device_ids": {"device_id": device_id, "application_ids": {"application_id": "a"}}
        | ids,
        "received_at": received,
        "uplink_message": {"f_port": 1, "decoded_payload": {"t": value}, "received_at": ZERO},
        "simulated": True,
    }


# --------------------------------------------------------------------------- time rules


def test_zero_time_is_unset_at_every_level() -> None:
    doc = tts(received_at="2026-01-02T03:04:05Z")
    doc["uplink_message"]["received_at"] = ZERO
    uplink = parse_uplink(doc)
    assert uplink.received_at == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert uplink.time_source == "network"
    # No valid message time: the earliest gateway time, zero times skipped.
    doc["received_at"] = ZERO
    rx = doc["uplink_message"]["rx_metadata"]
    rx[0]["time"], rx[0]["received_at"] = ZERO, ZERO
    rx[1]["time"] = "2026-01-02T03:04:00.5Z"
    uplink = parse_uplink(doc)
    assert (uplink.received_at.second, uplink.time_source) == (0, "gateway")
    # Nothing anywhere: the ingest moment.
    for item in rx:
        item.pop("time", None)
        item.pop("received_at", None)
    now = datetime(2030, 5, 6, tzinfo=UTC)
    assert parse_uplink(doc, now=now).received_at == now
    # ChirpStack: protobuf's zero Timestamp (the epoch) is unset too.
    cs = json.loads((FIXTURES / "chirpstack_up.json").read_text())
    cs["time"] = "1970-01-01T00:00:00Z"
    assert parse_uplink(cs).time_source == "gateway"


# --------------------------------------------------------------------------- radio values


def test_absent_radio_values_stay_absent_in_the_reading() -> None:
    doc = tts()
    for item in doc["uplink_message"]["rx_metadata"]:
        for key in ("rssi", "channel_rssi", "snr"):
            item.pop(key, None)
    publisher = RecordingPublisher()
    entry = {"dev_eui": doc["end_device_ids"]["dev_eui"], "codec": "cayenne_lpp", "asset_id": "p"}
    processor = UplinkProcessor(
        publisher,
        registry(entry | {"metric_map": {"temperature_1": "bearing_temp"}}),
        channel="http",
        dedup=FrameDeduplicator(window_s=0),
    )
    doc["uplink_message"]["frm_payload"] = "AWcBEA=="  # LPP: channel 1 temperature 27.2
    processor.offer("http", json.dumps(doc).encode(), 0.0)
    ((_key, value),) = publisher.readings
    source = json.loads(value)["source"]
    assert source["snr"] is None and source["rssi"] is None


# --------------------------------------------------------------------------- identity


def test_registry_finds_a_device_by_dev_eui_or_device_id() -> None:
    reg = registry(
        {"dev_eui": "70B3D57ED0000042", "device_id": "pump-station-7", "asset_id": "p7"},
        {"device_id": "abp-only", "asset_id": "p8"},
    )
    assert set(reg) == {"70b3d57ed0000042", "abp-only"}
    assert find_entry(reg, None, "pump-station-7").asset_id == "p7"
    assert find_entry(reg, "70b3d57ed0000042", None).asset_id == "p7"
    assert find_entry(reg, None, "abp-only").key == "abp-only"
    assert find_entry(reg, None, "nobody") is None
    with pytest.raises(RegistryError, match="registered twice"):
        registry({"device_id": "twin", "asset_id": "a"}, {"device_id": "twin", "asset_id": "b"})
    with pytest.raises(RegistryError, match="network-server id"):
        registry({"device_id": "Bad Id!", "asset_id": "a"})


def test_uplink_without_dev_eui_reaches_the_asset_of_its_device_id() -> None:
    doc = tts_sim("pump-station-7", 4.5, "2026-01-02T03:04:05Z")
    reg = registry({"dev_eui": "70b3d57ed0000042", "device_id": "pump-station-7", "asset_id": "p7"})
    publisher = RecordingPublisher()
    processor = UplinkProcessor(publisher, reg, dedup=FrameDeduplicator(window_s=0))
    processor.offer("v3/a/devices/pump-station-7/up", json.dumps(doc).encode(), 0.0)
    ((key, value),) = publisher.readings
    reading = json.loads(value)
    # One identity downstream: the registry entry's key, whichever id the uplink had.
    assert key == b"70b3d57ed0000042" and reading["device_id"] == "70b3d57ed0000042"
    assert reading["asset_id"] == "p7" and reading["source"]["simulated"] is True


def test_auto_registration_of_a_device_known_only_by_id() -> None:
    publisher = RecordingPublisher()
    processor = UplinkProcessor(
        publisher,
        {},
        channel="http",
        dedup=FrameDeduplicator(window_s=0),
        auto_register=AutoRegister("water_pump"),
    )
    doc = tts_sim("abp-1", 1.0, "2026-01-02T03:04:05Z")
    doc["uplink_message"]["decoded_payload"] = {"flow": 3.0}
    processor.offer("http", json.dumps(doc).encode(), 0.0)
    assert processor.registry["abp-1"].asset_id == "auto-abp-1"
    assert json.loads(publisher.readings[0][1])["device_id"] == "abp-1"


# --------------------------------------------------------------------------- arrays


def test_one_bad_element_of_an_array_dead_letters_alone() -> None:
    good = [tts_sim("dev1", v, f"2026-01-02T03:0{v}:00Z") for v in (1, 2)]
    body = json.dumps([good[0], {"end_device_ids": {}}, "text", good[1]]).encode()
    publisher = RecordingPublisher()
    processor = UplinkProcessor(
        publisher,
        registry({"device_id": "dev1", "asset_id": "d1"}),
        channel="http",
        dedup=FrameDeduplicator(window_s=0),
    )
    processor.offer("http", body, 0.0)
    assert len(publisher.readings) == 2
    assert [d["reason"] for d in publisher.deadletters] == ["not_uplink", "schema"]
    assert processor.stats.received == 4
    ids = {d["dl_id"] for d in publisher.deadletters}
    assert len(ids) == 2  # each element its own, stable dead letter
    again = RecordingPublisher()
    processor.publisher = again
    processor.offer("http", body, 1.0)
    assert {d["dl_id"] for d in again.deadletters} == ids


def test_split_messages_recognises_arrays_and_streams_only() -> None:
    one = json.dumps(tts()).encode()
    assert split_messages(one) is None
    assert split_messages(json.dumps(tts(), indent=2).encode()) is None  # one object, many lines
    stream = b'{"result": {"a": 1}}\n{"result": {"a": 2}}\n'
    assert split_messages(stream) == [b'{"result": {"a": 1}}', b'{"result": {"a": 2}}']
    assert split_messages(b"[1, {}]") == [b"1", b"{}"]
    assert split_messages(b"[1, ") is None  # left to the parser, which names the fault
    assert split_messages(b"[]") == []
    assert split_messages(b"\xef\xbb\xbf [1]") == [b"1"]  # behind a UTF-8 byte order mark


# --------------------------------------------------------------------------- simulated


def test_simulated_readings_are_kept_out_of_training_by_default(db) -> None:
    ts = datetime(2026, 1, 1, tzinfo=UTC)
    for device, source in (("real", {}), ("sim", {"simulated": True})):
        db.execute(
            "INSERT INTO readings (ts, device_id, asset_id, asset_type, metrics, source)"
            " VALUES (%s, %s, %s, 'water_pump', %s, %s)",
            (ts, device, device, Jsonb({"flow": 1.0}), Jsonb(source)),
        )
    assert [r[0] for r in fetch_readings(db)] == ["real"]
    assert [r[0] for r in fetch_readings(db, include_simulated=True)] == ["real", "sim"]


# --------------------------------------------------------------------------- conformance


def test_check_message_names_the_reason() -> None:
    assert check_message(b"{nope")["reason"].startswith("malformed_json")
    result = check_message(json.dumps(tts_sim("dev1", 1, ZERO)).encode())
    assert result["result"] == "reading" and result["uplinks"][0]["time_source"] == "ingest"
    strict = check_message(json.dumps(tts_sim("dev1", 1, ZERO)).encode(), strict=True)
    assert strict["result"] == "deadletter" and strict["reason"].startswith("unknown_device")


@pytest.mark.skipif(not EXAMPLES.is_dir(), reason="shared lorawan-examples not present")
def test_ingest_check_agrees_with_the_shared_manifest() -> None:
    result = CliRunner().invoke(main, ["ingest", "check", str(EXAMPLES), "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert len(rows) == 21 and all(r["agrees"] for r in rows)
    by_file = {r["file"]: r for r in rows}
    mqtt_doc = by_file["tts_docs_mqtt.json"]["uplinks"][0]
    assert (mqtt_doc["ts"], mqtt_doc["time_source"]) == (
        "2019-01-29T13:02:34.981000+00:00",
        "gateway",
    )
    cli = by_file["tts_docs_storage_cli.json"]
    assert cli["readings"] == 2 and all(u["simulated"] for u in cli["uplinks"])
    assert all(u["ts"].startswith("2021-02-04") for u in cli["uplinks"])
    assert by_file["tts_docs_webhook_filtered.json"]["reason"].startswith("schema")


def test_ingest_import_publishes_each_element_of_an_export(
    conn, registry_db, isolated, tmp_path
) -> None:
    from storage.device_registry import store_registry
    from streams.topics import DEADLETTER, READINGS
    from tests.ingest.conftest import read_topic
    from tests.ingest.lorawan.test_lorawan_cli import env_for

    row = {"device_id": "dev1", "asset_id": "d1", "asset_type": "water_pump"}
    with psycopg.connect(conn.database_url) as pg:
        store_registry(
            pg, [row | {"codec": "passthrough", "metric_map": {"t": "flow"}}], source="t"
        )
    export = tmp_path / "storage.json"
    good = [tts_sim("dev1", v, f"2026-01-02T0{v}:00:00Z") for v in (1, 2, 3)]
    for v, doc in enumerate(good):
        doc["uplink_message"]["f_cnt"] = 10 + v
    export.write_text(json.dumps([good[0], {"end_device_ids": {}}, good[1], good[2]]))
    stream = tmp_path / "stream.ndjson"
    stream.write_text("\n".join(json.dumps({"result": g}) for g in good) + "\n")
    result = CliRunner().invoke(
        main,
        ["ingest", "import", "--json", str(export), str(stream)],
        env=env_for(conn, isolated),
    )
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output.splitlines()[-1])
    # The stream repeats the export's three frames: copies, not new readings.
    assert (stats["received"], stats["published"], stats["duplicates"]) == (7, 3, 3)
    assert stats["deadletters_by_reason"] == {"not_uplink": 1}
    readings = read_topic(conn.kafka, isolated.topic(READINGS), 3)
    letters = read_topic(conn.kafka, isolated.topic(DEADLETTER), 1)
    assert sorted(json.loads(r.value)["ts"][:13] for r in readings) == [
        "2026-01-02T01",
        "2026-01-02T02",
        "2026-01-02T03",
    ]
    assert all(json.loads(r.value)["source"]["simulated"] for r in readings)
    assert len(letters) == 1 and dict(letters[0].headers)["deadletter_id"].startswith(b"file:")
