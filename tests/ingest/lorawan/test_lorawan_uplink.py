"""Parsing ChirpStack v4 and The Things Stack v3 uplinks from recorded payloads."""

from __future__ import annotations

import base64
import json
import pickle
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ingest.lorawan.errors import UplinkError
from ingest.lorawan.uplink import (
    MAX_MESSAGE_BYTES,
    GatewayRx,
    parse_chirpstack,
    parse_topic,
    parse_tts,
    parse_uplink,
)

FIXTURES = Path(__file__).parent / "fixtures"
CS_TOPIC = "application/17c82e96-be03-4f38-aef3-f83d48582d97/device/70b3d57ed0000001/event/up"
TTS_TOPIC = "v3/city-lighting@ttn/devices/light-0042/up"


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


def raises(reason: str, raw: Any, **kwargs: Any) -> UplinkError:
    with pytest.raises(UplinkError) as info:
        parse_uplink(raw, **kwargs)
    assert info.value.reason == reason, info.value
    return info.value


# --------------------------------------------------------------------------- ChirpStack


def test_chirpstack_up_event() -> None:
    uplink = parse_uplink((FIXTURES / "chirpstack_up.json").read_bytes(), topic=CS_TOPIC)
    assert uplink.network == "chirpstack"
    assert uplink.dev_eui == "70b3d57ed0000001"
    assert (uplink.f_cnt, uplink.f_port) == (1207, 10)
    assert uplink.payload == bytes.fromhex("00E7019F04D2106805E1")
    assert uplink.received_at == datetime(2026, 11, 24, 21, 0, 0, 123456, tzinfo=UTC)
    assert uplink.rx == (
        GatewayRx(
            "0016c001f153a14c", -97, 7.5, datetime(2026, 11, 24, 21, 0, 0, 10521, tzinfo=UTC)
        ),
        GatewayRx(
            "0016c001f1500812", -112, -4.25, datetime(2026, 11, 24, 21, 0, 0, 103117, tzinfo=UTC)
        ),
    )
    assert (uplink.gateway_count, uplink.best_rssi, uplink.best_snr) == (2, -97, 7.5)
    assert (uplink.spreading_factor, uplink.bandwidth, uplink.frequency, uplink.data_rate) == (
        9,
        125000,
        867500000,
        3,
    )
    assert uplink.application_id == "17c82e96-be03-4f38-aef3-f83d48582d97"
    assert uplink.device_name == "pump-0001-node"
    assert uplink.dev_addr == "00189440"
    assert uplink.decoded is None
    assert not uplink.confirmed


def test_chirpstack_docs_example_omits_default_fields() -> None:
    # chirpstack-docs events.md: no fCnt (0 is omitted by the protobuf JSON mapping).
    uplink = parse_uplink(load("chirpstack_up_docs_example.json"))
    assert (uplink.f_cnt, uplink.f_port, uplink.payload) == (0, 1, b"\xaa")
    assert uplink.dev_eui == "0101010101010101"
    assert uplink.spreading_factor == 11


def test_chirpstack_object_and_omitted_snr() -> None:
    uplink = parse_uplink(load("chirpstack_up_object.json"))
    assert uplink.decoded == {"temperatureSensor": {"3": 27.2, "5": 25.5}}
    # An absent SNR stays absent (NULL downstream), never an invented 0 dB.
    assert uplink.rx[0].snr is None
    assert uplink.rx[0].time is not None


def test_chirpstack_without_time_falls_back_to_rx_times() -> None:
    doc = load("chirpstack_up.json")
    del doc["time"]
    assert parse_uplink(doc).received_at == datetime(2026, 11, 24, 21, 0, 0, 10521, tzinfo=UTC)
    for rx in doc["rxInfo"]:
        rx.pop("gwTime", None)
        rx.pop("nsTime", None)
    # No time anywhere: the ingest moment, and the reading says so.
    now = datetime(2030, 1, 2, tzinfo=UTC)
    uplink = parse_uplink(doc, now=now)
    assert (uplink.received_at, uplink.time_source) == (now, "ingest")


def test_chirpstack_non_up_events_are_not_uplinks() -> None:
    raises("not_uplink", load("chirpstack_join.json"))
    raises("not_uplink", load("chirpstack_up.json"), topic=CS_TOPIC.replace("/up", "/status"))


# --------------------------------------------------------------------------- The Things Stack


