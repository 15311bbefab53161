"""``citywatch bench model``: the production feature code and models on public benchmarks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import click

from citywatch.cli_options import datasets_option


@click.command("model")
@click.option(
    "--dataset",
    type=click.Choice(["cmapss", "skab"]),
    required=True,
    envvar="CITYWATCH_BENCH_DATASET",
    help="cmapss: RUL regression + fails-within-30-cycles classifier; skab: anomaly detection.",
)
@datasets_option("Folder with the files (or its parent holding cmapss/ or skab/).")
@click.option(
    "--subset",
    default="FD001",
    show_default=True,
    envvar="CITYWATCH_BENCH_SUBSET",
    help="C-MAPSS subset: reads train_<S>.txt, test_<S>.txt, RUL_<S>.txt.",
)
@click.option(
    "--horizon",
    type=int,
    default=30,
    show_default=True,
    envvar="CITYWATCH_BENCH_HORIZON",
    help="C-MAPSS classifier label: fails within this many cycles.",
)
@click.option(
    "--folds",
    type=int,
    default=None,
    envvar="CITYWATCH_BENCH_FOLDS",
    help="SKAB: folds of whole files [default: leave one file out].",
)
@click.option(
    "--protocol",
    type=click.Choice(["lofo", "leaderboard"]),
    default="lofo",
    show_default=True,
    envvar="CITYWATCH_BENCH_PROTOCOL",
    help="SKAB: lofo = supervised, leave files out; leaderboard = SKAB's own protocol, "
    "unsupervised per file, fitted on its first 400 rows (the cold-start health model).",
)
@click.option(
    "--detector",
    type=click.Choice(["baseline", "hst"]),
    default="baseline",
    show_default=True,
    envvar="CITYWATCH_BENCH_DETECTOR",
    help="SKAB leaderboard: baseline = citywatch's health model; hst = river's "
    "HalfSpaceTrees, for comparison (needs river: pip install 'citywatch[bench]').",
)
@click.option("--seed", type=int, default=0, show_default=True, envvar="CITYWATCH_BENCH_SEED")
@click.option(
    "--seeds",
    default=None,
    envvar="CITYWATCH_BENCH_SEEDS",
    help="Comma-separated seeds: run each and report the spread (e.g. 0,1,2).",
)
@click.option("--per-file", is_flag=True, help="SKAB: include each file's scores.")
@click.option("--json", "as_json", is_flag=True, help="Print every figure as JSON.")
def bench_model(
    dataset, data, subset, horizon, folds, protocol, detector, seed, seeds, per_file, as_json
) -> None:
    """Score the citywatch feature code and LightGBM models on real data.

    \b
    cmapss (NASA C-MAPSS): RUL regression scored on each test engine's last
      cycle, true RUL capped at 125: rmse and phm_score (PHM08, late
      predictions cost more); plus auc, precision and recall of the failure
      classifier for "fails within --horizon cycles".
    skab (Skoltech pump rig): leave whole files out; f1, far and mar (%) as on
      the SKAB leaderboard (point-wise, pooled over files).
    skab --protocol leaderboard: SKAB's own protocol, per file, unsupervised,
      fitted on the file's first 400 rows; the cold-start health model, its
      configuration chosen by nested leave-one-file-out.
    Configuration is chosen on training data only; the test data is scored once.
    """
    from models.evaluation import evaluate_cmapss, evaluate_skab

    seed_list = [int(s) for s in seeds.split(",")] if seeds else [seed]
    try:
        if dataset == "skab" and protocol == "leaderboard":
            result = _leaderboard(data, detector, seed_list, as_json)
            if not per_file:
                result.pop("per_file", None)
            headline = ("f1", "far", "mar")
        elif dataset == "cmapss":
            runs = [
                evaluate_cmapss(data, seed=s, progress=not as_json, subset=subset, horizon=horizon)
                for s in seed_list
            ]
            headline = ("rmse", "phm_score", "auc", "precision", "recall")
            result = _over_seeds(runs, seed_list, (*headline, "interval.coverage"))
        else:
            runs = [
                evaluate_skab(data, seed=s, progress=not as_json, n_folds=folds) for s in seed_list
            ]
            for r in runs:
                if not per_file:
                    r.pop("per_file")
            headline = ("f1", "far", "mar", "auc")
            result = _over_seeds(runs, seed_list, headline)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        raise click.ClickException(f"{dataset}: {exc}") from exc
    result["command"] = (
        f"citywatch bench model --dataset {dataset} --data {data} --seed {seed}"
        + (f" --protocol {protocol} --detector {detector}" if dataset == "skab" else "")
        + (f" --seeds {seeds}" if seeds else "")
        + (f" --subset {subset} --horizon {horizon}" if dataset == "cmapss" else "")
        + (f" --folds {folds}" if folds else "")
    )
    if as_json:
        click.echo(json.dumps(_finite(result), indent=2, default=str))
        return
    click.echo(result["dataset"])
    for key in headline:
        click.echo(f"  {key:10s} {result[key]:.4f}")


def _over_seeds(runs: list[dict], seeds: list[int], keys: tuple[str, ...]) -> dict:
    """The first seed's result, plus each seed's headline figures and their spread."""

    def get(r: dict, key: str) -> float:
        for part in key.split("."):
            r = r[part]
        return float(r)  # type: ignore[arg-type]

    result = dict(runs[0])
    if len(runs) > 1:
        result["seeds"] = {
            s: {k: get(r, k) for k in keys} for s, r in zip(seeds, runs, strict=True)
        }
        result["spread_over_seeds"] = {
            k: {
                "mean": sum(get(r, k) for r in runs) / len(runs),
                "min": min(get(r, k) for r in runs),
                "max": max(get(r, k) for r in runs),
            }
            for k in keys
        }
    return result


def _leaderboard(data: Path, detector: str, seeds: list[int], as_json: bool) -> dict:
    from models.health_eval import skab_leaderboard, skab_leaderboard_hst

    if detector == "hst":
        try:
            return skab_leaderboard_hst(data, seeds=seeds, progress=not as_json)
        except ImportError as exc:
            raise click.ClickException(
                f"--detector hst needs river ({exc}); pip install 'citywatch[bench]'"
            ) from exc
    return skab_leaderboard(data, progress=not as_json)


def _finite(obj):
    """NaN -> None so the output is strict JSON."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
