"""``citywatch bench water-quality-replay``: the GECCO record through Kafka and the worker,
scored on what the worker itself decided (its station_outlook rows and its alerts)."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import click
import psycopg

from citywatch.cli_options import datasets_option
from core.assets import OPTIONAL_CATALOGUES
from core.settings import Settings


@contextlib.contextmanager
def _env(**values: str) -> Iterator[None]:
    """Environment for the worker process started inside; restored after."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _wait_stored(database_url: str, device: str, expected: int, timeout: float) -> None:
    """Until the worker wrote ``expected`` outlook rows, then until its alerts settle."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(database_url, autocommit=True) as db:
        while time.monotonic() < deadline:
            n = db.execute(
                "SELECT count(*) FROM station_outlook WHERE device_id = %s", (device,)
            ).fetchone()[0]
            if n >= expected:
                break
            time.sleep(1.0)
        last, quiet = None, 0
        while quiet < 5 and time.monotonic() < deadline:  # the alert agent runs behind
            now = db.execute(
                "SELECT count(*), max(updated_at) FROM alerts WHERE device_id = %s", (device,)
            ).fetchone()
            quiet = quiet + 1 if now == last else 0
            last = now
            time.sleep(1.0)


@click.command("water-quality-replay")
@datasets_option("Folder with train.csv (or its parent holding gecco2018/).")
@click.option("--timeout", type=float, default=1800.0, show_default=True, help="Seconds to drain.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--daily-refit",
    is_flag=True,
    help="Replay the test half day by day (data time); before each day, refit the model "
    "as `water-quality train --like` does on what the worker stored, and wait for the "
    "worker to reload it. Compared with the offline daily-refit figures.",
)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def bench_water_quality_replay(
    settings: Settings, data: Path, timeout: float, seed: int, daily_refit: bool, as_json: bool
) -> None:
    """Replay the GECCO 2018 record into the worker; score what the worker decided.

    \b
    The model is fitted on the training half as `bench water-quality` fits it
    (same split, same choices on validation) and handed to the worker
    (CITYWATCH_WATER_QUALITY_MODEL). The whole file then goes through
    `citywatch replay`'s code, Kafka and the worker, as fast as possible,
    back-dated to end now; the training half warms the station's state as
    the offline pass does. On the test half, the worker's station_outlook
    rows and alerts are scored against the labels beside the offline figures
    of the same model, measured in the same run: VUS-PR, the F1 of its
    alarms and of its alerts (the usual hysteresis), and the outlook per horizon.

    With --daily-refit the record keeps its own times (no shift) and the test
    half goes in one day at a time: before each day the model is refitted on
    the readings and labels stored so far (the refit of `water-quality
    train`, with the LightGBM settings and the daily-refit alarm threshold
    chosen on validation), written over the worker's model file, and the
    bench waits for the worker's reload log line before sending the day. The
    offline side is the daily-refit detector of `bench water-quality`.
    """
    import numpy as np

    from citywatch.runtime import bench_run
    from core.assets import CATALOGUE_ENV, load_catalogue
    from ingest.lorawan.publisher import KafkaPublisher
    from ingest.replay import replay_file
    from models.vus import point_f1
    from models.water_quality import gecco_file, load_gecco, station_features
    from models.water_quality_eval import evaluate_water_quality, split_by_time
    from models.water_quality_model import (
        DEFAULT_PARAMS,
        load_water_quality_model,
        save_water_quality_model,
    )
    from models.water_quality_replay import (
        in_spans,
        outlook_on_grid,
        stored_frame,
        worker_figures,
    )
    from services.processes import start_worker, stop_process, wait_for_log
    from storage.device_registry import register_devices
    from streams.alerting import Hysteresis
    from streams.topics import DEADLETTER, READINGS
    from streams.water_quality import alert_spans

    try:
        path = gecco_file(data)
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from exc
    record = load_gecco(str(path))
    train, test = split_by_time(record)
    catalogue = OPTIONAL_CATALOGUES / "water_quality_station.toml"
    station = load_catalogue([catalogue])["water_quality_station"]
    settings, conn, run_id = bench_run(settings, progress=not as_json)
    device = f"wq-bench-{run_id}"
    with psycopg.connect(conn.database_url) as pg:
        register_devices(
            pg,
            [{"device_id": device, "asset_id": device, "asset_type": station.name, "lat": None,
              "lon": None, "installed_at": None, "codec": "replay"}],
        )  # fmt: skip
    files = [p for p in os.environ.get(CATALOGUE_ENV, "").split(os.pathsep) if p]
    log_path = settings.home.resolve() / f"bench-water-quality-{run_id}.log"
    with tempfile.TemporaryDirectory() as tmp:
        model_file = Path(tmp) / "wq.json"
        offline = evaluate_water_quality(
            train, test, seed=seed, progress=not as_json, save_to=str(model_file)
        )
        model = load_water_quality_model(str(model_file))
        like_file = Path(tmp) / "wq-like.json"
        extra: dict[str, str] = {}
        if daily_refit:
            # The template of every refit: the chosen LightGBM settings and the
            # daily-refit alarm threshold, both chosen on validation.
            model.alarm_threshold = offline["prequential"]["alarm_threshold"]
            save_water_quality_model(model, str(like_file))
            save_water_quality_model(model, str(model_file))  # serves the training half
            extra["CITYWATCH_WATER_QUALITY_RELOAD_S"] = "0"
        with _env(
            **{
                CATALOGUE_ENV: os.pathsep.join([*files, str(catalogue)]),
                "CITYWATCH_MAX_READING_AGE_DAYS": "0",  # a three-month backfill
                "CITYWATCH_WATER_QUALITY_MODEL": str(model_file),
                **extra,
            }
        ):
            worker = start_worker(settings, conn, log_path)
        try:
            wait_for_log(log_path, "Worker ready", worker, timeout_s=120)
            publisher = KafkaPublisher(
                conn.kafka, settings.topic(READINGS), settings.topic(DEADLETTER),
                **{"client.id": "citywatch-bench-replay"},
            )  # fmt: skip
            started = time.monotonic()
            if daily_refit:
                from services.water_quality_daily import replay_daily

                stats, refits = replay_daily(
                    record, len(train), path, publisher, station, conn, device,
                    model_file, log_path, worker, Path(tmp), timeout, like_file,
                    progress=None if as_json else click.echo,
                )  # fmt: skip
            else:
                stats = replay_file(
                    path, publisher, asset_type=station, device_id=device, asset_id=device,
                    speed=0,
                )  # fmt: skip
            _wait_stored(conn.database_url, device, stats.readings, timeout)
            seconds = time.monotonic() - started
        finally:
            stop_process(worker)
    with psycopg.connect(conn.database_url) as db:
        readings = db.execute(
            "SELECT ts, metrics, source FROM readings WHERE device_id = %s ORDER BY ts", (device,)
        ).fetchall()
        outlook = db.execute(
            "SELECT ts, event_probability, alarm, p_1h, p_6h, p_24h, p_48h FROM station_outlook"
            " WHERE device_id = %s ORDER BY ts",
            (device,),
        ).fetchall()
        alerts = db.execute(
            "SELECT opened_at, closed_at FROM alerts WHERE device_id = %s ORDER BY opened_at",
            (device,),
        ).fetchall()
    _, check = stored_frame(record, readings, stats.shift_s)
    shift = timedelta(seconds=stats.shift_s)
    spans = [(o - shift, None if c is None else c - shift) for o, c in alerts]

    # The test half's complete rows, as the offline evaluation scores them.
    complete = record[list(station.metric_names)].notna().all(axis=1).to_numpy()
    rows = (np.arange(len(record)) >= len(train)) & complete
    event = record["event"].to_numpy().astype(int)
    # Offline, the same model's probabilities through the worker's hysteresis.
    feats = station_features(record)
    has = feats["anomaly_level"].notna().to_numpy()
    p_off = np.full(len(record), np.nan)
    if daily_refit:  # the offline daily refits, as bench water-quality computes them
        from models.water_quality_eval import prequential_event_probability

        event_params = {**DEFAULT_PARAMS, **offline["chosen"]["event_params"]}
        event_params.pop("default", None)
        p_off[len(train) :] = prequential_event_probability(
            feats, record["ts"], record["event"].to_numpy().astype(int), len(train),
            len(record), params=event_params, seed=seed,
        )  # fmt: skip
        offline_figures = offline["prequential"]
    else:
        p_off[has] = model.event_probability(feats[has])
        offline_figures = offline
    ts = [t.to_pydatetime() for t in record["ts"]]
    offline_spans = alert_spans(ts, p_off, model.alarm_threshold, Hysteresis())
    offline_alerts = point_f1(event[rows], in_spans(record["ts"], offline_spans)[rows])
    through = worker_figures(
        record,
        outlook_on_grid(record, outlook, stats.shift_s),
        in_spans(record["ts"], spans),
        rows,
        offline["vus_window"],
        model.horizon_thresholds,
    )
    result = {
        "readings_sent": stats.readings,
        "gaps": stats.gaps,
        "replay_deadletters": stats.bad,
        "outlook_rows": len(outlook),
        "alerts": len(alerts),
        "seconds": round(seconds, 1),
        "check": check,
        "model": model.version,
        "offline": {
            "vus_pr": offline_figures["vus_pr"],
            "f1": offline_figures["f1"],
            "alert_f1": offline_alerts["f1"],
            "alerts": len(offline_spans),
            "horizons": {
                h: {k: v[k] for k in ("balanced_accuracy", "auc", "persistence_balanced_accuracy")}
                for h, v in offline["horizons"].items()
            },
        },
        "worker": through,
        "f1_difference": through["alert_f1"] - offline_figures["f1"],
        "alert_f1_difference": through["alert_f1"] - offline_alerts["f1"],
        "command": f"citywatch bench water-quality-replay --data {data} --seed {seed}"
        + (" --daily-refit" if daily_refit else "")
        + " --json",
    }
    if daily_refit:
        result["mode"] = "daily_refit"
        # Offline, only the detector is refitted daily (the outlook stays static);
        # the worker's outlook comes from the daily refits of water-quality train.
        result["offline"]["horizons_note"] = "static outlook models (fitted on the training half)"
        result["offline"]["alarm_threshold"] = model.alarm_threshold
        result["offline_static"] = {"vus_pr": offline["vus_pr"], "f1": offline["f1"]}
        result["refits"] = refits
        # The offline side has no alerts on the training half here (no daily refit there).
        test_from = record["ts"].iloc[len(train)]
        result["alerts_in_test_half"] = sum(o - shift >= test_from for o, _ in alerts)
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str))
        return
    click.echo(
        f"sent {stats.readings}, outlook rows {len(outlook)}, alerts {len(alerts)}, "
        f"{seconds:.0f} s\n"
        f"F1 offline (alarms) {offline_figures['f1']:.3f}, offline through the hysteresis "
        f"{offline_alerts['f1']:.3f}, the worker's alerts {through['alert_f1']:.3f}\n"
        f"VUS-PR offline {offline_figures['vus_pr']:.3f}, the worker's {through['vus_pr']:.3f}"
    )
