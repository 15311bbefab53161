"""Cold-start health model: each device learns its own healthy baseline online.

A city that has just installed sensors has no failure labels, so the
supervised risk model (:mod:`models.risk`) has nothing to learn from. This
model needs none. Each device:

1. smooths every metric with an exponentially weighted mean (span
   :attr:`HealthSpec.span`), so single noisy readings do not alarm;
2. during its first :attr:`HealthSpec.warmup` readings (after installation or
   maintenance) keeps those smoothed vectors, then learns their mean, standard
   deviation and (shrunk) correlation, and sets an upper control limit
   ``UCL = quantile(warm-up distances, q) * factor``, as a control chart does;
3. from then on scores every reading by its distance from that baseline
   (the sum of squared z-scores by default) and reports ``anomaly_score = distance / UCL``, so
   1.0 is the control limit for every asset type;
4. raises an alarm after :attr:`HealthSpec.persist` consecutive readings above
   the limit.

Why the project's own statistics rather than river: on SKAB's leaderboard
protocol river 0.26's ``HalfSpaceTrees`` (the online detector closest to this
job) reached F1 about 0.66 at its best threshold, this baseline about 0.83
(``citywatch bench model --dataset skab --protocol leaderboard --detector hst``
reproduces the comparison; see docs/models.md). The baseline is also
deterministic, explainable per metric and tiny to keep per device.

The state is plain lists and floats so the worker can keep one per device in
a Faust table (:meth:`DeviceHealthState.to_dict`). :func:`health_scores` runs
the same :meth:`DeviceHealthState.update` over a frame, for evaluation.
"""

from __future__ import annotations

import functools
import json
import math
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

__all__ = [
    "ANOMALY_THRESHOLD",
    "CITY_HEALTH_WARMUP",
    "DISTANCES",
    "MODEL_KINDS",
    "DeviceHealthState",
    "HealthScore",
    "HealthSpec",
    "alarms_from_scores",
    "anomaly_risk",
    "health_scores",
    "scoring_policy",
]

DISTANCES = ("mahalanobis", "sum_z2", "max_z")
_STATE_FORMAT = 1
_NAN = float("nan")
# One compact encoder for every call (json.dumps builds a new one when given options).
_COMPACT = json.JSONEncoder(separators=(",", ":"))


