"""LeakDB scenarios regenerated from their published leak parameters.

LeakDB's own demand series (8-25 GB) are not available, so each scenario is
simulated again here, following the LeakDB generator's recipe
(``CCWI-WDSA2018/Dataset_Generator_Py3`` in KIOS-Research/LeakDB) with our own
coefficients, because its Fourier coefficient files are not available either:

* every junction gets its own demand pattern: a daily cycle (night minimum,
  morning and evening peaks) with a weekend variant, times a yearly cycle
  (summer higher), the Fourier amplitudes and phases drawn per junction
  (±10 %), the daily swing scaled by 0.75 ± 0.07, times 5 % Gaussian noise
  per step (LeakDB: ``dem = (1 + year) · (1 + variation · week) · (1 + noise)``);
* each base demand and each pipe's length, diameter and roughness are moved by
  a uniform ±u, with u drawn per scenario from {0, 5, 10, 15, 20} % as in the
  generator, so the model a detector holds never matches the "real" network;
* leaks are EPANET emitters (pressure-driven outflow ``Cd·A·√(2gh)``); an
  incipient hole grows linearly in diameter from ``start_step`` to
  ``peak_step``, an abrupt one is full size from ``start_step``; both stop at
  ``end_step``; hydraulics are pressure-driven (PDD), as LeakDB's.

The random draws are seeded by (network, scenario), so a scenario regenerates
identically anywhere. Labels follow the water-benchmark-hub loader: a step is 1
when ``start_step <= k < end_step`` for any leak of the scenario.
"""

from __future__ import annotations

import csv
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .hydraulics import Leak, Sensors, load_network, run
from .model import leak_site

STEPS_PER_DAY = 48
YEAR_STEPS = 365 * STEPS_PER_DAY
NETWORK_FILES = {"hanoi": "Hanoi_CMH.inp", "net1": "Net1.inp"}
UNCERTAINTY_LEVELS = (0.0, 0.05, 0.10, 0.15, 0.20)


@dataclass(frozen=True, slots=True)
class Scenario:
    network: str
    number: int
    leaks: tuple[Leak, ...]

    def labels(self, steps: int = YEAR_STEPS) -> np.ndarray:
        out = np.zeros(steps, dtype=bool)
        for leak in self.leaks:
            out[leak.start : min(leak.end, steps)] = True
        return out


def read_scenarios(folder: Path, network: str, leaks_file: Path | None = None) -> list[Scenario]:
    """Scenarios of ``<network>_scenarios.csv`` with their leaks from ``<network>_leaks.csv``
    (or another file of the same format, e.g. scenarios 701-1000).

    A leaks file without a matching scenarios file lists leaky scenarios only.
    """
    leaks_path = leaks_file or folder / f"{network}_leaks.csv"
    by_scenario: dict[int, list[Leak]] = {}
    with open(leaks_path, newline="") as fh:
        for row in csv.DictReader(fh):
            leak = Leak(
                node=row["node"].strip(),
                diameter_m=float(row["diameter_m"]),
                start=int(row["start_step"]),
                peak=int(row["peak_step"]),
                end=int(row["end_step"]),
            )
            if row["type"].strip() not in ("abrupt", "incipient"):
                raise ValueError(f"{leaks_path}: unknown leak type {row['type']!r}")
            by_scenario.setdefault(int(row["scenario"]), []).append(leak)
    scen_path = leaks_path.with_name(leaks_path.name.replace("_leaks", "_scenarios"))
    numbers = sorted(by_scenario)
    if scen_path.exists() and scen_path != leaks_path:
        with open(scen_path, newline="") as fh:
            numbers = sorted({int(row["scenario"]) for row in csv.DictReader(fh)} | set(numbers))
    return [Scenario(network, n, tuple(by_scenario.get(n, ()))) for n in numbers]


