"""EPANET runs through WNTR: a network with time-varying leaks, step by step.

WNTR's ``EpanetSimulator`` solves a whole period in one call but keeps every
emitter constant, and a leak that grows (LeakDB's incipient leaks) needs its
emitter changed at every step. So this module drives the same EPANET 2.2
engine that WNTR ships through WNTR's toolkit wrapper (``ENepanet``): open the
model, give each junction its demand pattern, then ``runH``/``nextH`` with the
leak emitters updated at each step. All hydraulics are EPANET's; nothing here
solves a network.

Units inside: flows m³/h, pressures and heads m (the model is written in CMH).
"""

from __future__ import annotations

import ctypes
import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import wntr
from wntr.epanet.toolkit import ENepanet
from wntr.epanet.util import EN

STEP_S = 1800  # LeakDB's 30-minute step
GRAVITY = 9.81
DISCHARGE_COEFF = 0.75  # orifice discharge coefficient, WNTR's leak default


def emitter_coefficient(diameter_m: float) -> float:
    """EPANET emitter coefficient (m³/h per m^0.5) of a round hole: Q = Cd·A·√(2gh)."""
    area = math.pi * diameter_m**2 / 4
    return DISCHARGE_COEFF * area * math.sqrt(2 * GRAVITY) * 3600


@dataclass(frozen=True, slots=True)
class Leak:
    """A leak at a node: the hole grows linearly in diameter from ``start`` to ``peak``
    (``peak == start`` is abrupt), stays until ``end`` (exclusive); steps of 30 min."""

    node: str
    diameter_m: float
    start: int
    peak: int
    end: int

    def diameter_at(self, step: int) -> float:
        if step < self.start or step >= self.end:
            return 0.0
        if self.peak <= self.start or step >= self.peak:
            return self.diameter_m
        return self.diameter_m * (step - self.start) / (self.peak - self.start)


@dataclass(slots=True)
class Sensors:
    """What a utility measures: node pressures, the network inflow, and leak outflow
    (ground truth only). Rows are 30-minute steps."""

    junctions: list[str]
    pressure: np.ndarray  # (steps, junctions) m
    inflow: np.ndarray  # (steps,) m³/h, net outflow of every reservoir and tank
    leak_flow: np.ndarray  # (steps,) m³/h through all leaks (ground truth)
    links: list[str] = field(default_factory=list)
    flow: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # (steps, links) m³/h
    tanks: list[str] = field(default_factory=list)
    level: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # (steps, tanks) m


def load_network(inp: Path | str) -> wntr.network.WaterNetworkModel:
    """The EPANET model, pressure-driven (as LeakDB), in WNTR's SI units."""
    wn = wntr.network.WaterNetworkModel(str(inp))
    wn.options.hydraulic.demand_model = "PDD"
    wn.options.hydraulic.minimum_pressure = 0.0
    wn.options.hydraulic.required_pressure = 20.0
    wn.options.hydraulic.pressure_exponent = 0.5
    wn.options.hydraulic.emitter_exponent = 0.5
    return wn


def source_links(wn: wntr.network.WaterNetworkModel) -> list[tuple[str, int]]:
    """Links touching a reservoir or tank, with the sign that makes flow out of it positive."""
    sources = set(wn.reservoir_name_list) | set(wn.tank_name_list)
    out = []
    for name, link in wn.links():
        if link.start_node_name in sources and link.end_node_name not in sources:
            out.append((name, 1))
        elif link.end_node_name in sources and link.start_node_name not in sources:
            out.append((name, -1))
    return out


