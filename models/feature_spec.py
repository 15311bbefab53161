"""What features to compute for one kind of device: metrics, windows and statistics.

A :class:`FeatureSpec` travels inside every model bundle, so the worker
computes exactly the features the model was trained on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from core.assets import ASSET_TYPES

WINDOW_STATS = ("mean", "std", "min", "max", "slope")
POINT_STATS = ("last", "ewm", "delta_baseline", "z_baseline", "z_last")
AGGREGATE_STATS = ("max_abs_z_baseline", "mean_abs_z_baseline", "max_abs_z_last")


@dataclass(frozen=True)
class FeatureSpec:
    """Which features to compute for one kind of device.

    Parameters
    ----------
    metrics : tuple of str
        Metric names, in the order their features appear.
    window : int, default=30
        Readings in the main rolling window; also sets the EWMA span.
    extra_windows : tuple of int, default=()
        Further rolling windows (e.g. a long one for slow trends).
    window_stats : tuple of str, default=("mean", "std", "min", "max", "slope")
        Statistics computed over every window. Any of ``mean``, ``std``
        (population), ``min``, ``max`` and ``slope`` (least squares, per reading).
    point_stats : tuple of str, default=("last", "ewm", "delta_baseline", "z_baseline")
        Per-reading statistics. ``last`` is the reading itself, ``ewm`` an
        exponentially weighted mean with span ``window``, ``delta_baseline`` the
        window mean minus the device's baseline mean, ``z_baseline`` that delta
        in baseline standard deviations, ``z_last`` the last reading's z-score.
    baseline_warmup : int, default=50
        Readings averaged (equal weights) to learn a device's healthy baseline
        after installation or maintenance. Baseline features are NaN until then.
    baseline_alpha : float, default=0.002
        EWMA rate at which the baseline keeps adapting after warm-up (0 freezes
        it). Small, so that slow degradation is not absorbed into "normal".
    baseline_gate : float, default=3.0
        After warm-up a reading updates the baseline only if it lies within
        this many baseline standard deviations, so faults are not learned.
    aggregate_stats : tuple of str, default=()
        Statistics across all metrics of the reading, appended after the
        per-metric features: ``max_abs_z_baseline`` and ``mean_abs_z_baseline``
        (of the metrics' ``z_baseline``) and ``max_abs_z_last``. They describe
        "how far from normal is this device at all", which carries over to
        faults that show on sensors the training faults never touched. NaN
        while no metric has a baseline yet.
    include_age : bool, default=True
        Append ``readings_since_maintenance`` (readings since the state was
        created or :meth:`DeviceFeatureState.reset_baseline` was called).
    """

    metrics: tuple[str, ...]
    window: int = 30
    extra_windows: tuple[int, ...] = ()
    window_stats: tuple[str, ...] = WINDOW_STATS
    point_stats: tuple[str, ...] = ("last", "ewm", "delta_baseline", "z_baseline")
    baseline_warmup: int = 50
    baseline_alpha: float = 0.002
    baseline_gate: float = 3.0
    aggregate_stats: tuple[str, ...] = ()
    include_age: bool = True
    _names: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Validate here: a spec is a contract stored with every model, and a bad
        # one would otherwise surface as a KeyError deep in the worker.
        object.__setattr__(self, "metrics", tuple(self.metrics))
        object.__setattr__(self, "extra_windows", tuple(int(w) for w in self.extra_windows))
        object.__setattr__(self, "window_stats", tuple(self.window_stats))
        object.__setattr__(self, "point_stats", tuple(self.point_stats))
        object.__setattr__(self, "aggregate_stats", tuple(self.aggregate_stats))
        if not self.metrics or len(set(self.metrics)) != len(self.metrics):
            raise ValueError(f"metrics must be non-empty and unique, got {self.metrics!r}")
        if any("__" in m for m in self.metrics):
            raise ValueError("metric names must not contain '__' (the feature-name separator)")
        for w in (self.window, *self.extra_windows):
            if int(w) < 2:
                raise ValueError(f"windows must be >= 2 readings, got {w}")
        if len(set((self.window, *self.extra_windows))) != 1 + len(self.extra_windows):
            raise ValueError("window and extra_windows must be distinct")
        bad = set(self.window_stats) - set(WINDOW_STATS)
        bad |= set(self.point_stats) - set(POINT_STATS)
        bad |= set(self.aggregate_stats) - set(AGGREGATE_STATS)
        if bad:
            raise ValueError(f"unknown statistics {sorted(bad)}")
        if self.baseline_warmup < 2:
            raise ValueError("baseline_warmup must be >= 2")
        if not 0.0 <= self.baseline_alpha < 1.0:
            raise ValueError("baseline_alpha must be in [0, 1)")
        if self.baseline_gate <= 0:
            raise ValueError("baseline_gate must be > 0")
        object.__setattr__(self, "_names", self._build_names())

    @property
    def windows(self) -> tuple[int, ...]:
        """The main window followed by the extra windows."""
        return (self.window, *self.extra_windows)

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Feature names in the order :meth:`DeviceFeatureState.update` returns them."""
        return self._names

    @property
    def n_features(self) -> int:
        """Length of one feature row."""
        return len(self._names)

    def _build_names(self) -> tuple[str, ...]:
        names: list[str] = []
        for m in self.metrics:
            if "last" in self.point_stats:
                names.append(f"{m}__last")
            for w in self.windows:
                # Fixed order (WINDOW_STATS), whatever order the user listed them in.
                names.extend(f"{m}__{s}_{w}" for s in WINDOW_STATS if s in self.window_stats)
            if "ewm" in self.point_stats:
                names.append(f"{m}__ewm_{self.window}")
            for s in ("delta_baseline", "z_baseline", "z_last"):
                if s in self.point_stats:
                    names.append(f"{m}__{s}")
        names.extend(s for s in AGGREGATE_STATS if s in self.aggregate_stats)
        if self.include_age:
            names.append("readings_since_maintenance")
        return tuple(names)

    @classmethod
    def for_asset_type(cls, name: str, **params: Any) -> FeatureSpec:
        """The spec for one asset type of :data:`core.assets.ASSET_TYPES`.

        Parameters
        ----------
        name : str
            Asset type name, e.g. ``"water_pump"``.
        **params
            Any other :class:`FeatureSpec` field (``window`` etc.).

        Raises
        ------
        KeyError
            If the asset type is unknown.
        """
        if name not in ASSET_TYPES:
            raise KeyError(f"unknown asset type {name!r}; known: {sorted(ASSET_TYPES)}")
        return cls(metrics=ASSET_TYPES[name].metric_names, **params)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form, for model cards and saved state."""
        d = asdict(self)
        d.pop("_names", None)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FeatureSpec:
        """Inverse of :meth:`to_dict`."""
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k != "_names"}
        return cls(**kw)
