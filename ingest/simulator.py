"""A deterministic simulator of a city's sensor fleet, with degradation and failures.

The simulator is pure: no I/O, no wall clock, no global random state. Given a
seed and the same sequence of calls it produces bit-identical readings, so it
serves as the training-data generator (:meth:`FleetSimulator.history`), the
live demo source (:meth:`FleetSimulator.step`, paced by
:func:`ingest.producer.run_simulation`) and a test fixture.

Signal model, per asset type (all cycles are counted in ticks, ``day_ticks`` to
a simulated day, because a live demo compresses days into minutes):

- **water_pump**: flow follows a two-peak daily water demand; pressure follows
  the pump curve (falls as flow rises); motor current follows hydraulic load;
  bearing temperature lags load and the city's air temperature.
- **bridge**: deck temperature follows air temperature plus solar gain; strain,
  tilt and crack width "breathe" with temperature; strain and deck acceleration
  rise with rush-hour traffic.
- **lift**: drive current, motor temperature, vibration and door times follow
  an office building's usage; levelling error is a small per-car bias plus noise.
- **streetlight**: ambient light follows the sun and a shared cloud cover; the
  lamp switches on at dusk and dims after midnight; the LED driver draws
  constant power, so lamp current is ``P / (V * PF)``.

Every device has its own baseline (size, set points, temperature rise), its own
phase in the daily cycle, Gaussian noise, and occasional benign transients
(water hammer, a heavy truck, an overloaded car, a mains surge) that last one
to three ticks and never precede a failure.

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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from core.assets import ASSET_TYPES
from core.wire import encode_maintenance, encode_reading

__all__ = [
    "FAILURE_MODES",
    "KEY_METRICS",
    "METRIC_COLUMNS",
    "Degradation",
    "Device",
    "FailureEvent",
    "FleetSimulator",
    "SimReading",
    "failures_frame",
    "history_frame",
    "maintenance_bytes",
    "reading_bytes",
]

#: Failure modes each asset type can develop.
FAILURE_MODES: dict[str, tuple[str, ...]] = {
    "water_pump": ("bearing_wear", "impeller_clog"),
    "bridge": ("corrosion", "bearing_seizure"),
    "lift": ("door_motor", "drive_wear"),
    "streetlight": ("driver_overheat", "cable_fault"),
}

#: The clearest symptom of each failure mode: ``(metric, direction)``, where
#: direction is +1 if the metric rises as the fault develops and -1 if it falls.
#: Other metrics drift too (see the signal classes below); this is the one a
#: crew would look at first.
KEY_METRICS: dict[str, tuple[str, int]] = {
    "bearing_wear": ("vibration_rms", +1),
    "impeller_clog": ("flow", -1),
    "corrosion": ("crack_width", +1),
    "bearing_seizure": ("strain", +1),
    "door_motor": ("door_cycle_time", +1),
    "drive_wear": ("motor_temp", +1),
    "driver_overheat": ("driver_temp", +1),
    "cable_fault": ("supply_voltage", -1),
}

_DEVEUI_PREFIX = "70b3d57ed"  # 9 hex digits; a device index fills the other 7
_ASSET_PREFIX = {"water_pump": "pump", "bridge": "bridge", "lift": "lift", "streetlight": "light"}
_EPOCH = datetime(2012, 1, 1, tzinfo=UTC)
_TAU = 2.0 * math.pi


@dataclass(frozen=True, slots=True)
class Device:
    """One sensor node fitted to one asset.

    Parameters
    ----------
    device_id : str
        16 lowercase hex digits, shaped like a LoRaWAN DevEUI.
    asset_id : str
        The asset the node is fitted to, e.g. ``"pump-0001"``.
    asset_type : str
        A key of :data:`core.assets.ASSET_TYPES`.
    lat, lon : float
        Where the asset stands (WGS 84).
    installed_at : datetime
        When the node was installed (timezone-aware).
    """

    device_id: str
    asset_id: str
    asset_type: str
    lat: float
    lon: float
    installed_at: datetime


@dataclass(frozen=True, slots=True)
class FailureEvent:
    """Ground truth: a device failed after a period of degradation.

    ``degradation_started_tick`` is the first tick of degradation (health
    still 1 there) and ``failed_tick`` the tick whose reading has health 0.
    For devices seeded as already degrading (``initial_degrading_fraction``)
    the start tick is negative and ``degradation_started_at`` is extrapolated
    back from tick 0 with the mean tick period observed up to the failure.
    """

    device_id: str
    asset_id: str
    asset_type: str
    mode: str
    degradation_started_at: datetime
    failed_at: datetime
    degradation_started_tick: int
    failed_tick: int


@dataclass(frozen=True, slots=True)
class Degradation:
    """A degradation in progress: the device will fail at ``failing_tick``."""

    device_id: str
    mode: str
    started_tick: int
    failing_tick: int


@dataclass(frozen=True, slots=True)
class SimReading:
    """One simulated reading plus its ground truth.

    Parameters
    ----------
    device : Device
        The reporting device.
    tick : int
        Simulator tick (0-based, counts every call to ``step``).
    ts : datetime
        Reading time: the tick's time plus a fixed per-device delay of a few ms.
    metrics : dict of str to float
        One value per metric of the device's asset type, within its MetricSpec.
    health : float
        Ground truth in [0, 1]; 1 is healthy, 0 is the failure tick. Never sent
        on the wire.
    repaired : bool
        True for the device's first reading after a failure: the asset was
        repaired just before it. Producers send a maintenance event (see
        :func:`maintenance_bytes`) immediately before such a reading.
    """

    device: Device
    tick: int
    ts: datetime
    metrics: dict[str, float]
    health: float
    repaired: bool = False


# --------------------------------------------------------------------------- signals


def _bump(f: np.ndarray, center: float, width: float) -> np.ndarray:
    """A Gaussian bump on the circular time of day ``f`` in [0, 1)."""
    d = (f - center + 0.5) % 1.0 - 0.5
    return np.exp(-0.5 * (d / width) ** 2)


def _sunlight(f: np.ndarray) -> np.ndarray:
    """Relative solar elevation: 0 from 18:00 to 06:00, 1 at noon."""
    return np.clip(np.sin(_TAU * (f - 0.25)), 0.0, None)


@dataclass
class _Env:
    """What all devices share in one tick."""

    tick: int
    f: np.ndarray  # per-device time of day in [0, 1)
    ambient: float  # city air temperature, degC
    cloud: float  # fraction of clear-sky daylight reaching the ground


class _Signals:
    """Vectorised signal model for all devices of one asset type.

    Subclasses draw per-device baselines into ``self.p`` and implement
    ``sample``, which returns an ``(n, n_metrics)`` array in catalogue order.
    ``sev`` (per device, 0 when healthy) is the drift severity of the active
    failure mode already scaled by that event's magnitude; ``mode`` indexes
    ``FAILURE_MODES[asset_type]`` (-1 when healthy).
    """

    asset_type: str = ""
    #: multiplicative (log-normal sigma) re-draw of each baseline after a repair
    repair_jitter: dict[str, float] = {}
    #: baselines that may be negative get an additive re-draw instead
    repair_shift: dict[str, float] = {}

    def __init__(self, n: int, rng: np.random.Generator, noise: float) -> None:
        self.n = n
        self.noise = noise
        self.p: dict[str, np.ndarray] = self._baseline(rng, n)
        self.lag: np.ndarray | None = None  # first-order thermal state, see _lagged

    def _baseline(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def redraw(self, local: np.ndarray, rng: np.random.Generator) -> None:
        """After a repair the asset is nearly, not exactly, what it was."""
        for name, sigma in self.repair_jitter.items():
            self.p[name][local] *= rng.lognormal(0.0, sigma, local.size)
        for name, scale in self.repair_shift.items():
            self.p[name][local] += rng.normal(0.0, scale, local.size)

    def _lagged(self, target: np.ndarray, alpha: float) -> np.ndarray:
        # Temperatures do not jump: move a fraction alpha towards the target each tick.
        if self.lag is None:
            self.lag = target.copy()
        else:
            self.lag += alpha * (target - self.lag)
        return self.lag

    def _mode_sev(self, sev: np.ndarray, mode: np.ndarray, k: int) -> np.ndarray:
        return np.where(mode == k, sev, 0.0)

    def sample(
        self,
        env: _Env,
        sev: np.ndarray,
        mode: np.ndarray,
        sign: np.ndarray,
        spike: np.ndarray,
        rng: np.random.Generator,
    ) -> np.ndarray:
        raise NotImplementedError


class _WaterPump(_Signals):
    """Centrifugal pump at a pumping station.

    bearing_wear: vibration rises up to ~8 mm/s (ISO 10816 zone D) with growing
    scatter, bearing temperature rises ~25 degC, friction adds current.
    impeller_clog: ragging cuts flow by up to ~75 % and head a little while current
    rises; pressure becomes unsteady and imbalance adds vibration.
    """

    asset_type = "water_pump"
    repair_jitter = {"q0": 0.02, "p0": 0.02, "i0": 0.02, "v0": 0.08, "rise": 0.05}

    def _baseline(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        q0 = rng.uniform(100.0, 700.0, n)  # design flow, m3/h
        p0 = rng.uniform(2.5, 6.0, n)  # design head, bar
        # Full-load current of a 400 V motor at ~70 % wire-to-water efficiency.
        kw = q0 / 3600.0 * p0 * 1e5 / 0.7 / 1000.0
        i0 = kw * 1000.0 / (math.sqrt(3.0) * 400.0 * 0.85) * rng.uniform(0.9, 1.1, n)
        return {
            "q0": q0,
            "p0": p0,
            "i0": i0,
            "v0": rng.uniform(0.8, 2.6, n),  # healthy vibration, mm/s
            "rise": rng.uniform(15.0, 28.0, n),  # bearing temperature rise at full load
            "busy": rng.uniform(0.85, 1.05, n),  # how hard this station is driven
        }

    def sample(
        self,
        env: _Env,
        sev: np.ndarray,
        mode: np.ndarray,
        sign: np.ndarray,
        spike: np.ndarray,
        rng: np.random.Generator,
    ) -> np.ndarray:
        p, z = self.p, rng.standard_normal((self.n, 5)) * self.noise
        wear = self._mode_sev(sev, mode, 0)
        clog = self._mode_sev(sev, mode, 1)
        f = env.f
        demand = (
            0.5
            + 0.35 * _bump(f, 0.31, 0.05)
            + 0.28 * _bump(f, 0.80, 0.07)
            + 0.12 * _bump(f, 0.55, 0.12)
        )
        q = np.clip(demand * p["busy"], 0.2, 1.1) * (1.0 + 0.03 * z[:, 4])
        q = q * (1.0 - 0.75 * clog)
        flow = p["q0"] * q
        pressure = p["p0"] * (1.25 - 0.25 * q**2) * (1.0 - 0.15 * clog)
        pressure = pressure + p["p0"] * 0.015 * (1.0 + 6.0 * clog) * z[:, 3]
        load = q * pressure / p["p0"]
        current = p["i0"] * (0.3 + 0.7 * load) * (1.0 + 0.05 * wear + 0.25 * clog)
        current = current + 0.01 * p["i0"] * z[:, 2]
        vib = p["v0"] * (0.85 + 0.25 * q) + 8.0 * wear + 3.0 * clog
        vib = vib + 0.06 * p["v0"] * (1.0 + 5.0 * wear) * z[:, 0]
        temp_target = env.ambient + p["rise"] * (0.5 + 0.5 * load) + 25.0 * wear
        temp = self._lagged(temp_target, 0.15) + 0.3 * z[:, 1]
        # Water hammer: a pressure surge that shakes the pipework and the motor.
        vib = vib + spike * 6.0
        pressure = pressure + spike * 0.4 * p["p0"]
        current = current + spike * 0.15 * p["i0"]
        return np.stack([vib, temp, current, pressure, flow], axis=1)


class _Bridge(_Signals):
    """Road bridge with strain gauges, an inclinometer, an accelerometer and a crack meter.

    corrosion: section loss raises live-load strain and creeps the static
    strain up, the crack opens by 1-2 mm, the deck tilts, vibration grows.
    bearing_seizure: a seized expansion bearing restrains thermal movement, so
    strain tracks deck temperature more strongly (up to ~2.5x), builds a restraint
    stress, and tilt follows temperature.
    """

    asset_type = "bridge"
    repair_jitter = {"kt": 0.03, "live": 0.05, "a0": 0.05, "c0": 0.05}
    repair_shift = {"s0": 10.0, "t0": 0.01}

    def _baseline(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        return {
            "s0": rng.uniform(-300.0, 300.0, n),  # static strain, microstrain
            "kt": rng.uniform(8.0, 15.0, n),  # thermal strain, microstrain/degC
            "live": rng.uniform(40.0, 150.0, n),  # peak traffic strain
            "t0": rng.uniform(-0.3, 0.3, n),  # static tilt, deg
            "a0": rng.uniform(0.005, 0.02, n),  # ambient deck vibration, g
            "ta": rng.uniform(0.01, 0.05, n),  # traffic vibration, g
            "c0": rng.uniform(0.05, 0.4, n),  # crack width, mm
            "solar": rng.uniform(5.0, 12.0, n),  # solar gain of the deck, degC
        }

    def sample(
        self,
        env: _Env,
        sev: np.ndarray,
        mode: np.ndarray,
        sign: np.ndarray,
        spike: np.ndarray,
        rng: np.random.Generator,
    ) -> np.ndarray:
        p, z = self.p, rng.standard_normal((self.n, 6)) * self.noise
        corr = self._mode_sev(sev, mode, 0)
        seize = self._mode_sev(sev, mode, 1)
        f = env.f
        traffic = (
            0.1
            + 0.8 * _bump(f, 0.34, 0.04)
            + 0.7 * _bump(f, 0.73, 0.05)
            + 0.4 * _bump(f, 0.55, 0.15)
        ) * np.exp(0.25 * z[:, 5])
        deck = self._lagged(env.ambient + p["solar"] * _sunlight(f), 0.2) + 0.3 * z[:, 4]
        dt = deck - 12.0  # reference temperature of the gauges' zero
        strain = (
            p["s0"]
            + p["kt"] * (1.0 + 1.5 * seize) * dt
            + p["live"] * traffic * (1.0 + corr)
            + 350.0 * corr
            + 600.0 * seize
            + 4.0 * (1.0 + 3.0 * seize) * z[:, 0]
        )
        tilt = (
            p["t0"]
            + (0.004 + 0.02 * seize) * dt
            + sign * (0.35 * corr + 0.1 * seize)
            + 0.003 * z[:, 1]
        )
        accel = np.abs(
            p["a0"] + p["ta"] * traffic * (1.0 + 0.8 * corr) + 0.002 * (1.0 + 2.0 * corr) * z[:, 2]
        )
        crack = np.abs(p["c0"] - 0.003 * dt + 1.4 * corr + 0.3 * seize + 0.004 * z[:, 3])
        # A heavy lorry: a strain and vibration peak, gone on the next tick.
        strain = strain + spike * 220.0
        accel = accel + spike * 0.12
        return np.stack([strain, tilt, accel, crack, deck], axis=1)


class _Lift(_Signals):
    """Traction lift in an office building.

    door_motor: a failing door operator stretches door cycles from ~5 s to
    ~12 s with growing scatter and adds a little to the node's total current.
    drive_wear: a worn gearbox/brake draws ~50 % more running current, runs
    ~25-35 degC hotter, vibrates, and stops less precisely (levelling error
    scatters and biases).
    """

    asset_type = "lift"
    repair_jitter = {"idle": 0.03, "run": 0.03, "rise": 0.05, "v0": 0.08, "d0": 0.03}
    repair_shift = {"b0": 0.5}

    def _baseline(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        return {
            "idle": rng.uniform(2.0, 5.0, n),  # standby current, A
            "run": rng.uniform(15.0, 50.0, n),  # current at full duty, A
            "rise": rng.uniform(15.0, 30.0, n),  # motor temperature rise at full duty
            "v0": rng.uniform(0.3, 1.2, n),  # car vibration, mm/s
            "d0": rng.uniform(3.5, 6.0, n),  # door open+close time, s
            "b0": rng.uniform(-2.0, 2.0, n),  # levelling bias, mm
            "lsd": rng.uniform(0.8, 1.5, n),  # levelling scatter, mm
            "busy": rng.uniform(0.5, 1.0, n),  # how busy the building is
        }

    def sample(
        self,
        env: _Env,
        sev: np.ndarray,
        mode: np.ndarray,
        sign: np.ndarray,
        spike: np.ndarray,
        rng: np.random.Generator,
    ) -> np.ndarray:
        p, z = self.p, rng.standard_normal((self.n, 6)) * self.noise
        door = self._mode_sev(sev, mode, 0)
        drive = self._mode_sev(sev, mode, 1)
        f = env.f
        usage = (
            0.05
            + 0.7 * _bump(f, 0.35, 0.03)
            + 0.5 * _bump(f, 0.52, 0.04)
            + 0.7 * _bump(f, 0.73, 0.035)
            + 0.3 * _bump(f, 0.55, 0.15)
        )
        usage = np.clip(usage * p["busy"] * np.exp(0.15 * z[:, 5]), 0.02, 1.0)
        current = p["idle"] + p["run"] * usage * (1.0 + 0.5 * drive) + 3.0 * door + 0.5 * z[:, 0]
        machine_room = 20.0 + 0.2 * (env.ambient - 11.0)
        temp_target = machine_room + p["rise"] * usage * (1.0 + 0.5 * drive) + 25.0 * drive
        temp = self._lagged(temp_target, 0.15) + 0.3 * z[:, 1]
        vib = p["v0"] * (0.6 + 0.6 * usage) + 3.0 * drive + 0.05 * (1.0 + 4.0 * drive) * z[:, 2]
        doors = p["d0"] + 0.4 * usage + 7.0 * door + 0.15 * (1.0 + 8.0 * door) * z[:, 3]
        level = p["b0"] + sign * 5.0 * drive + p["lsd"] * (1.0 + 6.0 * drive) * z[:, 4]
        # An overloaded car or a passenger jumping: current, vibration and a bad stop.
        current = current + spike * 0.5 * p["run"]
        vib = vib + spike * 2.5
        level = level + spike * 10.0 * sign
        return np.stack([current, temp, vib, doors, level], axis=1)


class _Streetlight(_Signals):
    """LED streetlight on a smart lighting controller.

    driver_overheat: ageing electrolytic capacitors run the driver ~25-40 degC
    hotter, power factor falls by ~0.25 (so input current rises) and the lamp
    flickers more and more often.
    cable_fault: a deteriorating joint in the feeder drops the supply by
    15-35 V with growing fluctuation; the constant-power driver draws more
    current, and the lamp flickers.
    """

    asset_type = "streetlight"
    repair_jitter = {"watts": 0.02, "v0": 0.003, "rise": 0.05, "pf": 0.005, "lux": 0.05}

    def _baseline(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        return {
            "watts": rng.uniform(70.0, 200.0, n),  # LED power at full brightness
            "v0": rng.uniform(226.0, 234.0, n),  # supply at this point of the feeder, V
            "rise": rng.uniform(15.0, 25.0, n),  # driver temperature rise when lit
            "pf": rng.uniform(0.93, 0.98, n),  # power factor when lit
            "lux": rng.uniform(30000.0, 80000.0, n),  # clear-sky noon illuminance at the cell
            "night": rng.uniform(2.0, 15.0, n),  # night-time light at the cell, lux
        }

    def sample(
        self,
        env: _Env,
        sev: np.ndarray,
        mode: np.ndarray,
        sign: np.ndarray,
        spike: np.ndarray,
        rng: np.random.Generator,
    ) -> np.ndarray:
        p, z = self.p, rng.standard_normal((self.n, 6)) * self.noise
        heat = self._mode_sev(sev, mode, 0)
        cable = self._mode_sev(sev, mode, 1)
        f, sun = env.f, _sunlight(env.f)
        lux = (p["lux"] * sun * env.cloud + p["night"]) * np.exp(0.05 * z[:, 3])
        lit = lux < 40.0  # the photocell switches the lamp at dusk
        # Dim to 60 % between midnight and five o'clock.
        dim = np.where(lit, np.where(f < 5.0 / 24.0, 0.6, 1.0), 0.0)
        volts = p["v0"] + 2.0 * (1.0 - sun) - 25.0 * cable
        volts = volts + 0.8 * (1.0 + 8.0 * cable) * z[:, 1] - spike * 25.0
        pf_lit = p["pf"] - 0.03 * (1.0 - dim) - 0.25 * heat
        pf = np.where(lit, pf_lit, 0.5 - 0.1 * heat) + 0.005 * z[:, 4]
        pf = np.clip(pf, 0.05, 1.0)
        current = p["watts"] * dim / (np.maximum(volts, 50.0) * pf) + 0.02
        # Flicker: the lamp drops out for part of the reporting interval.
        flicker = rng.random(self.n) < 0.6 * np.maximum(heat, cable) + 0.5 * spike
        depth = rng.uniform(0.2, 0.8, self.n)
        current = np.where(lit & flicker, current * (1.0 - depth), current) + 0.005 * z[:, 0]
        temp_target = env.ambient + p["rise"] * dim + 6.0 * sun + 40.0 * heat * (0.6 + 0.4 * dim)
        temp = self._lagged(temp_target, 0.15) + 0.3 * z[:, 2]
        return np.stack([np.abs(current), volts, temp, lux, pf], axis=1)


_SIGNALS: dict[str, type[_Signals]] = {
    cls.asset_type: cls for cls in (_WaterPump, _Bridge, _Lift, _Streetlight)
}

#: The asset types the simulator has physics for (the catalogue may hold others).
SIMULATED_TYPES: tuple[str, ...] = tuple(_SIGNALS)


# --------------------------------------------------------------------------- fleet


class _Group:
    """The devices of one asset type: global indices, model, metric bounds."""

    def __init__(self, asset_type: str, idx: np.ndarray, signals: _Signals) -> None:
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
        types = list(_SIGNALS)  # the types the simulator has physics for
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
            _Group(t, idx, _SIGNALS[t](idx.size, rng, noise))
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
                _Env(t, env.f[idx], env.ambient, env.cloud),
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

    def _environment(self, t: int) -> _Env:
        rng = self._rng
        # Weather and cloud are slow AR(1) processes shared by the whole city.
        self._weather = 0.995 * self._weather + rng.normal(0.0, 0.15)
        self._cloud = 0.98 * self._cloud + rng.normal(0.0, 0.05)
        f = ((t + self._phase) / self.day_ticks) % 1.0
        city_f = (t / self.day_ticks) % 1.0
        ambient = 11.0 + 4.0 * math.sin(_TAU * (city_f - 0.375)) + self._weather
        cloud = min(max(0.6 + self._cloud, 0.15), 1.0)
        return _Env(t, f, ambient, cloud)

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


# --------------------------------------------------------------------------- helpers


def reading_bytes(r: SimReading, seq: int) -> bytes:
    """Encode a simulated reading in the wire format (ground truth is left out)."""
    d = r.device
    return encode_reading(
        device_id=d.device_id,
        asset_id=d.asset_id,
        asset_type=d.asset_type,
        ts=r.ts,
        metrics=r.metrics,
        source={"kind": "simulator", "seq": seq},
    )


def maintenance_bytes(r: SimReading) -> bytes:
    """The maintenance event to send right before a ``repaired`` reading (same key, same ts).

    It carries the reading's timestamp, so "the first reading at or after a
    maintenance event" is that very reading, online and in training alike.
    """
    d = r.device
    return encode_maintenance(
        d.device_id, d.asset_id, d.asset_type, r.ts, {"kind": "simulator", "reason": "repair"}
    )


#: Every metric name of the simulated types, in catalogue order, each once.
METRIC_COLUMNS: tuple[str, ...] = tuple(
    dict.fromkeys(name for t in _SIGNALS for name in ASSET_TYPES[t].metric_names)
)


def history_frame(readings: Iterable[SimReading]) -> pd.DataFrame:
    """Readings as a long table: one row per reading, one column per metric.

    Columns are ``device_id, asset_id, asset_type, tick, ts, health`` and then
    every metric in the catalogue (NaN where the asset type lacks it). ``ts``
    is ``datetime64[ns, UTC]``.
    """
    readings = list(readings)
    col = {name: k for k, name in enumerate(METRIC_COLUMNS)}
    values = np.full((len(readings), len(METRIC_COLUMNS)), np.nan)
    # Fill per asset type with fancy indexing rather than per cell.
    by_type: dict[tuple[str, ...], list[int]] = {}
    for row, r in enumerate(readings):
        by_type.setdefault(tuple(r.metrics), []).append(row)
    for names, rows in by_type.items():
        cols = [col[name] for name in names]
        block = [list(readings[row].metrics.values()) for row in rows]
        values[np.ix_(rows, cols)] = np.asarray(block, dtype=float).reshape(len(rows), len(cols))
    frame = pd.DataFrame(
        {
            "device_id": [r.device.device_id for r in readings],
            "asset_id": [r.device.asset_id for r in readings],
            "asset_type": [r.device.asset_type for r in readings],
            "tick": np.fromiter((r.tick for r in readings), dtype=np.int64, count=len(readings)),
            # Fixed to ns: pandas 3 would infer us from datetime objects.
            "ts": pd.to_datetime([r.ts for r in readings], utc=True).as_unit("ns"),
            "health": np.fromiter((r.health for r in readings), dtype=float, count=len(readings)),
        }
    )
    metrics = pd.DataFrame(values, columns=list(METRIC_COLUMNS), index=frame.index)
    return pd.concat([frame, metrics], axis=1)


def failures_frame(failures: Iterable[FailureEvent]) -> pd.DataFrame:
    """Failure events as a table, one row each, columns as :class:`FailureEvent`'s fields."""
    columns = [f.name for f in fields(FailureEvent)]
    rows = [[getattr(e, c) for c in columns] for e in failures]
    frame = pd.DataFrame(rows, columns=columns)
    for c in ("degradation_started_at", "failed_at"):
        frame[c] = pd.to_datetime(frame[c], utc=True).dt.as_unit("ns")
    for c in ("degradation_started_tick", "failed_tick"):
        frame[c] = frame[c].astype(np.int64)
    return frame
