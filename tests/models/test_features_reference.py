"""The optimised DeviceFeatureState.update against a verbatim copy of the code before it.

The worker and training share models.features, and a model is only right if the worker
computes bit-identical features. The reference below is update/update_values as they were
before the speed-ups (local sqrt, slope terms per window length, no copy of a full
window, no float() of a float); hypothesis drives both on the same random sequences.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as hs

from models.feature_spec import FeatureSpec
from models.features import DeviceFeatureState

_NAN = float("nan")


def reference_update(self, metrics: Mapping[str, Any]) -> list[float]:
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
    for m in self._metrics:
        v = metrics.get(m)
        try:
            values.append(float(v))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            values.append(_NAN)
    return reference_update_values(self, values)


def reference_update_values(self, values: Sequence[float]) -> list[float]:
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
                add(math.sqrt(var) if var > 0.0 else 0.0)
            if want_min or want_max:
                tail = buf[-n:]
                if want_min:
                    add(min(tail))
                if want_max:
                    add(max(tail))
            if want_slope:
                if n < 2:
                    add(_NAN)
                else:
                    si = n * (n - 1) / 2.0
                    sii = (n - 1) * n * (2 * n - 1) / 6.0
                    add((n * sxys[k] - si * s1s[k]) / (n * sii - si * si))
        ewm = st.ewm
        ewm = x if ewm != ewm else ewm + self._ewm_alpha * (x - ewm)
        st.ewm = ewm
        if want_ewm:
            add(ewm)

        # Baseline features use the baseline *before* this reading.
        b_n = st.b_n
        if b_n >= warmup:
            b_mean = st.b_mean
            b_var = st.b_var
            sd = math.sqrt(b_var) if b_var > 0.0 else 0.0
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


def _bits(row: list[float]) -> list[bytes]:
    # float64 equality that also tells NaN from NaN-free and -0.0 from 0.0
    return [struct.pack("<d", v) for v in row]


_VALUE = hs.one_of(
    hs.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
    hs.sampled_from([_NAN, math.inf, -math.inf, 0.0, -0.0, 1.0, 1e-300]),
    hs.integers(min_value=-1000, max_value=1000),
    hs.none(),
    hs.just("x"),
)
_SPECS = hs.builds(
    FeatureSpec,
    metrics=hs.just(("a", "b", "c")),
    window=hs.integers(min_value=2, max_value=7),
    extra_windows=hs.sampled_from([(), (11,), (9, 13)]),
    point_stats=hs.sampled_from(
        [("last", "ewm", "delta_baseline", "z_baseline"), ("ewm", "z_last"), ("last",)]
    ),
    aggregate_stats=hs.sampled_from([(), ("max_abs_z_baseline", "mean_abs_z_baseline")]),
    baseline_warmup=hs.integers(min_value=2, max_value=6),
    baseline_alpha=hs.sampled_from([0.0, 0.002, 0.3]),
)
_STEP = hs.tuples(
    hs.dictionaries(hs.sampled_from(["a", "b", "c", "d"]), _VALUE, max_size=4),
    hs.sampled_from([None, None, None, None, "clear", "keep"]),
)


@settings(max_examples=300, deadline=None)
@given(_SPECS, hs.lists(_STEP, max_size=60))
def test_update_is_bit_identical_to_the_reference(spec, steps) -> None:
    new, old = DeviceFeatureState(spec), DeviceFeatureState(spec)
    for metrics, reset in steps:
        if reset is not None:
            new.reset_baseline(clear_windows=reset == "clear")
            old.reset_baseline(clear_windows=reset == "clear")
        assert _bits(new.update(metrics)) == _bits(reference_update(old, metrics))
        assert repr(new.to_dict()) == repr(old.to_dict())  # repr: exact, tells -0.0 from 0.0
