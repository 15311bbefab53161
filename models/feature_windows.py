"""One metric's rolling-window state, for :class:`models.features.DeviceFeatureState`.

Kept apart from models.features only for size: the two are one code path, the one
training and the worker share (see that module's docstring).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

__all__ = ["MetricState", "slope_terms"]

_NAN = float("nan")


class MetricState:
    """Rolling state of one metric. Values are raw; sums are of ``value - ref``."""

    __slots__ = ("b_mean", "b_n", "b_var", "buf", "ewm", "ref", "s1", "s2", "since_refresh", "sxy")

    def __init__(self, n_windows: int) -> None:
        self.buf: list[float] = []
        self.ref: float = _NAN  # first value seen: centring keeps sums of squares accurate
        self.s1: list[float] = [0.0] * n_windows
        self.s2: list[float] = [0.0] * n_windows
        self.sxy: list[float] = [0.0] * n_windows
        self.since_refresh: int = 0
        self.ewm: float = _NAN
        self.reset_baseline()

    def reset_baseline(self) -> None:
        self.b_n: int = 0
        self.b_mean: float = 0.0
        self.b_var: float = 0.0  # Welford M2 during warm-up, then the variance itself

    def refresh(self, windows: Sequence[int]) -> None:
        """Recompute the rolling sums exactly from the buffer."""
        ref = self.ref
        for k, w in enumerate(windows):
            tail = self.buf[-w:]
            s1 = s2 = sxy = 0.0
            for i, v in enumerate(tail):
                y = v - ref
                s1 += y
                s2 += y * y
                sxy += i * y
            self.s1[k] = s1
            self.s2[k] = s2
            self.sxy[k] = sxy
        self.since_refresh = 0

    def to_list(self) -> list[Any]:
        return [
            list(self.buf),
            _enc(self.ref),
            list(self.s1),
            list(self.s2),
            list(self.sxy),
            self.since_refresh,
            _enc(self.ewm),
            self.b_n,
            self.b_mean,
            self.b_var,
        ]

    @classmethod
    def from_list(cls, v: Sequence[Any], n_windows: int) -> MetricState:
        st = cls(n_windows)
        st.buf = [float(x) for x in v[0]]
        st.ref = _dec(v[1])
        st.s1 = [float(x) for x in v[2]]
        st.s2 = [float(x) for x in v[3]]
        st.sxy = [float(x) for x in v[4]]
        st.since_refresh = int(v[5])
        st.ewm = _dec(v[6])
        st.b_n = int(v[7])
        st.b_mean = float(v[8])
        st.b_var = float(v[9])
        if len(st.s1) != n_windows:
            raise ValueError("saved feature state has a different number of windows")
        return st


@functools.lru_cache(maxsize=64)
def slope_terms(max_n: int) -> tuple[tuple[float, float], ...]:
    # Least-squares slope over n readings: sum(i) and the denominator depend on n only.
    # Computed once, by the same expressions as before, so slopes stay bit-identical.
    out = [(_NAN, _NAN)] * 2
    for n in range(2, max_n + 1):
        si = n * (n - 1) / 2.0
        sii = (n - 1) * n * (2 * n - 1) / 6.0
        out.append((si, n * sii - si * si))
    return tuple(out)


def _enc(x: float) -> float | None:
    return None if x != x else x  # NaN is not valid JSON


def _dec(x: float | None) -> float:
    return _NAN if x is None else float(x)
