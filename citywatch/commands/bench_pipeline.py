"""``citywatch bench pipeline``: the worker's batch steps alone, without broker or database."""

from __future__ import annotations

import gc
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import click

from core.settings import Settings


@dataclass
class _Message:
    """What the pipeline reads of a Kafka message."""

    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes


@click.command("pipeline")
@click.option("--devices", type=int, default=200, show_default=True)
@click.option("--readings-per-device", type=int, default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def bench_pipeline(
    settings: Settings, devices: int, readings_per_device: int, as_json: bool
) -> None:
    """CPU per reading of validate, features, scoring and state packing (streams.pipeline).

    The same batches of 500 as the worker, with the champion model, and no
    broker or database: what is left of the worker's CPU per reading (see
    `bench worker`) is Faust, Kafka and the sink. The baseline is parsing the
    same messages with json.loads, in the same run.
    """
    pipeline_s, parse_s, n, _ = run_pipeline(settings, devices, readings_per_device)
    figures = {
        "readings": n,
        "devices": devices,
        "pipeline_us_per_reading": round(1e6 * pipeline_s / n, 1),
        "baseline_json_loads_us_per_reading": round(1e6 * parse_s / n, 1),
    }
    if as_json:
        click.echo(json.dumps(figures, indent=2))
        return
    click.echo(
        f"pipeline (validate, features, score, pack): {figures['pipeline_us_per_reading']:>7.1f}"
        f" µs CPU per reading ({n:,} readings, {devices:,} devices)\n"
        f"json.loads of the same messages            : "
        f"{figures['baseline_json_loads_us_per_reading']:>7.1f} µs"
    )


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
        raise click.ClickException("no champion model: run `citywatch train --synthetic` first")
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
