"""``citywatch bench water-quality``: the water-quality scorer on a recorded station."""

from __future__ import annotations

import json
import math
from pathlib import Path

import click

from citywatch.cli_options import datasets_option


@click.command("water-quality")
@datasets_option("Folder with train.csv (or its parent holding gecco2018/); split by time.")
@click.option(
    "--train",
    "train_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    envvar="CITYWATCH_BENCH_TRAIN",
    help="Training file (GECCO format); use with --test instead of --data.",
)
@click.option(
    "--test",
    "test_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    envvar="CITYWATCH_BENCH_TEST",
    help="Test file, later in time than --train.",
)
@click.option(
    "--test-fraction",
    type=float,
    default=None,
    envvar="CITYWATCH_BENCH_TEST_FRACTION",
    help="With --data: share of the rows, at the end, held out [default: 0.5, fixed "
    "before any result; see models/water_quality_eval.py].",
)
@click.option("--rows", type=int, default=None, help="Use only the first N rows (quick runs).")
@click.option(
    "--save",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the model fitted on the training part here (JSON), for the worker.",
)
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write a PNG of the test part: probabilities against the labels.",
)
@click.option("--seed", type=int, default=0, show_default=True, envvar="CITYWATCH_BENCH_SEED")
@click.option("--json", "as_json", is_flag=True, help="Print every figure as JSON.")
def bench_water_quality(
    data, train_file, test_file, test_fraction, rows, save, plot, seed, as_json
) -> None:
    """Incident detection and the 1/6/24/48 h outlook on a water-quality record.

    \b
    Trains on the first part of the record and scores the rest, by time.
    Reports VUS-PR (as TSB-AD computes it; its best on GECCO 2018 is 0.202),
    the per-minute event F1 (the GECCO challenge's score), and for each
    horizon balanced accuracy and AUC next to the persistence baseline
    measured on the same rows. Configuration is chosen on the last part of
    the training data, never on the test part.
    """
    from models.water_quality import gecco_file, load_gecco
    from models.water_quality_eval import TEST_FRACTION, evaluate_water_quality, split_by_time

    if (train_file is None) != (test_file is None):
        raise click.UsageError("--train and --test go together")
    try:
        if train_file is not None:
            if test_fraction is not None:
                raise click.UsageError("--test-fraction applies to --data only")
            train, test = load_gecco(str(train_file)), load_gecco(str(test_file))
            source = f"--train {train_file} --test {test_file}"
        else:
            frame = load_gecco(str(gecco_file(data)))
            if rows:
                frame = frame.iloc[:rows]
            fraction = TEST_FRACTION if test_fraction is None else test_fraction
            train, test = split_by_time(frame, fraction)
            source = f"--data {data}" + (f" --test-fraction {fraction}" if test_fraction else "")
            source += f" --rows {rows}" if rows else ""
        result = evaluate_water_quality(
            train,
            test,
            seed=seed,
            progress=not as_json,
            save_to=str(save) if save else None,
            plot_to=str(plot) if plot else None,
        )
    except (FileNotFoundError, ValueError, KeyError) as exc:
        raise click.ClickException(f"water-quality: {exc}") from exc
    result["command"] = (
        f"citywatch bench water-quality {source} --seed {seed} --json"
        + (f" --save {save}" if save else "")
        + (f" --plot {plot}" if plot else "")
    )
    if as_json:
        click.echo(json.dumps(_finite(result), indent=2, default=str))
        return
    click.echo(
        f"VUS-PR {result['vus_pr']:.3f} (TSB-AD best {result['tsb_ad_best_vus_pr']}), "
        f"F1 {result['f1']:.3f}, unsupervised VUS-PR {result['unsupervised_vus_pr']:.3f}"
    )
    for h, fig in result["horizons"].items():
        if fig["auc"] is None:
            click.echo(f"  {h:>2} h: {fig['note']}")
            continue
        click.echo(
            f"  {h:>2} h: balanced accuracy {fig['balanced_accuracy']:.3f} "
            f"(persistence {fig['persistence_balanced_accuracy']:.3f}), AUC {fig['auc']:.3f}"
        )


def _finite(obj):
    """NaN -> None so the output is strict JSON."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
