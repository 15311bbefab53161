"""``citywatch water-quality``: refit a station's scorer from its stored history."""

from __future__ import annotations

import json
from pathlib import Path

import click

from core.settings import Settings


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
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def train(settings: Settings, device_id: str, out: Path, like: Path | None, as_json: bool) -> None:
    """Refit the station's detector and outlook on every stored reading and label.

    Readings come from the database, incident labels from the failures table
    (what `citywatch replay` and confirmed incidents store). Run it daily: the
    detector refitted daily is the one measured in docs/water-quality.md.
    """
    from citywatch.runtime import connect
    from models.water_quality_history import refit_station
    from models.water_quality_model import load_water_quality_model, save_water_quality_model

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
