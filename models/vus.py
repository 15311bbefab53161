"""Anomaly-detection metrics as the TSB-AD benchmark computes them.

TSB-AD (TheDatumOrg/TSB-AD, NeurIPS 2024) publishes VUS-PR for the GECCO 2018
series; to compare with its table our figure has to be computed the same way.
The PyPI package ``TSB-AD`` pins numpy<2 and pulls in torch, so it cannot be a
dependency here; these functions re-implement its ``generate_curve(...,
version="opt", thre=250)`` VUS-PR and its ``find_length_rank(..., rank=1)``
window, vectorised over thresholds (the reference loops over every threshold
and window in Python). ``tests/models/test_vus.py`` checks them against values
computed by TSB-AD 1.5's own code on small vectors.
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy.signal import argrelextrema

__all__ = ["event_segments", "point_f1", "sliding_window", "vus_pr"]


def event_segments(labels: np.ndarray) -> list[tuple[int, int]]:
    """Runs of 1 in a 0/1 vector as inclusive ``(start, end)`` index pairs."""
    y = np.asarray(labels).astype(int)
    d = np.diff(np.concatenate([[0], y, [0]]))
    starts = np.flatnonzero(d == 1)
    ends = np.flatnonzero(d == -1) - 1
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


def _merged_ranges(segments: list[tuple[int, int]], half: int, n: int) -> list[tuple[int, int]]:
    """Segments widened by ``half`` on each side, overlapping ones merged
    (TSB-AD's ``new_sequence``: only the first start and the last end are clipped)."""
    out = []
    a = max(segments[0][0] - half, 0)
    for (_, e), (s_next, _) in itertools.pairwise(segments):
        if e + half < s_next - half:
            out.append((a, e + half))
            a = s_next - half
    out.append((a, min(segments[-1][1] + half, n - 1)))
    return out


def _soft_labels(y: np.ndarray, segments: list[tuple[int, int]], window: int) -> np.ndarray:
    """Labels with a square-root ramp of ``window // 2`` readings either side of each event."""
    n = len(y)
    lab = y.astype(float)
    half = window // 2
    for s, e in segments:
        after = np.arange(e + 1, min(e + half + 1, n))
        lab[after] += np.sqrt(1 - (after - e) / window)
        before = np.arange(max(s - half, 0), s)
        lab[before] += np.sqrt(1 - (s - before) / window)
    return np.minimum(lab, 1.0)


def vus_pr(labels: np.ndarray, score: np.ndarray, window: int, n_thresholds: int = 250) -> float:
    """Volume under the range precision-recall surface (TSB-AD's VUS-PR).

    Parameters
    ----------
    labels : array of 0/1
        Ground truth per reading; must contain at least one 1.
    score : array of float
        Anomaly score per reading (higher = more anomalous); only its order matters.
    window : int
        Largest label buffer; the range-PR area is averaged over buffers 0..window.
    n_thresholds : int, default=250
        Thresholds taken at evenly spaced ranks of the sorted scores.

    Returns
    -------
    float
    """
    y = np.asarray(labels).astype(int)
    s = np.asarray(score, dtype=float)
    if y.shape != s.shape or y.ndim != 1:
        raise ValueError("labels and score must be 1-D and the same length")
    if not np.isfinite(s).all():
        raise ValueError("score must be finite (drop the rows with no reading first)")
    segs = event_segments(y)
    if not segs:
        raise ValueError("labels contain no event")
    n = len(s)
    p = float(y.sum())
    desc = -np.sort(-s)
    thresholds = desc[np.linspace(0, n - 1, n_thresholds).astype(int)]
    asc = np.sort(s)
    n_pred = (n - np.searchsorted(asc, thresholds, side="left")).astype(float)
    in_event = y.astype(bool)
    aps = []
    for w in range(window + 1):
        soft = _soft_labels(y, segs, w)
        ranges = _merged_ranges(segs, w // 2, n)
        # Only readings with a non-zero soft label count towards TP and N_labels.
        support = np.flatnonzero(soft > 0)
        pred = s[support][None, :] >= thresholds[:, None]
        tp = pred @ soft[support]
        outside = ~in_event[support]
        n_labels = p + pred[:, outside] @ soft[support][outside]
        seg_max = np.array([s[a : b + 1].max() for a, b in ranges])
        existence = (seg_max[None, :] >= thresholds[:, None]).sum(axis=1) / len(ranges)
        p_new = (p + n_labels) / 2
        tpr = np.minimum(tp / p_new, 1.0) * existence
        precision = tp / n_pred
        aps.append(float(np.dot(np.diff(np.concatenate([[0.0], tpr])), precision)))
    return float(np.mean(aps))


def sliding_window(x: np.ndarray, max_lag: int = 400, head: int = 20_000) -> int:
    """TSB-AD's window for a series (``find_length_rank(rank=1)``): the lag of the
    highest autocorrelation peak past lag 3 in the first ``head`` readings, or 125
    when that peak is shorter than 3 or longer than 300 readings."""
    v = np.asarray(x, dtype=float)[:head]
    v = v - v.mean()
    n = len(v)
    nfft = 1 << int(np.ceil(np.log2(2 * n - 1)))
    f = np.fft.rfft(v, nfft)
    acov = np.fft.irfft(f * np.conj(f), nfft)[: max_lag + 1] / n
    if acov[0] <= 0:
        return 125
    base = 3
    acf = (acov / acov[0])[base:]
    peaks = argrelextrema(acf, np.greater)[0]
    if len(peaks) == 0:
        return 125
    best = peaks[int(np.argmax(acf[peaks]))]
    if best < 3 or best > 300:
        return 125
    return int(best + base)


def point_f1(labels: np.ndarray, alarm: np.ndarray) -> dict[str, float]:
    """Per-minute precision, recall and F1 of the event class.

    The GECCO 2018 challenge scored each submission's per-minute EVENT column
    against the labels with the F1 of the event class; this is that figure.
    """
    y = np.asarray(labels).astype(bool)
    a = np.asarray(alarm).astype(bool)
    tp = float((y & a).sum())
    fp = float((~y & a).sum())
    fn = float((y & ~a).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}
