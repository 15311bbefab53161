"""LeakDB's scores on hand-made label and alarm series."""

from __future__ import annotations

import math

import numpy as np

from networks.scoring import Counts, early_detection, label_runs, mnf_alarms


def test_pooled_counts_and_scores():
    labels = np.array([0, 0, 1, 1, 1, 1, 0, 0], dtype=bool)
    alarms = np.array([1, 0, 0, 1, 1, 1, 1, 0], dtype=bool)
    counts = Counts()
    counts.add(labels, alarms)
    assert (counts.tp, counts.fp, counts.fn, counts.tn) == (3, 2, 1, 2)
    scores = counts.scores()
    assert scores["recall"] == 0.75
    assert scores["tnr"] == 0.5
    assert scores["f1"] == round(6 / 9, 4)


def test_label_runs():
    assert label_runs(np.array([1, 1, 0, 1, 0, 0, 1], dtype=bool)) == [(0, 1), (3, 3), (6, 6)]


def test_early_detection_follows_the_matlab_formula():
    labels = np.zeros(200, dtype=bool)
    labels[50:100] = True  # window: steps 50..109, tw = 59
    alarms = np.zeros(200, dtype=bool)
    assert early_detection(labels, alarms) == [0.0]
    alarms[50:] = True
    assert early_detection(labels, alarms) == [1.0]
    alarms[:] = False
    alarms[60:] = True
    expected = 2 / (1 + math.exp(5 * 10 / 59))
    assert math.isclose(early_detection(labels, alarms)[0], expected)
    # Alarms that cover 75 % or less of the rest of the window do not count.
    alarms[:] = False
    alarms[60:80] = True
    assert early_detection(labels, alarms) == [0.0]


def test_mnf_flags_whole_days_above_the_unflagged_minimum():
    days = 30
    inflow = np.tile(np.r_[np.full(10, 100.0), np.full(38, 300.0)], days)
    inflow[20 * 48 :] += 25.0  # +25 % at night from day 20
    flags = mnf_alarms(inflow, gamma=0.2)
    assert not flags[: 20 * 48].any()
    assert flags[20 * 48 :].all()
    assert not mnf_alarms(inflow, gamma=0.3).any()
