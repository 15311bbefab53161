"""A district's leak detector in the ``leak-state`` table: exact, compact, crash-consistent.

A Hanoi district's state is ~390 kB, almost all of it the time-of-week
references (336 slots x 4 day-means) and the day window (48 residuals). One
decided step changes one row of each, so the state is kept in *parts*:

- the **core** under the district's key: counters, pending partial steps, small
  arrays, and the manifest (which version of every other part is current);
- each row of a row-wise array (``ROW_WISE``) and each other large array as a
  part of its own, written only when its bytes changed: about 10 kB a step.

Parts are copy-on-write: a changed part goes under a new key
``<district>#<part>@<seq>``, then the core (with the new manifest), then
tombstones for the versions it replaced. All of a district's keys go to the
changelog partition of the event being processed, which is the district's
partition (the topic is keyed by district), so a crash at any point leaves
either the old core with its intact parts or the new one with its parts;
versions nobody refers to are swept when the district is next loaded.

Values are bytes: a magic, a JSON header (numbers, strings, None, and each
array's dtype and shape) and the arrays' raw little-endian bytes. Exact,
NaN included; no pickle, and :func:`decode` refuses anything malformed.
"""

from __future__ import annotations

import json
import logging
import struct
from collections.abc import MutableMapping
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

_MAGIC = b"CWL1"
_LEN = struct.Struct("<I")
_DTYPES = frozenset({"<f8", "<i8", "|b1"})
LARGE = 2048  # bytes: an array this large is a part of its own
ROW_WISE = frozenset({"detector.slots", "detector.buffer"})  # a step changes one row


def encode(values: dict[str, Any]) -> bytes:
    """Numbers, strings, None, JSON-able containers and numpy arrays, as bytes."""
    header, blobs = {}, []
    for name, value in values.items():
        if isinstance(value, np.ndarray):
            array = np.ascontiguousarray(value, dtype=value.dtype.newbyteorder("<"))
            header[name] = {"dtype": array.dtype.str, "shape": list(array.shape)}
            blobs.append(array.tobytes())
        else:
            header[name] = {"value": value.item() if isinstance(value, np.generic) else value}
    head = json.dumps(header, allow_nan=True, separators=(",", ":")).encode()
    return _MAGIC + _LEN.pack(len(head)) + head + b"".join(blobs)


