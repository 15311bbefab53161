"""Leak detection on a district: sensor readings against what the hydraulics predict.

Each 30-minute step gives a residual vector: every pressure sensor's reading
minus the nominal model's pressure for the measured inflow, and (optionally)
the inflow itself. A leak shifts that vector along its node's *signature*
(``networks.model``). The detector, one step at a time (so the stream worker
and the benchmark run the same code):

1. averages the residuals over a trailing window (a whole day by default, so
   the daily demand cycle cancels);
2. subtracts a baseline: the mean of the last few *unflagged* windows at the same
   time of week (LeakDB's MNF compares with the last unflagged days; this does
   the same per time-of-week slot so weekends cancel);
3. whitens the difference with a covariance estimated on unflagged steps and
   computes, for every candidate node, the matched-filter statistic of a leak
   of unknown positive size there (a generalised likelihood-ratio test);
4. raises the alarm when the best statistic stays above ``threshold`` for
   ``persist`` steps and lowers it when it stays below ``release·threshold``.

While the alarm is up nothing is learnt, so a leak never becomes the baseline.
The candidates, ranked by their statistic, localise the leak.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .model import NetworkModel

SLOTS = 7 * 48  # time-of-week slots of 30 min


@dataclass(frozen=True, slots=True)
class DetectorConfig:
    """Detector parameters. ``CHOSEN`` below is the configuration the benchmark reports."""

    window: int = 48  # steps in the trailing mean
    references: int = 4  # unflagged windows per time-of-week slot in the baseline
    stride: int = 1  # keep one reference every `stride` weeks (longer memory for slow leaks)
    threshold: float = 6.0  # GLRT statistic (≈ standard deviations) to raise
    release: float = 0.5  # lower when below release · threshold
    persist: int = 4  # consecutive steps to raise or lower
    use_inflow: bool = True  # include the inflow residual in the test (else pressures only)
    inflow_gate: float | None = None  # a leak adds inflow: its z-score must reach this
    min_history: int = 7 * 48  # unflagged difference steps before deciding
    halflife: int = 28 * 48  # forgetting of the noise covariance, steps
    shrinkage: float = 0.1  # covariance shrinkage towards its diagonal


@dataclass(slots=True)
class _State:
    t: int = 0
    buffer: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    running: np.ndarray = field(default_factory=lambda: np.zeros(0))
    slots: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0)))
    slot_count: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    cov: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    weight: float = 0.0
    history: int = 0
    inv: np.ndarray | None = None
    alarm: bool = False
    streak: int = 0
    last_scores: np.ndarray | None = None


class ResidualLeakDetector:
    """Online leak detector for one district; see the module docstring.

    Parameters
    ----------
    model : NetworkModel
        The nominal model: expected pressures and leak signatures.
    config : DetectorConfig
    """

    def __init__(self, model: NetworkModel, config: DetectorConfig | None = None) -> None:
        self.model = model
        self.config = config or DetectorConfig()
        self.reset()

    def reset(self) -> None:
        cfg = self.config
        # The residual vector is [pressure residuals..., inflow, h(inflow)]. The test
        # uses the inflow only with use_inflow; h = (Q/Q̄)^1.852 carries the
        # model's error that grows with flow (wrong roughness or diameters), whose
        # slope is learnt and removed so seasons don't look like leaks.
        n = len(self.model.junctions)
        k = 1 + self.model.tanks  # regressors: h(inflow), then each tank's level
        dims = n + 1 + k
        self._k = k
        self._n = n
        self._qref = self.model.mean_inflow
        self._tested = n + 1 if cfg.use_inflow else n
        # Exponentially weighted moments of (h, r) per step: the slope comes from
        # how residuals follow the flow through the day, which a leak (a near-
        # constant offset) barely changes, unlike week-to-week differences.
        self._mom = np.zeros(3)  # weight, Σh, Σh²
        self._mom_r = np.zeros((2, n))  # Σr, Σr·h
        self._slope = np.zeros(n)
        # With tanks, the same regression on [h, levels...]: weight, Σx, Σxxᵀ, Σr, Σrxᵀ.
        self._mx = [0.0, np.zeros(k), np.zeros((k, k)), np.zeros(n), np.zeros((n, k))]
        self._slopes = np.zeros((n, k))
        self._sig = self.model.signatures[: self._tested]
        self._state = _State(
            buffer=np.zeros((cfg.window, dims)),
            running=np.zeros(dims),
            slots=np.zeros((SLOTS, cfg.references, dims)),
            slot_count=np.zeros(SLOTS, dtype=int),
            cov=np.zeros((n + 1, n + 1)),  # pressures and inflow
        )

    @property
    def alarm(self) -> bool:
        return self._state.alarm

    def update(
        self, pressure: np.ndarray, inflow: float, levels: np.ndarray | None = None
    ) -> float:
        """Take one step's readings (pressures in ``model.junctions`` order, m; inflow
        m³/h; each tank's level, m, if the model has tanks); return the leak statistic
        (NaN while warming up). ``alarm`` tells whether the alarm is up after this step."""
        cfg, s = self.config, self._state
        h = (max(inflow, 0.0) / self._qref) ** 1.852
        extra = [] if self._k == 1 else list(np.asarray(levels, dtype=float))
        if len(extra) != self._k - 1:
            raise ValueError(f"expected {self._k - 1} tank levels, got {len(extra)}")
        resid = np.concatenate(
            [pressure - self.model.expected_pressure(inflow), [inflow, h], extra]
        )
        pos = s.t % cfg.window
        s.running += resid - s.buffer[pos]
        s.buffer[pos] = resid
        slot = s.t % SLOTS
        s.t += 1
        if s.t < cfg.window:
            return float("nan")
        mean = s.running / cfg.window
        stat = float("nan")
        n_ref = min(s.slot_count[slot], cfg.references)
        if not s.alarm:
            self._learn_slope(resid)
        if n_ref:
            raw = mean - s.slots[slot, :n_ref].mean(axis=0)
            delta = raw[: self._n + 1].copy()
            if self._k == 1:
                delta[: self._n] -= self._slope * raw[-1]
            else:
                delta[: self._n] -= self._slopes @ raw[self._n + 1 :]
            if s.history >= cfg.min_history:
                stat = self._score(delta)
            if not s.alarm:
                self._learn(delta)
        self._decide(stat)
        week = (s.t - 1) // SLOTS
        if not s.alarm and week % cfg.stride == 0:
            s.slots[slot, s.slot_count[slot] % cfg.references] = mean
            s.slot_count[slot] += 1
        return stat

    def _learn_slope(self, resid: np.ndarray) -> None:
        decay = 0.5 ** (1 / self.config.halflife)
        if self._k > 1:
            self._learn_slopes(resid, decay)
            return
        h, r = resid[-1], resid[: self._n]
        self._mom = decay * self._mom + (1.0, h, h * h)
        self._mom_r = decay * self._mom_r + (r, r * h)
        w, sh, shh = self._mom
        var = shh / w - (sh / w) ** 2
        if self._state.t % 48 == 0 and var > 1e-12:
            self._slope = (self._mom_r[1] / w - self._mom_r[0] / w * sh / w) / var

    def _learn_slopes(self, resid: np.ndarray, decay: float) -> None:
        """Multiple regression of the pressure residuals on [h, levels] (networks with tanks:
        every pressure follows the tank's level, which the inflow alone cannot predict)."""
        x, r = resid[self._n + 1 :], resid[: self._n]
        m = self._mx
        m[0] = decay * m[0] + 1.0
        m[1] = decay * m[1] + x
        m[2] = decay * m[2] + np.outer(x, x)
        m[3] = decay * m[3] + r
        m[4] = decay * m[4] + np.outer(r, x)
        if self._state.t % 48 == 0 and m[0] > 1:
            mx = m[1] / m[0]
            cxx = m[2] / m[0] - np.outer(mx, mx)
            crx = m[4] / m[0] - np.outer(m[3] / m[0], mx)
            self._slopes = crx @ np.linalg.pinv(cxx)

    def _learn(self, delta: np.ndarray) -> None:
        s, cfg = self._state, self.config
        decay = 0.5 ** (1 / cfg.halflife)
        s.cov = decay * s.cov + np.outer(delta, delta)
        s.weight = decay * s.weight + 1
        s.history += 1
        if s.inv is None or s.history % 48 == 0:
            cov = s.cov / s.weight
            diag = np.diag(np.diag(cov))
            cov = (1 - cfg.shrinkage) * cov + cfg.shrinkage * diag
            cov += np.eye(len(cov)) * 1e-9 * max(np.trace(cov), 1e-12)
            s.inv = np.linalg.pinv(cov)
            n = self._tested
            inv_sig = s.inv[:n, :n] @ self._sig
            # s_jᵀ Σ⁻¹ s_j per candidate, refreshed with Σ⁻¹.
            self._energy = np.maximum(np.einsum("ij,ij->j", self._sig, inv_sig), 1e-300)

    def _score(self, delta: np.ndarray) -> float:
        s, n = self._state, self._tested
        inv = s.inv[:n, :n]
        proj = self._sig.T @ (inv @ delta[:n])  # s_jᵀ Σ⁻¹ Δ
        scores = proj / np.sqrt(self._energy)
        s.last_scores = scores
        best = float(scores.max())
        # A shift that a leak's *negative* fits better is water no longer lost (a
        # leak repaired after it entered the baseline), not a new leak.
        if -float(scores.min()) > best:
            return 0.0
        gate = self.config.inflow_gate
        if gate is not None and delta[-1] < gate * np.sqrt(max(s.cov[-1, -1] / s.weight, 1e-12)):
            return 0.0
        return best

    def _decide(self, stat: float) -> None:
        s, cfg = self._state, self.config
        if np.isnan(stat):
            s.streak = 0
            return
        crossing = stat < cfg.release * cfg.threshold if s.alarm else stat >= cfg.threshold
        s.streak = s.streak + 1 if crossing else 0
        if s.streak >= cfg.persist:
            s.alarm = not s.alarm
            s.streak = 0

    def acknowledge(self) -> None:
        """A crew has taken the alarm: what the sensors read now becomes normal.
        The time-of-week references restart (the noise estimate is kept), so the
        next leak is measured against the network as it is after this one."""
        s = self._state
        s.slot_count[:] = 0
        s.alarm = False
        s.streak = 0

    def to_state(self) -> dict[str, Any]:
        """Everything the detector learnt, as copies: arrays, numbers, flags and None.

        :meth:`restore` on a detector of the same model and configuration makes it
        continue bit for bit; :func:`state_fingerprint` tells whether it may.
        """
        s = self._state
        values = {
            "t": s.t,
            "weight": s.weight,
            "history": s.history,
            "alarm": s.alarm,
            "streak": s.streak,
            "buffer": s.buffer,
            "running": s.running,
            "slots": s.slots,
            "slot_count": s.slot_count,
            "cov": s.cov,
            "inv": s.inv,
            "last_scores": s.last_scores,
            "energy": getattr(self, "_energy", None),
            "mom": self._mom,
            "mom_r": self._mom_r,
            "slope": self._slope,
            "slopes": self._slopes,
            **{f"mx{i}": m for i, m in enumerate(self._mx)},
        }
        return {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in values.items()}

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`to_state`'s output (of a detector of the same model and
        configuration). Raises ValueError, leaving the detector as it was, when the
        state's arrays do not fit this detector."""
        fresh = self.to_state()
        for name, value in fresh.items():
            if name not in state:
                raise ValueError(f"detector state lacks {name!r}")
            if isinstance(value, np.ndarray) and np.shape(state[name]) != value.shape:
                raise ValueError(f"detector state {name!r}: shape {np.shape(state[name])}")
        s = self._state
        s.t, s.weight, s.history = int(state["t"]), float(state["weight"]), int(state["history"])
        s.alarm, s.streak = bool(state["alarm"]), int(state["streak"])
        for name in ("buffer", "running", "slots", "slot_count", "cov", "inv", "last_scores"):
            setattr(s, name, _copy(state[name]))
        if state["energy"] is not None:
            self._energy = _copy(state["energy"])
        self._mom, self._mom_r = _copy(state["mom"]), _copy(state["mom_r"])
        self._slope, self._slopes = _copy(state["slope"]), _copy(state["slopes"])
        self._mx = [
            float(state["mx0"]) if np.ndim(state["mx0"]) == 0 else _copy(state["mx0"]),
            *(_copy(state[f"mx{i}"]) for i in range(1, len(self._mx))),
        ]

    def ranking(self) -> list[tuple[str, float]]:
        """Candidate nodes, most likely first, with their statistic (empty before any)."""
        scores = self._state.last_scores
        if scores is None:
            return []
        order = np.argsort(-scores)
        return [(self.model.candidates[i], float(scores[i])) for i in order]


