"""``citywatch drift``: feature drift of recent readings against the champion's training data."""

from __future__ import annotations

import json
import logging
import time

import click

from citywatch.cli_options import parse_duration, parse_time
from core.settings import Settings

log = logging.getLogger("citywatch.drift")


@click.command()
@click.option(
    "--window",
    default="1h",
    show_default=True,
    callback=parse_duration,
    envvar="CITYWATCH_DRIFT_WINDOW",
    help="Recent window compared with the training data (30m, 1h, 1d, ...).",
)
@click.option(
    "--context",
    default=None,
    callback=parse_duration,
    envvar="CITYWATCH_DRIFT_CONTEXT",
    help="History replayed before the window to warm rolling windows and baselines "
    "[default: 4 x window].",
)
@click.option(
    "--threshold",
    type=float,
    default=0.2,
    show_default=True,
    envvar="CITYWATCH_DRIFT_THRESHOLD",
    help="PSI at or above which a drift alert is raised (0.1-0.2 moderate, >0.2 large).",
)
@click.option(
    "--min-rows",
    type=int,
    default=50,
    show_default=True,
    envvar="CITYWATCH_DRIFT_MIN_ROWS",
    help="Fewer values than this in the window never alert (too noisy).",
)
@click.option(
    "--model",
    "version",
    envvar="CITYWATCH_DRIFT_MODEL",
    help="Model version whose training data is the reference [default: the champion].",
)
@click.option(
    "--end",
    callback=parse_time,
    envvar="CITYWATCH_DRIFT_END",
    help="Window end (ISO) [default: now]; for backfills.",
)
@click.option(
    "--every",
    type=float,
    default=None,
    envvar="CITYWATCH_DRIFT_EVERY",
    help="Repeat every SECONDS until Ctrl-C (the window then always ends now).",
)
@click.option("--json", "as_json", is_flag=True, help="Print each result as JSON.")
@click.pass_obj
def drift(settings: Settings, window, context, threshold, min_rows, version, end, every, as_json):
    """Population stability index of every model feature over a recent window.

    \b
    Features are recomputed from the readings stored in the database with the
    same feature code the worker runs, then compared with the bin shares the
    model's training data had (stored in its card at training time). Each
    (asset type, feature) PSI is stored in feature_drift; a PSI at or above
    --threshold also inserts a drift_alerts row and logs a warning. The
    elapsed-time feature readings_since_maintenance is not monitored.
    """
    from citywatch.runtime import connect
    from models.drift import compute_drift

    if every is not None and end is not None:
        raise click.UsageError("--every always ends the window now; drop --end")
    conn = connect(settings)
    while True:
        try:
            result = compute_drift(
                conn.database_url,
                settings.models_path,
                window=window,
                end=end,
                context=context,
                threshold=threshold,
                min_rows=min_rows,
                version=version,
            )
        except ValueError as exc:
            raise click.ClickException(str(exc)) from exc
        _report(result, threshold, as_json)
        if every is None:
            return
        time.sleep(every)


def _report(result, threshold: float, as_json: bool) -> None:
    if as_json:
        click.echo(
            json.dumps(
                {
                    "model_version": result.model_version,
                    "window_start": result.window_start.isoformat(),
                    "window_end": result.window_end.isoformat(),
                    "features": len(result.rows),
                    "max_psi": result.max_psi(),
                    "alerts": result.alerts,
                    "new_alerts": result.new_alerts,
                },
                default=str,
            )
        )
        return
    log.info(
        "drift %s .. %s model %s: %d features, max PSI %.3f, %d at or above %.2f (%d new)",
        result.window_start.isoformat(timespec="seconds"),
        result.window_end.isoformat(timespec="seconds"),
        result.model_version,
        len(result.rows),
        result.max_psi(),
        len(result.alerts),
        threshold,
        result.new_alerts,
    )
    for r in sorted(result.rows, key=lambda r: -r["psi"])[:10]:
        click.echo(f"  {r['asset_type']:12s} {r['feature']:40s} PSI {r['psi']:.3f}  n={r['n']}")
