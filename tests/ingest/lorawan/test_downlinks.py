"""Downlinks: encoder vectors, the servers' documented message formats, and the
adaptive-sampling decisions with their duty-cycle limit."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

import ingest.lorawan
from ingest.lorawan.adaptive import AdaptiveSampler, SamplingPolicy
from ingest.lorawan.codecs.downlink import (
    DownlinkError,
    EncodedDownlink,
    downlink_encoder,
    load_downlink_layout,
)
from ingest.lorawan.downlink import (
    DownlinkTarget,
    chirpstack_downlink,
    tts_downlink,
    tts_webhook_push,
)

PACKAGE = Path(ingest.lorawan.__file__).resolve().parent
VECTORS = sorted(PACKAGE.rglob("test_encode_*.json"))
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _cases():
    for path in VECTORS:
        doc = json.loads(path.read_text())
        for case in doc["cases"]:
            yield pytest.param(doc["codec"], case, id=f"{path.stem}: {case['name']}")


def test_every_shipped_profile_has_an_encoder_with_vectors() -> None:
    profiles = {p.stem for p in (PACKAGE / "profiles").glob("*.yaml")}
    assert {p.stem.removeprefix("test_encode_") for p in VECTORS} == profiles
    assert downlink_encoder("cayenne_lpp") is None and downlink_encoder("passthrough") is None


@pytest.mark.parametrize(("codec", "case"), list(_cases()))
def test_encode_vectors(codec: str, case: dict) -> None:
    encoder = downlink_encoder(codec)
    if "error" in case:
        with pytest.raises(DownlinkError, match=case["error"]):
            encoder.encode(case["command"], case["args"])
        return
    encoded = encoder.encode(case["command"], case["args"])
    assert (encoded.f_port, encoded.payload.hex()) == (case["fport"], case["hex"])
    # The simulated firmware reads back what was sent.
    assert encoder.decode(case["fport"], bytes.fromhex(case["hex"])) == (
        case["command"],
        case["args"],
    )


def test_bad_layouts_and_bytes_are_refused(tmp_path) -> None:
    bad = tmp_path / "x.yaml"
    bad.write_text("name: x\nfport: 0\ncommands: {request_reading: {code: 2}}\n")
    with pytest.raises(DownlinkError, match="fport"):
        load_downlink_layout(bad)
    bad.write_text("name: x\nfport: 5\ncommands: {reboot: {code: 2}}\n")
    with pytest.raises(DownlinkError, match="unknown command"):
        load_downlink_layout(bad)
    encoder = downlink_encoder("profile:water_pump")
    for port, raw in ((10, b"\x02"), (11, b"\x09"), (11, b"\x01\x00"), (11, b"")):
        with pytest.raises(DownlinkError):
            encoder.decode(port, raw)


# --------------------------------------------------------------------------- formats

BEEF = EncodedDownlink(15, bytes.fromhex("beef"))


def test_chirpstack_downlink_is_the_documented_command() -> None:
    # chirpstack-docs src/chirpstack/integrations/mqtt.md, "Scheduling a downlink".
    target = DownlinkTarget("chirpstack", "app-uuid", dev_eui="0102030405060708")
    topic, body = chirpstack_downlink(target, BEEF, confirmed=True)
    assert topic == "application/app-uuid/device/0102030405060708/command/down"
    assert json.loads(body) == {
        "devEui": "0102030405060708",
        "confirmed": True,
        "fPort": 15,
        "data": "vu8=",
    }


def test_tts_downlink_is_the_documented_push() -> None:
    # lorawan-stack-docs .../other-integrations/mqtt/_index.md, "Publishing Downlink Traffic":
    # topic v3/app1@tenant1/devices/dev1/down/push, {"downlinks":[{f_port 15, "vu8=", NORMAL}]}.
    target = DownlinkTarget("tts", "app1", device_id="dev1", tenant="tenant1")
    topic, body = tts_downlink(target, BEEF)
    assert topic == "v3/app1@tenant1/devices/dev1/down/push"
    assert json.loads(body) == {
        "downlinks": [
            {"f_port": 15, "frm_payload": "vu8=", "priority": "NORMAL", "confirmed": False}
        ]
    }
    open_source = DownlinkTarget("tts", "app1", device_id="dev1")
    assert tts_downlink(open_source, BEEF)[0] == "v3/app1/devices/dev1/down/push"
    with pytest.raises(ValueError, match="priority"):
        tts_downlink(target, BEEF, priority="URGENT")


def test_tts_webhook_push_follows_the_documented_api() -> None:
    # lorawan-stack-docs .../webhooks/scheduling-downlinks.md: POST .../down/push, Bearer key.
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={})

    client = httpx.Client(transport=httpx.MockTransport(handler))
    target = DownlinkTarget("tts", "app1", device_id="dev1")
    status = tts_webhook_push(
        "https://thethings.example.com/", "wh1", SecretStr("NNSXS.KEY"), target, BEEF, client=client
    )
    (request,) = seen
    assert status == 200 and request.method == "POST"
    assert str(request.url) == (
        "https://thethings.example.com/api/v3/as/applications/app1/webhooks/wh1/devices/dev1/down/push"
    )
    assert request.headers["authorization"] == "Bearer NNSXS.KEY"
    assert json.loads(request.content)["downlinks"][0]["frm_payload"] == "vu8="


def test_targets_come_from_the_reading_source() -> None:
    cs = DownlinkTarget.from_source(
        "70b3d57ed0000001", {"network": "chirpstack", "application_id": "a"}
    )
    assert cs.dev_eui == "70b3d57ed0000001"
    tts = DownlinkTarget.from_source(
        "70b3d57ed0000002",
        {"network": "tts", "application_id": "a", "ns_device_id": "eui-x", "tenant": "t"},
    )
    assert (tts.device_id, tts.tenant) == ("eui-x", "t")
    assert DownlinkTarget.from_source("x", {"network": "tts", "application_id": "a"}) is None


# --------------------------------------------------------------------------- adaptive sampling


def sampler(encodable=("dev",), **policy):
    return AdaptiveSampler(
        SamplingPolicy(risk_level=0.6, fast_interval_s=300, normal_interval_s=900, **policy),
        lambda device: device in encodable,
    )


def test_risk_speeds_the_sensor_up_and_the_closed_alert_restores_it() -> None:
    s = sampler()
    assert s.on_score("dev", "a", 0.3, T0) == []  # normal and never changed: nothing to send
    (fast,) = s.on_score("dev", "a", 0.7, T0 + timedelta(minutes=5))
    assert (fast.args, fast.refusal) == ({"interval_s": 300}, None)
    assert "risk 0.70" in fast.reason
    assert s.on_score("dev", "a", 0.9, T0 + timedelta(minutes=10)) == []  # already told
    assert s.on_alert("open", "al-1", "dev", "a", 0.9, T0 + timedelta(minutes=11)) == []
    # With the alert open, a low score does not restore it: the alert's close does.
    assert s.on_score("dev", "a", 0.1, T0 + timedelta(minutes=20)) == []
    (back,) = s.on_alert("close", "al-1", "dev", "a", 0.1, T0 + timedelta(hours=2))
    assert back.args == {"interval_s": 900} and back.alert_id == "al-1"
    assert "closed" in back.reason


def test_duty_cycle_holds_a_command_back_and_sends_it_later() -> None:
    s = sampler(min_gap_s=3600)
    s.on_score("dev", "a", 0.7, T0)
    (held,) = s.on_alert("close", "al", "dev", "a", 0.1, T0 + timedelta(minutes=10))
    assert held.refusal.startswith("duty cycle")
    # Recorded once; sent as soon as the gap has passed.
    assert s.on_score("dev", "a", 0.1, T0 + timedelta(minutes=20)) == []
    (sent,) = s.on_score("dev", "a", 0.1, T0 + timedelta(minutes=61))
    assert sent.refusal is None and sent.args == {"interval_s": 900}


def test_at_most_max_per_day() -> None:
    s = sampler(max_per_day=2, min_gap_s=0)
    at = T0
    sent = 0
    for _ in range(5):
        for risk in (0.9, 0.1):
            at += timedelta(minutes=30)
            sent += sum(d.refusal is None for d in s.on_score("dev", "a", risk, at))
    assert sent == 2


def test_a_device_without_an_encoder_is_never_sent_anything() -> None:
    s = sampler(encodable=())
    (refused,) = s.on_score("lpp", "a", 0.9, T0)
    assert refused.refusal == "no downlink encoder for its profile"
    assert s.on_score("lpp", "a", 0.95, T0 + timedelta(minutes=5)) == []  # recorded once
