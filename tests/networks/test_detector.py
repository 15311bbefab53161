"""The hydraulics (WNTR/EPANET) and the residual detector on short Hanoi runs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from networks.detector import DetectorConfig, detect
from networks.hydraulics import Leak, emitter_coefficient, load_network, run
from networks.model import network_model
from networks.scenarios import demand_patterns, perturb_network


def test_leak_outflow_is_the_orifice_law_and_shows_in_the_inflow(leakdb_dir):
    wn = load_network(leakdb_dir / "Hanoi_CMH.inp")
    patterns = np.ones((6, len(wn.junction_name_list)))
    free = run(wn, patterns)
    leaky = run(load_network(leakdb_dir / "Hanoi_CMH.inp"), patterns, [Leak("13", 0.1, 2, 2, 5)])
    col = free.junctions.index("13")
    assert leaky.leak_flow[:2].sum() == 0 and leaky.leak_flow[5] == 0
    expected = emitter_coefficient(0.1) * math.sqrt(leaky.pressure[3, col])
    assert leaky.leak_flow[3] == pytest.approx(expected)
    # EPANET's inflow rises by the leak (less the demand lost to the lower pressure).
    extra = leaky.inflow[3] - free.inflow[3]
    assert 0.8 * leaky.leak_flow[3] < extra <= leaky.leak_flow[3] + 1e-6
    assert leaky.pressure[3, col] < free.pressure[3, col]


def test_incipient_leak_grows_to_its_peak():
    leak = Leak("5", 0.1, start=10, peak=20, end=30)
    assert leak.diameter_at(9) == 0 and leak.diameter_at(30) == 0
    assert leak.diameter_at(15) == pytest.approx(0.05)
    assert leak.diameter_at(25) == 0.1


def test_detector_finds_and_localises_a_leak_and_stays_quiet_before(leakdb_dir):
    inp = leakdb_dir / "Hanoi_CMH.inp"
    model = network_model(inp)
    rng = np.random.default_rng(3)
    wn = load_network(inp)
    perturb_network(wn, rng)
    days = 45
    patterns = demand_patterns(len(wn.junction_name_list), rng, days * 48)
    start = 30 * 48
    sensors = run(wn, patterns, [Leak("21", 0.04, start, start, days * 48)])
    config = DetectorConfig(threshold=5.0, stride=1, halflife=10**9)
    result = detect(model, sensors.pressure, sensors.inflow, config)
    assert not result.alarms[:start].any()
    assert result.alarms[start : start + 2 * 48].any()
    onset = int(np.flatnonzero(result.alarms)[0])
    assert "21" in result.rankings[onset][:3]


def test_eight_pressure_sensors_still_find_the_leak_and_rank_every_junction(leakdb_dir):
    from networks.model import place_sensors

    inp = leakdb_dir / "Hanoi_CMH.inp"
    full = network_model(inp)
    nodes = place_sensors(full, 8)
    assert len(set(nodes)) == 8 and place_sensors(full, 8) == nodes  # the model alone decides
    model = full.metered(nodes)
    assert model.signatures.shape == (9, 31) and model.candidates == full.candidates
    cols = [full.junctions.index(n) for n in nodes]
    assert np.array_equal(model.expected_pressure(900.0), full.expected_pressure(900.0)[cols])
    rng = np.random.default_rng(3)
    wn = load_network(inp)
    perturb_network(wn, rng)
    days, start = 45, 30 * 48
    patterns = demand_patterns(len(wn.junction_name_list), rng, days * 48)
    sensors = run(wn, patterns, [Leak("21", 0.04, start, start, days * 48)])
    config = DetectorConfig(threshold=5.0, stride=1, halflife=10**9, use_inflow=False)
    result = detect(model, sensors.pressure[:, cols], sensors.inflow, config)
    assert not result.alarms[:start].any()
    assert result.alarms[start : start + 2 * 48].any()
    onset = int(np.flatnonzero(result.alarms)[0])
    assert len(result.rankings[onset]) == 31 and "21" in result.rankings[onset][:3]
