"""Per-device worker state: a compact binary snapshot and an in-process cache.

Each batch writes every touched device's state to the ``device-state`` table,
whose changelog is what a restarted worker recovers from. JSON of the rolling
windows cost ~290 µs per device per batch and made the changelog the largest
stream on the broker, so the snapshot is packed float64 instead: exact (NaN
included), a few µs, and about a third of the bytes.

The format is generic over :meth:`DeviceFeatureState.to_dict`'s ``metrics``
lists (flattened by :meth:`DeviceFeatureState.packed_fields`), so adding a field to
the feature state needs no change here. The model's
feature-spec fingerprint is stored with the state: a promoted model with other
features makes the old state unusable, and the device starts afresh.
"""

from __future__ import annotations

import functools
import hashlib
import json
import struct
from array import array
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Generic, TypeVar

from models.feature_spec import FeatureSpec
from models.features import DeviceFeatureState

_MAGIC = b"CWS2"
# A table value may carry the device's health baseline after its feature state
# (streams.health_book): b"CWJ1", the state's length, the state, the health bytes.
_JOINED = b"CWJ1"
_JOIN_LEN = struct.Struct("<I")
# magic, spec fingerprint, offset, partition, n, last ts µs, reset ts µs, reset pending, layout size
_HEADER = struct.Struct("<4s8sqiqqq?I")
_NO_TS = -(2**63)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


@functools.lru_cache(maxsize=64)
def spec_fingerprint(spec: FeatureSpec) -> bytes:
    """Eight bytes that change whenever the feature definition changes (cached: every
    batch asks for it, and a spec is frozen)."""
    canonical = json.dumps(spec.to_dict(), sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(canonical.encode(), digest_size=8).digest()


@dataclass(slots=True)
class DeviceState:
    """What the worker remembers about one device between batches.

    ``last_partition``/``last_offset``: the newest message absorbed, so a replay
    after a restart is skipped. ``reset_ts``: the newest maintenance event
    accepted; ``reset_pending``: its reset waits for the first reading at or
    after ``reset_ts`` (exactly where training resets, see models.history).
    """

    last_offset: int
    last_ts: datetime | None
    features: DeviceFeatureState
    last_partition: int = -1
    reset_ts: datetime | None = None
    reset_pending: bool = False


@dataclass(frozen=True, slots=True)
class Bookkeeping:
    """A saved state's offsets and maintenance marks, readable whatever its feature spec."""

    last_offset: int
    last_ts: datetime | None
    last_partition: int
    reset_ts: datetime | None
    reset_pending: bool


def encode_state(state: DeviceState, fingerprint: bytes) -> bytes:
    """Pack a device's state into bytes for the Faust table."""
    # layout: per metric its field count, then one code per field: -1 = None,
    # 0 = a number, k + 1 = a list of k numbers (DeviceFeatureState.packed_fields).
    n, layout, numbers = state.features.packed_fields()
    header = _HEADER.pack(
        _MAGIC,
        fingerprint,
        state.last_offset,
        state.last_partition,
        n,
        _micros(state.last_ts),
        _micros(state.reset_ts),
        state.reset_pending,
        len(layout),
    )
    return header + array("i", layout).tobytes() + array("d", numbers).tobytes()


def join_state(state: bytes, health: bytes | None) -> bytes:
    """One table value: the packed feature state (streams.state) and the health state."""
    if health is None:
        return state
    return _JOINED + _JOIN_LEN.pack(len(state)) + state + health


def split_state(value: bytes) -> tuple[bytes, bytes | None]:
    """Inverse of :func:`join_state`; a value written before health existed has none."""
    if not value.startswith(_JOINED):
        return value, None
    (n,) = _JOIN_LEN.unpack_from(value, len(_JOINED))
    start = len(_JOINED) + _JOIN_LEN.size
    return value[start : start + n], value[start + n :]


def decode_state(data: bytes, spec: FeatureSpec, fingerprint: bytes) -> DeviceState | None:
    """Unpack a state written by :func:`encode_state`.

    Returns ``None`` when the state was computed for a different feature spec;
    the caller starts the device afresh, keeping the offsets from
    :func:`decode_offsets`.
    """
    data = split_state(data)[0]
    magic, saved_fp, _, _, n, _, _, _, n_layout = _HEADER.unpack_from(data, 0)
    if magic != _MAGIC:
        raise ValueError("not a citywatch device state")
    if saved_fp != fingerprint:
        return None
    marks = decode_offsets(data)
    layout = array("i")
    layout.frombytes(data[_HEADER.size : _HEADER.size + 4 * n_layout])
    numbers = array("d")
    numbers.frombytes(data[_HEADER.size + 4 * n_layout :])
    metrics: list[list] = []
    i = pos = 0
    while i < n_layout:
        n_fields = layout[i]
        i += 1
        fields: list = []
        for code in layout[i : i + n_fields]:
            if code > 0:
                fields.append(numbers[pos : pos + code - 1].tolist())
                pos += code - 1
            elif code == 0:
                fields.append(numbers[pos])
                pos += 1
            else:
                fields.append(None)
        i += n_fields
        metrics.append(fields)
    features = DeviceFeatureState.from_dict(
        {"format": _state_format(), "spec": spec.to_dict(), "n": n, "metrics": metrics}
    )
    return DeviceState(
        marks.last_offset,
        marks.last_ts,
        features,
        marks.last_partition,
        marks.reset_ts,
        marks.reset_pending,
    )


def decode_offsets(data: bytes) -> Bookkeeping:
    """The offsets and maintenance marks of a saved state, whatever its spec."""
    data = split_state(data)[0]
    magic, _, offset, partition, _, ts, reset_ts, pending, _ = _HEADER.unpack_from(data, 0)
    if magic != _MAGIC:
        raise ValueError("not a citywatch device state")
    return Bookkeeping(offset, _ts(ts), partition, _ts(reset_ts), pending)


def _micros(ts: datetime | None) -> int:
    return (ts - _EPOCH) // _MICROSECOND if ts is not None else _NO_TS


def _ts(micros: int) -> datetime | None:
    return None if micros == _NO_TS else _EPOCH + micros * _MICROSECOND


@functools.cache
def _state_format() -> int:
    # The feature module's own format number, read from a fresh snapshot so the
    # two never disagree.
    return DeviceFeatureState(FeatureSpec(metrics=("x",))).to_dict()["format"]


LiveState = TypeVar("LiveState")


class StateCache(Generic[LiveState]):
    """Live state objects for devices whose table value we wrote ourselves.

    ``saved == cached_bytes`` proves the table still holds our last write (the
    packed bytes encode the whole state), so the object can be reused without
    decoding. Equality, not identity: the RocksDB store hands back a new bytes
    object on every read (the memory store the same one, which ``==`` checks
    first). After a rebalance or recovery the table may hold other bytes and
    the cache misses. Call :meth:`clear` when a batch fails, because its
    objects moved ahead of the table.
    """

    def __init__(self) -> None:
        self._entries: dict[bytes, tuple[bytes, LiveState]] = {}

    def get(self, key: bytes, saved: bytes | None) -> LiveState | None:
        entry = self._entries.get(key)
        if entry is not None and saved is not None and entry[0] == saved:
            return entry[1]
        return None

    def put(self, key: bytes, saved: bytes, state: LiveState) -> None:
        self._entries[key] = (saved, state)

    def clear(self) -> None:
        self._entries.clear()
