"""Per-device features, computed one reading at a time.

The streaming worker and offline training share this module. Training calls
:func:`compute_features`, which runs the same :meth:`DeviceFeatureState.update`
the worker calls for each reading, so offline and online features are
bit-for-bit identical.

The state is plain Python floats and lists, because the worker keeps one state
per device in a Faust table and updates it one reading at a time: numpy's
per-call overhead on arrays of 30 numbers costs more than the arithmetic. Rolling
sums are updated in O(1) and recomputed exactly from the buffer every
``max(windows)`` readings, so float drift stays bounded however long a device
lives.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from models.feature_spec import FeatureSpec
from models.feature_windows import MetricState, slope_terms

__all__ = ["DeviceFeatureState", "compute_features"]

_STATE_FORMAT = 1
_NAN = float("nan")


@functools.lru_cache(maxsize=256)
def _spec_dict(spec: FeatureSpec) -> dict[str, Any]:
    # One JSON-safe dict per spec, shared by every device state's snapshot: a city's
    # devices each build a state, and dataclasses.asdict deep-copies every field.
    return spec.to_dict()


class DeviceFeatureState:
    """Incremental feature state of one device.

    Parameters
    ----------
    spec : FeatureSpec
        What to compute.

    Examples
    --------
    >>> spec = FeatureSpec(metrics=("vibration_rms",), window=3, baseline_warmup=2)
    >>> state = DeviceFeatureState(spec)
    >>> row = state.update({"vibration_rms": 1.0})
    >>> restored = DeviceFeatureState.from_dict(state.to_dict())
    >>> state.update({"vibration_rms": 2.0}) == restored.update({"vibration_rms": 2.0})
    True
    """

    __slots__ = (
        "_aggregates",
        "_ewm_alpha",
        "_flags",
        "_maxw",
        "_metrics",
        "_n",
        "_slope",
        "_spec",
        "_spec_dict",
        "_states",
        "_windows",
    )

    def __init__(self, spec: FeatureSpec) -> None:
        self._spec = spec
        self._metrics = spec.metrics
        self._windows = spec.windows
        self._maxw = max(self._windows)
        self._ewm_alpha = 2.0 / (spec.window + 1.0)
        self._slope = slope_terms(self._maxw)
        self._states = [MetricState(len(self._windows)) for _ in spec.metrics]
        self._n = 0
        self._spec_dict = _spec_dict(spec)  # shared: to_dict() costs ~0.3 ms per call
        ws, ps = spec.window_stats, spec.point_stats
        flags = (
            "last" in ps,
            "mean" in ws,
            "std" in ws,
            "min" in ws,
            "max" in ws,
            "slope" in ws,
            "ewm" in ps,
            "delta_baseline" in ps,
            "z_baseline" in ps,
            "z_last" in ps,
        )
        n_ws = sum(flags[1:6])
        n_nan = flags[0] + n_ws * len(self._windows) + sum(flags[6:])
        self._flags = (*flags, n_nan)
        agg = spec.aggregate_stats
        self._aggregates = (
            "max_abs_z_baseline" in agg,
            "mean_abs_z_baseline" in agg,
            "max_abs_z_last" in agg,
        )

    @property
    def spec(self) -> FeatureSpec:
        """The spec this state computes."""
        return self._spec

    @property
    def readings_since_maintenance(self) -> int:
        """Readings seen since creation or the last :meth:`reset_baseline`."""
        return self._n

    def reset_baseline(self, *, clear_windows: bool = True) -> None:
        """Forget the device's baseline after maintenance or replacement.

        Parameters
        ----------
        clear_windows : bool, default=True
            Also empty the rolling windows, so pre-maintenance readings stop
            influencing the features straight away.
        """
        self._n = 0
        for i, st in enumerate(self._states):
            if clear_windows:
                self._states[i] = MetricState(len(self._windows))
            else:
                st.reset_baseline()

    def update(self, metrics: Mapping[str, Any]) -> list[float]:
        """Add one reading and return its feature row.

        Parameters
        ----------
        metrics : mapping of str to float
            The reading's metric values. Metrics that are absent, ``None``,
            non-numeric or non-finite leave their state unchanged and give NaN
            features for this reading.

        Returns
        -------
        list of float
            One row, in ``spec.feature_names`` order.
        """
        values = []
        add = values.append
        for m in self._metrics:
            v = metrics.get(m)
            if type(v) is float:  # validated readings: float(v) would return v itself
                add(v)
                continue
            try:
                add(float(v))  # type: ignore[arg-type]
            except (TypeError, ValueError):
                add(_NAN)
        return self.update_values(values)

    def update_values(self, values: Sequence[float]) -> list[float]:
        """Like :meth:`update`, with values given in ``spec.metrics`` order."""
        (
            want_last,
            want_mean,
            want_std,
            want_min,
            want_max,
            want_slope,
            want_ewm,
            want_delta,
            want_z,
            want_zlast,
            n_nan,
        ) = self._flags
        spec = self._spec
        windows = self._windows
        maxw = self._maxw
        warmup = spec.baseline_warmup
        alpha = spec.baseline_alpha
        gate = spec.baseline_gate
        agg_zb_max, agg_zb_mean, agg_zl_max = self._aggregates
        ewm_alpha = self._ewm_alpha
        slopes = self._slope
        sqrt = math.sqrt
        aggregate = agg_zb_max or agg_zb_mean or agg_zl_max
        zb_max = zl_max = -1.0  # -1: no metric had a baseline in this reading
        zb_sum = 0.0
        zb_cnt = 0
        self._n += 1
        row: list[float] = []
        add = row.append
        for st, x in zip(self._states, values, strict=True):
            if x - x != 0.0:  # NaN or +-inf: a missing reading
                row.extend([_NAN] * n_nan)
                continue
            buf = st.buf
            if st.ref != st.ref:
                st.ref = x
            ref = st.ref
            y = x - ref
            nb = len(buf)
            s1s, s2s, sxys = st.s1, st.s2, st.sxy
            for k, w in enumerate(windows):
                if nb >= w:
                    yo = buf[nb - w] - ref
                    s1_old = s1s[k]
                    s1s[k] = s1_old - yo + y
                    s2s[k] = s2s[k] - yo * yo + y * y
                    sxys[k] = sxys[k] - (s1_old - yo) + (w - 1) * y
                else:
                    s1s[k] += y
                    s2s[k] += y * y
                    sxys[k] += nb * y
            buf.append(x)
            if nb >= maxw:
                del buf[0]
            st.since_refresh += 1
            if st.since_refresh >= maxw:
                st.refresh(windows)
            nb = len(buf)

            if want_last:
                add(x)
            mean0 = _NAN
            for k, w in enumerate(windows):
                n = nb if nb < w else w
                m1 = s1s[k] / n
                if k == 0:
                    mean0 = m1 + ref
                if want_mean:
                    add(m1 + ref)
                if want_std:
                    var = s2s[k] / n - m1 * m1
                    add(sqrt(var) if var > 0.0 else 0.0)
                if want_min or want_max:
                    tail = buf if n == nb else buf[-n:]  # a full window: no copy
                    if want_min:
                        add(min(tail))
                    if want_max:
                        add(max(tail))
                if want_slope:
                    if n < 2:
                        add(_NAN)
                    else:
                        si, den = slopes[n]
                        add((n * sxys[k] - si * s1s[k]) / den)
            ewm = st.ewm
            ewm = x if ewm != ewm else ewm + ewm_alpha * (x - ewm)
            st.ewm = ewm
            if want_ewm:
                add(ewm)

            # Baseline features use the baseline *before* this reading.
            b_n = st.b_n
            if b_n >= warmup:
                b_mean = st.b_mean
                b_var = st.b_var
                sd = sqrt(b_var) if b_var > 0.0 else 0.0
                # Floor for constant sensors: a flat-lined channel that moves is a
                # big change, but not an infinite one.
                floor = 1e-6 * abs(b_mean)
                if floor < 1e-9:
                    floor = 1e-9
                sd_f = sd if sd > floor else floor
                z_base = (mean0 - b_mean) / sd_f
                z_last = (x - b_mean) / sd_f
                if want_delta:
                    add(mean0 - b_mean)
                if want_z:
                    add(z_base)
                if want_zlast:
                    add(z_last)
                if aggregate:
                    a = z_base if z_base >= 0.0 else -z_base
                    if a > zb_max:
                        zb_max = a
                    zb_sum += a
                    zb_cnt += 1
                    a = z_last if z_last >= 0.0 else -z_last
                    if a > zl_max:
                        zl_max = a
                d = x - b_mean
                if alpha > 0.0 and abs(d) <= gate * sd_f:
                    st.b_mean = b_mean + alpha * d
                    st.b_var = (1.0 - alpha) * (b_var + alpha * d * d)
            else:
                if want_delta:
                    add(_NAN)
                if want_z:
                    add(_NAN)
                if want_zlast:
                    add(_NAN)
                # Welford's running mean/M2 while warming up; M2 becomes a variance
                # when warm-up completes.
                b_n += 1
                d = x - st.b_mean
                st.b_mean += d / b_n
                st.b_var += d * (x - st.b_mean)
                st.b_n = b_n
                if b_n == warmup:
                    st.b_var = st.b_var / b_n
        if aggregate:
            if agg_zb_max:
                add(zb_max if zb_cnt else _NAN)
            if agg_zb_mean:
                add(zb_sum / zb_cnt if zb_cnt else _NAN)
            if agg_zl_max:
                add(zl_max if zb_cnt else _NAN)
        if spec.include_age:
            add(float(self._n))
        return row

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe snapshot (no NaN, only dicts, lists, str, int and float).

        Floats survive a JSON round trip exactly, so a state restored with
        :meth:`from_dict` produces identical features afterwards.
        """
        return {
            "format": _STATE_FORMAT,
            "spec": self._spec_dict,
            "n": self._n,
            "metrics": [st.to_list() for st in self._states],
        }

    def packed_fields(self) -> tuple[int, list[int], list[float]]:
        """``to_dict()``'s ``n`` and ``metrics``, flattened for a binary snapshot.

        ``layout`` has, per metric, its number of fields, then one code per field:
        -1 for None (a NaN), 0 for a number, ``k + 1`` for a list of ``k`` numbers;
        ``numbers`` holds every number in order. This is what ``streams.state`` built
        from :meth:`to_dict` field by field; the worker packs every touched device each
        batch, so it is spelled out here, next to :meth:`MetricState.to_list`, whose
        field order it must follow (tests compare the two).
        """
        layout: list[int] = []
        numbers: list[float] = []
        nw1 = len(self._windows) + 1
        for st in self._states:
            buf, ref, ewm = st.buf, st.ref, st.ewm
            layout += (10, len(buf) + 1, 0 if ref == ref else -1, nw1, nw1, nw1, 0)
            layout += (0 if ewm == ewm else -1, 0, 0, 0)
            numbers += buf
            if ref == ref:
                numbers.append(ref)
            numbers += st.s1
            numbers += st.s2
            numbers += st.sxy
            numbers.append(st.since_refresh)
            if ewm == ewm:
                numbers.append(ewm)
            numbers += (st.b_n, st.b_mean, st.b_var)
        return self._n, layout, numbers

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DeviceFeatureState:
        """Restore a state saved with :meth:`to_dict`.

        Raises
        ------
        ValueError
            If ``d`` is not a saved state of a known format.
        """
        if d.get("format") != _STATE_FORMAT:
            raise ValueError(f"unsupported feature-state format {d.get('format')!r}")
        state = cls(FeatureSpec.from_dict(d["spec"]))
        if len(d["metrics"]) != len(state._states):
            raise ValueError("saved feature state does not match its spec")
        state._n = int(d["n"])
        nw = len(state._windows)
        state._states = [MetricState.from_list(v, nw) for v in d["metrics"]]
        return state


