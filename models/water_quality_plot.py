"""One figure of the held-out half: the detector and the 48-hour outlook against the labels."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no display here; must precede pyplot
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

__all__ = ["plot_test_part"]


def _shade(ax, ts: pd.Series, mask: np.ndarray, color: str, label: str) -> None:
    ax.fill_between(ts, 0, 1, where=mask, color=color, alpha=0.25, step="post", label=label,
                    transform=ax.get_xaxis_transform(), linewidth=0)  # fmt: skip


def plot_test_part(
    path: str,
    ts: pd.Series,
    event: np.ndarray,
    p_static: np.ndarray,
    p_daily: np.ndarray,
    p_48h: np.ndarray,
    y_48h: np.ndarray,
    persistence_48h: np.ndarray,
    threshold_48h: float,
) -> None:
    """Write a PNG: incident minutes with both detectors' probabilities (top), and
    the 48-hour outlook with its truth and persistence (bottom)."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(12, 6), sharex=True)
    ts = pd.to_datetime(pd.Series(ts), utc=True).dt.tz_localize(None)
    _shade(top, ts, event.astype(bool), "tab:red", "labelled incident")
    top.plot(ts, p_static, lw=0.6, color="tab:gray", label="detector fitted once")
    top.plot(ts, p_daily, lw=0.6, color="tab:blue", label="detector refitted daily")
    top.set_ylabel("P(incident now)")
    top.set_ylim(0, 1)
    top.legend(loc="upper right", fontsize=8)
    _shade(bottom, ts, y_48h.astype(bool), "tab:red", "an incident within 48 h (truth)")
    bottom.plot(ts, persistence_48h * 0.97, lw=0.8, color="tab:orange", label="persistence")
    bottom.plot(ts, p_48h, lw=0.6, color="tab:blue", label="P(incident within 48 h)")
    bottom.axhline(threshold_48h, color="tab:blue", ls="--", lw=0.8, label="threshold")
    bottom.set_ylabel("48-hour outlook")
    bottom.set_ylim(0, 1)
    bottom.legend(loc="upper right", fontsize=8)
    fig.suptitle("GECCO 2018 station, held-out half (every minute scored from its past only)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