def _copy(value: Any) -> Any:
    return None if value is None else np.array(value, copy=True)


def state_fingerprint(model: NetworkModel, config: DetectorConfig) -> str:
    """Changes whenever a saved detector state would no longer fit: another model
    (sensors, signatures, predictions) or another configuration."""
    digest = hashlib.blake2b(digest_size=12)
    digest.update(repr(config).encode())
    digest.update(repr((model.junctions, model.candidates, model.tank_names)).encode())
    for array in (model.grid_inflow, model.grid_pressure, model.signatures):
        digest.update(np.ascontiguousarray(array, dtype=float).tobytes())
    return digest.hexdigest()


@dataclass(slots=True)
class Detection:
    """A batch run: the alarm per step and the ranking at each alarm's first step."""

    alarms: np.ndarray
    statistic: np.ndarray
    rankings: dict[int, list[str]]


def detect(
    model: NetworkModel,
    pressure: np.ndarray,
    inflow: np.ndarray,
    config: DetectorConfig | None = None,
    *,
    levels: np.ndarray | None = None,
    rank_after: int = 48,
    acknowledge_after: int | None = None,
) -> Detection:
    """Run the online detector over a whole series; rankings are taken ``rank_after``
    steps into each alarm (the evidence of a day), or at its end if shorter. With
    ``acknowledge_after``, a crew takes each alarm that many steps after it rose."""
    det = ResidualLeakDetector(model, config)
    steps = len(inflow)
    alarms = np.zeros(steps, dtype=bool)
    stats = np.full(steps, np.nan)
    rankings: dict[int, list[str]] = {}
    onset = None
    for k in range(steps):
        stats[k] = det.update(pressure[k], float(inflow[k]), None if levels is None else levels[k])
        alarms[k] = det.alarm
        if alarms[k] and (k == 0 or not alarms[k - 1]):
            onset = k
        if (
            onset is not None
            and onset not in rankings
            and (not alarms[k] or k - onset >= rank_after)
        ):
            rankings[onset] = [name for name, _ in det.ranking()]
        if acknowledge_after and onset is not None and k - onset + 1 >= acknowledge_after:
            det.acknowledge()
            onset = None
    return Detection(alarms, stats, rankings)
