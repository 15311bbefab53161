"""The simulator's uplink encoder: real ChirpStack/TTS JSON that our own parser maps back."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import pytest

from ingest.lorawan import UplinkError, map_with_registry, parse_uplink
from ingest.lorawan.registry import parse_registry
from ingest.lorawan.uplink_sim import UplinkEncoder, sim_registry_rows
from ingest.simulator import FleetSimulator


@pytest.fixture(scope="module")
def fleet_registry():
    fleet = FleetSimulator(n_devices=16, seed=4)
    return fleet, parse_registry(sim_registry_rows(fleet.devices))


def test_registry_rows_use_both_codec_families(fleet_registry) -> None:
    _, registry = fleet_registry
    codecs = Counter(e.codec for e in registry.values())
    assert codecs["cayenne_lpp"] > 0
    assert {c for c in codecs if c.startswith("profile:")} == {
        "profile:water_pump",
        "profile:bridge",
        "profile:lift",
        "profile:streetlight",
    }


@pytest.mark.parametrize("fmt", ["chirpstack", "tts"])
def test_good_frames_decode_to_the_simulated_metrics(fleet_registry, fmt) -> None:
    fleet, registry = fleet_registry
    encoder = UplinkEncoder(fmt, registry, gateways=3, seed=1)
    readings, _ = fleet.step(datetime.now(UTC))
    for r in readings:
        messages = encoder.encode(r.device.device_id, r.metrics, r.ts)
        assert len(messages) == 3 and len({m.payload for m in messages}) == 3
        for m in messages:
            uplink = parse_uplink(m.payload, topic=m.topic)
            assert uplink.network == fmt and uplink.dev_eui == r.device.device_id
            assert uplink.f_cnt == m.f_cnt and uplink.received_at == r.ts
            mapped = map_with_registry(uplink, registry)
            for name, value in r.metrics.items():
                # Codecs quantise (0.001 .. 5 units per step); LPP ints round.
                assert mapped.metrics[name] == pytest.approx(value, abs=5.0, rel=1e-2)


def test_frame_counter_counts_up_per_device(fleet_registry) -> None:
    fleet, registry = fleet_registry
    encoder = UplinkEncoder("chirpstack", registry)
    device = fleet.devices[0]
    metrics = fleet.step(datetime.now(UTC))[0][0].metrics
    counters = [
        encoder.encode(device.device_id, metrics, datetime.now(UTC))[0].f_cnt for _ in "abc"
    ]
    assert counters == [0, 1, 2]


@pytest.mark.parametrize("fmt", ["chirpstack", "tts"])
def test_corrupted_frames_fail_with_the_promised_reason(fleet_registry, fmt) -> None:
    fleet, registry = fleet_registry
    encoder = UplinkEncoder(fmt, registry, gateways=3, corrupt_rate=1.0, seed=5)
    seen: Counter[str] = Counter()
    for _ in range(6):
        readings, _ = fleet.step(datetime.now(UTC))
        for r in readings:
            (message,) = encoder.encode(r.device.device_id, r.metrics, r.ts)
            with pytest.raises(UplinkError) as err:
                map_with_registry(parse_uplink(message.payload, topic=message.topic), registry)
            assert err.value.reason == message.corruption
            seen[message.corruption] += 1
    assert set(seen) == {"malformed_json", "bad_base64", "decode_error"}
