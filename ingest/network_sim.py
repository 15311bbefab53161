"""Simulated water network: WNTR/EPANET hydraulics streamed as sensor readings.

Demand patterns with noise and the model uncertainty come from
``networks.scenarios`` (LeakDB's recipe), leaks (abrupt or incipient, with a
size and a node) are EPANET emitters (``networks.hydraulics``). The whole
period is solved first (a year of Hanoi takes about a second), then each
30-minute step becomes one reading per sensor of the network's description
(``networks.assets``): pressure on nodes, flow on pipes, level in tanks, in the
same wire format and on the same ``readings`` topic as every other source,
keyed by device. ``speed`` is simulated seconds per wall second: 1 is real
time, 1800 one step a second, 0 as fast as the producer goes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from core.wire import encode_reading
from networks.assets import NetworkSpec
from networks.hydraulics import STEP_S, Leak, Sensors, load_network, run
from networks.scenarios import demand_patterns, perturb_network

STEPS_PER_DAY = 86_400 // STEP_S


@dataclass(frozen=True, slots=True)
class NetworkSimOptions:
    days: float = 21.0
    leaks: tuple[Leak, ...] = ()
    seed: int = 0
    speed: float = 0.0  # simulated seconds per wall second; 0: no pacing
    pressure_noise_m: float = 0.0  # sensor noise, standard deviation
    flow_noise: float = 0.0  # relative sensor noise on flows


def parse_leak(text: str) -> Leak:
    """``NODE:DIAMETER_M:START_H[:PEAK_H[:END_H]]`` (hours from the start) as a leak.

    Without ``PEAK_H`` the leak is abrupt; without ``END_H`` it never stops.
    """
    parts = text.split(":")
    if not 3 <= len(parts) <= 5:
        raise ValueError(f"{text!r}: expected NODE:DIAMETER_M:START_H[:PEAK_H[:END_H]]")
    try:
        diameter = float(parts[1])
        hours = [float(p) for p in parts[2:]]
    except ValueError as exc:
        raise ValueError(f"{text!r}: diameter and hours must be numbers") from exc
    if not 0 < diameter <= 1:
        raise ValueError(f"{text!r}: the hole diameter must be in (0, 1] m")
    if any(h < 0 for h in hours):
        raise ValueError(f"{text!r}: hours must not be negative")
    start = int(hours[0] * 3600 // STEP_S)
    peak = int(hours[1] * 3600 // STEP_S) if len(hours) > 1 else start
    end = int(hours[2] * 3600 // STEP_S) if len(hours) > 2 else 10**9
    if not start <= peak <= end:
        raise ValueError(f"{text!r}: needs start <= peak <= end")
    return Leak(parts[0], diameter, start, peak, end)


def simulate(inp, spec: NetworkSpec, options: NetworkSimOptions) -> Sensors:
    """Solve the whole period; every sensor of ``spec`` is in the result."""
    wn = load_network(inp)
    junctions = set(wn.junction_name_list)
    for leak in options.leaks:
        if leak.node not in junctions:
            raise ValueError(f"leak node {leak.node!r} is not a junction of {spec.network_id}")
    rng = np.random.default_rng(options.seed)
    perturb_network(wn, rng)
    steps = max(1, int(options.days * STEPS_PER_DAY))
    patterns = demand_patterns(len(wn.junction_name_list), rng, steps)
    links = sorted({s.element_id for s in spec.sensors if s.element_kind == "link"})
    sensors = run(wn, patterns, options.leaks, links=links)
    noise = np.random.default_rng(options.seed + 1)
    if options.pressure_noise_m:
        sensors.pressure += noise.normal(0, options.pressure_noise_m, sensors.pressure.shape)
    if options.flow_noise:
        sensors.flow *= 1 + noise.normal(0, options.flow_noise, sensors.flow.shape)
    return sensors


def messages(
    spec: NetworkSpec, sensors: Sensors, start: datetime
) -> Iterator[tuple[int, bytes, bytes]]:
    """(step, key, reading) for every sensor at every step, step by step."""
    p_col = {name: i for i, name in enumerate(sensors.junctions)}
    q_col = {name: i for i, name in enumerate(sensors.links)}
    l_col = {name: i for i, name in enumerate(sensors.tanks)}
    steps = len(sensors.inflow)
    for k in range(steps):
        ts = start + timedelta(seconds=k * STEP_S)
        for seq, s in enumerate(spec.sensors):
            if s.asset_type == "network_pressure":
                value = sensors.pressure[k, p_col[s.element_id]]
            elif s.asset_type == "network_flow":
                value = sensors.flow[k, q_col[s.element_id]]
            else:
                value = sensors.level[k, l_col[s.element_id]]
            yield (
                k,
                s.device_id.encode(),
                encode_reading(
                    device_id=s.device_id,
                    asset_id=spec.asset_id(s.district_id),
                    asset_type=s.asset_type,
                    ts=ts,
                    metrics={s.metric: round(float(value), 4)},
                    source={"kind": "network_simulator", "seq": k * len(spec.sensors) + seq},
                ),
            )


def stream(
    send: Callable[[bytes, bytes], None],
    spec: NetworkSpec,
    sensors: Sensors,
    start: datetime,
    *,
    speed: float = 0.0,
    should_stop: Callable[[], bool] = lambda: False,
    on_step: Callable[[int], None] | None = None,
) -> int:
    """Send every reading through ``send(key, value)``, paced by ``speed``; return the count."""
    sent, began, current = 0, time.monotonic(), -1
    for k, key, value in messages(spec, sensors, start):
        if k != current:
            if should_stop():
                break
            current = k
            if on_step is not None:
                on_step(k)
            if speed > 0:  # wait until this step is due at the chosen speed
                due = began + k * STEP_S / speed
                time.sleep(max(0.0, due - time.monotonic()))
        send(key, value)
        sent += 1
    return sent
