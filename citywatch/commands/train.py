"""``citywatch train``: fit the failure-risk models, register them, optionally promote."""

from __future__ import annotations

import getpass
import json
from typing import Any

import click

from citywatch.cli_options import parse_time
from core.settings import Settings
from services.training import train_from_database, train_synthetic


def _classifier_params(
    target_precision: float | None, alert_budget: float | None, class_weight: str | None
) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if target_precision is not None:
        params["target_precision"] = target_precision
    if alert_budget is not None:
        params["alert_budget"] = alert_budget
    if class_weight not in (None, "none"):
        params["class_weight"] = class_weight
    return params


@click.command()
@click.option(
    "--synthetic",
    is_flag=True,
    envvar="CITYWATCH_TRAIN_SYNTHETIC",
    help="Train on freshly simulated history (works offline, no database needed).",
)
@click.option(
    "--since",
    callback=parse_time,
    envvar="CITYWATCH_TRAIN_SINCE",
    help="Database training: first reading time (ISO, UTC if no zone).",
)
@click.option(
    "--until",
    callback=parse_time,
    envvar="CITYWATCH_TRAIN_UNTIL",
    help="Database training: readings before this time (ISO).",
)
@click.option(
    "--asset-type",
    "asset_types",
    multiple=True,
    envvar="CITYWATCH_TRAIN_ASSET_TYPES",
    help="Only these asset types (repeatable).",
)
@click.option(
    "--devices",
    type=int,
    default=120,
    show_default=True,
    envvar="CITYWATCH_TRAIN_DEVICES",
    help="--synthetic: simulated devices.",
)
@click.option(
    "--ticks",
    type=int,
    default=2000,
    show_default=True,
    envvar="CITYWATCH_TRAIN_TICKS",
    help="--synthetic: readings per device.",
)
@click.option(
    "--horizon",
    type=int,
    default=60,
    show_default=True,
    envvar="CITYWATCH_TRAIN_HORIZON",
    help="Label: the device fails within this many readings.",
)
@click.option(
    "--target-precision",
    type=click.FloatRange(0, 1, min_open=True),
    envvar="CITYWATCH_TRAIN_TARGET_PRECISION",
    help="Alert threshold: highest recall with held-out precision >= this [default 0.8].",
)
@click.option(
    "--alert-budget",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    envvar="CITYWATCH_TRAIN_ALERT_BUDGET",
    help="Alert threshold instead: at most this share of readings alert (e.g. 0.01).",
)
@click.option(
    "--class-weight",
    type=click.Choice(["none", "balanced"]),
    default="none",
    show_default=True,
    envvar="CITYWATCH_TRAIN_CLASS_WEIGHT",
    help="Reweight the rare failure class in the boosting loss (calibration follows).",
)
@click.option(
    "--test-fraction",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=0.25,
    show_default=True,
    envvar="CITYWATCH_TRAIN_TEST_FRACTION",
    help="Share of each asset type's assets held out for the card's metrics.",
)
@click.option(
    "--test-time-fraction",
    type=click.FloatRange(0, 1, max_open=True),
    default=None,
    envvar="CITYWATCH_TRAIN_TEST_TIME_FRACTION",
    help="Also split by time: the last share of the time range is the test period "
    "[default 0.25 from the database, 0 with --synthetic].",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    envvar="CITYWATCH_TRAIN_SEED",
    help="Same seed and data give the same model.",
)
@click.option("--owner", envvar="CITYWATCH_MODEL_OWNER", help="Owner recorded in the model card.")
@click.option(
    "--promote/--no-promote",
    default=None,
    envvar="CITYWATCH_TRAIN_PROMOTE",
    help="Make the new model champion [default: yes with --synthetic, no otherwise].",
)
@click.option(
    "--if-no-champion",
    is_flag=True,
    envvar="CITYWATCH_TRAIN_IF_NO_CHAMPION",
    help="Do nothing when a champion exists (compose's one-shot job re-runs on every up, "
    "and must not replace a champion an operator chose).",
)
@click.option(
    "--include-simulated",
    is_flag=True,
    envvar="CITYWATCH_TRAIN_INCLUDE_SIMULATED",
    help="Also train on uplinks a network server marked simulated (left out by default).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
def train(
    settings: Settings,
    synthetic,
    since,
    until,
    asset_types,
    devices,
    ticks,
    horizon,
    target_precision,
    alert_budget,
    class_weight,
    test_fraction,
    test_time_fraction,
    seed,
    owner,
    promote,
    if_no_champion,
    include_simulated,
    as_json,
):
    """Train failure-risk models (LightGBM, calibrated) and register them.

    \b
    By default trains on the history stored in the database: readings, the
    failures table (simulator ground truth), imported work orders
    (`citywatch labels import`) and crews' alert outcomes. Assets are split
    into training and test sets as whole groups, and by time. The new version
    is saved in the model store, its model card goes to the database
    registry, and with --promote it becomes champion.

    With --synthetic the training data is simulator history with injected
    failures, so a fresh install has a working model.
    """
    from citywatch.runtime import connect

    if target_precision is not None and alert_budget is not None:
        raise click.UsageError("give --target-precision or --alert-budget, not both")
    params = _classifier_params(target_precision, alert_budget, class_weight)
    if if_no_champion:
        champion = _current_champion(settings)
        if champion is not None:
            click.echo(f"champion {champion} exists; not training (--if-no-champion)")
            return
    actor = getpass.getuser()
    if synthetic:
        conn = _database_if_running(settings)
        bundle, metrics, path = train_synthetic(
            settings,
            devices=devices,
            ticks=ticks,
            seed=seed,
            horizon=horizon,
            progress=not as_json,
            promote=True if promote is None else promote,
            database_url=conn,
            owner=owner,
            actor=actor,
            classifier_params=params,
        )
    else:
        conn = connect(settings)
        try:
            bundle, metrics, path = train_from_database(
                settings,
                conn.database_url,
                horizon=horizon,
                seed=seed,
                since=since,
                until=until,
                asset_types=list(asset_types) or None,
                test_fraction=test_fraction,
                test_time_fraction=0.25 if test_time_fraction is None else test_time_fraction,
                classifier_params=params,
                progress=not as_json,
                promote=bool(promote),
                owner=owner,
                actor=actor,
                include_simulated=include_simulated,
            )
        except ValueError as exc:
            raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(
            json.dumps(
                {"version": bundle.version, "path": str(path), "metrics": metrics},
                indent=2,
                default=str,
            )
        )
    else:
        click.echo(f"model {bundle.version} saved to {path}")
        click.echo(json.dumps(metrics, indent=2, default=str))


def _current_champion(settings: Settings) -> str | None:
    """The champion in the database registry when a database is at hand, else the file store's."""
    from models.bundle_store import read_champion

    database_url = _database_if_running(settings)
    if database_url is None:
        return read_champion(settings.models_path)
    from models.catalog import ModelCatalog

    return ModelCatalog(database_url, settings.models_path).active().champion


def _database_if_running(settings: Settings) -> str | None:
    """The database URL when one is configured or the embedded one runs, else None.

    --synthetic must keep working offline, so it registers the model only when
    a database is at hand and never starts one.
    """
    from citywatch.runtime import connect
    from citywatch.stack import StackError

    try:
        return connect(settings, start_embedded=False).database_url
    except StackError:
        return None
