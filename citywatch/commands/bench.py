"""``citywatch bench``: benchmarks that compare against a baseline in the same run."""

from __future__ import annotations

import uuid

import click

from citywatch.runtime import connect
from core.settings import Settings


def bench_run(settings: Settings, *, progress: bool):
    """Settings, connection and id of one benchmark run: topics and consumer group of
    its own on the stack (started if needed), and a champion model (trained if none)."""
    from models.registry import load_champion
    from streams.topics import ensure_topics

    from .train import train_synthetic

    run_id = uuid.uuid4().hex[:8]
    settings = settings.model_copy(
        update={"topic_prefix": f"bench-{run_id}-", "app_id": f"citywatch-bench-{run_id}"}
    )
    conn = connect(settings)
    if load_champion(settings.models_path) is None:
        train_synthetic(settings, progress=progress)
    ensure_topics(conn.kafka, settings)
    return settings, conn, run_id


@click.group()
def bench() -> None:
    """Benchmarks; each prints its figures next to a baseline measured in the same run."""


# Registered here rather than in cli.py: the command lives beside its peers.
from .bench_faults import bench_faults  # noqa: E402

bench.add_command(bench_faults)

from .bench_water_quality import bench_water_quality  # noqa: E402

bench.add_command(bench_water_quality)

from .bench_water_quality_replay import bench_water_quality_replay  # noqa: E402

bench.add_command(bench_water_quality_replay)
