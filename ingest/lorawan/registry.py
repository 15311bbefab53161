"""The device registry: which asset each LoRaWAN device watches, and how to decode it.

A registry file is YAML or CSV. Everything is validated at load, so a typo in
a codec or metric name stops the bridge at start-up instead of dead-lettering
every uplink of that device.

YAML::

    devices:                       # or a top-level list
      - dev_eui: 70B3D57ED0000001  # 16 hex digits, any case
        device_id: pump-station-1  # optional: the network server's device id
        asset_id: pump-0001
        asset_type: water_pump     # a key of core.assets.ASSET_TYPES
        codec: profile:water_pump  # see ingest.lorawan.codecs.get_codec
        lat: 52.3731               # optional, WGS84 degrees
        lon: 4.8922
        zone: centrum              # optional: routing zone for alerts
        installed_at: 2024-03-01T09:00:00Z   # optional; a bare date means 00:00 UTC
        metric_map:                # optional: decoded key -> citywatch metric
          temperature_3: bearing_temp
        variables: {}              # optional codec variables (strings)

CSV has the columns ``dev_eui, asset_id, asset_type, codec, lat, lon,
installed_at`` and optionally ``device_id``, ``zone``, ``metric_map`` and
``variables`` written as ``key=value;key=value``.

Identity: a device has a DevEUI, a network-server device id (The Things
Stack's ``end_device_ids.device_id``), or both; at least one is required. Its
citywatch ``device_id`` (:attr:`DeviceEntry.key`, the Kafka key of its readings)
is the DevEUI when it has one, else the device id. :func:`find_entry` finds an
entry by either, so an uplink without a DevEUI still reaches its asset.

``metric_map`` keys are decoded keys, with nested values addressed by dots
(``gps_1.latitude``, ChirpStack's ``temperatureSensor.3``). Without a map the
decoded keys are used as metric names as they are, which is what the shipped
binary profiles produce.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from core.assets import ASSET_TYPES
from ingest.lorawan.codecs import BinaryProfileCodec, get_codec

__all__ = [
    "DeviceEntry",
    "RegistryError",
    "entry_to_row",
    "find_entry",
    "load_registry",
    "parse_registry",
]

_EUI = re.compile(r"[0-9A-Fa-f]{16}")
#: The Things Stack's identifier rule (lower-case letters, digits, single dashes; 3-36).
_DEVICE_ID = re.compile(r"[a-z0-9](?:-?[a-z0-9]){2,35}")
_REQUIRED = ("asset_id", "asset_type", "codec")
_CSV_REQUIRED = ("dev_eui", *_REQUIRED)
_OPTIONAL = (
    "dev_eui",
    "device_id",
    "lat",
    "lon",
    "installed_at",
    "zone",
    "metric_map",
    "variables",
)


class RegistryError(ValueError):
    """The registry file is unreadable or an entry is invalid."""


@dataclass(frozen=True)
class DeviceEntry:
    """One registered device.

    Parameters
    ----------
    dev_eui : str or None
        Device EUI, 16 lower-case hex digits.
    asset_id, asset_type : str
        The asset the device watches; ``asset_type`` is a catalogue key.
    codec : str
        Codec name for :func:`ingest.lorawan.codecs.get_codec`.
    lat, lon : float, optional
        Installation position.
    installed_at : datetime, optional
        Installation time, timezone-aware.
    metric_map : mapping, optional
        Decoded key (dotted path for nested values) to citywatch metric name.
    variables : mapping, optional
        Codec variables, passed to ``decode``.
    zone : str, optional
        Routing zone (which crew gets the device's alerts).
    device_id : str, optional
        The network server's device id (The Things Stack's ``device_id``).
    """

    dev_eui: str | None
    asset_id: str
    asset_type: str
    codec: str
    lat: float | None = None
    lon: float | None = None
    installed_at: datetime | None = None
    metric_map: Mapping[str, str] = field(default_factory=dict)
    variables: Mapping[str, str] = field(default_factory=dict)
    zone: str | None = None
    device_id: str | None = None

    def __post_init__(self) -> None:
        if self.asset_type not in ASSET_TYPES:
            raise ValueError(f"asset_type {self.asset_type!r} is not one of {sorted(ASSET_TYPES)}")
        if not self.dev_eui and not self.device_id:
            raise ValueError("a device needs a dev_eui or a device_id")
        # Uplink.dev_eui is lower case; match it whatever the caller passed.
        object.__setattr__(self, "dev_eui", self.dev_eui.lower() if self.dev_eui else None)
        # Read-only views: entries are shared by every uplink of the device.
        object.__setattr__(self, "metric_map", MappingProxyType(dict(self.metric_map)))
        object.__setattr__(self, "variables", MappingProxyType(dict(self.variables)))

    @property
    def key(self) -> str:
        """citywatch's device id: the DevEUI, else the network server's device id."""
        return self.dev_eui or self.device_id or ""


def find_entry(
    registry: Mapping[str, DeviceEntry], dev_eui: str | None, device_id: str | None
) -> DeviceEntry | None:
    """The entry of a device known by its DevEUI, its network-server id, or both.

    ``registry`` is keyed by :attr:`DeviceEntry.key`. A device id is found
    directly when the entry has no DevEUI, and otherwise by a scan of the
    entries; that happens only for uplinks that carry no DevEUI, and costs
    well under a millisecond for ten thousand devices.
    """
    if dev_eui:
        entry = registry.get(dev_eui)
        if entry is not None:
            return entry
    if not device_id:
        return None
    entry = registry.get(device_id)
    if entry is not None and entry.device_id == device_id:
        return entry
    return next((e for e in registry.values() if e.device_id == device_id), None)


# --------------------------------------------------------------------------- validation


def _text(value: Any, name: str) -> str:
    if value is None:
        raise RegistryError(f"{name} is required")
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise RegistryError(f"{name} must be a string, got {value!r}")
    text = str(value).strip()
    if not text:
        raise RegistryError(f"{name} is required")
    return text


def _coordinate(value: Any, name: str, limit: float) -> float | None:
    if value is None or value == "":
        return None
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not -limit <= number <= limit:  # also rejects NaN
        raise RegistryError(f"{name} must be a number in [-{limit}, {limit}], got {value!r}")
    return number


def _installed_at(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        text = value.strip()
        try:
            # A bare date is a day, not a naive midnight: keep it a date.
            value = date.fromisoformat(text) if len(text) == 10 else datetime.fromisoformat(text)
        except ValueError:
            raise RegistryError(f"installed_at is not ISO 8601: {text!r}") from None
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise RegistryError(f"installed_at needs a timezone, got {value.isoformat()}")
        return value.astimezone(UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    raise RegistryError(f"installed_at must be a timestamp, got {value!r}")


def _pairs(value: Any, name: str) -> dict[str, str]:
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        # CSV form: key=value;key=value
        out: dict[str, str] = {}
        for part in filter(None, (p.strip() for p in value.split(";"))):
            key, sep, item = part.partition("=")
            if not sep or not key.strip() or not item.strip():
                raise RegistryError(f"{name}: expected key=value, got {part!r}")
            out[key.strip()] = item.strip()
        return out
    if isinstance(value, Mapping):
        if not all(isinstance(k, str | int) and isinstance(v, str | int) for k, v in value.items()):
            raise RegistryError(f"{name} must map strings to strings")
        return {str(k): str(v) for k, v in value.items()}
    raise RegistryError(f"{name} must be a mapping, got {type(value).__name__}")


def _entry(raw: Any, profile_dirs: Sequence[str | Path] | None) -> DeviceEntry:
    if not isinstance(raw, Mapping):
        raise RegistryError(f"expected a mapping, got {type(raw).__name__}")
    unknown = set(raw) - set(_REQUIRED) - set(_OPTIONAL)
    if unknown:
        raise RegistryError(f"unknown keys {sorted(map(str, unknown))}")
    if isinstance(raw.get("dev_eui"), int):
        # YAML reads an all-digit EUI as a number and drops leading zeros.
        raise RegistryError("dev_eui was read as a number; quote it in YAML")
    dev_eui = device_id = None
    if raw.get("dev_eui") not in (None, ""):
        dev_eui = _text(raw.get("dev_eui"), "dev_eui")
        if not _EUI.fullmatch(dev_eui):
            raise RegistryError(f"dev_eui must be 16 hex digits, got {dev_eui!r}")
    if raw.get("device_id") not in (None, ""):
        device_id = _text(raw.get("device_id"), "device_id")
        if not _DEVICE_ID.fullmatch(device_id) or _EUI.fullmatch(device_id):
            raise RegistryError(
                f"device_id must be a network-server id (a-z, 0-9, single dashes, 3-36"
                f" characters, not 16 hex digits), got {device_id!r}"
            )
    if dev_eui is None and device_id is None:
        raise RegistryError("dev_eui or device_id is required")
    asset_type = _text(raw.get("asset_type"), "asset_type")
    if asset_type not in ASSET_TYPES:
        raise RegistryError(f"asset_type {asset_type!r} is not one of {sorted(ASSET_TYPES)}")
    codec_name = _text(raw.get("codec"), "codec")
    try:
        codec = get_codec(codec_name, profile_dirs=profile_dirs)
    except ValueError as exc:  # UnknownCodecError, ProfileError
        raise RegistryError(f"codec: {exc}") from None
    if isinstance(codec, BinaryProfileCodec):
        profile_type = codec.profile.asset_type
        if profile_type is not None and profile_type != asset_type:
            raise RegistryError(
                f"codec {codec_name} decodes {profile_type} sensors, not {asset_type}"
            )
    metric_map = _pairs(raw.get("metric_map"), "metric_map")
    catalogue = ASSET_TYPES[asset_type].metric_names
    for source, metric in metric_map.items():
        if metric not in catalogue:
            raise RegistryError(
                f"metric_map[{source}]: {metric!r} is not a {asset_type} metric {list(catalogue)}"
            )
    return DeviceEntry(
        dev_eui=dev_eui.lower() if dev_eui else None,
        device_id=device_id,
        asset_id=_text(raw.get("asset_id"), "asset_id"),
        asset_type=asset_type,
        codec=codec_name,
        lat=_coordinate(raw.get("lat"), "lat", 90.0),
        lon=_coordinate(raw.get("lon"), "lon", 180.0),
        installed_at=_installed_at(raw.get("installed_at")),
        metric_map=metric_map,
        variables=_pairs(raw.get("variables"), "variables"),
        zone=_text(raw["zone"], "zone") if raw.get("zone") not in (None, "") else None,
    )


def parse_registry(
    rows: Sequence[Any],
    *,
    source: str = "<registry>",
    profile_dirs: Sequence[str | Path] | None = None,
) -> dict[str, DeviceEntry]:
    """Validate registry rows (mappings) and index them by DevEUI.

    Parameters
    ----------
    rows : sequence of mapping
        One mapping per device, as read from YAML or CSV.
    source : str
        Used in error messages.
    profile_dirs : sequence of path, optional
        Extra profile directories for ``profile:<name>`` codecs.

    Raises
    ------
    RegistryError
        Naming the row (and DevEUI when known) that failed.
    """
    devices: dict[str, DeviceEntry] = {}
    ids: set[str] = set()
    for index, raw in enumerate(rows):
        label = f"{source}: device {index + 1}"
        if isinstance(raw, Mapping) and (raw.get("dev_eui") or raw.get("device_id")):
            label += f" ({raw.get('dev_eui') or raw.get('device_id')})"
        try:
            entry = _entry(raw, profile_dirs)
        except RegistryError as exc:
            raise RegistryError(f"{label}: {exc}") from None
        if entry.key in devices:
            raise RegistryError(f"{label}: {entry.key} is registered twice")
        if entry.device_id is not None:
            if entry.device_id in ids:
                raise RegistryError(f"{label}: device_id {entry.device_id} is registered twice")
            ids.add(entry.device_id)
        devices[entry.key] = entry
    return devices


def load_registry(
    path: str | Path, *, profile_dirs: Sequence[str | Path] | None = None
) -> dict[str, DeviceEntry]:
    """Load and validate a device registry from a ``.yaml``/``.yml`` or ``.csv`` file.

    Returns
    -------
    dict of str to DeviceEntry
        Keyed by :attr:`DeviceEntry.key`: the lower-case DevEUI, else the device id.

    Raises
    ------
    RegistryError
        Unreadable file, unknown extension or any invalid entry.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RegistryError(f"{path}: cannot read registry: {exc}") from None
    if suffix in (".yaml", ".yml"):
        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise RegistryError(f"{path}: not valid YAML: {exc}") from None
        if isinstance(document, Mapping) and set(document) == {"devices"}:
            document = document["devices"]
        if not isinstance(document, list):
            raise RegistryError(f"{path}: expected a list of devices (or a 'devices:' list)")
        rows: list[Any] = document
    elif suffix == ".csv":
        reader = csv.DictReader(text.splitlines())
        fieldnames = set(reader.fieldnames or ())
        # The DevEUI column may be left out only when every device has a device_id.
        missing = set(_CSV_REQUIRED if "device_id" not in fieldnames else _REQUIRED) - fieldnames
        if missing:
            raise RegistryError(f"{path}: CSV lacks columns {sorted(missing)}")
        # Empty cells mean "not given"; DictReader puts surplus cells under None.
        rows = [{k: v for k, v in row.items() if v not in ("", None)} for row in reader]
    else:
        raise RegistryError(f"{path}: registry must be .yaml, .yml or .csv")
    return parse_registry(rows, source=path.name, profile_dirs=profile_dirs)


def entry_to_row(entry: DeviceEntry) -> dict[str, Any]:
    """A registry entry as a plain JSON-able row that :func:`parse_registry` accepts back.

    Empty optional fields are left out, so the same device gives the same row
    whether it came from YAML or CSV (the database registry hashes these rows).
    """
    row: dict[str, Any] = {
        "dev_eui": entry.dev_eui,
        "device_id": entry.device_id,
        "asset_id": entry.asset_id,
        "asset_type": entry.asset_type,
        "codec": entry.codec,
        "lat": entry.lat,
        "lon": entry.lon,
        "installed_at": entry.installed_at.isoformat() if entry.installed_at else None,
        "zone": entry.zone,
        "metric_map": dict(entry.metric_map),
        "variables": dict(entry.variables),
    }
    return {k: v for k, v in row.items() if v is not None and v != {}}
