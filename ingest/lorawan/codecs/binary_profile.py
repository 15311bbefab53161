"""Binary device profiles: the YAML schema, its validation, and the field layout per fPort.

Profile schema
--------------
::

    name: water_pump          # required; shipped profiles must match the file stem
    description: "..."        # optional
    asset_type: water_pump    # optional; when set, every `metric` must be in
                              #   that asset type's catalogue (checked at load)
    endianness: big           # optional default for all fields: big | little
    fports: [10]              # optional accepted fPorts (1-223); default: the
                              #   union of the fields' fports, or any port
    fields:
      - name: vib             # required; output key unless `metric` is given
        type: u16             # u8 u16 u24 u32 i8 i16 i24 i32 f32 f64
        scale: 0.01           # optional, default 1: value = raw * scale + offset
        offset: 0             # optional, default 0
        endianness: little    # optional per-field override
        fport: 10             # optional int or list: field present only on these ports
        at: 0                 # optional byte position; default: right after the
                              #   previous field of the same frame
        bits: {shift: 0, width: 7}   # optional, integer types only: extract bits
        invalid: [0xFFFF]     # optional raw "no reading" values: field omitted
                              #   with a warning
        metric: vibration_rms # optional citywatch metric name (the output key)

A frame on fPort ``p`` consists of the fields with no ``fport`` plus those whose
``fport`` includes ``p``, in file order. A short frame is an error; extra
trailing bytes are a warning. Fields may overlap only through explicit ``at``
(typically several ``bits`` fields sharing one status byte).

Integer fields are rounded to the decimals of ``scale`` and ``offset`` so a raw
231 with scale 0.01 gives 2.31, not 2.3100000000000001. Non-finite floats are
omitted with a warning, like ``invalid`` sentinels: float sensors commonly send
NaN for "no reading".
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import yaml

from core.assets import ASSET_TYPES

__all__ = [
    "FIELD_TYPES",
    "BinaryProfile",
    "FieldSpec",
    "PlacedField",
    "ProfileError",
    "load_profile",
    "parse_profile",
    "profile_names",
]

#: type name -> (size in bytes, kind): "u" unsigned int, "i" signed int, "f" IEEE float.
FIELD_TYPES: dict[str, tuple[int, str]] = {
    "u8": (1, "u"),
    "u16": (2, "u"),
    "u24": (3, "u"),
    "u32": (4, "u"),
    "i8": (1, "i"),
    "i16": (2, "i"),
    "i24": (3, "i"),
    "i32": (4, "i"),
    "f32": (4, "f"),
    "f64": (8, "f"),
}

Endianness = Literal["big", "little"]
_ENDIANNESS: dict[str, Endianness] = {"big": "big", "little": "little"}
_PROFILE_KEYS = {"name", "description", "asset_type", "endianness", "fports", "fields"}
_FIELD_KEYS = {
    "name",
    "type",
    "scale",
    "offset",
    "endianness",
    "fport",
    "at",
    "bits",
    "invalid",
    "metric",
}
APP_PORTS = range(1, 224)  # LoRaWAN application ports; 0 is MAC-only, 224+ test/RFU
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_ANY_PORT = -1  # layout key for profiles that accept every port


class ProfileError(ValueError):
    """A profile file is missing, unreadable or does not follow the schema."""


@dataclass(frozen=True)
class FieldSpec:
    """One field of a binary profile (validated)."""

    name: str
    type: str
    scale: float = 1
    offset: float = 0
    endianness: Endianness = "big"
    fports: frozenset[int] | None = None
    at: int | None = None
    bits: tuple[int, int] | None = None  # (shift, width)
    invalid: frozenset[int] = frozenset()
    metric: str | None = None

    @cached_property  # read for every field of every frame: compute once
    def size(self) -> int:
        """Size in bytes."""
        return FIELD_TYPES[self.type][0]

    @cached_property
    def kind(self) -> str:
        """``"u"``, ``"i"`` or ``"f"``."""
        return FIELD_TYPES[self.type][1]

    @cached_property
    def key(self) -> str:
        """The output key: the citywatch metric when mapped, else the field name."""
        return self.metric or self.name

    def applies_to(self, f_port: int) -> bool:
        """Whether this field is part of frames on ``f_port``."""
        return self.fports is None or f_port in self.fports


@dataclass(frozen=True)
class PlacedField:
    """A field at its byte position within one fPort's frame."""

    spec: FieldSpec
    pos: int

    @cached_property
    def end(self) -> int:
        """First byte after the field."""
        return self.pos + self.spec.size


