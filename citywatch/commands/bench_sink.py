"""``citywatch bench sink``: PostgresSink throughput next to two raw binary COPY
baselines, all three measured batch by batch in the same run."""

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
from storage.tables import READINGS, SCORES, copy_rows

# Every column the sink writes, with its types: the baselines send the same bytes.
_TABLES = (READINGS, SCORES)


def make_batches(n_batches: int, batch_size: int, devices: int, seed: int = 7) -> list:
    """Worker-like batches: each device reports once a second, LoRaWAN source, one score each."""
    from core.records import Reading, Score
    from storage.sinks import SinkBatch

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
            batch.readings.append(Reading(ts, device, asset, kind.name, metrics, source))
            batch.scores.append(Score(ts, device, asset, kind.name, "bench-v1", rnd.random(), 0.7))
            k += 1
        batches.append(batch)
    return batches


def _raw_copy(conn: psycopg.Connection, batch, prefix: str = "") -> None:
    """The raw client: one transaction, a binary COPY per table, nothing else.

    No savepoint, no staging, no offset rows: what psycopg and the server cost
    for these rows into ``<prefix>readings`` and ``<prefix>scores``.
    """
    with conn.transaction(), conn.cursor() as cur:
        for table, records in zip(_TABLES, (batch.readings, batch.scores), strict=True):
            copy_rows(cur, table, records, into=f"{prefix}{table.name}")


def _scratch_database(admin: str, name: str) -> None:
    try:
        with psycopg.connect(admin, autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        raise click.ClickException(
            f"the benchmark needs a scratch database and could not create one: {exc}"
        ) from exc


def run_sink_bench(
    database_url: str, batches: int, batch_size: int, devices: int, progress: bool = True
) -> dict:
    """Measure in two scratch databases (created and dropped here) on the same server.

    The first holds the sink's tables and the index-less heap copies of the
    first baseline; the second, migrated the same way, takes the second
    baseline's COPY into its own real ``readings`` and ``scores``.
    """
    from storage.maintenance import run_maintenance
    from storage.migrations import migrate
    from storage.sinks import PostgresSink

    tag = uuid.uuid4().hex[:8]
    name, same_name = f"citywatch_bench_{tag}", f"citywatch_bench_{tag}_same"
    admin = make_conninfo(database_url, dbname="postgres")
    created: list[str] = []
    try:
        for db in (name, same_name):
            _scratch_database(admin, db)
            created.append(db)
        url = make_conninfo(database_url, dbname=name)
        same_url = make_conninfo(database_url, dbname=same_name)
        for u in (url, same_url):
            migrate(u)
        # The same partitions (or chunks) ahead in both, so both COPYs route alike.
        flavour = run_maintenance(url).flavour
        run_maintenance(same_url)
        work = make_batches(batches + 1, batch_size, devices)
        with psycopg.connect(url, autocommit=True) as c:
            c.execute("CREATE TABLE raw_readings (LIKE readings INCLUDING DEFAULTS)")
            c.execute("CREATE TABLE raw_scores (LIKE scores INCLUDING DEFAULTS)")
        sink = PostgresSink(url, application_name="citywatch-bench-sink")
        raw = psycopg.connect(url, application_name="citywatch-bench-raw")
        same = psycopg.connect(same_url, application_name="citywatch-bench-raw-same")
        try:
            sink.write(work[0])  # warm-up: connection, staging tables, plans
            _raw_copy(raw, work[0], prefix="raw_")
            _raw_copy(same, work[0])
            sink_s = raw_s = same_s = 0.0
            stored = 0
            # Interleaved, batch by batch, so all three see the same load on a shared machine.
            for batch in tqdm(
                work[1:], desc="sink vs raw COPY", unit="batch", disable=None if progress else True
            ):
                t = time.perf_counter()
                result = sink.write(batch)
                sink_s += time.perf_counter() - t
                stored += result.readings + result.scores
                t = time.perf_counter()
                _raw_copy(raw, batch, prefix="raw_")
                raw_s += time.perf_counter() - t
                t = time.perf_counter()
                _raw_copy(same, batch)
                same_s += time.perf_counter() - t
        finally:
            sink.close()
            raw.close()
            same.close()
        refresh = run_maintenance(url)
    finally:
        with psycopg.connect(admin, autocommit=True) as c:
            for db in created:
                c.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
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
        "raw_copy_same_tables_rows_per_s": round(rows / same_s, 1),
        "raw_copy_same_tables_batch_ms": round(1000 * same_s / batches, 2),
        "sink_vs_raw_copy_same_tables": round(same_s / sink_s, 3),
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
    """PostgresSink.write rows/s next to two raw binary COPY baselines, same run.

    Worker-shaped batches (readings with catalogue metrics and LoRaWAN source
    metadata, plus one score per reading) go through the real sink: binary
    COPY into the partitioned tables (or hypertables) inside a savepoint, with
    the offset bookkeeping and the rollup invalidation trigger. Both baselines
    are the raw psycopg client: the same rows, every column the sink writes,
    one binary COPY per table, one transaction per batch, no savepoint and no
    offsets. The first COPYs into plain heap copies of the tables (no keys, no
    indexes, no partitions, no trigger): the client and wire floor. The second
    COPYs into the real readings and scores of a second scratch database,
    migrated the same way: the same partitions, unique keys (which exactly-once
    needs) and trigger, so what remains of the gap is the sink's own work.
    All three run batch by batch interleaved. The scratch databases are created
    on the same server and dropped afterwards; the embedded stack must be up
    (`citywatch stack up`) unless CITYWATCH_DATABASE_URL is set.
    """
    url = database_url(settings, migrate=False)
    figures = run_sink_bench(url, batches, batch_size, devices, progress=not as_json)
    if as_json:
        click.echo(json.dumps(figures, indent=2))
        return
    for key, value in figures.items():
        click.echo(f"{key:31s} {value}")
    click.echo(
        f"\nsink vs raw COPY into heap copies      : {figures['sink_vs_raw_copy']:.2f}"
        "  (no keys, indexes, partitions or trigger: the client and wire floor)\n"
        f"sink vs raw COPY into the same tables  : {figures['sink_vs_raw_copy_same_tables']:.2f}"
        "  (same partitions, unique keys exactly-once needs, trigger: the sink's own cost)"
    )
