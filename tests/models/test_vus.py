"""VUS-PR and the window finder against TSB-AD 1.5's own code (tools/tsbad_golden.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from models.vus import event_segments, point_f1, sliding_window, vus_pr

# Printed by TSB-AD 1.5's basic_metrics.generate_curve(..., "opt", 250) on
# tools/tsbad_golden.py's vectors (see that file for how to reproduce them).
TSB_AD_VUS_PR = (
    0.4328088498670768,
    0.4938423840373666,
    0.3716345322163176,
    0.6341219863157164,
    0.2581892065673965,
    0.42237945252545867,
)


def _vectors():
    path = Path(__file__).resolve().parents[2] / "tools" / "tsbad_golden.py"
    spec = importlib.util.spec_from_file_location("tsbad_golden", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.vectors()


@pytest.mark.parametrize("case", range(len(TSB_AD_VUS_PR)))
def test_vus_pr_matches_tsb_ad(case):
    y, score, window = _vectors()[case]
    assert vus_pr(y, score, window) == pytest.approx(TSB_AD_VUS_PR[case], abs=1e-12)


def test_vus_pr_orders_detectors_and_ignores_monotone_transforms():
    rng = np.random.default_rng(7)
    y = np.zeros(2000, dtype=int)
    for s in (200, 900, 1500):
        y[s : s + 30] = 1
    good = rng.normal(size=2000) + 3 * y
    bad = rng.normal(size=2000)
    assert vus_pr(y, good, 20) > 0.8 > 0.1 > vus_pr(y, bad, 20)
    assert vus_pr(y, good, 20) == pytest.approx(vus_pr(y, np.exp(good), 20))


def test_vus_pr_refuses_bad_input():
    with pytest.raises(ValueError, match="no event"):
        vus_pr(np.zeros(10), np.arange(10.0), 3)
    with pytest.raises(ValueError, match="finite"):
        vus_pr(np.r_[0, 1, 0], np.r_[0.0, np.nan, 1.0], 1)


def test_sliding_window_finds_the_period():
    t = np.arange(20_000)
    rng = np.random.default_rng(0)
    assert sliding_window(np.sin(2 * np.pi * t / 50) + 0.1 * rng.normal(size=t.size)) == 50
    # A 1000-reading period lies past TSB-AD's 300 cap: its default 125.
    assert sliding_window(np.sin(2 * np.pi * t / 1000)) == 125


def test_segments_and_point_f1():
    y = np.array([1, 1, 0, 0, 1, 0, 1])
    assert event_segments(y) == [(0, 1), (4, 4), (6, 6)]
    f = point_f1(y, np.array([1, 0, 0, 1, 1, 0, 0]))
    assert f["precision"] == pytest.approx(2 / 3)
    assert f["recall"] == pytest.approx(2 / 4)
    assert f["f1"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
