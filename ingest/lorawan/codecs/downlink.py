"""Downlink encoders: the other direction of a device profile's codec.

ChirpStack's codec contract pairs ``decodeUplink`` with ``encodeDownlink``
(data in, bytes and fPort out). Here a device profile ``profile:<name>`` has
an encoder when ``profiles/downlink/<name>.yaml`` declares its commands; a
device whose codec has none (Cayenne LPP, passthrough, a profile without the
file) is never sent a downlink. Test vectors sit beside each layout
(``test_encode_<name>.json``).

Layout schema::

    name: water_pump
    fport: 11                      # 1-223, the port the device listens on
    commands:
      set_interval:                # ask the device to report every interval_s
        code: 0x01                 # first byte
        args:
          - {name: interval_s, type: u16, unit: 60, min: 60, max: 86400}
      request_reading:             # ask for one reading now
        code: 0x02

Arguments follow the code byte, big-endian; ``unit`` is the value of one wire
step (60: the wire carries minutes, the API seconds). Values must be whole
units within ``min``..``max`` and the wire type.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from ingest.lorawan.codecs._registry import PROFILE_DIR, PROFILE_PREFIX

__all__ = [
    "COMMANDS",
    "DownlinkEncoder",
    "DownlinkError",
    "EncodedDownlink",
    "downlink_encoder",
    "load_downlink_layout",
]

#: The commands citywatch sends: a reporting interval, and a reading now.
COMMANDS = ("set_interval", "request_reading")
_WIDTH = {"u8": 1, "u16": 2, "u24": 3, "u32": 4}
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


class DownlinkError(ValueError):
    """A bad layout file, an unknown command or an argument the wire cannot carry."""


@dataclass(frozen=True)
class _Arg:
    name: str
    type: str
    unit: int
    low: int
    high: int


@dataclass(frozen=True)
class _Command:
    code: int
    args: tuple[_Arg, ...]


@dataclass(frozen=True)
class EncodedDownlink:
    """Bytes for the device, and the port they go on."""

    f_port: int
    payload: bytes


def _int(value: Any, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise DownlinkError(f"{what} must be an integer in {low}..{high}, got {value!r}")
    return value


def _arg(raw: Any, where: str) -> _Arg:
    if not isinstance(raw, dict) or set(raw) - {"name", "type", "unit", "min", "max"}:
        raise DownlinkError(f"{where}: expected name, type, unit, min, max")
    kind = raw.get("type")
    if kind not in _WIDTH:
        raise DownlinkError(f"{where}: type must be one of {sorted(_WIDTH)}")
    wire_max = (1 << (8 * _WIDTH[kind])) - 1
    unit = _int(raw.get("unit", 1), f"{where}.unit", 1, 1 << 31)
    low = _int(raw.get("min", 0), f"{where}.min", 0, wire_max * unit)
    high = _int(raw.get("max", wire_max * unit), f"{where}.max", low, wire_max * unit)
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise DownlinkError(f"{where}: name is required")
    return _Arg(name, kind, unit, low, high)


@dataclass(frozen=True)
class DownlinkEncoder:
    """Encode (and, for simulated devices, decode) one profile's downlink commands."""

    name: str
    f_port: int
    commands: dict[str, _Command]

    def supports(self, command: str) -> bool:
        return command in self.commands

    def encode(self, command: str, args: dict[str, int] | None = None) -> EncodedDownlink:
        """The bytes of ``command`` with ``args``.

        Raises
        ------
        DownlinkError
            Unknown command, missing or extra argument, a value the wire cannot carry.
        """
        spec = self.commands.get(command)
        if spec is None:
            raise DownlinkError(f"{self.name} has no command {command!r}")
        args = dict(args or {})
        out = bytearray([spec.code])
        for arg in spec.args:
            if arg.name not in args:
                raise DownlinkError(f"{command}: {arg.name} is required")
            value = _int(args.pop(arg.name), f"{command}.{arg.name}", arg.low, arg.high)
            if value % arg.unit:
                raise DownlinkError(
                    f"{command}.{arg.name}: {value} is not a multiple of {arg.unit}"
                )
            out += (value // arg.unit).to_bytes(_WIDTH[arg.type], "big")
        if args:
            raise DownlinkError(f"{command}: unknown arguments {sorted(args)}")
        return EncodedDownlink(self.f_port, bytes(out))

    def decode(self, f_port: int, payload: bytes) -> tuple[str, dict[str, int]]:
        """The command a device receives (the simulator's side).

        Raises
        ------
        DownlinkError
            Wrong port, unknown code, wrong length or a value out of range.
        """
        if f_port != self.f_port:
            raise DownlinkError(f"fPort {f_port} is not {self.name}'s downlink port {self.f_port}")
        for command, spec in self.commands.items():
            if payload[:1] != bytes([spec.code]):
                continue
            size = 1 + sum(_WIDTH[a.type] for a in spec.args)
            if len(payload) != size:
                raise DownlinkError(f"{command}: {len(payload)} bytes, expected {size}")
            args, at = {}, 1
            for arg in spec.args:
                raw = int.from_bytes(payload[at : at + _WIDTH[arg.type]], "big")
                at += _WIDTH[arg.type]
                args[arg.name] = _int(raw * arg.unit, f"{command}.{arg.name}", arg.low, arg.high)
            return command, args
        raise DownlinkError(f"unknown command byte {payload[:1].hex() or '(empty)'}")


def load_downlink_layout(path: str | Path) -> DownlinkEncoder:
    """Read and validate a downlink layout file."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise DownlinkError(f"{path}: {exc}") from None
    if not isinstance(doc, dict) or set(doc) - {"name", "fport", "commands", "description"}:
        raise DownlinkError(f"{path}: expected name, fport, commands")
    commands: dict[str, _Command] = {}
    codes: set[int] = set()
    for command, spec in (doc.get("commands") or {}).items():
        if command not in COMMANDS:
            raise DownlinkError(f"{path}: unknown command {command!r}; known: {COMMANDS}")
        spec = spec or {}
        code = _int(spec.get("code"), f"{path}: {command}.code", 0, 255)
        if code in codes:
            raise DownlinkError(f"{path}: code {code} used twice")
        codes.add(code)
        args = tuple(
            _arg(a, f"{path}: {command}.args[{i}]") for i, a in enumerate(spec.get("args") or [])
        )
        commands[command] = _Command(code, args)
    if not commands:
        raise DownlinkError(f"{path}: no commands")
    name = doc.get("name")
    if name != path.stem:
        raise DownlinkError(f"{path}: name {name!r} must match the file name")
    # LoRaWAN application ports are 1-223 (TTS accepts up to 233 for downlinks).
    return DownlinkEncoder(name, _int(doc.get("fport"), f"{path}: fport", 1, 223), commands)


@lru_cache(maxsize=64)
def _cached(path: Path, mtime: float) -> DownlinkEncoder:
    return load_downlink_layout(path)


def downlink_encoder(
    codec: str, *, profile_dirs: tuple[Path, ...] | None = None
) -> DownlinkEncoder | None:
    """The downlink encoder of a device's codec, or None when it has none.

    Only ``profile:<name>`` codecs can have one: Cayenne LPP and passthrough
    describe uplinks only, and sending a device bytes it cannot read would
    waste its battery and the gateway's duty cycle.
    """
    if not codec.startswith(PROFILE_PREFIX):
        return None
    name = codec[len(PROFILE_PREFIX) :]
    if not _NAME.fullmatch(name):
        return None
    for directory in (*(profile_dirs or ()), PROFILE_DIR):
        path = Path(directory) / "downlink" / f"{name}.yaml"
        if path.is_file():
            return _cached(path.resolve(), path.stat().st_mtime)
    return None
