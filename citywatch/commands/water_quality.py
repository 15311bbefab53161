"""``citywatch water-quality``: refit a station's scorer from its stored history."""

from __future__ import annotations

import json
import math
import signal
import threading
from pathlib import Path

import click

from citywatch.cli_options import parse_duration
from core.settings import Settings


def _seconds(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """``24h``, ``30m`` (as ``parse_duration``) or plain seconds -> seconds."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = parse_duration(ctx, param, value).total_seconds()
    if not (seconds > 0 and math.isfinite(seconds)):
        raise click.BadParameter(f"{value!r}: the interval must be a positive number of seconds")
    return seconds


@click.group("water-quality")
def water_quality() -> None:
    """Water-quality stations: the incident detector and the 1/6/24/48 h outlook."""


@water_quality.command("train")
@click.option("--device", "device_id", required=True, envvar="CITYWATCH_WQ_DEVICE")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    envvar="CITYWATCH_WQ_MODEL",
    help="Model file to write (JSON).",
)
@click.option(
    "--like",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Keep this model's LightGBM settings and thresholds (chosen on validation by "
    "`bench water-quality --save`); without it, LightGBM defaults of citywatch and 0.5.",
)
@click.option(
    "--every",
    "every_s",
    callback=_seconds,
    default=None,
    envvar="CITYWATCH_WQ_REFIT_EVERY",
    metavar="DURATION",
    show_envvar=True,
    help="Keep running: refit now, then every DURATION (24h, 30m, or seconds) until "
    "SIGTERM/Ctrl-C. A failed refit keeps the file; an unchanged model is not rewritten.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the result as JSON (with --every: one line per refit).",
)
@click.pass_obj
def train(
    settings: Settings,
    device_id: str,
    out: Path,
    like: Path | None,
    every_s: float | None,
    as_json: bool,
) -> None:
    """Refit the station's detector and outlook on every stored reading and label.

    Readings come from the database, incident labels from the failures table
    (what `citywatch replay` and confirmed incidents store). Refit daily
    (`--every 24h`): the detector refitted daily is the one measured in
    docs/water-quality.md.
    """
    from citywatch.runtime import connect
    from models.water_quality_history import refit_station
    from models.water_quality_model import load_water_quality_model, save_water_quality_model

    if every_s is not None:
        _train_every(settings, device_id, out, like, every_s, as_json)
        return
    conn = connect(settings)
    try:
        template = load_water_quality_model(str(like)) if like else None
        model, frame = refit_station(conn.database_url, device_id, template)
    except ValueError as exc:
        raise click.ClickException(f"{device_id}: {exc}") from exc
    # Atomic (temporary file, then os.replace): a worker reloading it never reads half.
    version = save_water_quality_model(model, str(out))
    result = {
        "device_id": device_id,
        "readings": len(frame),
        "incident_minutes": int(frame["event"].sum()),
        "from": str(frame["ts"].iloc[0]),
        "until": str(frame["ts"].iloc[-1]),
        "horizons": sorted(model.horizon_models),
        "model": str(out),
        "version": version,
    }
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        click.echo(
            f"{device_id}: {result['readings']} readings, {result['incident_minutes']} incident "
            f"minutes, horizons {result['horizons']} h -> {out} ({version})"
        )


def _train_every(
    settings: Settings, device_id: str, out: Path, like: Path | None, every_s: float, as_json: bool
) -> None:
    """``train --every``: the loop of ``services.water_quality_refit``, stopped by a signal."""
    from citywatch.runtime import database_url
    from models.water_quality_model import load_water_quality_model
    from services.water_quality_refit import refit_every

    try:
        template = load_water_quality_model(str(like)) if like else None
    except ValueError as exc:  # a wrong option: better now than at every run
        raise click.ClickException(str(exc)) from exc
    # Only the database, no broker; no migration: the loop only reads, and a
    # database down at start is a failed run to try again, not a crash.
    url = database_url(settings, migrate=False)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    refit_every(
        url,
        device_id,
        out,
        every_s,
        template=template,
        stop=stop,
        report=(lambda r: click.echo(json.dumps(r.as_dict()))) if as_json else None,
    )
