"""``citywatch bench leaks``: leak detection and localisation on LeakDB, against MNF."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
from functools import partial
from pathlib import Path

import click
from tqdm import tqdm

# LeakDB paper, Table 1 (Hanoi, 500 scenarios): MNF with λ = 20 %, in [0, 1].
PAPER_MNF_HANOI = {"recall": 0.3990, "tnr": 0.9958, "f1": 0.5649, "early_detection": 0.3235}
PAPER_RANDOM_HANOI_F1 = 0.3211


def _default_data(dataset: str) -> Path:
    return Path(os.environ.get("CITYWATCH_DATASETS", "../shared/datasets")) / dataset


def _parse_range(text: str) -> tuple[int, int]:
    lo, _, hi = text.partition("-")
    try:
        return int(lo), int(hi or lo)
    except ValueError as exc:
        raise click.BadParameter(f"{text!r} is not a range like 501-700") from exc


@click.command("leaks")
@click.option(
    "--dataset",
    type=click.Choice(["leakdb", "battledim"]),
    default="leakdb",
    show_default=True,
    envvar="CITYWATCH_BENCH_DATASET",
    help="leakdb: regenerated scenarios, per-step scores; battledim: L-Town 2019 flows, "
    "detections, delays and euros.",
)
@click.option(
    "--data",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    show_default="$CITYWATCH_DATASETS/<dataset>",
    envvar="CITYWATCH_BENCH_DATA",
    help="LeakDB: the .inp files and <network>_scenarios.csv / <network>_leaks.csv; "
    "BattLeDIM: L-TOWN.inp and the *_2019.csv files.",
)
@click.option(
    "--network",
    "networks",
    type=click.Choice(["hanoi", "net1"]),
    multiple=True,
    default=("hanoi", "net1"),
    show_default=True,
    envvar="CITYWATCH_BENCH_NETWORK",
)
@click.option(
    "--scenarios",
    default="501-700",
    show_default=True,
    envvar="CITYWATCH_BENCH_SCENARIOS",
    help="Scenario numbers to run (inclusive range). The configuration was chosen on 1-500.",
)
@click.option(
    "--leaks",
    "leaks_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    envvar="CITYWATCH_BENCH_LEAKS",
    help="Another leak-parameter file of the same format (e.g. scenarios 701-1000); "
    "a <name>_scenarios.csv beside it adds the leak-free scenarios.",
)
@click.option("--every", type=int, default=1, show_default=True, help="Run every Nth scenario.")
@click.option(
    "--select",
    is_flag=True,
    help="Score every configuration of the grid (use on 1-500 only) instead of the chosen one.",
)
@click.option(
    "--sensors",
    type=click.IntRange(min=1),
    default=None,
    envvar="CITYWATCH_BENCH_SENSORS",
    help="Pressure sensors on this many junctions only (placed by networks.model."
    "place_sensors); default: every junction, as LeakDB's data.",
)
@click.option("--workers", type=int, default=1, show_default=True, envvar="CITYWATCH_BENCH_WORKERS")
@click.option("--json", "as_json", is_flag=True, help="Print every figure as JSON.")
def bench_leaks(
    dataset, data, networks, scenarios, leaks_file, every, select, sensors, workers, as_json
) -> None:
    """Detect and localise leaks, against LeakDB's minimum-night-flow detector
    (λ = 20 %) run on the same readings.

    Every scenario is simulated again with WNTR/EPANET from its published leak
    parameters (see networks/scenarios.py for how), then the residual detector
    and MNF run on the same readings; recall, TNR, F1 and the early-detection
    score follow LeakDB's scoring_algorithm.m, pooled over all steps.
    localised_top3 is the share of detected leaks whose node is among the
    first 3 candidates, next to a random ranking of the same candidates.

    BattLeDIM 2019 has flows and the tank level only: detections, false alarms,
    delays and the economic score (distance term left out: no pipe is named).
    """
    from networks.leakdb_bench import (
        CHOSEN,
        GRID,
        MNF_GAMMA,
        Outcome,
        chosen_for,
        evaluate,
        summary,
    )
    from networks.scenarios import check_scenarios, read_scenarios

    # EPANET warns at every step where Net1's pump cannot deliver; the warning is
    # the model's, not ours, and thousands of them bury the figures.
    logging.getLogger("wntr.epanet.toolkit").setLevel(logging.ERROR)
    data = data or _default_data(dataset)
    if not data.is_dir():
        raise click.ClickException(f"{data} is not a folder (set --data)")
    if dataset == "battledim":
        from networks.battledim import run_bench

        _print_battledim(run_bench(data, CHOSEN, MNF_GAMMA), as_json)
        return

    lo, hi = _parse_range(scenarios)
    if leaks_file is not None:
        # A leak file is one network's: named like hanoi_leaks.csv, or chosen by --network.
        named = [n for n in networks if n in leaks_file.name.lower()]
        if len(named) != 1 and len(networks) != 1:
            raise click.ClickException(
                f"which network is {leaks_file.name}? pass --network hanoi or --network net1"
            )
        networks = named if len(named) == 1 else networks
    figures: dict = {}
    for network in networks:
        try:
            found = read_scenarios(data, network, leaks_file)
            chosen = [s for s in found if lo <= s.number <= hi][::every]
            check_scenarios(data, chosen)
        except (OSError, ValueError, KeyError) as exc:
            raise click.ClickException(f"{network}: unusable scenario file: {exc}") from exc
        if not chosen:
            raise click.ClickException(f"{network}: no scenario in {scenarios}")
        total = Outcome()
        configs = GRID if select else [chosen_for(network)]
        run = partial(evaluate, data, configs=configs, sensors=sensors)
        bar = tqdm(
            total=len(chosen), desc=network, unit="scenario", disable=None if not as_json else True
        )
        if workers > 1:
            with multiprocessing.get_context("spawn").Pool(workers) as pool:
                for outcome in pool.imap_unordered(run, chosen):
                    total.merge(outcome)
                    bar.update()
        else:
            for scenario in chosen:
                total.merge(run(scenario))
                bar.update()
        bar.close()
        if select:
            figures[network] = {
                "scenarios": len(chosen),
                "pressure_sensors": sensors,
                "configs": [
                    {"config": repr(c), **summary(total, i)} for i, c in enumerate(configs)
                ],
            }
        else:
            figures[network] = {**summary(total), "scenarios": len(chosen)}
            if sensors is not None:
                figures[network]["pressure_sensors"] = sensors
            if network == "hanoi":
                figures[network]["paper_mnf"] = PAPER_MNF_HANOI
                figures[network]["paper_random_f1"] = PAPER_RANDOM_HANOI_F1
    if as_json:
        click.echo(json.dumps(figures, indent=2))
        return
    for network, fig in figures.items():
        click.echo(f"{network} ({fig['scenarios']} scenarios)")
        rows = fig["configs"] if select else [{"config": "chosen", **fig}]
        for row in rows:
            base = row["baseline"]
            click.echo(f"  {row['config']}")
            for key in ("f1", "recall", "tnr", "early_detection"):
                paper = fig.get("paper_mnf", {}).get(key)
                paper_txt = f"   paper MNF {paper:.4f}" if paper is not None else ""
                click.echo(
                    f"    {key:<16} detector {_fmt(row[key])}   MNF {_fmt(base[key])}{paper_txt}"
                )
            click.echo(
                f"    localised_top3   {_fmt(row['localised_top3'])} of {row['localised_leaks']} "
                f"detected leaks (random ranking {_fmt(row['localised_random_top3'])})"
            )


def _fmt(value: float | None) -> str:
    return "  n/a " if value is None else f"{value:.4f}"


def _print_battledim(fig: dict, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({"l-town": fig}, indent=2))
        return
    base = fig["baseline"]
    click.echo(f"L-Town 2019 ({fig['leaks_2019']} leaks starting in 2019)")
    for key in ("true_detections", "false_alarms", "missed_2019_leaks", "median_delay_h"):
        click.echo(f"  {key:<20} detector {fig[key]!s:>12}   MNF {base[key]!s:>12}")
    click.echo(
        f"  economic score (EUR) detector {fig['economic_score_eur']:>12,.2f}   "
        f"MNF {base['economic_score_eur']:>12,.2f}   perfect {fig['perfect_score_eur']:,.2f}"
    )
    click.echo(f"  distance term: {fig['distance_term']}")
