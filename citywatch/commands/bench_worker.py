"""``citywatch bench worker``: the worker end to end against a trivial Faust agent.

Phases, all on the same broker and database in one run:
1. throughput: pre-produced readings, consumed by the trivial agent (baseline),
   by the batch agent (the floor of Faust's batch path: take_events, JSON parse,
   ack), then by N workers in one consumer group;
2. latency: readings produced at half the measured throughput, each stamped
   with its send time; p50/p99 from reading time to stored score;
3. restart: the time a restarted worker takes to be ready over the device
   states it built (changelog recovery), and its resident memory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
import psutil
import psycopg
from tqdm import tqdm

from citywatch.runtime import bench_run
from core.settings import Settings
from core.wire import encode_reading
from services.fleet import register_fleet
from services.processes import log_size, start_worker, stop_process, wait_for_log
from storage.reports import messages_accounted_for

CITY_DEVICES = 100_000


@click.command("worker")
@click.option("--messages", type=int, default=60_000, show_default=True)
@click.option("--devices", type=int, default=200, show_default=True)
@click.option(
    "--city",
    is_flag=True,
    help=f"A city-shaped fleet: {CITY_DEVICES:,} devices, one reading each "
    "(sets --devices and --messages).",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 8),
    default=1,
    show_default=True,
    help="Worker processes in one consumer group.",
)
@click.option(
    "--latency-seconds",
    type=float,
    default=20.0,
    show_default=True,
    help="Length of the half-capacity latency phase; 0 skips it.",
)
@click.option(
    "--restart/--no-restart",
    default=True,
    show_default=True,
    help="Measure a restarted worker's time to ready over the device states.",
)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def bench_worker(
    settings: Settings,
    messages: int,
    devices: int,
    city: bool,
    workers: int,
    latency_seconds: float,
    restart: bool,
    as_json: bool,
) -> None:
    """End-to-end worker readings/s against two baseline Faust agents on the same broker.

    Both consume the same pre-produced readings from a fresh topic. The worker
    figure covers validation, features, LightGBM scoring, the scores topic and
    the PostgreSQL writes; the trivial agent only counts messages, and the
    batch agent is the floor of Faust's batch path (take_events with the
    worker's batch size, JSON parse, ack) with none of the worker's work. Then: p50/p99
    latency at half the measured capacity, the worker's CPU µs per reading,
    its resident memory, and the time a restarted worker takes to be ready.
    """
    from ingest.simulator import FleetSimulator

    if city:
        devices = messages = CITY_DEVICES
    show = not as_json
    settings, conn, run_id = bench_run(settings, progress=show)
    with psycopg.connect(conn.database_url) as db:
        db.execute("TRUNCATE readings, scores, alerts, deadletters, maintenance_events")

    fleet = FleetSimulator(n_devices=devices, seed=11)
    register_fleet(conn.database_url, fleet)
    total = _produce_history(conn.kafka, settings, fleet, messages, show)
    baseline = _baseline_agent(conn.kafka, settings, total)
    batch_mode = f"--batch={settings.batch_size}:{settings.batch_within_s}"
    batch_floor = _baseline_agent(conn.kafka, settings, total, batch_mode)
    state_bytes = _packed_state_bytes(settings, devices, messages)
    io_floor = _baseline_agent(
        conn.kafka, settings, total, batch_mode, f"--io={settings.partitions}",
        f"--state={state_bytes}", database_url=conn.database_url,
    )  # fmt: skip
    with psycopg.connect(conn.database_url) as db:  # the floor's rows are not the worker's
        db.execute("TRUNCATE readings, scores")

    home = settings.home.resolve()
    procs, logs = [], []
    cpu_at_ready = []
    started = time.monotonic()
    for i in range(workers):
        log_path = home / f"bench-worker-{run_id}-{i}.log"
        proc = start_worker(settings, conn, log_path)
        procs.append(proc)
        logs.append(log_path)
    figures: dict = {"messages": total, "devices": devices, "workers": workers}
    try:
        for proc, log_path in zip(procs, logs, strict=True):
            wait_for_log(log_path, "Worker ready", proc, timeout_s=180)
            cpu_at_ready.append(_cpu_seconds(proc))
        # The floor for a restart: ready over empty tables, on the same broker.
        figures["first_start_ready_s"] = round(time.monotonic() - started, 2)
        stored, seconds = _drain(conn.database_url, total, show)
        cpu = sum(_cpu_seconds(p) - c for p, c in zip(procs, cpu_at_ready, strict=True))
        figures["worker_readings_per_s"] = round(stored / seconds, 1)
        figures["worker_stored"] = stored
        figures["worker_cpu_us_per_reading"] = round(1e6 * cpu / max(stored, 1), 1)
        if latency_seconds > 0:
            rate = figures["worker_readings_per_s"] / 2
            figures.update(_latency(conn, settings, fleet, rate, latency_seconds, total, show))
        figures["worker_rss_mb"] = round(sum(_rss_mb(p) for p in procs), 1)
    finally:
        for proc in procs:
            stop_process(proc)
    if restart:
        restart_log = home / f"bench-worker-{run_id}-restart.log"
        # On its own volume (the tables' local store), then on an empty one: a new machine,
        # which reads every changelog back (the memory store's cost on every restart).
        figures["restart_ready_s"] = _restart_time(settings, conn, restart_log)
        fresh = settings.model_copy(update={"faust_datadir": home / f"faust-fresh-{run_id}"})
        figures["restart_empty_volume_ready_s"] = _restart_time(fresh, conn, restart_log)
        figures["table_store"] = settings.table_store
    figures["baseline_trivial_agent_per_s"] = round(baseline["messages"] / baseline["seconds"], 1)
    figures["batch_size"] = settings.batch_size
    figures["partitions"] = settings.partitions
    figures["worker_vs_baseline"] = round(
        figures["worker_readings_per_s"] / figures["baseline_trivial_agent_per_s"], 3
    )
    figures["baseline_batch_agent_per_s"] = round(
        batch_floor["messages"] / batch_floor["seconds"], 1
    )
    figures["worker_vs_batch_agent"] = round(
        figures["worker_readings_per_s"] / figures["baseline_batch_agent_per_s"], 3
    )
    figures["baseline_io_floor_per_s"] = round(io_floor["messages"] / io_floor["seconds"], 1)
    figures["worker_vs_io_floor"] = round(
        figures["worker_readings_per_s"] / figures["baseline_io_floor_per_s"], 3
    )
    figures["io_floor_state_bytes"] = state_bytes
    figures["io_floor_stored"] = io_floor["stored"]
    figures["io_floor_published"] = io_floor["published"]
    figures["io_floor_vs_baseline"] = round(
        figures["baseline_io_floor_per_s"] / figures["baseline_trivial_agent_per_s"], 3
    )
    if as_json:
        click.echo(json.dumps(figures, indent=2))
        return
    _print(figures)


def _produce_history(kafka: str, settings: Settings, fleet, messages: int, show: bool) -> int:
    """Readings (and maintenance events before repaired readings) in the recent past."""
    from ingest.producer import ReadingProducer
    from ingest.sim_records import maintenance_bytes, reading_bytes
    from streams.topics import READINGS

    ticks = max(1, messages // len(fleet.devices))
    start = datetime.now(UTC) - timedelta(seconds=ticks + 60)
    readings, _ = fleet.history(ticks, start, timedelta(seconds=1))
    producer = ReadingProducer(kafka, topic=settings.topic(READINGS))
    for seq, reading in enumerate(tqdm(readings, desc="producing", disable=not show, unit="msg")):
        key = reading.device.device_id.encode()
        if reading.repaired:  # as run_simulation: the repair just before the reading
            producer.send(key, maintenance_bytes(reading))
        producer.send(key, reading_bytes(reading, seq))
    producer.flush()
    producer.close()
    return producer.sent


def _packed_state_bytes(settings: Settings, devices: int, messages: int) -> int:
    """Mean size of a device's packed state after this fleet's readings per device
    (on up to 2,000 devices), from the worker's own pipeline: the I/O floor writes
    values of this size."""
    from services.pipeline_timing import run_pipeline

    per_device = max(1, messages // devices)
    sample = max(1, min(devices, 2000, 20_000 // per_device))
    *_, sizes = run_pipeline(settings, sample, per_device)
    return round(sum(sizes) / len(sizes))


def _baseline_agent(
    kafka: str, settings: Settings, total: int, *mode: str, database_url: str | None = None
) -> dict:
    """A baseline Faust agent (streams.baseline) over the same topic, in its own group.

    No ``mode``: the trivial agent, which only counts. ``--batch=N:WITHIN``: the
    batch agent, which takes events as the worker does, parses each and counts.
    With ``--io=PARTITIONS`` too: the I/O floor, which also stores every batch in
    ``database_url`` (passed in the environment) and publishes its scores.
    """
    from streams.baseline_io import DATABASE_ENV
    from streams.topics import READINGS

    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "baseline.json"
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streams.baseline",
                kafka,
                settings.topic(READINGS),
                str(total),
                str(result),
                *mode,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=tmp,  # Faust's data directory goes to the temporary directory
            start_new_session=True,
            env={**os.environ, DATABASE_ENV: database_url} if database_url else None,
        )
        deadline = time.monotonic() + 600
        while not result.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        stop_process(proc)
        if not result.exists():
            err = proc.stderr.read().decode()[-2000:]
            raise click.ClickException(f"baseline {' '.join(mode) or 'trivial'} failed: {err}")
        return json.loads(result.read_text())


def _drain(database_url: str, total: int, show: bool) -> tuple[int, float]:
    """Wait for every message to be accounted for; stored readings and their time span."""
    deadline = time.monotonic() + 1800
    with tqdm(total=total, desc="worker", disable=not show, unit="msg") as bar:
        done = 0
        while done < total and time.monotonic() < deadline:
            time.sleep(0.5)
            with psycopg.connect(database_url) as pg:
                done = messages_accounted_for(pg)
            bar.update(done - bar.n)
    with psycopg.connect(database_url) as db:
        first, last, stored = db.execute(
            "SELECT min(ingested_at), max(ingested_at), count(*) FROM readings"
        ).fetchone()
    seconds = (last - first).total_seconds() if stored > 1 else float("nan")
    return stored, seconds


def _latency(
    conn, settings: Settings, fleet, rate: float, seconds: float, already: int, show: bool
) -> dict:
    """Readings at ``rate``/s, each stamped when sent; reading time to stored score."""
    from ingest.producer import ReadingProducer
    from streams.topics import READINGS

    n = max(1, int(rate * seconds))
    readings, _ = fleet.history(
        -(-n // len(fleet.devices)), datetime.now(UTC), timedelta(seconds=1)
    )
    producer = ReadingProducer(conn.kafka, topic=settings.topic(READINGS), linger_ms=0)
    t0 = time.monotonic()
    started_at = datetime.now(UTC)
    for i, reading in enumerate(tqdm(readings[:n], desc="latency", disable=not show, unit="msg")):
        wait = t0 + i / rate - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        d = reading.device
        producer.send(
            d.device_id.encode(),
            encode_reading(
                device_id=d.device_id,
                asset_id=d.asset_id,
                asset_type=d.asset_type,
                ts=datetime.now(UTC),  # the reading's time is its send time
                metrics=reading.metrics,
                source={"kind": "bench", "seq": i},
            ),
        )
    producer.flush()
    producer.close()
    _drain(conn.database_url, already + producer.sent, show=False)
    with psycopg.connect(conn.database_url) as db:
        p50, p99, scored = db.execute(
            "WITH lag AS (SELECT extract(epoch FROM scored_at - ts) AS s FROM scores"
            " WHERE role = 'champion' AND ts >= %s)"
            " SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY s),"
            " percentile_cont(0.99) WITHIN GROUP (ORDER BY s), count(*) FROM lag",
            (started_at,),
        ).fetchone()
    return {
        "latency_rate_per_s": round(rate, 1),
        "latency_sent": producer.sent,
        "latency_scored": scored,
        "latency_p50_s": None if p50 is None else round(p50, 3),
        "latency_p99_s": None if p99 is None else round(p99, 3),
    }


def _restart_time(settings: Settings, conn, log_path: Path) -> float:
    """Seconds from starting a worker to "Worker ready" over the stored device states."""
    started = time.monotonic()
    proc = start_worker(settings, conn, log_path)
    try:
        wait_for_log(log_path, "Worker ready", proc, timeout_s=600, after=log_size(log_path))
        return round(time.monotonic() - started, 2)
    finally:
        stop_process(proc)


def _cpu_seconds(proc: subprocess.Popen) -> float:
    """User plus system CPU of the worker process and its children."""
    try:
        p = psutil.Process(proc.pid)
        total = p.cpu_times().user + p.cpu_times().system
        for child in p.children(recursive=True):
            times = child.cpu_times()
            total += times.user + times.system
        return total
    except psutil.Error:
        return 0.0


def _rss_mb(proc: subprocess.Popen) -> float:
    try:
        return psutil.Process(proc.pid).memory_info().rss / 2**20
    except psutil.Error:
        return float("nan")


def _print(f: dict) -> None:
    lines = [
        f"fleet              : {f['devices']:,} devices, {f['messages']:,} messages, "
        f"{f['workers']} worker(s), {f['partitions']} partitions",
        f"worker end to end  : {f['worker_readings_per_s']:>10,.0f} readings/s "
        f"({f['worker_stored']} stored)",
        f"trivial Faust agent: {f['baseline_trivial_agent_per_s']:>10,.0f} msg/s, "
        f"worker ratio {f['worker_vs_baseline']:.2f} (async for + count)",
        f"Faust batch agent  : {f['baseline_batch_agent_per_s']:>10,.0f} msg/s, "
        f"worker ratio {f['worker_vs_batch_agent']:.2f}",
        f"                     the floor of Faust's batch path: take_events({f['batch_size']})"
        " + JSON parse + ack, none of the worker's work",
        f"Faust I/O floor    : {f['baseline_io_floor_per_s']:>10,.0f} msg/s "
        f"({f['io_floor_vs_baseline']:.2f}x trivial), worker ratio {f['worker_vs_io_floor']:.2f}",
        "                     the batch agent + COPY of readings and scores into the same"
        " tables + score batches published + each moved device's state"
        f" ({f['io_floor_state_bytes']:,} bytes) to a Faust table every 2 s:"
        " the I/O any worker must do",
        f"worker CPU         : {f['worker_cpu_us_per_reading']:,.0f} µs per reading",
    ]
    if "latency_p99_s" in f:
        lines.append(
            f"latency at {f['latency_rate_per_s']:,.0f}/s: p50 {f['latency_p50_s']} s, "
            f"p99 {f['latency_p99_s']} s (reading time to stored score)"
        )
    lines.append(f"worker memory      : {f['worker_rss_mb']:,.0f} MB resident")
    if "restart_ready_s" in f:
        lines.append(
            f"restart to ready   : {f['restart_ready_s']} s over the device states "
            f"({f['table_store']} store; {f['restart_empty_volume_ready_s']} s on an empty volume, "
            f"{f['first_start_ready_s']} s for the first start over no state)"
        )
    click.echo("\n".join(lines))
