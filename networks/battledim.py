"""BattLeDIM 2019 (L-Town): leak detection from the SCADA flows and tank level.

Only the two inlet flows and the tank are available (not the 33 pressure
sensors), so the detector sees one residual: the town's consumption by mass
balance, ``p227 + p235 - A_T1 · dLevel/dt`` (the pump only moves water into T1,
whose area comes from the EPANET model), averaged to 30-minute steps. The same
``ResidualLeakDetector`` runs on it (no pressure sensors, one candidate: the
town), with LeakDB's chosen configuration, untouched: nothing is tuned on 2019.

Scoring follows the organisers' ``Scoring_Algorithm.m`` (README of the shared
dataset): a detection is true when it falls between a leak's start and end and
that leak is not yet detected; it earns €0.80 per m³ the leak loses from the
detection to the end of 2019; every other detection costs €500. A flow-only
detector names no pipe, so the 300 m distance test and its €500·d/300 term are
left out, and a detection goes to the running, undetected leak that started
last (the newest leak is what an alarm on a step in consumption points at).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import wntr

from .detector import DetectorConfig, detect
from .model import NetworkModel
from .scoring import mnf_alarms

EUR_PER_M3 = 0.80
EUR_FALSE_ALARM = 500.0
YEAR_START = pd.Timestamp("2019-01-01T00:00:00Z")
STEP = pd.Timedelta(minutes=30)
ACKNOWLEDGE_AFTER = 48  # steps: a crew takes an alarm a day after it rose


@dataclass(frozen=True, slots=True)
class BattledimData:
    consumption: np.ndarray  # (steps,) m³/h, 30-minute means
    leaks: pd.DataFrame  # pipe, start, end (UTC timestamps)
    outflow: pd.DataFrame  # 5-minute leak outflow per pipe, m³/h


def load(folder: Path) -> BattledimData:
    """Read the 2019 files and build the consumption series."""
    flows = pd.read_csv(folder / "flows_2019.csv", parse_dates=["time"], index_col="time")
    levels = pd.read_csv(folder / "levels_2019.csv", parse_dates=["time"], index_col="time")
    if not flows.index.equals(levels.index):
        raise ValueError("flows_2019.csv and levels_2019.csv are not on the same rows")
    wn = wntr.network.WaterNetworkModel(str(folder / "L-TOWN.inp"))
    area = math.pi * wn.get_node("T1").diameter ** 2 / 4
    dt_h = (flows.index[1] - flows.index[0]).total_seconds() / 3600
    storage = area * levels["T1"].diff().fillna(0.0) / dt_h  # m³/h into the tank
    consumption = (flows["p227"] + flows["p235"] - storage).resample("30min").mean()
    leaks = pd.read_csv(folder / "leaks_2019.csv", parse_dates=["start", "end", "peak"])
    outflow = pd.read_csv(folder / "leak_outflow_2019.csv", parse_dates=["time"], index_col="time")
    return BattledimData(consumption.to_numpy(), leaks, outflow)


def town_model(consumption: np.ndarray) -> NetworkModel:
    """A model with no pressure sensors and one candidate (the town)."""
    return NetworkModel(
        junctions=(),
        coordinates=(),
        grid_inflow=np.array([0.0, 1.0]),
        grid_pressure=np.zeros((2, 0)),
        signatures=np.ones((1, 1)),
        candidates=("L-Town",),
        mean_inflow=float(np.mean(consumption)),
    )


def onsets(alarms: np.ndarray) -> list[pd.Timestamp]:
    """Detection times: the end of each step on which an alarm is raised."""
    steps = np.flatnonzero(np.diff(np.r_[0, alarms.astype(np.int8)]) == 1)
    return [YEAR_START + (int(k) + 1) * STEP for k in steps]


def score(data: BattledimData, detections: list[pd.Timestamp]) -> dict:
    """Economic score (distance term left out), true/false detections and delays."""
    step = data.outflow.index[1] - data.outflow.index[0]
    step_h = step.total_seconds() / 3600
    detected: dict[str, pd.Timestamp] = {}
    euros, false_alarms = 0.0, 0
    for when in sorted(detections):
        running = data.leaks[
            (data.leaks["start"] <= when)
            & (data.leaks["end"] >= when)
            & ~data.leaks["pipe"].isin(list(detected))
        ]
        if running.empty:
            false_alarms += 1
            euros -= EUR_FALSE_ALARM
            continue
        pipe = running.sort_values("start").iloc[-1]["pipe"]
        detected[pipe] = when
        # From the 5-minute row the detection falls in: this reproduces the
        # organisers' perfect score (523,153.82 €) exactly.
        lost = data.outflow.loc[data.outflow.index >= when - step, pipe].sum() * step_h
        euros += EUR_PER_M3 * lost
    new = data.leaks[data.leaks["start"] >= YEAR_START]
    delays = {
        row.pipe: round((detected[row.pipe] - row.start).total_seconds() / 3600, 1)
        for row in new.itertuples()
        if row.pipe in detected
    }
    return {
        "true_detections": len(detected),
        "false_alarms": false_alarms,
        "missed_2019_leaks": int(len(new) - len(delays)),
        "leaks_2019": len(new),
        "detection_delay_h": delays,
        "median_delay_h": float(np.median(list(delays.values()))) if delays else None,
        "economic_score_eur": round(euros, 2),
        "distance_term": "left out (flow-only detector names no pipe)",
    }


def perfect_score(data: BattledimData) -> float:
    """Each leak at its start (2019-01-01 00:05 for the 2018 ones): the README's 523,153.82 €."""
    first = YEAR_START + pd.Timedelta(minutes=5)
    times = [max(start, first) for start in data.leaks["start"]]
    return score(data, times)["economic_score_eur"]


def run_bench(folder: Path, config: DetectorConfig, mnf_gamma: float) -> dict:
    """The residual detector and MNF on the same consumption series."""
    data = load(folder)
    model = town_model(data.consumption)
    # No leak is ever repaired in these files, so alarms would never end; as in
    # the worker, a crew takes each alarm a day after it rose, and the detector
    # measures the next leak against the town as it is then (references rebuilt
    # weekly, stride 1). Fixed before looking at 2019; nothing here is tuned on it.
    result = detect(
        model,
        np.zeros((len(data.consumption), 0)),
        data.consumption,
        replace(config, use_inflow=True, stride=1),
        acknowledge_after=ACKNOWLEDGE_AFTER,
    )
    baseline = mnf_alarms(data.consumption, mnf_gamma)
    return {
        **score(data, onsets(result.alarms)),
        "baseline": score(data, onsets(baseline)),
        "perfect_score_eur": perfect_score(data),
    }