@dataclass(frozen=True)
class BinaryProfile:
    """A validated binary device profile; build with :func:`load_profile`."""

    name: str
    fields: tuple[FieldSpec, ...]
    description: str = ""
    asset_type: str | None = None
    fports: frozenset[int] | None = None
    _layouts: dict[int, tuple[PlacedField, ...]] = field(
        default_factory=dict, repr=False, compare=False
    )

    def layout(self, f_port: int) -> tuple[PlacedField, ...] | None:
        """Placed fields for ``f_port``, or None when the port is not handled."""
        if self.fports is None:
            return self._layouts.get(_ANY_PORT)
        return self._layouts.get(f_port)

    @property
    def output_keys(self) -> tuple[str, ...]:
        """Every key this profile can emit, in file order."""
        return tuple(dict.fromkeys(f.key for f in self.fields))


def _fail(where: str, message: str) -> ProfileError:
    return ProfileError(f"{where}: {message}")


def _endianness(value: Any) -> Endianness | None:
    return _ENDIANNESS.get(value) if isinstance(value, str) else None


def _is_number(value: Any) -> bool:
    # YAML turns `yes`/`no` into booleans; a boolean scale is a typo, not 1/0.
    return isinstance(value, int | float) and not isinstance(value, bool)


def _port_set(value: Any, where: str) -> frozenset[int]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise _fail(where, "must not be empty")
    for port in items:
        if not isinstance(port, int) or isinstance(port, bool) or port not in APP_PORTS:
            raise _fail(where, f"{port!r} is not an application fPort (1-223)")
    return frozenset(items)


def _parse_field(raw: Any, where: str, default_endianness: Endianness) -> FieldSpec:
    if not isinstance(raw, dict):
        raise _fail(where, "must be a mapping")
    unknown = set(raw) - _FIELD_KEYS
    if unknown:
        raise _fail(where, f"unknown keys {sorted(unknown)} (allowed: {sorted(_FIELD_KEYS)})")
    name = raw.get("name")
    if not isinstance(name, str) or not name.isidentifier():
        raise _fail(where, f"name must be an identifier-like string, got {name!r}")
    where = f"{where} ({name})"
    type_name = raw.get("type")
    if type_name not in FIELD_TYPES:
        raise _fail(where, f"type {type_name!r} is not one of {sorted(FIELD_TYPES)}")
    size, kind = FIELD_TYPES[type_name]
    scale = raw.get("scale", 1)
    offset = raw.get("offset", 0)
    for label, number in (("scale", scale), ("offset", offset)):
        if not _is_number(number) or not math.isfinite(number):
            raise _fail(where, f"{label} must be a finite number, got {number!r}")
    if scale == 0:
        raise _fail(where, "scale must not be 0")
    endianness = _endianness(raw.get("endianness", default_endianness))
    if endianness is None:
        raise _fail(where, f"endianness must be 'big' or 'little', got {raw['endianness']!r}")
    fports = _port_set(raw["fport"], f"{where}.fport") if "fport" in raw else None
    at = raw.get("at")
    if at is not None and (not isinstance(at, int) or isinstance(at, bool) or at < 0):
        raise _fail(where, f"at must be a byte position >= 0, got {at!r}")
    bits = None
    if "bits" in raw:
        if kind == "f":
            raise _fail(where, "bits only apply to integer types")
        spec = raw["bits"]
        if not isinstance(spec, dict) or set(spec) != {"shift", "width"}:
            raise _fail(where, "bits must be a mapping with exactly 'shift' and 'width'")
        shift, width = spec["shift"], spec["width"]
        ok = all(isinstance(v, int) and not isinstance(v, bool) for v in (shift, width))
        if not ok or shift < 0 or width < 1 or shift + width > size * 8:
            raise _fail(where, f"bits {spec!r} do not fit a {size * 8}-bit field")
        bits = (shift, width)
    invalid_raw = raw.get("invalid", [])
    if not isinstance(invalid_raw, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in invalid_raw
    ):
        raise _fail(where, "invalid must be a list of raw integer values")
    if invalid_raw and kind == "f":
        raise _fail(where, "invalid sentinels apply to integer types (floats use NaN)")
    metric = raw.get("metric")
    if metric is not None and (not isinstance(metric, str) or not metric):
        raise _fail(where, f"metric must be a non-empty string, got {metric!r}")
    return FieldSpec(
        name=name,
        type=type_name,
        scale=scale,
        offset=offset,
        endianness=endianness,
        fports=fports,
        at=at,
        bits=bits,
        invalid=frozenset(invalid_raw),
        metric=metric,
    )


