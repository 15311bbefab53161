"""Water-quality stations: the stream features, one reading at a time.

A station reports temperature, two chlorine probes, pH, redox, conductivity,
turbidity and two flows once a minute (the GECCO 2018 station's layout).
:class:`StationState` is the only feature code: the worker keeps one per
station and calls :meth:`StationState.update` for each reading; the offline
path, :func:`station_features`, loops a recorded frame through the same method,
so training and serving features are identical.

Features are *relative* by design: deviations of short windows from the
station's last day, and the recent history of those deviations. Absolute
levels (temperature 8 degC, conductivity 211 uS/cm) drift with the season and
the source water, so a model keyed on them would not carry over to a later
period of the same station.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.dataset_columns import GECCO_COLUMNS
from models.feature_spec import FeatureSpec
from models.features import DeviceFeatureState

__all__ = [
    "ASSET_TYPE",
    "GECCO_COLUMNS",
    "HORIZONS_H",
    "METRICS",
    "StationState",
    "event_feature_names",
    "feature_spec",
    "gecco_file",
    "horizon_feature_names",
    "horizon_labels",
    "load_gecco",
    "persistence",
    "station_features",
]

ASSET_TYPE = "water_quality_station"
# The station's metrics in GECCO's column order (core.dataset_columns; units in the catalogue).
METRICS = tuple(GECCO_COLUMNS.values())
HORIZONS_H = (1, 6, 24, 48)

SHORT, MEDIUM, DAY = 5, 60, 1440  # readings (minutes at one reading a minute)
HISTORY_H = (1, 6, 24, 48)  # hours of anomaly history kept as features
ANOMALY_LEVEL = 3.0  # a jump of this many day-standard-deviations counts as "anomalous"
HOURS_SINCE_CAP = 96.0
INCIDENT_H = (1, 6, 24, 48, 168)  # hours of confirmed-incident history kept as features
INCIDENT_SINCE_CAP = 168.0
_SCALE_FLOOR = 0.01  # jump denominators are at least 1% of the day's level
_STATE_FORMAT = 1
_NAN = float("nan")


def feature_spec() -> FeatureSpec:
    """The fixed per-metric rolling statistics under :class:`StationState`."""
    return FeatureSpec(
        metrics=METRICS,
        window=SHORT,
        extra_windows=(MEDIUM, DAY),
        window_stats=("mean", "std"),
        point_stats=("last", "z_last", "z_baseline"),
        baseline_warmup=DAY,
        baseline_alpha=0.0005,
        baseline_gate=4.0,
        aggregate_stats=("max_abs_z_baseline", "mean_abs_z_baseline", "max_abs_z_last"),
        include_age=False,
    )


def _base_names(spec: FeatureSpec) -> list[str]:
    # Absolute levels are dropped (see the module docstring); spreads and z-scores stay.
    drop = ("__last", f"__mean_{SHORT}", f"__mean_{MEDIUM}", f"__mean_{DAY}")
    return [n for n in spec.feature_names if not n.endswith(drop)]


def _feature_names(spec: FeatureSpec) -> tuple[str, ...]:
    names = _base_names(spec)
    for m in spec.metrics:
        names += [f"{m}__jump_{SHORT}", f"{m}__jump_{MEDIUM}", f"{m}__spread_ratio"]
    names += ["anomaly_level", "anomaly_metrics"]
    for h in HISTORY_H:
        names += [f"anomaly_max_{h}h", f"anomaly_share_{h}h"]
    names += ["hours_since_anomaly"]
    names += [f"incident_share_{h}h" for h in INCIDENT_H]
    names += ["hours_since_incident"]
    return tuple(names)


# Feature groups: the event detector must not see incident labels (its target);
# the outlook sees the station's anomaly and incident history, not raw sensor
# spreads, which carried no 48 h signal on the validation part.
def event_feature_names(names: Sequence[str]) -> tuple[str, ...]:
    """The features the event detector uses: everything but the incident history."""
    return tuple(n for n in names if not n.startswith(("incident_", "hours_since_incident")))


def horizon_feature_names(names: Sequence[str]) -> tuple[str, ...]:
    """The features the 1-48 h outlook uses: anomaly and incident history."""
    return tuple(n for n in names if n.startswith(("anomaly_", "hours_since_", "incident_")))


class StationState:
    """Incremental features of one water-quality station.

    Parameters
    ----------
    spec : FeatureSpec, optional
        The rolling statistics; defaults to :func:`feature_spec`.

    Notes
    -----
    ``anomaly_level`` is the largest short-window jump across metrics, in
    standard deviations of the station's last day: an unsupervised score of
    how far from its own recent normal the station is. Its history over the
    last 1/6/24/48 hours (maximum, share of minutes above
    :data:`ANOMALY_LEVEL`, hours since it last was) feeds the forecasts.
    History windows are in time, not readings, so outages are not bridged.
    """

    __slots__ = (
        "_base",
        "_hist",
        "_idx",
        "_incidents",
        "_last_anomaly",
        "_last_incident",
        "_names",
        "_spec",
    )

    def __init__(self, spec: FeatureSpec | None = None) -> None:
        self._spec = spec or feature_spec()
        self._base = DeviceFeatureState(self._spec)
        self._names = _feature_names(self._spec)
        all_names = self._spec.feature_names
        pos = {n: i for i, n in enumerate(all_names)}
        self._idx = {
            "keep": [pos[n] for n in _base_names(self._spec)],
            "per_metric": [
                (
                    pos[f"{m}__mean_{SHORT}"],
                    pos[f"{m}__mean_{MEDIUM}"],
                    pos[f"{m}__mean_{DAY}"],
                    pos[f"{m}__std_{MEDIUM}"],
                    pos[f"{m}__std_{DAY}"],
                )
                for m in self._spec.metrics
            ],
        }
        # Anomaly levels of the last 1/6/24/48 h, longest last.
        self._hist = [_Window(h * 3600.0) for h in sorted(HISTORY_H)]
        self._last_anomaly = _NAN
        self._incidents = [_Window(h * 3600.0) for h in INCIDENT_H]
        self._last_incident = _NAN

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Names of the row :meth:`update` returns, in order."""
        return self._names

    def update(
        self, ts: datetime | float, metrics: Mapping[str, Any], incident: bool | None = None
    ) -> list[float]:
        """Add one reading (timezone-aware ``ts`` or epoch seconds); return its features.

        Metrics that are absent, ``None`` or not finite are gaps: they leave the
        state unchanged and give NaN features, never zeros. ``incident`` is the
        confirmed label of this minute when known (a replayed file's label, a
        crew's outcome); None leaves the incident history as it is.
        """
        t = ts.timestamp() if isinstance(ts, datetime) else float(ts)
        base = self._base.update(metrics)
        row = [base[i] for i in self._idx["keep"]]
        level = -1.0
        count = 0
        for ms, mm, md, sm, sd in self._idx["per_metric"]:
            scale = base[sd]
            floor = _SCALE_FLOOR * abs(base[md]) + 1e-9
            if not scale > floor:  # also catches NaN
                scale = floor
            j_short = (base[ms] - base[md]) / scale
            j_med = (base[mm] - base[md]) / scale
            row += [j_short, j_med, base[sm] / scale]
            if j_short == j_short:
                a = abs(j_short)
                level = max(level, a)
                count += a > ANOMALY_LEVEL
        has_level = level >= 0.0
        row += [level if has_level else _NAN, float(count) if has_level else _NAN]
        row += self._history(t, level if has_level else _NAN)
        row += self._incident_history(t, incident)
        return row

    def _incident_history(self, t: float, incident: bool | None) -> list[float]:
        known = incident is not None
        if known and incident:
            self._last_incident = t
        # 10 > ANOMALY_LEVEL, so a window's "share above" is its share of incident minutes.
        v = (10.0 if incident else 0.0) if known else _NAN
        out = [w.update(t, v)[1] for w in self._incidents]
        since = (t - self._last_incident) / 3600.0
        out.append(min(since, INCIDENT_SINCE_CAP) if since == since else INCIDENT_SINCE_CAP)
        return out

    def _history(self, t: float, level: float) -> list[float]:
        if level == level and level > ANOMALY_LEVEL:
            self._last_anomaly = t
        out: list[float] = []
        for w in self._hist:
            out += w.update(t, level)
        since = (t - self._last_anomaly) / 3600.0
        out.append(min(since, HOURS_SINCE_CAP) if since == since else HOURS_SINCE_CAP)
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe snapshot; :meth:`from_dict` restores identical behaviour."""
        longest = self._hist[-1]
        return {
            "format": _STATE_FORMAT,
            "base": self._base.to_dict(),
            "hist": [list(x) for x in longest.q],
            "last_t": longest.last_t,
            "last_anomaly": _enc(self._last_anomaly),
            "incidents": [list(x) for x in self._incidents[-1].q],
            "incident_t": self._incidents[-1].last_t,
            "last_incident": _enc(self._last_incident),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StationState:
        """Restore a state saved with :meth:`to_dict`."""
        if d.get("format") != _STATE_FORMAT:
            raise ValueError(f"unsupported station-state format {d.get('format')!r}")
        base = DeviceFeatureState.from_dict(d["base"])
        state = cls(base.spec)
        state._base = base
        for w in state._hist:
            w.restore([(float(a), float(b)) for a, b in d["hist"]], d.get("last_t"))
        for w in state._incidents:
            w.restore([(float(a), float(b)) for a, b in d["incidents"]], d.get("incident_t"))
        state._last_anomaly = _dec(d.get("last_anomaly"))
        state._last_incident = _dec(d.get("last_incident"))
        return state


def _enc(x: float) -> float | None:
    return None if x != x else x


def _dec(x: float | None) -> float:
    return _NAN if x is None else float(x)


class _Window:
    """Maximum and share above :data:`ANOMALY_LEVEL` of the levels in the last ``span`` s.

    A monotonic deque gives the maximum in O(1) amortised per reading; a scan
    of 48 h of minutes per reading would cost more than everything else.
    """

    __slots__ = ("above", "last_t", "maxq", "q", "span")

    def __init__(self, span: float) -> None:
        self.span = span
        self.q: deque[tuple[float, float]] = deque()
        self.maxq: deque[tuple[float, float]] = deque()
        self.above = 0
        self.last_t: float | None = None

    def _push(self, t: float, level: float) -> None:
        self.q.append((t, level))
        self.above += level > ANOMALY_LEVEL
        mq = self.maxq
        while mq and mq[-1][1] <= level:
            mq.pop()
        mq.append((t, level))

    def _evict(self, t: float) -> None:
        lo = t - self.span
        q = self.q
        while q and q[0][0] <= lo:
            _, v = q.popleft()
            self.above -= v > ANOMALY_LEVEL
        mq = self.maxq
        while mq and mq[0][0] <= lo:
            mq.popleft()

    def update(self, t: float, level: float) -> list[float]:
        if level == level:
            self._push(t, level)
        self._evict(t)
        self.last_t = t
        if not self.q:
            return [_NAN, _NAN]
        return [self.maxq[0][1], self.above / len(self.q)]

    def restore(self, entries: list[tuple[float, float]], last_t: float | None) -> None:
        for t, v in entries:
            self._push(t, v)
        if last_t is not None:
            self._evict(float(last_t))
            self.last_t = float(last_t)


def station_features(
    frame: pd.DataFrame, state: StationState | None = None, incident_col: str | None = "event"
) -> pd.DataFrame:
    """Offline features: every row of ``frame`` through :meth:`StationState.update`.

    Parameters
    ----------
    frame : pandas.DataFrame
        One row per reading in time order, a timezone-aware ``ts`` column and
        one column per metric of :data:`METRICS` (NaN = no reading).
    state : StationState, optional
        State to continue from (e.g. the end of a training period); updated in place.
    incident_col : str or None, default="event"
        Column of confirmed incident labels fed to the incident history, as
        the stream receives them; missing column or None = labels unknown.

    Returns
    -------
    pandas.DataFrame
        Features indexed like ``frame``.
    """
    state = state or StationState()
    ts = pd.to_datetime(frame["ts"], utc=True)
    if not ts.is_monotonic_increasing:
        raise ValueError("readings must be in time order")
    epoch = _epoch(ts).tolist()
    names = list(state._spec.metrics)
    values = np.full((len(frame), len(names)), np.nan)
    for j, m in enumerate(names):
        if m in frame.columns:
            values[:, j] = pd.to_numeric(frame[m], errors="coerce").to_numpy(dtype=float)
    if incident_col is not None and incident_col in frame.columns:
        incidents = [
            None if v != v else bool(v) for v in frame[incident_col].astype(float).tolist()
        ]
    else:
        incidents = [None] * len(frame)
    rows = [
        state.update(t, dict(zip(names, v, strict=True)), inc)
        for t, v, inc in zip(epoch, values.tolist(), incidents, strict=True)
    ]
    return pd.DataFrame(rows, index=frame.index, columns=list(state.feature_names))


def gecco_file(data: Path) -> Path:
    """``train.csv`` in ``data`` or in ``data/gecco2018``; FileNotFoundError otherwise."""
    for candidate in (data / "train.csv", data / "gecco2018" / "train.csv"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{data}: no train.csv (nor gecco2018/train.csv) in it")


def load_gecco(path: str) -> pd.DataFrame:
    """A GECCO 2018 file as ``ts``, the :data:`METRICS` columns and ``event`` (0/1).

    Empty fields stay NaN (gaps). Raises ``ValueError`` if a column is missing.
    """
    raw = pd.read_csv(path)
    cols = {c.lower(): c for c in raw.columns}
    need = ["time", *(c.lower() for c in GECCO_COLUMNS), "event"]
    missing = [c for c in need if c not in cols]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}")
    out = pd.DataFrame({"ts": pd.to_datetime(raw[cols["time"]], utc=True)})
    for src, dst in GECCO_COLUMNS.items():
        out[dst] = pd.to_numeric(raw[cols[src.lower()]], errors="coerce")
    ev = raw[cols["event"]].astype(str).str.strip().str.lower()
    out["event"] = ev.isin(["1", "true", "1.0"]).astype(int)
    return out.sort_values("ts", kind="mergesort").reset_index(drop=True)


def _epoch(ts: Sequence[Any] | pd.Series) -> np.ndarray:
    """Epoch seconds, the same floats ``datetime.timestamp()`` gives the worker
    (whole microseconds divided by 10**6), whatever unit pandas stores."""
    t = pd.to_datetime(pd.Series(ts), utc=True)
    micros = (t - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(microseconds=1)
    return micros.to_numpy(dtype=np.int64) / 1e6


def horizon_labels(ts: pd.Series, event: np.ndarray, hours: float) -> tuple[np.ndarray, np.ndarray]:
    """Whether an event minute falls in ``(t, t + hours]``, and whether that is knowable.

    Returns
    -------
    (labels, known)
        ``known`` is False where the window runs past the last reading and no
        event was found in it yet (the answer is censored).
    """
    t = _epoch(ts)
    ev = np.asarray(event).astype(int)
    csum = np.concatenate([[0], np.cumsum(ev)])
    lo = np.searchsorted(t, t, side="right")
    hi = np.searchsorted(t, t + hours * 3600.0, side="right")
    y = (csum[hi] - csum[lo]) > 0
    known = y | (t + hours * 3600.0 <= t[-1])
    return y.astype(int), known


def persistence(ts: pd.Series, event: np.ndarray, hours: float) -> np.ndarray:
    """The persistence forecast: 1 where an event minute falls in ``(t - hours, t]``."""
    t = _epoch(ts)
    ev = np.asarray(event).astype(int)
    csum = np.concatenate([[0], np.cumsum(ev)])
    lo = np.searchsorted(t, t - hours * 3600.0, side="right")
    hi = np.searchsorted(t, t, side="right")
    return ((csum[hi] - csum[lo]) > 0).astype(int)


def finite_or_nan(x: float) -> float:
    """``x`` if finite, else NaN (JSON payloads carry no infinities)."""
    return x if math.isfinite(x) else _NAN