def decode(raw: bytes) -> dict[str, Any]:
    """The values of :func:`encode`; ValueError if ``raw`` is not such bytes."""
    if not isinstance(raw, bytes | bytearray) or raw[:4] != _MAGIC or len(raw) < 8:
        raise ValueError("not a leak-state value")
    (size,) = _LEN.unpack_from(raw, 4)
    try:
        header = json.loads(raw[8 : 8 + size])
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"leak-state header: {exc}") from exc
    if not isinstance(header, dict):
        raise ValueError("leak-state header is not an object")
    out, at = {}, 8 + size
    for name, spec in header.items():
        if not isinstance(spec, dict):
            raise ValueError(f"leak-state field {name!r}")
        if "value" in spec:
            out[name] = spec["value"]
            continue
        dtype, shape = spec.get("dtype"), spec.get("shape")
        if dtype not in _DTYPES or not isinstance(shape, list):
            raise ValueError(f"leak-state array {name!r}: {dtype} {shape}")
        count = int(np.prod(shape, dtype=np.int64))
        end = at + count * np.dtype(dtype).itemsize
        if count < 0 or end > len(raw):
            raise ValueError(f"leak-state array {name!r} is truncated")
        out[name] = np.frombuffer(raw, dtype=dtype, count=count, offset=at).reshape(shape).copy()
        at = end
    if at != len(raw):
        raise ValueError("leak-state value has trailing bytes")
    return out


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts that hold arrays become dotted names (``detector.slots``)."""
    flat: dict[str, Any] = {}
    for name, value in values.items():
        if isinstance(value, dict) and any(isinstance(v, np.ndarray) for v in value.values()):
            flat.update(_flatten(value, f"{prefix}{name}."))
        else:
            flat[f"{prefix}{name}"] = value
    return flat


def _unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for name, value in flat.items():
        *path, leaf = name.split(".")
        node = nested
        for step in path:
            node = node.setdefault(step, {})
        node[leaf] = value
    return nested


def split(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, bytes]]:
    """(core values, parts): rows of ``ROW_WISE`` arrays and large arrays become parts."""
    core: dict[str, Any] = {}
    parts: dict[str, bytes] = {}
    for name, value in _flatten(values).items():
        if isinstance(value, np.ndarray) and name in ROW_WISE:
            core[name] = {"rows": len(value), "dtype": value.dtype.str, "shape": list(value.shape)}
            for i, row in enumerate(value):
                parts[f"{name}/{i}"] = encode({"a": row})
        elif isinstance(value, np.ndarray) and value.nbytes >= LARGE:
            core[name] = {"part": True}
            parts[name] = encode({"a": value})
        else:
            core[name] = value
    return core, parts


def _pack_manifest(manifest: dict[str, int]) -> dict[str, Any]:
    """{part: seq} with a row-wise array's rows as one list (a third of the core's bytes
    otherwise)."""
    packed: dict[str, Any] = {}
    for part, seq in manifest.items():
        name, _, row = part.partition("/")
        if row:
            packed.setdefault(name, []).append(seq)  # rows are split in order
        else:
            packed[name] = seq
    return packed


def _unpack_manifest(packed: Any) -> dict[str, int]:
    if not isinstance(packed, dict):
        raise ValueError("leak-state manifest is not an object")
    manifest: dict[str, int] = {}
    for name, seq in packed.items():
        if isinstance(seq, list):
            manifest.update({f"{name}/{i}": int(s) for i, s in enumerate(seq)})
        else:
            manifest[name] = int(seq)
    return manifest


class LeakStateStore:
    """Saves and loads districts' states in a table: the Faust table ``leak-state`` in
    the worker (bytes keys and values), a dict in tests.

    Guarantee: :meth:`load` returns the state of some completed :meth:`save` (the
    last one whose core reached the table), never a mix of two.
    """

    def __init__(self, table: MutableMapping[bytes, bytes]) -> None:
        self.table = table
        self._manifests: dict[str, tuple[int, dict[str, int]]] = {}  # asset -> seq, parts

    def forget(self) -> None:
        """After a rebalance another worker may have saved: read manifests from the table."""
        self._manifests.clear()

    @staticmethod
    def _key(asset_id: str, part: str, seq: int) -> bytes:
        return f"{asset_id}#{part}@{seq}".encode()

    def save(self, asset_id: str, values: dict[str, Any]) -> int:
        """Write what changed since the last save; return the number of table writes."""
        core, parts = split(values)
        seq, old = self._manifests.get(asset_id) or self._stored_manifest(asset_id)
        seq += 1
        manifest, stale, writes = {}, [], 0
        for part, raw in parts.items():
            prev = old.get(part)
            if prev is not None and self.table.get(self._key(asset_id, part, prev)) == raw:
                manifest[part] = prev
                continue
            self.table[self._key(asset_id, part, seq)] = raw
            manifest[part] = seq
            writes += 1
            if prev is not None:
                stale.append(self._key(asset_id, part, prev))
        stale += [self._key(asset_id, p, s) for p, s in old.items() if p not in parts]
        # The core last: until it lands, the previous core and its parts stay whole.
        self.table[asset_id.encode()] = encode(
            {**core, "_seq": seq, "_parts": _pack_manifest(manifest)}
        )
        self._manifests[asset_id] = (seq, manifest)
        for key in stale:
            del self.table[key]
        return writes + 1 + len(stale)

    def _stored_manifest(self, asset_id: str) -> tuple[int, dict[str, int]]:
        raw = self.table.get(asset_id.encode())
        if raw is None:
            return 0, {}
        head = decode(raw)
        return int(head["_seq"]), _unpack_manifest(head["_parts"])

    def load(self, asset_id: str) -> dict[str, Any] | None:
        """The district's last saved state (None if never saved); ValueError if the
        table holds something that is not a complete state."""
        raw = self.table.get(asset_id.encode())
        if raw is None:
            self._manifests.pop(asset_id, None)
            return None
        core = decode(raw)
        seq, manifest = int(core.pop("_seq")), _unpack_manifest(core.pop("_parts"))
        flat: dict[str, Any] = {}
        for name, value in core.items():
            if isinstance(value, dict) and "rows" in value:
                rows = [self._part(asset_id, f"{name}/{i}", manifest) for i in range(value["rows"])]
                shape = value["shape"]
                flat[name] = np.array(rows, dtype=value["dtype"]).reshape(shape)
            elif isinstance(value, dict) and value.get("part") is True:
                flat[name] = self._part(asset_id, name, manifest)
            else:
                flat[name] = value
        self._manifests[asset_id] = (seq, manifest)
        self._sweep(asset_id, manifest)
        return _unflatten(flat)

    def _part(self, asset_id: str, part: str, manifest: dict[str, int]) -> np.ndarray:
        if part not in manifest:
            raise ValueError(f"{asset_id}: leak-state manifest lacks {part!r}")
        raw = self.table.get(self._key(asset_id, part, manifest[part]))
        if raw is None:
            raise ValueError(f"{asset_id}: leak-state part {part!r} is missing")
        return decode(raw)["a"]

    def _sweep(self, asset_id: str, manifest: dict[str, int]) -> None:
        """Delete versions a crash left behind (written, but their core never landed)."""
        live = {self._key(asset_id, p, s) for p, s in manifest.items()}
        prefix = f"{asset_id}#".encode()
        orphans = [k for k in list(self.table.keys()) if k.startswith(prefix) and k not in live]
        for key in orphans:
            del self.table[key]
        if orphans:
            log.info("leaks: %s: removed %d unreferenced state parts", asset_id, len(orphans))