def _place(fields: Iterable[FieldSpec], where: str) -> tuple[PlacedField, ...]:
    placed: list[PlacedField] = []
    cursor = 0
    keys: set[str] = set()
    for spec in fields:
        if spec.key in keys:
            raise _fail(where, f"output key {spec.key!r} appears twice in one frame")
        keys.add(spec.key)
        pos = cursor if spec.at is None else spec.at
        placed.append(PlacedField(spec, pos))
        cursor = pos + spec.size
    return tuple(placed)


def parse_profile(document: Any, *, source: str = "<profile>") -> BinaryProfile:
    """Validate a parsed YAML document and build a :class:`BinaryProfile`.

    Parameters
    ----------
    document : Any
        The result of ``yaml.safe_load``.
    source : str
        Where the document came from, used in error messages.

    Raises
    ------
    ProfileError
        With the offending key path, e.g. ``pump.yaml: fields[2] (temp): ...``.
    """
    if not isinstance(document, dict):
        raise _fail(source, "a profile must be a YAML mapping")
    unknown = set(document) - _PROFILE_KEYS
    if unknown:
        raise _fail(source, f"unknown keys {sorted(unknown)} (allowed: {sorted(_PROFILE_KEYS)})")
    name = document.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise _fail(source, f"name must match {_NAME.pattern}, got {name!r}")
    description = document.get("description", "")
    if not isinstance(description, str):
        raise _fail(source, "description must be a string")
    endianness = _endianness(document.get("endianness", "big"))
    if endianness is None:
        raise _fail(source, f"endianness must be 'big' or 'little', got {document['endianness']!r}")
    asset_type = document.get("asset_type")
    if asset_type is not None and asset_type not in ASSET_TYPES:
        raise _fail(source, f"asset_type {asset_type!r} is not one of {sorted(ASSET_TYPES)}")
    raw_fields = document.get("fields")
    if not isinstance(raw_fields, list) or not raw_fields:
        raise _fail(source, "fields must be a non-empty list")
    fields = tuple(
        _parse_field(raw, f"{source}: fields[{i}]", endianness) for i, raw in enumerate(raw_fields)
    )
    if asset_type is not None:
        catalogue = ASSET_TYPES[asset_type].metric_names
        for spec in fields:
            if spec.metric is not None and spec.metric not in catalogue:
                raise _fail(
                    f"{source}: field {spec.name}",
                    f"metric {spec.metric!r} is not a {asset_type} metric {list(catalogue)}",
                )
    field_ports: frozenset[int] = frozenset().union(
        *(f.fports for f in fields if f.fports is not None)
    )
    fports: frozenset[int] | None = field_ports or None
    if "fports" in document:
        declared = _port_set(document["fports"], f"{source}: fports")
        stray = field_ports - declared
        if stray:
            raise _fail(source, f"fields use fports {sorted(stray)} missing from fports")
        fports = declared
    layouts: dict[int, tuple[PlacedField, ...]] = {}
    for port in sorted(fports) if fports else [_ANY_PORT]:
        frame = [f for f in fields if port == _ANY_PORT or f.applies_to(port)]
        if not frame:
            raise _fail(source, f"no field is sent on fPort {port}")
        layouts[port] = _place(frame, f"{source}: fPort {port}")
    return BinaryProfile(
        name=name,
        fields=fields,
        description=description,
        asset_type=asset_type,
        fports=fports,
        _layouts=layouts,
    )


def load_profile(path: str | Path) -> BinaryProfile:
    """Read and validate a YAML profile file.

    Raises
    ------
    ProfileError
        If the file is missing, is not YAML, or breaks the schema.
    """
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read profile: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ProfileError(f"{path}: not valid YAML: {exc}") from exc
    return parse_profile(document, source=path.name)


def profile_names(directories: Sequence[Path]) -> list[str]:
    """Names of the ``*.yaml`` profiles found in ``directories``."""
    names: set[str] = set()
    for directory in directories:
        names.update(p.stem for p in Path(directory).glob("*.yaml"))
    return sorted(names)
