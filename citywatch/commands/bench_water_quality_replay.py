"""``citywatch bench water-quality-replay``: the GECCO record through Kafka and the worker."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import click
import psycopg

from core.assets import OPTIONAL_CATALOGUES
from core.settings import Settings


def _headline(result: dict) -> dict:
    return {
        "vus_pr": result["vus_pr"],
        "f1": result["f1"],
        "prequential_vus_pr": result["prequential"]["vus_pr"],
        "prequential_f1": result["prequential"]["f1"],
        "horizons": {
            h: {k: v[k] for k in ("balanced_accuracy", "auc", "persistence_balanced_accuracy")}
            for h, v in result["horizons"].items()
        },
    }


@click.command("water-quality-replay")
@click.option(
    "--data",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=lambda: os.environ.get("CITYWATCH_DATASETS", "../shared/datasets"),
    show_default="$CITYWATCH_DATASETS or ../shared/datasets",
    envvar="CITYWATCH_BENCH_DATA",
    help="Folder with train.csv (or its parent holding gecco2018/).",
)
@click.option("--timeout", type=float, default=900.0, show_default=True, help="Seconds to drain.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def bench_water_quality_replay(
    settings: Settings, data: Path, timeout: float, seed: int, as_json: bool
) -> None:
    """Replay the GECCO 2018 record into the running worker; score what it stored.

    \b
    The whole file goes through `citywatch replay`'s code, Kafka and the
    worker (as fast as possible, back-dated to end now). The readings the
    worker stored are read back and given the same evaluation as
    `bench water-quality` gives the file; both sets of figures are printed
    with their differences, and any reading lost or altered on the way is
    counted. The worker does not raise water-quality alerts yet (see
    docs/water-quality.md, the hook): the alarms here are the scorer's on
    the stored readings.
    """
    from citywatch.runtime import bench_run
    from core.assets import CATALOGUE_ENV, load_catalogue
    from ingest.lorawan.publisher import KafkaPublisher
    from ingest.replay import replay_file
    from models.water_quality import gecco_file, load_gecco
    from models.water_quality_eval import evaluate_water_quality, split_by_time
    from models.water_quality_replay import stored_frame
    from services.processes import start_worker, stop_process, wait_for_log
    from storage.sinks import register_devices
    from streams.topics import DEADLETTER, READINGS

    try:
        path = gecco_file(data)
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from exc
    catalogue = OPTIONAL_CATALOGUES / "water_quality_station.toml"
    station = load_catalogue([catalogue])["water_quality_station"]
    settings, conn, run_id = bench_run(settings, progress=not as_json)
    device = f"wq-bench-{run_id}"
    register_devices(
        conn.database_url,
        [{"device_id": device, "asset_id": device, "asset_type": station.name, "lat": None,
          "lon": None, "installed_at": None, "codec": "replay"}],
    )  # fmt: skip
    saved = {k: os.environ.get(k) for k in (CATALOGUE_ENV, "CITYWATCH_MAX_READING_AGE_DAYS")}
    files = [p for p in (saved[CATALOGUE_ENV] or "").split(os.pathsep) if p]
    os.environ[CATALOGUE_ENV] = os.pathsep.join([*files, str(catalogue)])
    os.environ["CITYWATCH_MAX_READING_AGE_DAYS"] = "0"  # a three-month backfill
    log_path = settings.home.resolve() / f"bench-water-quality-{run_id}.log"
    try:
        worker = start_worker(settings, conn, log_path)
    finally:
        for k, v in saved.items():  # only the worker needed them
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    try:
        wait_for_log(log_path, "Worker ready", worker, timeout_s=120)
        publisher = KafkaPublisher(
            conn.kafka, settings.topic(READINGS), settings.topic(DEADLETTER),
            **{"client.id": "citywatch-bench-replay"},
        )  # fmt: skip
        stats = replay_file(
            path, publisher, asset_type=station, device_id=device, asset_id=device, speed=0
        )
        deadline = time.monotonic() + timeout
        with psycopg.connect(conn.database_url) as db:
            while time.monotonic() < deadline:
                n = db.execute(
                    "SELECT count(*) FROM readings WHERE device_id = %s", (device,)
                ).fetchone()[0]
                if n >= stats.readings:
                    break
                time.sleep(1.0)
            rows = db.execute(
                "SELECT ts, metrics, source FROM readings WHERE device_id = %s ORDER BY ts",
                (device,),
            ).fetchall()
    finally:
        stop_process(worker)
    record = load_gecco(str(path))
    frame, check = stored_frame(record, rows, stats.shift_s)
    offline = evaluate_water_quality(*split_by_time(record), seed=seed, progress=not as_json)
    through = evaluate_water_quality(*split_by_time(frame), seed=seed, progress=not as_json)
    result = {
        "readings_sent": stats.readings,
        "gaps": stats.gaps,
        "replay_deadletters": stats.bad,
        "check": check,
        "offline": _headline(offline),
        "through_worker": _headline(through),
        "f1_difference": through["f1"] - offline["f1"],
        "prequential_f1_difference": through["prequential"]["f1"] - offline["prequential"]["f1"],
        "command": f"citywatch bench water-quality-replay --data {data} --seed {seed} --json",
    }
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(
        f"sent {stats.readings}, stored {check['stored']}, missing {check['missing']}, "
        f"largest value difference {check['max_abs_difference']}\n"
        f"F1 offline {offline['f1']:.3f}, through the worker {through['f1']:.3f}; "
        f"daily refits {offline['prequential']['f1']:.3f} / {through['prequential']['f1']:.3f}"
    )
