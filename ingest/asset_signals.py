"""Vectorised signal models of the simulated asset types: how each one's sensors behave,
and how its failure modes show.

Per asset type (all cycles are counted in ticks, ``day_ticks`` to
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
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

TAU = 2.0 * math.pi

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


def _bump(f: np.ndarray, center: float, width: float) -> np.ndarray:
    """A Gaussian bump on the circular time of day ``f`` in [0, 1)."""
    d = (f - center + 0.5) % 1.0 - 0.5
    return np.exp(-0.5 * (d / width) ** 2)


def _sunlight(f: np.ndarray) -> np.ndarray:
    """Relative solar elevation: 0 from 18:00 to 06:00, 1 at noon."""
    return np.clip(np.sin(TAU * (f - 0.25)), 0.0, None)


@dataclass
class Env:
    """What all devices share in one tick."""

    tick: int
    f: np.ndarray  # per-device time of day in [0, 1)
    ambient: float  # city air temperature, degC
    cloud: float  # fraction of clear-sky daylight reaching the ground


class Signals:
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
        env: Env,
        sev: np.ndarray,
        mode: np.ndarray,
        sign: np.ndarray,
        spike: np.ndarray,
        rng: np.random.Generator,
    ) -> np.ndarray:
        raise NotImplementedError


class _WaterPump(Signals):
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
        env: Env,
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


class _Bridge(Signals):
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
        env: Env,
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


class _Lift(Signals):
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
        env: Env,
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


class _Streetlight(Signals):
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
        env: Env,
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


SIGNALS: dict[str, type[Signals]] = {
    cls.asset_type: cls for cls in (_WaterPump, _Bridge, _Lift, _Streetlight)
}

#: The asset types the simulator has physics for (the catalogue may hold others).
SIMULATED_TYPES: tuple[str, ...] = tuple(SIGNALS)
