"""``citywatch train``: fit the failure-risk models and promote them."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import click

from citywatch.settings import Settings


def train_synthetic(
    settings: Settings,
    *,
    devices: int = 120,
    ticks: int = 2000,
    seed: int = 0,
    horizon: int = 60,
    progress: bool = True,
    promote: bool = True,
):
    """Simulate a fleet's history, train one classifier per asset type, save it."""
    from ingest.simulator import FleetSimulator, failures_frame, history_frame
    from models.registry import promote as promote_version
    from models.registry import save_bundle
    from models.training import train_risk_bundle

    fleet = FleetSimulator(n_devices=devices, seed=seed)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    readings, failures = fleet.history(ticks, start, timedelta(minutes=1))
    bundle, metrics = train_risk_bundle(
        history_frame(readings),
        failures_frame(failures),
        horizon=horizon,
        seed=seed,
        progress=progress,
        # The worker sees no maintenance events yet, so training must not reset
        # feature baselines at repairs either: train and serve stay identical.
        reset_on_failure=False,
    )
    path = save_bundle(bundle, settings.models_path)
    if promote:
        promote_version(settings.models_path, bundle.version)
    return bundle, metrics, path


@click.command()
@click.option("--synthetic", is_flag=True, help="Train on simulator history (works offline).")
@click.option("--devices", type=int, default=120, show_default=True)
@click.option("--ticks", type=int, default=2000, show_default=True, help="Readings per device.")
@click.option(
    "--horizon",
    type=int,
    default=60,
    show_default=True,
    help="Label: failure within this many readings.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--no-promote", is_flag=True, help="Save the model without making it champion.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def train(settings: Settings, synthetic, devices, ticks, horizon, seed, no_promote, as_json):
    """Train failure-risk models (LightGBM, calibrated) and promote the result.

    With --synthetic the training data is simulator history with injected
    failures, so a fresh install has a working model.
    """
    if not synthetic:
        raise click.UsageError("only --synthetic training is available so far")
    bundle, metrics, path = train_synthetic(
        settings,
        devices=devices,
        ticks=ticks,
        seed=seed,
        horizon=horizon,
        progress=not as_json,
        promote=not no_promote,
    )
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
