"""A deterministic simulator of a city's sensor fleet, with degradation and failures.

The simulator is pure: no I/O, no wall clock, no global random state. Given a
seed and the same sequence of calls it produces bit-identical readings, so it
serves as the training-data generator (:meth:`FleetSimulator.history`), the
live demo source (:meth:`FleetSimulator.step`, paced by
:func:`ingest.producer.run_simulation`) and a test fixture.

How each asset type's sensors behave, and how its failure modes show, is
:mod:`ingest.asset_signals`.

A healthy device starts degrading with a small probability each tick. Over
``L`` ticks its ground-truth health falls as ``1 - p**2`` (``p`` is the
fraction of ``L`` elapsed) while the failure mode's metrics drift by
``p**3`` of their full shift, so the first third is close to invisible and the
last third is unmistakable. At ``p == 1`` (health 0) the device fails, a
:class:`FailureEvent` is emitted, and the device is repaired: its baseline is
re-drawn slightly and it carries on reporting.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import numpy as np

from core.assets import ASSET_TYPES

from .asset_signals import FAILURE_MODES, SIGNALS, TAU, Env, Signals
from .sim_records import Degradation, Device, FailureEvent, SimReading

_DEVEUI_PREFIX = "70b3d57ed"  # 9 hex digits; a device index fills the other 7
_ASSET_PREFIX = {"water_pump": "pump", "bridge": "bridge", "lift": "lift", "streetlight": "light"}
_EPOCH = datetime(2012, 1, 1, tzinfo=UTC)


# --------------------------------------------------------------------------- fleet


class _Group:
    """The devices of one asset type: global indices, model, metric bounds."""

    def __init__(self, asset_type: str, idx: np.ndarray, signals: Signals) -> None:
        spec = ASSET_TYPES[asset_type]
        self.asset_type = asset_type
        self.idx = idx
        self.idx_list: list[int] = idx.tolist()
        self.signals = signals
        self.names = spec.metric_names
        self.low = np.array([m.low for m in spec.metrics])
        self.high = np.array([m.high for m in spec.metrics])
        self.modes = FAILURE_MODES[asset_type]


class FleetSimulator:
    """A fleet of sensor nodes on city assets that degrade and fail.

    Parameters
    ----------
    n_devices : int, default=50
        Fleet size. Asset types are assigned round-robin in the order of
        :data:`core.assets.ASSET_TYPES`.
    seed : int, default=0
        Seed of the only random generator; equal seeds and equal calls give
        identical output.
    degradation_probability : float, default=0.002
        Chance per tick that a healthy device starts degrading.
    degradation_ticks : (int, int), default=(120, 360)
        Inclusive range of degradation lengths, in ticks, drawn uniformly.
    noise : float, default=1.0
        Multiplier on every sensor noise term (0 leaves the cycles, the shared
        weather, benign transients and flicker).
    initial_degrading_fraction : float, default=0.0
        Fraction of the fleet that is already partway (10-80 %) through a
        degradation at tick 0, so a short demo shows failures early. Their
        start tick is negative; see :class:`FailureEvent` for the datetime.
    transient_probability : float, default=0.004
        Chance per tick and device of a benign transient (1-3 ticks).
    day_ticks : int, default=288
        Ticks per simulated day (288 = one tick per 5 minutes).
    center : (float, float), default=(52.37, 4.89)
        City centre (Amsterdam); devices are placed within +-0.05 deg.
    jitter_ms : float, default=50.0
        Upper bound of each device's fixed reporting delay after the tick.

    Attributes
    ----------
    devices : list of Device
        The fleet, in device-index order.
    tick : int
        The number of ticks stepped so far (the next tick's index).

    Examples
    --------
    >>> from datetime import UTC, datetime, timedelta
    >>> sim = FleetSimulator(n_devices=8, seed=1)
    >>> readings, failures = sim.history(10, datetime(2026, 1, 1, tzinfo=UTC), timedelta(minutes=5))
    >>> len(readings)
    80
    """

    def __init__(
        self,
        n_devices: int = 50,
        seed: int = 0,
        degradation_probability: float = 0.002,
        degradation_ticks: tuple[int, int] = (120, 360),
        noise: float = 1.0,
        *,
        initial_degrading_fraction: float = 0.0,
        transient_probability: float = 0.004,
        day_ticks: int = 288,
        center: tuple[float, float] = (52.37, 4.89),
        jitter_ms: float = 50.0,
    ) -> None:
        lo, hi = degradation_ticks
        if n_devices < 1:
            raise ValueError(f"n_devices must be >= 1, got {n_devices}")
        if not 1 <= lo <= hi:
            raise ValueError(f"degradation_ticks must satisfy 1 <= low <= high, got {(lo, hi)}")
        for name, value in (
            ("degradation_probability", degradation_probability),
            ("initial_degrading_fraction", initial_degrading_fraction),
            ("transient_probability", transient_probability),
        ):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if noise < 0 or day_ticks < 1 or jitter_ms < 0:
            raise ValueError("noise and jitter_ms must be >= 0 and day_ticks >= 1")
        self.n_devices = n_devices
        self.seed = seed
        self.degradation_probability = degradation_probability
        self.degradation_ticks = (int(lo), int(hi))
        self.noise = noise
        self.initial_degrading_fraction = initial_degrading_fraction
        self.transient_probability = transient_probability
        self.day_ticks = day_ticks
        self.center = center
        self.jitter_ms = jitter_ms

        rng = self._rng = np.random.default_rng(seed)
        n = n_devices
        types = list(SIGNALS)  # the types the simulator has physics for
        lat = center[0] + rng.uniform(-0.05, 0.05, n)
        lon = center[1] + rng.uniform(-0.05, 0.05, n)
        installed_days = rng.uniform(0.0, 3650.0, n)
        self._devices: list[Device] = []
        for i in range(n):
            asset_type = types[i % len(types)]
            self._devices.append(
                Device(
                    device_id=f"{_DEVEUI_PREFIX}{i + 1:07x}",
                    asset_id=f"{_ASSET_PREFIX.get(asset_type, asset_type)}-{i + 1:04d}",
                    asset_type=asset_type,
                    lat=round(float(lat[i]), 6),
                    lon=round(float(lon[i]), 6),
                    installed_at=_EPOCH + timedelta(days=round(float(installed_days[i]), 3)),
                )
            )
        self._index = {d.device_id: i for i, d in enumerate(self._devices)}
        self._groups = [
            _Group(t, idx, SIGNALS[t](idx.size, rng, noise))
            for k, t in enumerate(types)
            if (idx := np.arange(k, n, len(types))).size
        ]
        self._group_of = np.empty(n, dtype=np.int64)
        self._local = np.empty(n, dtype=np.int64)
        for g, group in enumerate(self._groups):
            self._group_of[group.idx] = g
            self._local[group.idx] = np.arange(group.idx.size)
        # Small per-device offset into the daily cycle: districts do not peak in lockstep.
        self._phase = rng.normal(0.0, 0.02 * day_ticks, n)
        self._delay = [
            timedelta(microseconds=int(us)) for us in rng.uniform(0.0, jitter_ms * 1000.0, n)
        ]

        # Degradation state, one slot per device.
        self._deg = np.zeros(n, dtype=bool)
        self._deg_start = np.zeros(n, dtype=np.int64)
        self._deg_len = np.ones(n, dtype=np.int64)
        self._deg_mode = np.full(n, -1, dtype=np.int64)
        self._deg_mag = np.ones(n)
        self._deg_sign = np.ones(n)
        self._deg_start_ts: list[datetime | None] = [None] * n
        self._repaired = np.zeros(n, dtype=bool)  # failed last tick; next reading follows a repair
        self._forced: dict[int, tuple[int, int | None]] = {}
        self._spike = np.zeros(n)
        self._weather = 0.0
        self._cloud = 0.0
        self._tick = 0
        self._first_ts: datetime | None = None
        self._last_ts: datetime | None = None

        k = round(initial_degrading_fraction * n)
        if k:
            seeded = np.sort(rng.choice(n, size=k, replace=False))
            lengths = rng.integers(lo, hi + 1, k)
            elapsed = np.floor(rng.uniform(0.1, 0.8, k) * lengths).astype(np.int64)
            for i, length, done in zip(
                seeded.tolist(), lengths.tolist(), elapsed.tolist(), strict=True
            ):
                self._start_degradation(i, start=-done, length=length, mode=None, ts=None)

    # ----------------------------------------------------------------- public API

    @property
    def devices(self) -> list[Device]:
        """The fleet, in device-index order (a copy)."""
        return list(self._devices)

    @property
    def tick(self) -> int:
        """Index of the next tick."""
        return self._tick

    @property
    def degrading(self) -> list[Degradation]:
        """Degradations in progress (ground truth), in device order."""
        out = []
        for i in np.flatnonzero(self._deg).tolist():
            group = self._groups[self._group_of[i]]
            out.append(
                Degradation(
                    device_id=self._devices[i].device_id,
                    mode=group.modes[self._deg_mode[i]],
                    started_tick=int(self._deg_start[i]),
                    failing_tick=int(self._deg_start[i] + self._deg_len[i]),
                )
            )
        return out

    def device(self, device_id: str) -> Device:
        """Look a device up by id; raises ``KeyError`` if it is not in the fleet."""
        return self._devices[self._index[device_id]]

    def force_degradation(self, device_id: str, ticks: int, mode: str | None = None) -> None:
        """Make a device start degrading on the next tick and fail ``ticks`` ticks later.

        Replaces any degradation already in progress on that device. ``mode``
        defaults to a random failure mode of the device's asset type.
        """
        i = self._index[device_id]
        if ticks < 1:
            raise ValueError(f"ticks must be >= 1, got {ticks}")
        modes = FAILURE_MODES[self._devices[i].asset_type]
        if mode is not None and mode not in modes:
            raise ValueError(f"{mode!r} is not a failure mode of {self._devices[i].asset_type}")
        self._forced[i] = (int(ticks), None if mode is None else modes.index(mode))

    def step(self, ts: datetime) -> tuple[list[SimReading], list[FailureEvent]]:
        """Advance one tick: every device reports once.

        Parameters
        ----------
        ts : datetime
            The tick's time; timezone-aware and later than the previous tick's.
            Each device's reading is stamped ``ts`` plus its fixed delay.

        Returns
        -------
        readings : list of SimReading
            One per device, in device order.
        failures : list of FailureEvent
            Devices whose health reached 0 in this tick; they are repaired
            before the next tick.
        """
        if ts.tzinfo is None:
            raise ValueError("ts must be timezone-aware")
        if self._last_ts is not None and ts <= self._last_ts:
            raise ValueError(f"ts must increase: {ts.isoformat()} <= {self._last_ts.isoformat()}")
        if self._first_ts is None:
            self._first_ts = ts
        self._last_ts = ts
        rng, t, n = self._rng, self._tick, self.n_devices
        stamps = [ts + d for d in self._delay]

        self._begin_degradations(t, stamps)
        progress = np.where(self._deg, (t - self._deg_start) / self._deg_len, 0.0)
        progress = np.clip(progress, 0.0, 1.0)
        health = 1.0 - progress**2
        sev = progress**3 * self._deg_mag  # subtle for p < 1/3, clear for p > 2/3

        # Benign transients decay within ~3 ticks; new ones start at random.
        self._spike *= 0.3
        self._spike[self._spike < 0.05] = 0.0
        new = (rng.random(n) < self.transient_probability) & (self._spike == 0.0)
        self._spike[new] = rng.uniform(0.6, 1.4, int(new.sum()))

        env = self._environment(t)
        readings: list[SimReading | None] = [None] * n
        health_list = health.tolist()
        repaired = self._repaired.tolist()
        self._repaired[:] = False
        for group in self._groups:
            idx = group.idx
            values = group.signals.sample(
                Env(t, env.f[idx], env.ambient, env.cloud),
                sev[idx],
                self._deg_mode[idx],
                self._deg_sign[idx],
                self._spike[idx],
                rng,
            )
            # Sensors saturate at their physical range.
            values = np.round(np.clip(values, group.low, group.high), 4).tolist()
            names = group.names
            for j, i in enumerate(group.idx_list):
                readings[i] = SimReading(
                    self._devices[i],
                    t,
                    stamps[i],
                    dict(zip(names, values[j], strict=True)),
                    health_list[i],
                    repaired[i],
                )

        failures = self._complete_degradations(t, ts, stamps)
        self._tick += 1
        return readings, failures  # type: ignore[return-value]

    def history(
        self, ticks: int, start: datetime, period: timedelta
    ) -> tuple[list[SimReading], list[FailureEvent]]:
        """Run ``ticks`` ticks offline, tick ``i`` of this run at ``start + i * period``.

        Continues from the simulator's current state (use a fresh simulator for
        a reproducible training set).
        """
        if period <= timedelta(0):
            raise ValueError("period must be positive")
        readings: list[SimReading] = []
        failures: list[FailureEvent] = []
        for i in range(ticks):
            r, f = self.step(start + i * period)
            readings.extend(r)
            failures.extend(f)
        return readings, failures

    # ----------------------------------------------------------------- internals

    def _environment(self, t: int) -> Env:
        rng = self._rng
        # Weather and cloud are slow AR(1) processes shared by the whole city.
        self._weather = 0.995 * self._weather + rng.normal(0.0, 0.15)
        self._cloud = 0.98 * self._cloud + rng.normal(0.0, 0.05)
        f = ((t + self._phase) / self.day_ticks) % 1.0
        city_f = (t / self.day_ticks) % 1.0
        ambient = 11.0 + 4.0 * math.sin(TAU * (city_f - 0.375)) + self._weather
        cloud = min(max(0.6 + self._cloud, 0.15), 1.0)
        return Env(t, f, ambient, cloud)

    def _start_degradation(
        self, i: int, *, start: int, length: int, mode: int | None, ts: datetime | None
    ) -> None:
        rng = self._rng
        modes = FAILURE_MODES[self._devices[i].asset_type]
        self._deg[i] = True
        self._deg_start[i] = start
        self._deg_len[i] = length
        self._deg_mode[i] = int(rng.integers(len(modes))) if mode is None else mode
        self._deg_mag[i] = rng.uniform(0.75, 1.25)  # faults differ in how far they go
        self._deg_sign[i] = 1.0 if rng.random() < 0.5 else -1.0
        self._deg_start_ts[i] = ts

    def _begin_degradations(self, t: int, stamps: Sequence[datetime]) -> None:
        lo, hi = self.degradation_ticks
        starting = (self._rng.random(self.n_devices) < self.degradation_probability) & ~self._deg
        for i in np.flatnonzero(starting).tolist():
            if i not in self._forced:
                length = int(self._rng.integers(lo, hi + 1))
                self._start_degradation(i, start=t, length=length, mode=None, ts=stamps[i])
        for i, (length, mode) in sorted(self._forced.items()):
            self._start_degradation(i, start=t, length=length, mode=mode, ts=stamps[i])
        self._forced.clear()

    def _complete_degradations(
        self, t: int, ts: datetime, stamps: Sequence[datetime]
    ) -> list[FailureEvent]:
        done = np.flatnonzero(self._deg & (t >= self._deg_start + self._deg_len)).tolist()
        failures = []
        for i in done:
            device = self._devices[i]
            group = self._groups[self._group_of[i]]
            start = int(self._deg_start[i])
            started_at = self._deg_start_ts[i]
            if started_at is None:
                # Seeded before tick 0: extrapolate with the mean period seen so far.
                assert self._first_ts is not None
                period = (ts - self._first_ts) / t if t > 0 else timedelta(0)
                started_at = self._first_ts + start * period + self._delay[i]
            failures.append(
                FailureEvent(
                    device_id=device.device_id,
                    asset_id=device.asset_id,
                    asset_type=device.asset_type,
                    mode=group.modes[self._deg_mode[i]],
                    degradation_started_at=started_at,
                    failed_at=stamps[i],
                    degradation_started_tick=start,
                    failed_tick=t,
                )
            )
            # Repair: healthy again, on a slightly different baseline.
            self._repaired[i] = True
            self._deg[i] = False
            self._deg_mode[i] = -1
            self._deg_start_ts[i] = None
            group.signals.redraw(np.array([self._local[i]]), self._rng)
        return failures
