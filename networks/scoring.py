"""LeakDB's scores, as its ``scoring_algorithm.m`` (KIOS-Research/LeakDB,
``CCWI-WDSA2018/Scoring Function``) computes them.

* recall (STPR), true-negative rate (STNR) and F1 pool the step counts of every
  step of every scenario;
* the early-detection score (SED) takes each run of leak-labelled steps, a
  window from its first step to ``extra`` steps (5 h) after its last, the first
  alarm in that window, and counts it only if alarms cover more than 75 % of the
  window from there on; a detection ``x`` steps in scores
  ``2 / (1 + exp(alpha · x / tw))`` (tw = window length - 1); the total is the
  sum over runs divided by their number. The MATLAB uses alpha = 5 (the paper
  writes 6), and finds runs from the labels, so two overlapping leaks form one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

SED_EXTRA_STEPS = 10
SED_COVERAGE = 0.75
SED_ALPHA = 5.0


@dataclass(slots=True)
class Counts:
    """Pooled step counts and early-detection sums; add scenarios with ``add``."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0
    sed_sum: float = 0.0
    sed_runs: int = 0
    extra: dict = field(default_factory=dict)

    def add(self, labels: np.ndarray, alarms: np.ndarray) -> None:
        labels, alarms = labels.astype(bool), alarms.astype(bool)
        self.tp += int(np.sum(labels & alarms))
        self.fp += int(np.sum(~labels & alarms))
        self.fn += int(np.sum(labels & ~alarms))
        self.tn += int(np.sum(~labels & ~alarms))
        for score in early_detection(labels, alarms):
            self.sed_sum += score
            self.sed_runs += 1

    def merge(self, other: Counts) -> None:
        for name in ("tp", "fp", "fn", "tn", "sed_sum", "sed_runs"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def scores(self) -> dict[str, float | None]:
        def ratio(a: float, b: float) -> float | None:
            return round(a / b, 4) if b else None

        return {
            "f1": ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn),
            "recall": ratio(self.tp, self.tp + self.fn),
            "tnr": ratio(self.tn, self.tn + self.fp),
            "early_detection": ratio(self.sed_sum, self.sed_runs),
        }


def label_runs(labels: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) step of each run of 1s."""
    padded = np.concatenate([[0], labels.astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(padded))
    return [(int(a), int(b) - 1) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def early_detection(
    labels: np.ndarray, alarms: np.ndarray, *, alpha: float = SED_ALPHA
) -> list[float]:
    """One score in [0, 1] per run of leak-labelled steps."""
    out = []
    last_step = len(labels) - 1
    for first, last in label_runs(labels):
        window = alarms[first : min(last + SED_EXTRA_STEPS, last_step) + 1]
        tw = len(window) - 1
        hits = np.flatnonzero(window)
        score = 0.0
        if hits.size and tw > 0:
            dt = int(hits[0])
            if window[dt:].mean() > SED_COVERAGE:
                score = 2 / (1 + math.exp(alpha * dt / tw))
        out.append(score)
    return out


def mnf_alarms(inflow: np.ndarray, gamma: float = 0.2, window_days: int = 10) -> np.ndarray:
    """LeakDB's minimum-night-flow detector (``algorithmMNF.m``), per 30-min step.

    Each day's minimum inflow is compared with the lowest of the last
    ``window_days`` unflagged days; more than ``gamma`` of it above flags the
    whole day. The first ``window_days`` days are never flagged.
    """
    days = len(inflow) // 48
    mnf = inflow[: days * 48].reshape(days, 48).min(axis=1)
    flags = np.zeros(days, dtype=bool)
    reference = list(range(window_days))
    for day in range(window_days, days):
        low = mnf[reference].min()
        if mnf[day] - low > low * gamma:
            flags[day] = True
        else:
            reference = [*reference[1:], day]
    out = np.zeros(len(inflow), dtype=bool)
    out[: days * 48] = np.repeat(flags, 48)
    return out
