"""The demo's routing rule: only well-formed readings of radio devices become uplinks."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from ingest.faults import FaultInjector
from ingest.sim_records import reading_bytes
from ingest.simulator import FleetSimulator
from services.lorawan_demo import LorawanLeg

# Corruptions that must reach the worker as the bytes they are (never re-encoded).
WORKER_FAULTS = {"malformed_json", "schema", "nan_value", "out_of_range", "unknown_device"}


def test_only_well_formed_readings_take_the_radio_route(base_settings) -> None:
    fleet = FleetSimulator(n_devices=8, seed=4)
    leg = LorawanLeg(base_settings, conn=None, mqtt_url="mqtt://unused:1883")  # type: ignore[arg-type]
    leg.devices = {d.device_id: d for d in fleet.devices[:4]}
    faults = FaultInjector(1.0, seed=2)
    seen: set[str] = set()
    start = datetime.now(UTC)
    for tick in range(10):
        readings, _ = fleet.step(start + timedelta(seconds=tick))
        for seq, r in enumerate(readings):
            raw = reading_bytes(r, seq)
            key = r.device.device_id.encode()
            radio = leg._radio_reading(key, raw)
            assert (radio is not None) == (r.device.device_id in leg.devices)
            if radio is not None:
                assert radio[0] == r.device.device_id
                assert radio[1] == json.loads(raw)["metrics"]
            for bad, reason in faults.maybe_corrupt(raw, r):
                if reason in WORKER_FAULTS:
                    assert leg._radio_reading(key, bad) is None, reason
                    seen.add(reason)
    assert seen == WORKER_FAULTS
