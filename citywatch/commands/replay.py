"""``citywatch replay``: push a recorded file through the pipeline a city runs."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click
import psycopg

from core.settings import Settings

log = logging.getLogger(__name__)


def _mapping(pairs: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        col, sep, metric = pair.partition("=")
        if not sep or not col.strip() or not metric.strip():
            raise click.BadParameter(f"{pair!r} is not COLUMN=METRIC", param_hint="--map")
        out[col.strip()] = metric.strip()
    return out


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--asset-type",
    required=True,
    envvar="CITYWATCH_REPLAY_ASSET_TYPE",
    help="Catalogue type of the readings, e.g. water_quality_station (enable "
    "core/catalogues/water_quality_station.toml in CITYWATCH_ASSET_CATALOGUE).",
)
@click.option("--device", "device_id", required=True, envvar="CITYWATCH_REPLAY_DEVICE")
@click.option("--asset-id", default=None, help="Asset of the device [default: the device id].")
@click.option(
    "--speed",
    type=float,
    default=1.0,
    show_default=True,
    envvar="CITYWATCH_REPLAY_SPEED",
    help="Recorded seconds per wall-clock second; 0 = as fast as possible.",
)
@click.option(
    "--shift-to-now/--keep-time",
    "shift",
    default=True,
    show_default=True,
    help="Shift the record so it ends when the replay does (spacing kept), or keep "
    "its timestamps (a backfill: run the worker with CITYWATCH_MAX_READING_AGE_DAYS=0).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["auto", "gecco", "skab", "cmapss", "csv"]),
    default="auto",
    show_default=True,
)
@click.option("--map", "maps", multiple=True, metavar="COLUMN=METRIC", help="Map a column.")
@click.option(
    "--interval",
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds between rows of a file without a time column (C-MAPSS: per cycle).",
)
@click.option("--time-column", default=None, help="Time column of a plain CSV [default: time].")
@click.option("--label-column", default=None, help="0/1 label column of a plain CSV, if any.")
@click.option("--unit", type=int, default=None, help="C-MAPSS: replay only this engine.")
@click.option(
    "--failure-at-end", is_flag=True, help="C-MAPSS training file: each engine's last cycle fails."
)
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@click.pass_obj
def replay(
    settings: Settings,
    file: Path,
    asset_type: str,
    device_id: str,
    asset_id: str | None,
    speed: float,
    shift: bool,
    fmt: str,
    maps: tuple[str, ...],
    interval: float,
    unit: int | None,
    failure_at_end: bool,
    time_column: str | None,
    label_column: str | None,
    as_json: bool,
) -> None:
    """Stream a recorded CSV (GECCO, SKAB, C-MAPSS or any CSV) into the running worker.

    \b
    Each row becomes a reading of DEVICE on the readings topic, in the same
    wire format as the simulator and the LoRaWAN bridge, paced at --speed.
    Every bad row becomes a dead letter with its reason, is counted, and the
    replay goes on; rows with no values are gaps and send nothing. Labelled
    runs (GECCO event, SKAB anomaly) are stored in the failures table as
    ground truth, so alerts can be scored against them.
    """
    from tqdm import tqdm

    from citywatch.runtime import connect
    from core.assets import ASSET_TYPES
    from ingest.lorawan.publisher import KafkaPublisher
    from ingest.replay import ReplayError, replay_file
    from storage.device_registry import register_devices
    from storage.training_data import record_failures
    from streams.topics import DEADLETTER, READINGS, ensure_topics

    if asset_type not in ASSET_TYPES:
        raise click.ClickException(
            f"unknown asset type {asset_type!r}; known: {', '.join(ASSET_TYPES)}. Operator "
            "types are enabled with CITYWATCH_ASSET_CATALOGUE (see docs/assets.md)."
        )
    asset_id = asset_id or device_id
    conn = connect(settings)
    ensure_topics(conn.kafka, settings)
    with psycopg.connect(conn.database_url) as pg:
        register_devices(
            pg,
            [
                {
                    "device_id": device_id,
                    "asset_id": asset_id,
                    "asset_type": asset_type,
                    "lat": None,
                    "lon": None,
                    "installed_at": None,
                    "codec": "replay",
                }
            ],
        )
    publisher = KafkaPublisher(
        conn.kafka,
        settings.topic(READINGS),
        settings.topic(DEADLETTER),
        **{"client.id": "citywatch-replay"},
    )
    bar = tqdm(desc=f"replay {file.name}", unit="row", disable=None if not as_json else True)
    try:
        stats = replay_file(
            file,
            publisher,
            asset_type=ASSET_TYPES[asset_type],
            device_id=device_id,
            asset_id=asset_id,
            fmt=fmt,
            mapping=_mapping(maps),
            speed=speed,
            keep_time=not shift,
            interval_s=interval,
            unit=unit,
            failure_at_end=failure_at_end,
            time_column=time_column,
            label_column=label_column,
            progress=bar.update,
        )
    except ReplayError as exc:
        raise click.ClickException(f"{file}: {exc}") from exc
    finally:
        bar.close()
    rows = stats.failure_rows(
        device_id=device_id,
        asset_id=asset_id,
        asset_type=asset_type,
        source=f"replay:{file.name}",
    )
    with psycopg.connect(conn.database_url) as pg:
        record_failures(pg, rows)
    for reason, n in stats.bad_by_reason.items():
        log.warning("%d rows of %s dead-lettered as %s", n, file.name, reason)
    summary = stats.as_dict() | {
        "file": str(file),
        "device_id": device_id,
        "asset_type": asset_type,
    }
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        click.echo(
            f"{file.name}: {stats.readings} readings, {stats.gaps} gaps, {stats.bad} dead letters, "
            f"{len(stats.incidents)} labelled incidents stored as ground truth"
        )
