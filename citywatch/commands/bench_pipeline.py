"""``citywatch bench pipeline``: the worker's batch steps alone, without broker or database."""

from __future__ import annotations

import json

import click

from core.settings import Settings


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
    from services.pipeline_timing import run_pipeline

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