def compute_features(
    frame: pd.DataFrame,
    spec: FeatureSpec,
    device_col: str = "device_id",
    order_col: str = "ts",
    reset_col: str | None = None,
) -> pd.DataFrame:
    """Offline features: replay every device's readings through :class:`DeviceFeatureState`.

    Parameters
    ----------
    frame : pandas.DataFrame
        One row per reading, with ``device_col``, ``order_col`` and one column
        per metric in ``spec.metrics`` (a missing column means missing readings).
    spec : FeatureSpec
        What to compute.
    device_col, order_col : str
        The device key and the reading order within a device.
    reset_col : str, optional
        A boolean column; where true, :meth:`DeviceFeatureState.reset_baseline`
        runs before that reading (maintenance), as the worker would do.

    Returns
    -------
    pandas.DataFrame
        Columns ``spec.feature_names``, indexed like ``frame`` sorted by
        ``(device_col, order_col)`` (stable sort).
    """
    for col in (device_col, order_col):
        if col not in frame.columns:
            raise KeyError(f"frame has no column {col!r}")
    ordered = frame.sort_values([device_col, order_col], kind="mergesort")
    values = np.full((len(ordered), len(spec.metrics)), np.nan)
    for j, m in enumerate(spec.metrics):
        if m in ordered.columns:
            values[:, j] = pd.to_numeric(ordered[m], errors="coerce").to_numpy(dtype=float)
    devices = ordered[device_col].to_numpy()
    resets = (
        ordered[reset_col].fillna(False).to_numpy(dtype=bool)
        if reset_col is not None
        else np.zeros(len(ordered), dtype=bool)
    )
    out = np.empty((len(ordered), spec.n_features))
    starts = _group_starts(devices)
    for a, b in itertools.pairwise(starts):
        state = DeviceFeatureState(spec)
        # tolist() gives Python floats, the same numbers update() would see.
        rows = values[a:b].tolist()
        flags = resets[a:b].tolist()
        for i, (vals, reset) in enumerate(zip(rows, flags, strict=True)):
            if reset:
                state.reset_baseline()
            out[a + i] = state.update_values(vals)
    return pd.DataFrame(out, index=ordered.index, columns=list(spec.feature_names))


def _group_starts(keys: np.ndarray) -> list[int]:
    """Start offsets of runs of equal keys, plus the end."""
    n = len(keys)
    if n == 0:
        return [0]
    change = np.flatnonzero(pd.Series(keys).ne(pd.Series(keys).shift()).to_numpy())
    return [*change.tolist(), n]