@dataclass(frozen=True)
class HealthSpec:
    """Parameters of the cold-start health model for one kind of device.

    Parameters
    ----------
    metrics : tuple of str
        Metric names, in a fixed order.
    warmup : int, default=400
        Readings that define the healthy baseline (SKAB's leaderboard fits on
        each experiment's first 400 rows, which are anomaly-free).
    span : int, default=40
        Span of the exponentially weighted mean of each metric.
    distance : str, default="sum_z2"
        ``mahalanobis`` (on z-scores, shrunk correlation), ``sum_z2`` (squared
        z-scores summed, correlation ignored) or ``max_z`` (largest ``|z|``).
    quantile : float, default=0.999
        Quantile of the warm-up distances that, times ``factor``, is the UCL.
    factor : float, default=3.0
        Multiplier on that quantile.
    persist : int, default=1
        Consecutive readings above the UCL before an alarm.
    shrinkage : float, default=0.1
        Weight of the identity in the correlation matrix, so a short warm-up
        with collinear metrics still inverts.

    The defaults are the configuration chosen on SKAB by nested
    leave-files-out selection (:mod:`models.health_eval`); the grid is
    :data:`models.health_eval.HEALTH_GRID`.
    """

    metrics: tuple[str, ...]
    warmup: int = 400
    span: int = 40
    distance: str = "sum_z2"
    quantile: float = 0.999
    factor: float = 3.0
    persist: int = 1
    shrinkage: float = 0.1

    def __post_init__(self) -> None:
        object.__setattr__(self, "metrics", tuple(self.metrics))
        if not self.metrics or len(set(self.metrics)) != len(self.metrics):
            raise ValueError(f"metrics must be non-empty and unique, got {self.metrics!r}")
        if self.warmup < 10:
            raise ValueError("warmup must be >= 10 readings")
        if self.span < 1:
            raise ValueError("span must be >= 1")
        if self.distance not in DISTANCES:
            raise ValueError(f"distance must be one of {DISTANCES}, got {self.distance!r}")
        if not 0.5 <= self.quantile <= 1.0:
            raise ValueError("quantile must be in [0.5, 1]")
        if self.factor <= 0:
            raise ValueError("factor must be > 0")
        if self.persist < 1:
            raise ValueError("persist must be >= 1")
        if not 0.0 <= self.shrinkage <= 1.0:
            raise ValueError("shrinkage must be in [0, 1]")

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form, for model cards and saved state."""
        d = asdict(self)
        d["metrics"] = list(self.metrics)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> HealthSpec:
        """Inverse of :meth:`to_dict`."""
        return cls(**{**d, "metrics": tuple(d["metrics"])})


@functools.lru_cache(maxsize=256)
def _spec_json(spec: HealthSpec) -> str:
    # A spec is frozen: encode it once, not once per device per batch (asdict deep-copies).
    return _COMPACT.encode(spec.to_dict())


class HealthScore(NamedTuple):
    """One reading's health score.

    ``distance`` is NaN and ``anomaly_score`` NaN during warm-up
    (``warming_up`` True); ``alarm`` is then always False.
    """

    distance: float
    anomaly_score: float
    alarm: bool
    warming_up: bool


# What every reading scores while the baseline is being learned (immutable, so shared:
# one allocation less per reading in the worker).
_WARMING_UP = HealthScore(_NAN, _NAN, False, True)


class DeviceHealthState:
    """Online health baseline of one device.

    Parameters
    ----------
    spec : HealthSpec

    Examples
    --------
    >>> spec = HealthSpec(metrics=("a", "b"), warmup=10, span=1, persist=1)
    >>> st = DeviceHealthState(spec)
    >>> for i in range(10):
    ...     _ = st.update({"a": 1.0 + 0.1 * (i % 3), "b": 2.0 - 0.1 * (i % 2)})
    >>> st.update({"a": 9.0, "b": 2.0}).alarm
    True
    """

    def __init__(self, spec: HealthSpec) -> None:
        self.spec = spec
        self._alpha = 2.0 / (spec.span + 1.0)
        self.reset()

    def reset(self) -> None:
        """Relearn the baseline from the next readings (after maintenance)."""
        k = len(self.spec.metrics)
        self._ewm: list[float] = [_NAN] * k
        # Warm-up rows, flat (row after row): packing a worker's state each batch is
        # then one memcpy instead of a Python loop over up to warmup x k floats.
        self._buf = array("d")
        self._mu: list[float] = []
        self._sd: list[float] = []
        self._prec: list[list[float]] = []
        self._ucl = _NAN
        self._run = 0
        self.n_readings = 0
        self._fitted_json: str | None = None  # mu, sd, prec and ucl never change once learned

    @property
    def warming_up(self) -> bool:
        """True until the baseline has been learned."""
        return not self._mu

    @property
    def ucl(self) -> float:
        """Upper control limit of :meth:`distance` (NaN while warming up)."""
        return self._ucl

    def update(self, metrics: Mapping[str, Any]) -> HealthScore:
        """Add one reading; missing or non-numeric metrics keep their last smoothed value."""
        values = []
        add = values.append
        for m in self.spec.metrics:
            v = metrics.get(m)
            if type(v) is float:  # validated readings: float(v) would return v itself
                add(v)
                continue
            try:
                add(float(v))  # type: ignore[arg-type]
            except (TypeError, ValueError):
                add(_NAN)
        return self.update_values(values)

    def update_values(self, values: Sequence[float]) -> HealthScore:
        """Like :meth:`update`, with values in ``spec.metrics`` order."""
        a = self._alpha
        ewm = self._ewm
        unseen = False  # a metric never seen yet (its smoothed value is still NaN)
        for i, x in enumerate(values):
            e = ewm[i]
            if x - x != 0.0:  # NaN or inf: keep the last smoothed value
                if e != e:
                    unseen = True
                continue
            e = x if e != e else e + a * (x - e)
            ewm[i] = e
            if e != e:
                unseen = True
        if len(values) < len(ewm):  # metrics not given at all: check them too
            unseen = unseen or any(e != e for e in ewm)
        self.n_readings += 1
        if unseen:
            return _WARMING_UP
        if not self._mu:
            self._buf.extend(ewm)
            if len(self._buf) >= self.spec.warmup * len(ewm):
                self._fit()
            return _WARMING_UP
        d = self._distance(ewm)
        ratio = d / self._ucl
        self._run = self._run + 1 if ratio > 1.0 else 0
        return HealthScore(d, ratio, self._run >= self.spec.persist, False)

    def _fit(self) -> None:
        spec = self.spec
        X = np.frombuffer(self._buf, dtype=float).reshape(-1, len(spec.metrics))
        mu = X.mean(axis=0)
        sd = X.std(axis=0)
        # A metric constant during warm-up: any change from it is a large z.
        floor = np.maximum(1e-6 * np.abs(mu), 1e-9)
        sd = np.maximum(sd, floor)
        Z = (X - mu) / sd
        corr = (Z.T @ Z) / len(Z)  # z-scores: their covariance is the correlation
        corr = (1.0 - spec.shrinkage) * corr + spec.shrinkage * np.eye(len(mu))
        self._mu = mu.tolist()
        self._sd = sd.tolist()
        self._prec = np.linalg.pinv(corr).tolist()
        d = np.asarray([self._distance(row) for row in X.tolist()])
        limit = float(np.quantile(d, spec.quantile)) * spec.factor
        self._ucl = max(limit, 1e-9)
        self._buf = array("d")
        self._fitted_json = None

    def _distance(self, x: Sequence[float]) -> float:
        z = [(v - m) / s for v, m, s in zip(x, self._mu, self._sd, strict=True)]
        kind = self.spec.distance
        if kind == "max_z":
            return max(abs(v) for v in z)
        if kind == "sum_z2":
            return math.fsum([v * v for v in z])  # fsum: exactly rounded, same as before
        return math.fsum(
            zi * math.fsum(p * zj for p, zj in zip(row, z, strict=True))
            for zi, row in zip(z, self._prec, strict=True)
        )

    def to_dict(self, *, with_buffer: bool = True) -> dict[str, Any]:
        """JSON-safe state (NaN as None), restorable with :meth:`from_dict`.

        ``with_buffer=False`` leaves out the warm-up rows ("buf"); a caller that
        stores them itself passes :meth:`warmup_buffer` back to ``from_dict``.
        """
        d = {
            "format": _STATE_FORMAT,
            "spec": self.spec.to_dict(),
            "ewm": [None if e != e else e for e in self._ewm],
            "mu": self._mu,
            "sd": self._sd,
            "prec": self._prec,
            "ucl": None if self._ucl != self._ucl else self._ucl,
            "run": self._run,
            "n": self.n_readings,
        }
        if with_buffer:
            k = len(self.spec.metrics)
            d["buf"] = [self._buf[i : i + k].tolist() for i in range(0, len(self._buf), k)]
        return d

    def head_json(self) -> str:
        """``to_dict(with_buffer=False)`` as compact JSON (``separators=(",", ":")``), the
        same text, built faster: the worker packs every touched device each batch, and the
        spec and the learned baseline are the same every time, so only ``ewm``, ``run``
        and ``n`` are encoded afresh."""
        fitted = self._fitted_json
        if fitted is None:
            ucl = None if self._ucl != self._ucl else self._ucl
            body = {"mu": self._mu, "sd": self._sd, "prec": self._prec, "ucl": ucl}
            fitted = self._fitted_json = _COMPACT.encode(body)[1:-1]
        ewm = _COMPACT.encode([None if e != e else e for e in self._ewm])
        return (
            f'{{"format":{_STATE_FORMAT},"spec":{_spec_json(self.spec)},"ewm":{ewm},'
            f'{fitted},"run":{self._run:d},"n":{self.n_readings:d}}}'
        )

    def warmup_buffer(self) -> array:
        """The warm-up rows so far, flat float64 (row after row); empty once learned."""
        return self._buf

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], buffer: array | None = None) -> DeviceHealthState:
        """Inverse of :meth:`to_dict`; ``buffer`` is :meth:`warmup_buffer`'s value when
        the dict was made without it.

        Raises
        ------
        ValueError
            If the saved state has another format.
        """
        if d.get("format") != _STATE_FORMAT:
            raise ValueError(f"unknown health state format {d.get('format')!r}")
        st = cls(HealthSpec.from_dict(d["spec"]))
        st._ewm = [_NAN if e is None else float(e) for e in d["ewm"]]
        if buffer is not None:
            st._buf = array("d", buffer)
        else:
            st._buf = array("d", [float(v) for row in d["buf"] for v in row])
        st._mu = [float(v) for v in d["mu"]]
        st._sd = [float(v) for v in d["sd"]]
        st._prec = [list(map(float, r)) for r in d["prec"]]
        st._ucl = _NAN if d["ucl"] is None else float(d["ucl"])
        st._run = int(d["run"])
        st.n_readings = int(d["n"])
        st._fitted_json = None
        return st


def health_scores(frame: pd.DataFrame, spec: HealthSpec) -> pd.DataFrame:
    """Run one device's readings through :class:`DeviceHealthState`, in order.

    Parameters
    ----------
    frame : pandas.DataFrame
        One device's readings, with a column per ``spec.metrics``.

    Returns
    -------
    pandas.DataFrame
        Indexed like ``frame``: ``distance``, ``anomaly_score``, ``alarm`` and
        ``warming_up``, plus ``ucl`` (the limit learned at the end of warm-up).
    """
    st = DeviceHealthState(spec)
    values = frame[list(spec.metrics)].to_numpy(dtype=float)
    rows = [st.update_values(v) for v in values.tolist()]
    out = pd.DataFrame(rows, columns=list(HealthScore._fields), index=frame.index)
    out["ucl"] = st.ucl
    return out


def alarms_from_scores(
    distance: np.ndarray, ucl: float, factor_ratio: float, persist: int
) -> np.ndarray:
    """Alarms for another (limit, persistence) without re-running the baseline.

    Same rule as :meth:`DeviceHealthState.update_values` (a run of ``persist``
    readings with ``distance > ucl * factor_ratio``); used to evaluate a grid
    of thresholds cheaply. NaN distances (warm-up) never alarm.
    """
    above = np.nan_to_num(np.asarray(distance, dtype=float), nan=-np.inf) > ucl * factor_ratio
    if persist <= 1:
        return above
    # Length of the current run of True values at each position.
    idx = np.arange(len(above))
    last_false = np.maximum.accumulate(np.where(~above, idx, -1))
    return (idx - last_false) >= persist


# -- which model alerts, per asset type ----------------------------------------------

MODEL_KINDS = ("failure_risk", "anomaly")
MIN_LABELLED_FAILURES = 5  # fewer and the supervised threshold is a guess
MIN_HELDOUT_AUC = 0.7
CITY_HEALTH_WARMUP = 200  # readings; SKAB's 400 are 1 Hz, city sensors report far less often


def scoring_policy(failures: int, heldout_auc: float | None, has_classifier: bool) -> dict:
    """Which model raises an asset type's alerts, decided by the labels available.

    The supervised failure risk takes over from the cold-start anomaly score
    once the asset type has at least :data:`MIN_LABELLED_FAILURES` labelled
    failures and its classifier's held-out AUC is at least
    :data:`MIN_HELDOUT_AUC`; otherwise the anomaly score alerts. The anomaly
    score is computed and stored either way. Recorded in the model card
    (``scoring_policy``) so the register and the worker read the same decision.
    """
    auc_ok = heldout_auc is not None and heldout_auc >= MIN_HELDOUT_AUC  # NaN compares False
    supervised = has_classifier and failures >= MIN_LABELLED_FAILURES and auc_ok
    return {
        "kind": "failure_risk" if supervised else "anomaly",
        "labelled_failures": int(failures),
        "heldout_auc": heldout_auc,
        "rule": (
            f"failure_risk when >= {MIN_LABELLED_FAILURES} labelled failures and held-out "
            f"AUC >= {MIN_HELDOUT_AUC}; otherwise the cold-start anomaly score"
        ),
    }


def anomaly_risk(anomaly_score: float) -> float:
    """Map ``distance / UCL`` (0..inf, 1 at the control limit) to a 0..1 alerting signal.

    ``a / (1 + a)``: monotone, 0.5 exactly at the limit, so the alert threshold
    for anomaly scores is 0.5 and the hysteresis works as for a probability.
    NaN (warming up) maps to 0: no baseline yet, no alarm.
    """
    if anomaly_score != anomaly_score:
        return 0.0
    return anomaly_score / (1.0 + anomaly_score)


ANOMALY_THRESHOLD = 0.5  # anomaly_risk at the control limit
