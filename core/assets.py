"""The asset catalogue: which asset types exist and what their sensors measure.

Ingest, validation, features and dashboards all read this one table, so a
metric's name, unit and plausible physical range are defined once. The
built-in types live in ``asset_types.toml`` beside this module; operators add
their own in files listed in ``CITYWATCH_ASSET_CATALOGUE`` (``:``-separated).
A catalogue file is outside input: every mistake in it is refused with the
file and the place, before any process starts work.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Environment variable naming extra catalogue files, separated by ``os.pathsep``.
CATALOGUE_ENV = "CITYWATCH_ASSET_CATALOGUE"
BUILTIN_CATALOGUE = Path(__file__).with_name("asset_types.toml")
#: Optional catalogues shipped with citywatch, for operators to list in CATALOGUE_ENV.
OPTIONAL_CATALOGUES = Path(__file__).with_name("catalogues")

_NAME = re.compile(r"[a-z][a-z0-9_]{0,47}")
_MAX_METRICS = 64
_MAX_TEXT = 200
_MAX_FILE_BYTES = 1 << 20


class CatalogueError(ValueError):
    """A catalogue file that cannot be used, with where and why."""


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


def _text(value: Any, where: str, *, required: bool = True) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str) or len(value) > _MAX_TEXT or not value.isprintable():
        raise CatalogueError(f"{where}: expected printable text of at most {_MAX_TEXT} characters")
    return value


def _name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise CatalogueError(f"{where}: name {value!r} must match {_NAME.pattern}")
    return value


def _bound(value: Any, where: str) -> float:
    # bool is an int in Python; `low = true` is a typo, not 1.0.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise CatalogueError(f"{where}: expected a finite number, got {value!r}")
    return float(value)


def _only_keys(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise CatalogueError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")


def _metric(raw: Any, where: str) -> MetricSpec:
    if not isinstance(raw, dict):
        raise CatalogueError(f"{where}: expected a table with name, unit, low, high")
    _only_keys(raw, {"name", "unit", "low", "high"}, where)
    name = _name(raw.get("name"), where)
    low = _bound(raw.get("low"), f"{where} ({name}).low")
    high = _bound(raw.get("high"), f"{where} ({name}).high")
    if not low < high:
        raise CatalogueError(f"{where} ({name}): low {low} must be below high {high}")
    return MetricSpec(name, _text(raw.get("unit"), f"{where} ({name}).unit"), low, high)


def _asset_type(name: str, raw: Any, where: str) -> AssetType:
    if not isinstance(raw, dict):
        raise CatalogueError(f"{where}: expected a table with description and metrics")
    _only_keys(raw, {"description", "metrics"}, where)
    metrics_raw = raw.get("metrics")
    if not isinstance(metrics_raw, list) or not 1 <= len(metrics_raw) <= _MAX_METRICS:
        raise CatalogueError(f"{where}.metrics: expected a list of 1 to {_MAX_METRICS} metrics")
    metrics = tuple(_metric(m, f"{where}.metrics[{i}]") for i, m in enumerate(metrics_raw))
    names = [m.name for m in metrics]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise CatalogueError(f"{where}.metrics: metric(s) {repeated} listed twice")
    return AssetType(name, _text(raw.get("description"), f"{where}.description"), metrics)


def parse_catalogue(document: Mapping[str, Any], source: str) -> dict[str, AssetType]:
    """Asset types from one parsed catalogue document (``[types.<name>]`` tables)."""
    _only_keys(document, {"types"}, source)
    types = document.get("types")
    if not isinstance(types, dict) or not types:
        raise CatalogueError(f"{source}: expected at least one [types.<name>] table")
    return {
        name: _asset_type(_name(name, f"{source}: types.{name}"), raw, f"{source}: types.{name}")
        for name, raw in types.items()
    }


def read_catalogue_file(path: Path) -> dict[str, AssetType]:
    """Asset types from one TOML file; refuses unreadable, oversized or malformed files."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CatalogueError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if len(data) > _MAX_FILE_BYTES:
        raise CatalogueError(f"{path}: {len(data)} bytes; a catalogue is at most {_MAX_FILE_BYTES}")
    try:
        document = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise CatalogueError(f"{path}: not valid UTF-8 TOML ({exc})") from None
    return parse_catalogue(document, str(path))


def load_catalogue(extra: Iterable[Path] = ()) -> dict[str, AssetType]:
    """The built-in types, then each extra file's; a type may be defined only once."""
    catalogue: dict[str, AssetType] = {}
    defined_in: dict[str, Path] = {}
    for path in (BUILTIN_CATALOGUE, *extra):
        for name, asset_type in read_catalogue_file(path).items():
            if name in catalogue:
                raise CatalogueError(
                    f"{path}: asset type {name!r} is already defined in {defined_in[name]}; "
                    "add a new type instead of redefining one"
                )
            catalogue[name] = asset_type
            defined_in[name] = path
    return catalogue


def catalogue_files_from_env(environ: Mapping[str, str] = os.environ) -> list[Path]:
    """The operator's extra catalogue files named by ``CITYWATCH_ASSET_CATALOGUE``."""
    value = environ.get(CATALOGUE_ENV, "")
    return [Path(part) for part in value.split(os.pathsep) if part.strip()]


def _load_at_start() -> dict[str, AssetType]:
    try:
        return load_catalogue(catalogue_files_from_env())
    except CatalogueError as exc:
        # Every process imports this at start: exit with the reason, not a traceback.
        raise SystemExit(f"citywatch: cannot use the asset catalogue: {exc}") from None


#: Every asset type this process knows, built-in first. Loaded once at import,
#: so a bad operator file stops a process before it consumes anything.
ASSET_TYPES: dict[str, AssetType] = _load_at_start()
