"""The asset catalogue: which asset types exist and what their sensors measure.

Ingest, validation, features and dashboards all read this one table, so a
metric's name, unit and plausible physical range are defined once.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MetricSpec:
    """One sensor channel. ``low``/``high`` bound what the sensor can physically report."""

    name: str
    unit: str
    low: float
    high: float

    def in_range(self, value: float) -> bool:
        return self.low <= value <= self.high


@dataclass(frozen=True)
class AssetType:
    """A kind of city asset and the metrics its sensor node reports."""

    name: str
    description: str
    metrics: tuple[MetricSpec, ...]

    @property
    def metric_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.metrics)

    def metric(self, name: str) -> MetricSpec | None:
        for spec in self.metrics:
            if spec.name == name:
                return spec
        return None


ASSET_TYPES: dict[str, AssetType] = {
    t.name: t
    for t in (
        AssetType(
            "water_pump",
            "Water pumps and mains: pumping stations and pressure-monitored pipes.",
            (
                MetricSpec("vibration_rms", "mm/s", 0.0, 100.0),
                MetricSpec("bearing_temp", "degC", -40.0, 150.0),
                MetricSpec("motor_current", "A", 0.0, 500.0),
                MetricSpec("pressure", "bar", 0.0, 40.0),
                MetricSpec("flow", "m3/h", 0.0, 5000.0),
            ),
        ),
        AssetType(
            "bridge",
            "Bridges: structural health monitoring of decks and bearings.",
            (
                MetricSpec("strain", "microstrain", -5000.0, 5000.0),
                MetricSpec("tilt", "deg", -10.0, 10.0),
                MetricSpec("accel_rms", "g", 0.0, 10.0),
                MetricSpec("crack_width", "mm", 0.0, 50.0),
                MetricSpec("deck_temp", "degC", -50.0, 80.0),
            ),
        ),
        AssetType(
            "lift",
            "Lifts and escalators: drive, doors and guide rails.",
            (
                MetricSpec("motor_current", "A", 0.0, 300.0),
                MetricSpec("motor_temp", "degC", -20.0, 150.0),
                MetricSpec("vibration_rms", "mm/s", 0.0, 100.0),
                MetricSpec("door_cycle_time", "s", 0.0, 60.0),
                MetricSpec("leveling_error", "mm", -200.0, 200.0),
            ),
        ),
        AssetType(
            "streetlight",
            "Streetlights: LED drivers on smart lighting controllers.",
            (
                MetricSpec("lamp_current", "A", 0.0, 10.0),
                MetricSpec("supply_voltage", "V", 0.0, 300.0),
                MetricSpec("driver_temp", "degC", -40.0, 120.0),
                MetricSpec("light_level", "lux", 0.0, 200000.0),
                MetricSpec("power_factor", "", 0.0, 1.0),
            ),
        ),
    )
}
