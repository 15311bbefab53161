"""The worker's batch steps alone, timed, without broker or database: ``bench pipeline``
reports their CPU per reading, and ``bench worker`` sizes its I/O floor's device states
from the states they pack."""

from __future__ import annotations

import gc
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from core.settings import Settings
from services.errors import ServiceError

__all__ = ["run_pipeline"]


@dataclass
class _Message:
    """What the pipeline reads of a Kafka message."""

    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes


def run_pipeline(
    settings: Settings, devices: int, readings_per_device: int
) -> tuple[float, float, int, list[int]]:
    """The worker's batch steps over a simulated fleet's history, timed.

    Returns the pipeline's CPU seconds, json.loads' CPU seconds over the same
    messages, the number of messages, and the size of each device's packed state
    at the end (what the worker writes to its table and changelog).
    """
    from ingest.sim_records import reading_bytes
    from ingest.simulator import FleetSimulator
    from models.bundle_store import load_champion
    from streams.device_states import DeviceStates
    from streams.explanations import ExplainPolicy
    from streams.heap import collect_on_schedule
    from streams.pipeline import Limits, plan_readings

    bundle = load_champion(settings.models_path)
    if bundle is None:
        raise ServiceError("no champion model: run `citywatch train --synthetic` first")
    fleet = FleetSimulator(n_devices=devices, seed=11)
    now = datetime.now(UTC)
    readings, _ = fleet.history(
        readings_per_device, now - timedelta(seconds=readings_per_device + 60), timedelta(seconds=1)
    )
    messages = [
        _Message("readings", 0, i, r.device.device_id.encode(), reading_bytes(r, i))
        for i, r in enumerate(readings)
    ]
    known = {d.device_id: (d.asset_id, d.asset_type) for d in fleet.devices}
    table: dict[bytes, bytes] = {}
    states = DeviceStates(table)
    limits = Limits(
        timedelta(seconds=settings.max_clock_skew_s),
        timedelta(days=settings.max_reading_age_days) if settings.max_reading_age_days else None,
        settings.max_message_bytes,
    )
    explain = ExplainPolicy(timedelta(seconds=settings.explain_interval_s))

    # As the worker does before it starts (streams.app.run_worker); undone below, for a
    # caller that goes on in this process (the tests).
    threshold = gc.get_threshold()
    collect_on_schedule()
    started = time.process_time()
    for i in range(0, len(messages), settings.batch_size):
        plan = plan_readings(
            messages[i : i + settings.batch_size],
            lookup=known.get,
            limits=limits,
            now=now,
            states=states,
            champion=bundle,
            challenger=None,
            explain=explain,
        )
        states.save(plan.states)
    pipeline_s = time.process_time() - started
    started = time.process_time()
    for m in messages:
        json.loads(m.value)
    parse_s = time.process_time() - started
    gc.unfreeze()
    gc.set_threshold(*threshold)
    return pipeline_s, parse_s, len(messages), [len(v) for v in table.values()]