def run(
    wn: wntr.network.WaterNetworkModel,
    patterns: np.ndarray,
    leaks: Sequence[Leak] = (),
    *,
    junctions: Sequence[str] | None = None,
    links: Sequence[str] = (),
) -> Sensors:
    """Run ``patterns.shape[0]`` steps of 30 min with EPANET.

    ``patterns[k, i]`` multiplies junction i's base demand at step k (junction
    order ``wn.junction_name_list``); ``leaks`` are emitters updated each step.
    The model's own patterns and time options are replaced. ``links`` adds their
    flows (m³/h) to the result, and every tank's level is reported.
    """
    steps, n_junctions = patterns.shape
    names = list(wn.junction_name_list)
    if n_junctions != len(names):
        raise ValueError(f"patterns has {n_junctions} columns for {len(names)} junctions")
    wanted = list(junctions) if junctions is not None else names
    wn.options.time.duration = (steps - 1) * STEP_S
    wn.options.time.hydraulic_timestep = STEP_S
    wn.options.time.pattern_timestep = STEP_S
    wn.options.time.report_timestep = STEP_S
    wn.options.time.pattern_start = 0
    wn.options.time.start_clocktime = 0
    with tempfile.TemporaryDirectory() as tmp:
        inp = Path(tmp) / "model.inp"
        wntr.network.write_inpfile(wn, str(inp), units="CMH")
        en = ENepanet(version=2.2)
        en.ENopen(str(inp), str(Path(tmp) / "model.rpt"), "")
        try:
            return _run_open(en, wn, names, wanted, patterns, leaks, list(links))
        finally:
            en.ENclose()


def _run_open(en, wn, names, wanted, patterns, leaks, links) -> Sensors:
    steps = patterns.shape[0]
    lib, project = en.ENlib, en._project
    node_index = {n: en.ENgetnodeindex(n) for n in names}
    for i, name in enumerate(names):
        # One pattern per junction (EN_addpattern/EN_setpattern are not wrapped by WNTR).
        pid = f"P{i}".encode()
        _check(lib.EN_addpattern(project, ctypes.c_char_p(pid)))
        pindex = ctypes.c_int()
        _check(lib.EN_getpatternindex(project, ctypes.c_char_p(pid), ctypes.byref(pindex)))
        values = (ctypes.c_double * steps)(*patterns[:, i].astype(float))
        _check(lib.EN_setpattern(project, pindex.value, values, steps))
        en.ENsetnodevalue(node_index[name], EN.PATTERN, float(pindex.value))
    want_idx = [node_index[n] for n in wanted]
    sources = [(en.ENgetlinkindex(name), sign) for name, sign in source_links(wn)]
    leak_idx = [node_index[leak.node] for leak in leaks]

    link_idx = [en.ENgetlinkindex(name) for name in links]
    tanks = list(wn.tank_name_list)
    tank_idx = [en.ENgetnodeindex(name) for name in tanks]
    flow = np.zeros((steps, len(links)))
    level = np.zeros((steps, len(tanks)))
    pressure = np.zeros((steps, len(wanted)))
    inflow = np.zeros(steps)
    leak_flow = np.zeros(steps)
    en.ENopenH()
    en.ENinitH(0)

    def set_leaks(k: int) -> None:
        for idx, leak in zip(leak_idx, leaks, strict=True):
            en.ENsetnodevalue(idx, EN.EMITTER, emitter_coefficient(leak.diameter_at(k)))

    set_leaks(0)
    while True:
        t = en.ENrunH()
        if t % STEP_S == 0 and (k := t // STEP_S) < steps:
            for col, idx in enumerate(want_idx):
                pressure[k, col] = en.ENgetnodevalue(idx, EN.PRESSURE)
            inflow[k] = sum(sign * en.ENgetlinkvalue(idx, EN.FLOW) for idx, sign in sources)
            for col, idx in enumerate(link_idx):
                flow[k, col] = en.ENgetlinkvalue(idx, EN.FLOW)
            for col, idx in enumerate(tank_idx):  # a tank's "pressure" is its water level
                level[k, col] = en.ENgetnodevalue(idx, EN.PRESSURE)
            for idx, leak in zip(leak_idx, leaks, strict=True):
                coeff = emitter_coefficient(leak.diameter_at(k))
                leak_flow[k] += coeff * math.sqrt(max(en.ENgetnodevalue(idx, EN.PRESSURE), 0.0))
        tstep = en.ENnextH()
        if tstep <= 0:
            break
        if (t + tstep) % STEP_S == 0:  # emitters for the coming step, before it is solved
            set_leaks((t + tstep) // STEP_S)
    en.ENcloseH()
    return Sensors(list(wanted), pressure, inflow, leak_flow, list(links), flow, tanks, level)


def _check(code: int) -> None:
    if code >= 100:
        raise RuntimeError(f"EPANET error {code}")