def test_tts_uplink() -> None:
    uplink = parse_uplink((FIXTURES / "tts_up.json").read_bytes(), topic=TTS_TOPIC)
    assert uplink.network == "tts"
    assert uplink.dev_eui == "70b3d57ed0000042"  # TTS sends upper case
    assert (uplink.f_cnt, uplink.f_port) == (5531, 40)
    assert uplink.payload == bytes.fromhex("015E090A2900025F")
    # The Network Server's reception time, not the Application Server's.
    assert uplink.received_at == datetime(2026, 11, 24, 21, 0, 0, 201585, tzinfo=UTC)
    assert uplink.gateway_ids == ("city-gw-centraal", "packetbroker/eui-7276ff0000062e94")
    assert (uplink.best_rssi, uplink.best_snr) == (-103, 3.25)
    assert (uplink.spreading_factor, uplink.bandwidth) == (10, 125000)
    assert uplink.frequency == 868300000  # a string on the wire (uint64)
    assert uplink.application_id == "city-lighting"
    assert uplink.device_name == "light-0042"
    assert uplink.session_id == "AXA50tHUGUucuzS/bCGMNw=="
    assert uplink.decoded is not None and uplink.decoded["power_factor"] == 0.95


def test_tts_docs_example() -> None:
    uplink = parse_uplink(load("tts_up_docs_example.json"))
    assert uplink.dev_eui == "0004a30b001c0530"
    assert (uplink.f_cnt, uplink.f_port) == (1, 0)  # f_port absent in the docs example
    assert uplink.payload == base64.b64decode("gkHe")
    assert uplink.data_rate == 5
    assert uplink.rx[0] == GatewayRx(
        "gtw1", -35, 5, datetime(2020, 2, 12, 15, 15, 45, 787000, tzinfo=UTC)
    )


def test_tts_rssi_falls_back_to_channel_rssi() -> None:
    doc = load("tts_up.json")
    del doc["uplink_message"]["rx_metadata"][0]["rssi"]
    assert parse_uplink(doc).rx[0].rssi == -103


def test_tts_received_at_falls_back_to_the_top_level() -> None:
    doc = load("tts_up.json")
    del doc["uplink_message"]["received_at"]
    assert parse_uplink(doc).received_at == datetime(2026, 11, 24, 21, 0, 0, 412773, tzinfo=UTC)


def test_tts_non_uplinks() -> None:
    raises("not_uplink", load("tts_join_accept.json"))
    raises("not_uplink", load("tts_up.json"), topic=TTS_TOPIC.replace("/up", "/down/queued"))


def test_tts_single_tenant_topic() -> None:
    uplink = parse_uplink(load("tts_up.json"), topic="v3/city-lighting/devices/light-0042/up")
    assert uplink.device_name == "light-0042"


# --------------------------------------------------------------------------- topics


def test_parse_topic() -> None:
    info = parse_topic(CS_TOPIC)
    assert info is not None
    assert (info.network, info.device, info.event) == ("chirpstack", "70b3d57ed0000001", "up")
    info = parse_topic(TTS_TOPIC)
    assert info is not None
    assert (info.network, info.application_id, info.tenant, info.device) == (
        "tts",
        "city-lighting",
        "ttn",
        "light-0042",
    )
    assert parse_topic("gateway/0016c001f153a14c/event/up") is None


@pytest.mark.parametrize(
    ("fixture", "topic"),
    [
        ("chirpstack_up.json", CS_TOPIC.replace("0000001", "0000009")),
        ("chirpstack_up.json", CS_TOPIC.replace("17c82e96", "deadbeef")),
        ("tts_up.json", TTS_TOPIC.replace("light-0042", "light-0043")),
        ("tts_up.json", TTS_TOPIC.replace("city-lighting", "city-water")),
    ],
)
def test_topic_must_match_the_body(fixture: str, topic: str) -> None:
    raises("topic_mismatch", load(fixture), topic=topic)


def test_topic_picks_the_format_and_unknown_topics_are_refused() -> None:
    raises("schema", load("tts_up.json"), topic=CS_TOPIC)  # a TTS body on a ChirpStack topic
    raises("not_uplink", load("tts_up.json"), topic="gateway/0016c001f153a14c/event/up")


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "malformed_json"),
        (b"{", "malformed_json"),
        (b"\xff\xfe\x00", "malformed_json"),
        (b'{"time": NaN}', "malformed_json"),
        (b"[" * 30_000 + b"]" * 30_000, "malformed_json"),  # deep, under the size limit
        (b"[]", "schema"),
        (b"{}", "schema"),
        (b" " * (MAX_MESSAGE_BYTES + 1), "too_large"),
    ],
)
def test_unparseable_messages(raw: bytes, reason: str) -> None:
    raises(reason, raw)


