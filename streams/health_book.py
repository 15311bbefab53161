"""The worker's cold-start health scoring: per-device baselines in the device's state.

Each device's :class:`~models.health.DeviceHealthState` is packed into the same
``device-state`` table value as its features and offsets
(:func:`join_state`), so one changelog message carries both: a worker killed
between two writes can never restore offsets that are ahead of the health
baseline. It moves with the same crash-safe order: updated in memory while a
batch is processed, packed only after the batch is stored
(:meth:`HealthBook.pack`), forgotten when the batch fails
(:meth:`HealthBook.abort`). Which model's score alerts (supervised failure risk
or the anomaly score) is the champion card's ``scoring_policy`` per asset type;
:func:`blend` applies it.
"""

from __future__ import annotations

import json
import struct
from array import array
from collections.abc import Mapping, Sequence
from typing import Any

from models.health import (
    ANOMALY_THRESHOLD,
    CITY_HEALTH_WARMUP,
    DeviceHealthState,
    HealthScore,
    HealthSpec,
    anomaly_risk,
)
from models.remaining_life import format_time_to_failure

from .state import StateCache, join_state, split_state

__all__ = [
    "HealthBook",
    "blend",
    "decode_health",
    "encode_health",
    "health_spec",
    "join_state",
    "outlook",
    "policy_kind",
    "split_state",
]

_MAGIC = b"CWH1"
_LEN = struct.Struct("<I")


def encode_health(state: DeviceHealthState) -> bytes:
    """Pack a health state: small JSON head, then the warm-up buffer as float64."""
    # head_json is the JSON of to_dict(with_buffer=False), with the parts that do not
    # change (spec, learned baseline) encoded once, not per device per batch.
    head = state.head_json().encode()
    return _MAGIC + _LEN.pack(len(head)) + head + state.warmup_buffer().tobytes()


def decode_health(data: bytes, spec: HealthSpec) -> DeviceHealthState | None:
    """Inverse of :func:`encode_health`; None when it was learned under another spec
    (the device then learns its baseline afresh) or is not a health state."""
    if not data.startswith(_MAGIC):
        return None
    (n,) = _LEN.unpack_from(data, len(_MAGIC))
    start = len(_MAGIC) + _LEN.size
    d: dict[str, Any] = json.loads(data[start : start + n])
    if HealthSpec.from_dict(d["spec"]) != spec:
        return None
    flat = array("d")
    flat.frombytes(data[start + n :])
    if "buf_rows" in d:  # written before the buffer was kept flat: same bytes, one more key
        d.pop("buf_rows")
    return DeviceHealthState.from_dict(d, buffer=flat)


def health_spec(card: dict[str, Any], asset_type: str, metrics: Sequence[str]) -> HealthSpec:
    """The champion card's health spec for an asset type, or the default for ``metrics``
    (cards written before the health model have none)."""
    saved = (card.get("health_specs") or {}).get(asset_type)
    if saved:
        return HealthSpec.from_dict(saved)
    return HealthSpec(metrics=tuple(metrics), warmup=CITY_HEALTH_WARMUP)


def outlook(score: Any) -> str | None:
    """The crew's "likely to fail in 9-20 days" for a score with a time to failure."""
    if score.ttf_low is None or score.ttf_high is None:
        return None
    return format_time_to_failure(score.ttf_low, score.ttf_high) or None


def policy_kind(card: dict[str, Any], asset_type: str) -> str:
    """``failure_risk`` or ``anomaly`` for an asset type; cards without a policy were
    supervised-only, so they keep alerting on failure risk."""
    policy = (card.get("scoring_policy") or {}).get(asset_type) or {}
    return "anomaly" if policy.get("kind") == "anomaly" else "failure_risk"


def blend(
    kind: str, risks: Sequence[float], threshold: float, health: Sequence[HealthScore]
) -> tuple[list[float], float, list[float | None]]:
    """The alerting ``risk`` and ``threshold`` of each score, and its anomaly score.

    With ``kind="failure_risk"`` the supervised risks alert unchanged; with
    ``"anomaly"`` the health model's :func:`~models.health.anomaly_risk` does,
    against :data:`~models.health.ANOMALY_THRESHOLD`. Anomaly scores are NaN
    (stored as NULL) while a device is still learning its baseline.
    """
    anomaly = [None if h.warming_up else h.anomaly_score for h in health]
    if kind == "anomaly":
        return [anomaly_risk(h.anomaly_score) for h in health], ANOMALY_THRESHOLD, anomaly
    return list(risks), threshold, anomaly


class HealthBook:
    """Per-device health states of one worker, kept inside the device-state values.

    Parameters
    ----------
    table : mapping of bytes to bytes
        The Faust ``device-state`` table (or a dict in tests), whose values are
        :func:`join_state` values; only read here, the worker writes it.
    """

    def __init__(self, table: Mapping[bytes, Any]) -> None:
        self._table = table
        # Live objects for keys whose table value we packed: no decode per batch.
        self._cache: StateCache[DeviceHealthState] = StateCache()
        self._touched: dict[bytes, DeviceHealthState] = {}

    def _state(self, key: bytes, spec: HealthSpec) -> DeviceHealthState:
        st = self._touched.get(key)
        if st is not None and st.spec == spec:
            return st
        saved = self._table.get(key)
        cached = self._cache.get(key, saved)
        if cached is not None and cached.spec == spec:
            st = cached
        else:
            health = split_state(saved)[1] if saved is not None else None
            st = (decode_health(health, spec) if health else None) or DeviceHealthState(spec)
        self._touched[key] = st
        return st

    def update(self, key: bytes, spec: HealthSpec, metrics: Mapping[str, Any]) -> HealthScore:
        """Score one reading of the device ``key`` and learn from it."""
        return self._state(key, spec).update(metrics)

    def reset(self, key: bytes, spec: HealthSpec) -> None:
        """The device was repaired: relearn its baseline from its next readings."""
        self._state(key, spec).reset()

    def pack(self, key: bytes, state: bytes) -> bytes:
        """The table value for ``key`` after the batch is stored: its packed feature
        ``state`` joined with its health state (updated, or as saved when the batch
        did not touch it)."""
        st = self._touched.pop(key, None)
        if st is None:
            saved = self._table.get(key)
            return join_state(state, split_state(saved)[1] if saved is not None else None)
        value = join_state(state, encode_health(st))
        self._cache.put(key, value, st)
        return value

    def abort(self) -> None:
        """The batch failed: its in-memory states moved ahead of the table; drop them."""
        self._touched.clear()
        self._cache.clear()
