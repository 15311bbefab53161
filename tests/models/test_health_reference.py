"""The optimised DeviceHealthState.update against a verbatim copy of the code before it
(scores and state bit-identical on random sequences with NaN, inf and missing metrics)."""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as hs

from models.health import DeviceHealthState, HealthScore, HealthSpec

_NAN = float("nan")


def reference_update(self, metrics: Mapping[str, Any]) -> HealthScore:
    """Add one reading; missing or non-numeric metrics keep their last smoothed value."""
    values = []
    for m in self.spec.metrics:
        try:
            values.append(float(metrics.get(m)))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            values.append(_NAN)
    return reference_update_values(self, values)


def reference_update_values(self, values: Sequence[float]) -> HealthScore:
    """Like :meth:`update`, with values in ``spec.metrics`` order."""
    a = self._alpha
    ewm = self._ewm
    for i, x in enumerate(values):
        if x - x != 0.0:  # NaN or inf: keep the last smoothed value
            continue
        e = ewm[i]
        ewm[i] = x if e != e else e + a * (x - e)
    self.n_readings += 1
    if any(e != e for e in ewm):  # a metric never seen yet
        return HealthScore(_NAN, _NAN, False, True)
    if not self._mu:
        self._buf.extend(ewm)
        if len(self._buf) >= self.spec.warmup * len(ewm):
            self._fit()
        return HealthScore(_NAN, _NAN, False, True)
    d = reference_distance(self, ewm)
    ratio = d / self._ucl
    self._run = self._run + 1 if ratio > 1.0 else 0
    return HealthScore(d, ratio, self._run >= self.spec.persist, False)


def reference_distance(self, x: Sequence[float]) -> float:
    z = [(v - m) / s for v, m, s in zip(x, self._mu, self._sd, strict=True)]
    kind = self.spec.distance
    if kind == "max_z":
        return max(abs(v) for v in z)
    if kind == "sum_z2":
        return math.fsum(v * v for v in z)
    return math.fsum(
        zi * math.fsum(p * zj for p, zj in zip(row, z, strict=True))
        for zi, row in zip(z, self._prec, strict=True)
    )


def _bits(score: HealthScore) -> tuple:
    return (struct.pack("<dd", score.distance, score.anomaly_score), score[2:])


_VALUE = hs.one_of(
    hs.floats(min_value=-1e3, max_value=1e3, allow_nan=False),
    hs.sampled_from([_NAN, math.inf, -math.inf, 0.0, -0.0, 1.0]),
    hs.integers(min_value=-10, max_value=10),
    hs.none(),
    hs.just("x"),
)


@settings(max_examples=150, deadline=None)
@given(
    hs.sampled_from(["sum_z2", "max_z", "mahalanobis"]),
    hs.integers(min_value=1, max_value=3),
    hs.lists(
        hs.tuples(hs.dictionaries(hs.sampled_from("abcd"), _VALUE, max_size=4), hs.booleans()),
        max_size=80,
    ),
)
def test_update_is_bit_identical_to_the_reference(distance, persist, steps) -> None:
    spec = HealthSpec(
        metrics=("a", "b", "c"), warmup=10, span=3, distance=distance, persist=persist
    )
    new, old = DeviceHealthState(spec), DeviceHealthState(spec)
    for metrics, reset in steps:
        if reset and "d" in metrics:
            new.reset()
            old.reset()
        assert _bits(new.update(metrics)) == _bits(reference_update(old, metrics))
        assert repr(new.to_dict()) == repr(old.to_dict())


def test_update_values_with_too_few_values_still_waits_for_every_metric() -> None:
    st = DeviceHealthState(HealthSpec(metrics=("a", "b"), warmup=10))
    assert st.update_values([1.0]).warming_up
