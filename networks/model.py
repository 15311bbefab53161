"""What the hydraulics predict: the utility's (nominal) EPANET model, simulated with WNTR.

Two things a detector needs from the model:

* ``expected_pressure(inflow)``: the pressure at each sensor when the measured
  inflow is spread over the junctions in proportion to their base demands (the
  usual assumption when only the district inflow is metered);
* ``signatures``: how the residual (reading minus that expectation) moves per
  m³/h of leak at each candidate node. A leak concentrates flow at one node,
  so its residual has a shape; matching that shape ranks the candidates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path

import numpy as np

from .hydraulics import Leak, load_network, run

SIGNATURE_DIAMETER_M = 0.05
SIGNATURE_LEVELS = (0.5, 1.0)  # demand multipliers: night-like and mean


@dataclass(frozen=True)
class NetworkModel:
    """The nominal model's predictions for one network; ``junctions`` order every array."""

    junctions: tuple[str, ...]
    coordinates: tuple[tuple[float, float], ...]
    grid_inflow: np.ndarray  # (levels,) m³/h, increasing
    grid_pressure: np.ndarray  # (levels, junctions) m
    signatures: np.ndarray  # (junctions + 1, candidates): residual per m³/h of leak
    candidates: tuple[str, ...]
    mean_inflow: float  # m³/h at base demands
    tank_names: tuple[str, ...] = ()  # their levels are inputs of the detector, in this order

    @property
    def tanks(self) -> int:
        return len(self.tank_names)

    def expected_pressure(self, inflow: np.ndarray | float) -> np.ndarray:
        """Pressures (…, junctions) the model predicts for the measured inflow."""
        if np.ndim(inflow) == 0:  # the online path: one step, no array set-up
            grid = self.grid_inflow
            hi = min(max(int(np.searchsorted(grid, inflow)), 1), len(grid) - 1)
            w = min(max((inflow - grid[hi - 1]) / (grid[hi] - grid[hi - 1]), 0.0), 1.0)
            return (1 - w) * self.grid_pressure[hi - 1] + w * self.grid_pressure[hi]
        q = np.asarray(inflow, dtype=float)
        # Linear interpolation between grid rows (one search for all sensors).
        hi = np.clip(np.searchsorted(self.grid_inflow, q), 1, len(self.grid_inflow) - 1)
        q0, q1 = self.grid_inflow[hi - 1], self.grid_inflow[hi]
        w = np.clip((q - q0) / (q1 - q0), 0.0, 1.0)[:, None]
        out = (1 - w) * self.grid_pressure[hi - 1] + w * self.grid_pressure[hi]
        return out

    def metered(self, nodes: Sequence[str]) -> NetworkModel:
        """The model seen through pressure sensors on ``nodes`` only (in that order):
        predictions and signatures at those nodes and the inflow. The candidates stay
        every junction, so a leak between sensors is still ranked, more coarsely."""
        cols = [self.junctions.index(node) for node in nodes]
        return replace(
            self,
            junctions=tuple(nodes),
            coordinates=tuple(self.coordinates[c] for c in cols),
            grid_pressure=self.grid_pressure[:, cols],
            signatures=self.signatures[[*cols, len(self.junctions)]],
        )

    def residuals(self, pressure: np.ndarray, inflow: np.ndarray) -> np.ndarray:
        """(steps, junctions + 1): pressure minus expected, then the inflow itself."""
        return np.column_stack([pressure - self.expected_pressure(inflow), inflow])


@cache
def network_model(inp: Path) -> NetworkModel:
    """Build (once per process) the prediction grid and leak signatures of ``inp``."""
    wn = _fixed_tanks(load_network(inp))
    junctions = tuple(wn.junction_name_list)
    n = len(junctions)
    levels = np.linspace(0.05, 2.5, 50)
    grid = run(wn, np.repeat(levels[:, None], n, axis=1))
    order = np.argsort(grid.inflow)
    model = NetworkModel(
        junctions=junctions,
        coordinates=tuple(tuple(wn.get_node(j).coordinates) for j in junctions),
        grid_inflow=grid.inflow[order],
        grid_pressure=grid.pressure[order],
        signatures=np.zeros((n + 1, n)),
        candidates=junctions,
        mean_inflow=float(np.interp(1.0, levels, grid.inflow)),
        tank_names=tuple(wn.tank_name_list),
    )
    patterns = np.repeat(np.asarray(SIGNATURE_LEVELS)[:, None], n, axis=1)
    free = run(_fixed_tanks(load_network(inp)), patterns)
    free_resid = model.residuals(free.pressure, free.inflow)
    for c, node in enumerate(junctions):
        leaky = run(
            _fixed_tanks(load_network(inp)), patterns, [Leak(node, SIGNATURE_DIAMETER_M, 0, 0, 2)]
        )
        # Residual of the leaky run against the leak-free one at the same demand,
        # per m³/h of leak outflow, averaged over the demand levels.
        delta = model.residuals(leaky.pressure, leaky.inflow) - free_resid
        model.signatures[:, c] = (delta / leaky.leak_flow[:, None]).mean(axis=0)
    return model


def place_sensors(model: NetworkModel, count: int) -> tuple[str, ...]:
    """``count`` junctions for pressure sensors, in the model's order, chosen greedily so
    the worst-seen candidate is seen best: each pick maximises, over candidate leak
    nodes, the smallest norm of the leak's signature on the sensors picked so far
    (ties: the largest total). Uses the model alone, no scenario."""
    if not 0 < count <= len(model.junctions):
        raise ValueError(f"between 1 and {len(model.junctions)} pressure sensors, not {count}")
    pressure = model.signatures[: len(model.junctions)] ** 2  # (nodes, candidates)
    seen = np.zeros(pressure.shape[1])
    chosen: list[int] = []
    for _ in range(count):
        best, best_key = -1, (-np.inf, -np.inf)
        for node in range(len(model.junctions)):
            if node in chosen:
                continue
            cover = seen + pressure[node]
            key = (float(cover.min()), float(cover.sum()))
            if key > best_key:
                best, best_key = node, key
        chosen.append(best)
        seen += pressure[best]
    return tuple(model.junctions[i] for i in sorted(chosen))


def pressure_nodes(inp: Path, text: str | None) -> tuple[str, ...] | None:
    """The ``--pressure-nodes`` option: a count (placed by :func:`place_sensors`), a
    comma-separated list of junctions, or None (every junction)."""
    if not text:
        return None
    if text.strip().isdigit():
        return place_sensors(network_model(inp), int(text))
    return tuple(node.strip() for node in text.split(",") if node.strip())


def _fixed_tanks(wn):
    """The model with its tanks' levels held (a tank 10 km wide barely moves), so the
    prediction depends on the inflow alone; the detector learns how pressures follow
    the measured levels."""
    for name in wn.tank_name_list:
        wn.get_node(name).diameter = 10_000.0
    return wn


def leak_site(wn, node: str) -> str:
    """The junction a leak at ``node`` is simulated on (a tank's leak goes to the
    junction its pipe reaches; EPANET has no emitter on tanks)."""
    if node in wn.junction_name_list:
        return node
    for _, link in wn.links():
        ends = (link.start_node_name, link.end_node_name)
        if node in ends:
            other = ends[1] if ends[0] == node else ends[0]
            if other in wn.junction_name_list:
                return other
    raise ValueError(f"no junction next to {node!r}")
