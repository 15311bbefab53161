"""``citywatch bench sink``: PostgresSink throughput next to raw binary COPY, same run."""

from __future__ import annotations

import json
import random
import time
import uuid
from datetime import UTC, datetime, timedelta

import click
import psycopg
from psycopg.conninfo import make_conninfo
from tqdm import tqdm

from citywatch.runtime import database_url
from core.assets import ASSET_TYPES
from core.settings import Settings

_RAW_READINGS = ("ts", "device_id", "asset_id", "asset_type", "metrics", "source")
_RAW_SCORES = ("ts", "device_id", "asset_id", "asset_type", "model_version", "risk", "threshold")


def make_batches(n_batches: int, batch_size: int, devices: int, seed: int = 7) -> list:
    """Worker-like batches: each device reports once a second, LoRaWAN source, one score each."""
    from storage.sinks import ReadingRow, ScoreRow, SinkBatch

    rnd = random.Random(seed)
    types = list(ASSET_TYPES.values())
    fleet = [(f"dev-{i:05d}", f"asset-{i:05d}", types[i % len(types)]) for i in range(devices)]
    start = datetime.now(UTC) - timedelta(seconds=n_batches * batch_size // devices + 60)
    batches = []
    k = 0
    for _ in range(n_batches):
        batch = SinkBatch()
        for _ in range(batch_size):
            device, asset, kind = fleet[k % devices]
            ts = start + timedelta(seconds=k // devices, microseconds=k % devices)
            metrics = {m.name: round(rnd.uniform(m.low, m.high), 3) for m in kind.metrics}
            source = {
                "kind": "lorawan",
                "network": "chirpstack",
                "f_cnt": k // devices,
                "f_port": 2,
                "gateways": 2,
                "rssi": -rnd.randint(60, 120),
                "snr": round(rnd.uniform(-10, 10), 1),
                "sf": 9,
                "frequency": 868100000,
                "gateway_ids": ["0016c001ff10a235", "0016c001ff10a236"],
                "codec": "cayenne_lpp",
            }
            batch.readings.append(ReadingRow(ts, device, asset, kind.name, metrics, source))
            batch.scores.append(
                ScoreRow(ts, device, asset, kind.name, "bench-v1", rnd.random(), 0.7)
            )
            k += 1
        batches.append(batch)
    return batches


def _raw_copy(conn: psycopg.Connection, batch) -> None:
    from psycopg.types.json import Jsonb

    with conn.transaction(), conn.cursor() as cur:
        with cur.copy(
            f"COPY raw_readings ({', '.join(_RAW_READINGS)}) FROM STDIN (FORMAT BINARY)"
        ) as copy:
            copy.set_types(["timestamptz", "text", "text", "text", "jsonb", "jsonb"])
            for r in batch.readings:
                copy.write_row(
                    (r.ts, r.device_id, r.asset_id, r.asset_type, Jsonb(r.metrics), Jsonb(r.source))
                )
        with cur.copy(
            f"COPY raw_scores ({', '.join(_RAW_SCORES)}) FROM STDIN (FORMAT BINARY)"
        ) as copy:
            copy.set_types(["timestamptz", "text", "text", "text", "text", "float8", "float8"])
            for s in batch.scores:
                copy.write_row(
                    (
                        s.ts,
                        s.device_id,
                        s.asset_id,
                        s.asset_type,
                        s.model_version,
                        s.risk,
                        s.threshold,
                    )
                )


def run_sink_bench(
    database_url: str, batches: int, batch_size: int, devices: int, progress: bool = True
) -> dict:
    """Measure in a scratch database (created and dropped here) on the same server."""
    from storage.maintenance import run_maintenance
    from storage.schema import migrate
    from storage.sinks import PostgresSink

    name = f"citywatch_bench_{uuid.uuid4().hex[:8]}"
    admin = make_conninfo(database_url, dbname="postgres")
    try:
        with psycopg.connect(admin, autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        raise click.ClickException(
            f"the benchmark needs a scratch database and could not create one: {exc}"
        ) from exc
    url = make_conninfo(database_url, dbname=name)
    try:
        migrate(url)
        flavour = run_maintenance(url).flavour
        work = make_batches(batches + 1, batch_size, devices)
        with psycopg.connect(url, autocommit=True) as c:
            c.execute("CREATE TABLE raw_readings (LIKE readings INCLUDING DEFAULTS)")
            c.execute("CREATE TABLE raw_scores (LIKE scores INCLUDING DEFAULTS)")
        sink = PostgresSink(url, application_name="citywatch-bench-sink")
        raw = psycopg.connect(url, application_name="citywatch-bench-raw")
        try:
            sink.write(work[0])  # warm-up: connection, staging tables, plans
            _raw_copy(raw, work[0])
            sink_s = raw_s = 0.0
            stored = 0
            # Interleaved, batch by batch, so both see the same load on a shared machine.
            for batch in tqdm(
                work[1:], desc="sink vs raw COPY", unit="batch", disable=None if progress else True
            ):
                t = time.perf_counter()
                result = sink.write(batch)
                sink_s += time.perf_counter() - t
                stored += result.readings + result.scores
                t = time.perf_counter()
                _raw_copy(raw, batch)
                raw_s += time.perf_counter() - t
        finally:
            sink.close()
            raw.close()
        refresh = run_maintenance(url)
    finally:
        with psycopg.connect(admin, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    rows = batches * batch_size * 2
    if stored != rows:
        raise click.ClickException(f"sink stored {stored} of {rows} rows")
    return {
        "flavour": flavour,
        "batches": batches,
        "batch_readings": batch_size,
        "batch_scores": batch_size,
        "rows": rows,
        "sink_rows_per_s": round(rows / sink_s, 1),
        "sink_batch_ms": round(1000 * sink_s / batches, 2),
        "raw_copy_rows_per_s": round(rows / raw_s, 1),
        "raw_copy_batch_ms": round(1000 * raw_s / batches, 2),
        "sink_vs_raw_copy": round(raw_s / sink_s, 3),
        "rollup_refresh_s": refresh.seconds,
        "rollup_minutes_refreshed": refresh.rollup_minutes_refreshed,
    }


@click.command("sink")
@click.option(
    "--batches",
    type=click.IntRange(min=1),
    envvar="CITYWATCH_BENCH_BATCHES",
    default=200,
    show_default=True,
    help="Timed batches (one warm-up batch is extra).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    envvar="CITYWATCH_BATCH_SIZE",
    default=500,
    show_default=True,
    help="Readings per batch; each also carries one score per reading.",
)
@click.option(
    "--devices",
    type=click.IntRange(min=1),
    envvar="CITYWATCH_BENCH_DEVICES",
    default=500,
    show_default=True,
    help="Distinct devices the readings cycle through.",
)
@click.option("--json", "as_json", is_flag=True, help="Print only the figures, as JSON.")
@click.pass_obj
def bench_sink(
    settings: Settings, batches: int, batch_size: int, devices: int, as_json: bool
) -> None:
    """PostgresSink.write rows/s next to raw binary COPY rows/s, measured in the same run.

    Worker-shaped batches (readings with catalogue metrics and LoRaWAN source
    metadata, plus one score per reading) go through the real sink: binary
    COPY into staging, upsert into the partitioned tables (or hypertables),
    rollup invalidation trigger. The baseline COPYs the same rows into plain
    tables of the same shape with no keys, in the same transactions, batch by
    batch interleaved with the sink. A scratch database is created on the same
    server and dropped afterwards; the embedded stack must be up
    (`citywatch stack up`) unless CITYWATCH_DATABASE_URL is set.
    """
    url = database_url(settings, migrate=False)
    figures = run_sink_bench(url, batches, batch_size, devices, progress=not as_json)
    if as_json:
        click.echo(json.dumps(figures, indent=2))
        return
    for key, value in figures.items():
        click.echo(f"{key:26s} {value}")