def _cs(**changes: Any) -> dict[str, Any]:
    doc = load("chirpstack_up.json")
    doc.update(changes)
    return doc


def _tts(**changes: Any) -> dict[str, Any]:
    doc = load("tts_up.json")
    doc["uplink_message"].update(changes)
    return doc


@pytest.mark.parametrize(
    ("doc", "reason", "where"),
    [
        (_cs(data="not base64!"), "bad_base64", "data"),
        (_cs(data="qg=="[:1]), "bad_base64", "data"),
        (_cs(data=42), "schema", "data"),
        (_cs(fCnt=-1), "schema", "fCnt"),
        (_cs(fCnt=2**32), "schema", "fCnt"),
        (_cs(fCnt=1.5), "schema", "fCnt"),
        (_cs(fCnt=True), "schema", "fCnt"),
        (_cs(fPort=256), "schema", "fPort"),
        (_cs(deviceInfo={"devEui": "70b3d57ed000001"}), "schema", "deviceInfo.devEui"),
        (_cs(deviceInfo={}), "schema", "deviceInfo.devEui"),
        (_cs(deviceInfo=None), "schema", "deviceInfo"),
        (_cs(time="yesterday"), "schema", "time"),
        (_cs(time="2026-11-24T21:00:00"), "schema", "time"),
        (_cs(rxInfo={"gatewayId": "x"}), "schema", "rxInfo"),
        (_cs(rxInfo=[{"rssi": -40}]), "schema", "rxInfo[0].gatewayId"),
        (_cs(rxInfo=[{"gatewayId": "a", "rssi": "-40"}]), "schema", "rxInfo[0].rssi"),
        (_cs(object=[1, 2]), "schema", "object"),
        (_cs(confirmed="yes"), "schema", "confirmed"),
        (_tts(frm_payload="@@@@"), "bad_base64", "uplink_message.frm_payload"),
        (_tts(f_cnt="12a"), "schema", "uplink_message.f_cnt"),
        (_tts(rx_metadata=[{"rssi": -40}]), "schema", "uplink_message.rx_metadata[0].gateway_ids"),
        (_tts(settings={"frequency": 868.3}), "schema", "uplink_message.settings.frequency"),
        (_tts(decoded_payload="27.2"), "schema", "uplink_message.decoded_payload"),
    ],
)
def test_schema_errors_name_the_field(doc: dict[str, Any], reason: str, where: str) -> None:
    error = raises(reason, doc)
    assert error.detail.startswith(where), error.detail


def test_tts_without_dev_eui_is_known_by_device_id() -> None:
    doc = load("tts_up.json")
    del doc["end_device_ids"]["dev_eui"]
    uplink = parse_uplink(doc)
    assert uplink.dev_eui is None
    assert uplink.device == uplink.device_name == doc["end_device_ids"]["device_id"]
    del doc["end_device_ids"]["device_id"]
    assert "neither dev_eui nor device_id" in raises("schema", doc).detail


def test_base64_variants_are_accepted() -> None:
    # Protobuf JSON allows URL-safe and unpadded base64.
    for text in ("+/8=", "-_8=", "-_8", "+/8"):
        assert parse_uplink(_cs(data=text)).payload == b"\xfb\xff"
    assert parse_uplink(_cs(data="")).payload == b""


def test_explicit_network_and_direct_parsers() -> None:
    assert parse_uplink(load("tts_up.json"), network="tts").network == "tts"
    raises("schema", load("tts_up.json"), network="chirpstack")
    assert parse_chirpstack(load("chirpstack_up.json")).f_cnt == 1207
    assert parse_tts(load("tts_up.json")).f_cnt == 5531


def test_uplink_error_is_picklable_and_rejects_unknown_reasons() -> None:
    error = pickle.loads(pickle.dumps(UplinkError("schema", "fCnt: missing")))
    assert (error.reason, error.detail, str(error)) == (
        "schema",
        "fCnt: missing",
        "schema: fCnt: missing",
    )
    with pytest.raises(ValueError, match="unknown UplinkError reason"):
        UplinkError("oops", "")
