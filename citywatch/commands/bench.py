"""``citywatch bench``: benchmarks that compare against a baseline in the same run."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
import psycopg
from tqdm import tqdm

from citywatch.runtime import connect
from citywatch.settings import Settings
from storage.reports import messages_accounted_for

from .demo import start_worker, stop_process, wait_for_log
from .simulate import register_fleet


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


@bench.command("worker")
@click.option("--messages", type=int, default=60_000, show_default=True)
@click.option("--devices", type=int, default=200, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def bench_worker(settings: Settings, messages: int, devices: int, as_json: bool) -> None:
    """End-to-end worker readings/s against a trivial Faust agent on the same broker.

    Both consume the same pre-produced readings from a fresh topic. The worker
    figure covers validation, features, LightGBM scoring, the scores topic and
    the PostgreSQL writes; the baseline only counts messages.
    """
    from ingest.producer import ReadingProducer
    from ingest.simulator import FleetSimulator, maintenance_bytes, reading_bytes
    from streams.topics import READINGS

    settings, conn, run_id = bench_run(settings, progress=not as_json)
    with psycopg.connect(conn.database_url) as db:
        db.execute("TRUNCATE readings, scores, alerts, deadletters, maintenance_events")

    ticks = max(1, messages // devices)
    fleet = FleetSimulator(n_devices=devices, seed=11)
    register_fleet(conn.database_url, fleet)
    start = datetime.now(UTC) - timedelta(seconds=ticks + 60)
    readings, _ = fleet.history(ticks, start, timedelta(seconds=1))
    producer = ReadingProducer(conn.kafka, topic=settings.topic(READINGS))
    for seq, reading in enumerate(
        tqdm(readings, desc="producing", disable=None if not as_json else True, unit="msg")
    ):
        key = reading.device.device_id.encode()
        if reading.repaired:  # as run_simulation: the repair just before the reading
            producer.send(key, maintenance_bytes(reading))
        producer.send(key, reading_bytes(reading, seq))
    producer.flush()
    producer.close()
    total = producer.sent

    # Baseline: the trivial agent on the same topic, same broker.
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "baseline.json"
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streams.baseline",
                conn.kafka,
                settings.topic(READINGS),
                str(total),
                str(result),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        deadline = time.monotonic() + 600
        while not result.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        stop_process(proc)
        if not result.exists():
            raise click.ClickException(f"baseline failed: {proc.stderr.read().decode()[-2000:]}")
        baseline = json.loads(result.read_text())

    log_path = settings.home.resolve() / f"bench-worker-{run_id}.log"
    worker = start_worker(settings, conn, log_path)
    try:
        wait_for_log(log_path, "Worker ready", worker, timeout_s=120)
        deadline = time.monotonic() + 900
        with tqdm(
            total=total, desc="worker", disable=None if not as_json else True, unit="msg"
        ) as bar:
            done = 0
            while done < total and time.monotonic() < deadline:
                time.sleep(0.5)
                done = messages_accounted_for(conn.database_url)
                bar.update(done - bar.n)
        with psycopg.connect(conn.database_url) as db:
            first, last, stored = db.execute(
                "SELECT min(ingested_at), max(ingested_at), count(*) FROM readings"
            ).fetchone()
    finally:
        stop_process(worker)
    worker_seconds = (last - first).total_seconds() if stored > 1 else float("nan")
    figures = {
        "messages": total,
        "worker_readings_per_s": round(stored / worker_seconds, 1),
        "worker_stored": stored,
        "baseline_trivial_agent_per_s": round(baseline["messages"] / baseline["seconds"], 1),
        "batch_size": settings.batch_size,
        "partitions": settings.partitions,
    }
    figures["worker_vs_baseline"] = round(
        figures["worker_readings_per_s"] / figures["baseline_trivial_agent_per_s"], 3
    )
    if as_json:
        click.echo(json.dumps(figures, indent=2))
    else:
        click.echo(
            f"worker end to end : {figures['worker_readings_per_s']:>10,.0f} readings/s "
            f"({stored} stored)\n"
            f"trivial Faust agent: {figures['baseline_trivial_agent_per_s']:>10,.0f} msg/s\n"
            f"ratio              : {figures['worker_vs_baseline']:.2f}"
        )


# Registered here rather than in cli.py: the command lives beside its peers.
from .bench_faults import bench_faults  # noqa: E402

bench.add_command(bench_faults)

from .bench_water_quality import bench_water_quality  # noqa: E402

bench.add_command(bench_water_quality)

from .bench_water_quality_replay import bench_water_quality_replay  # noqa: E402

bench.add_command(bench_water_quality_replay)