def check_scenarios(folder: Path, scenarios: list[Scenario]) -> None:
    """Refuse, with the scenario and the reason, leaks the network cannot have."""
    if not scenarios:
        return
    wn = load_network(folder / NETWORK_FILES[scenarios[0].network])
    nodes = set(wn.junction_name_list) | set(wn.tank_name_list)
    for sc in scenarios:
        for leak in sc.leaks:
            where = f"scenario {sc.number}, leak at {leak.node!r}"
            if leak.node not in nodes:
                raise ValueError(f"{where}: no such junction or tank in {sc.network}")
            if not 0 < leak.diameter_m <= 1:
                raise ValueError(f"{where}: diameter {leak.diameter_m} m out of (0, 1]")
            if not 0 <= leak.start <= leak.peak <= leak.end <= YEAR_STEPS:
                raise ValueError(f"{where}: needs 0 <= start <= peak <= end <= {YEAR_STEPS}")


def _rng(network: str, number: int, salt: str = "") -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(f"{network}:{number}:{salt}".encode()))


def demand_patterns(
    n_junctions: int, rng: np.random.Generator, steps: int = YEAR_STEPS
) -> np.ndarray:
    """Multipliers of each junction's base demand, shape (steps, junctions)."""
    k = np.arange(steps)[:, None]
    hour = (k % STEPS_PER_DAY) / 2.0
    day = k // STEPS_PER_DAY
    weekend = (day % 7) >= 5

    def jitter(size=n_junctions, spread=0.1):
        return 1 + spread * (2 * rng.random(size) - 1)

    # Daily cycle: a 24 h harmonic (minimum about 02:00) and a 12 h one (peaks ~08:00
    # and ~20:00); weekends start later and swing less.
    a1, a2 = 0.35 * jitter(), 0.20 * jitter()
    ph1, ph2 = (
        14 + 0.5 * (2 * rng.random(n_junctions) - 1),
        8 + 0.5 * (2 * rng.random(n_junctions) - 1),
    )
    shift = np.where(weekend, 1.5, 0.0)
    daily = a1 * np.cos(2 * np.pi * (hour - ph1 - shift) / 24) + a2 * np.cos(
        4 * np.pi * (hour - ph2 - shift) / 24
    )
    daily = daily * np.where(weekend, 0.85, 1.0)
    week = daily + np.where(weekend, -0.05, 0.0)
    variation = 0.75 + rng.normal(0, 0.07, n_junctions)
    # Yearly cycle: summer about 10 % above the mean.
    year = 0.10 * jitter() * np.sin(2 * np.pi * (k / STEPS_PER_DAY - 105) / 365)
    noise = rng.normal(0, 0.05, (steps, n_junctions))
    return np.clip((1 + year) * (1 + variation * week) * (1 + noise), 0.0, None)


def perturb_network(wn, rng: np.random.Generator) -> None:
    """LeakDB's model uncertainty: base demands, lengths, diameters, roughness ±u."""
    levels = rng.choice(UNCERTAINTY_LEVELS, size=4)
    for name in wn.junction_name_list:
        ts = wn.get_node(name).demand_timeseries_list
        if len(ts):
            ts[0].base_value *= 1 + levels[0] * (2 * rng.random() - 1)
    for name in wn.pipe_name_list:
        pipe = wn.get_link(name)
        pipe.length *= 1 + levels[1] * (2 * rng.random() - 1)
        pipe.diameter *= 1 + levels[2] * (2 * rng.random() - 1)
        pipe.roughness *= 1 + levels[3] * (2 * rng.random() - 1)


def regenerate(folder: Path, scenario: Scenario, steps: int = YEAR_STEPS) -> Sensors:
    """Simulate one LeakDB scenario: sensor readings for every 30-minute step."""
    wn = load_network(folder / NETWORK_FILES[scenario.network])
    rng = _rng(scenario.network, scenario.number)
    perturb_network(wn, rng)
    patterns = demand_patterns(len(wn.junction_name_list), rng, steps)
    leaks = [replace(leak, node=leak_site(wn, leak.node)) for leak in scenario.leaks]
    return run(wn, patterns, leaks)
