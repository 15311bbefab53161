"""Validate raw reading bytes: a :class:`Reading`, or a :class:`Rejection` with a reason.

``core.wire`` decodes the bytes (shape, bounds, types); this module adds the worker's
policy: the asset catalogue, the device registry, the clock and the metrics' ranges.
The checks run in a fixed order, so a message with several faults always gets the
same reason.

A message with ``"type": "maintenance"`` becomes a :class:`Maintenance` after
the checks that apply to it (schema, asset type, known device, asset match,
timestamp, clock skew); any other ``type`` than ``reading`` is a ``schema`` error.

Every byte here comes from outside, so validation never raises: whatever
arrives is bounded (message size, string lengths, ``source`` size and depth,
number size) and refused with a reason before it can reach PostgreSQL, where
a NUL character, a lone surrogate or a NaN inside ``jsonb`` would fail the
whole batch's transaction.

Reasons are a closed vocabulary (:data:`core.vocabulary.WORKER_REJECTIONS`), shared with
the dead-letter table, the pipeline dashboard and docs/delivery.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta

from core.assets import ASSET_TYPES, AssetType
from core.records import Maintenance, Reading
from core.wire import (
    MAINTENANCE,
    Rejection,
    decode_message,
    decode_metric,
    decode_source,
    decode_ts,
)

__all__ = ["DeviceLookup", "Rejection", "validate_reading"]

DeviceLookup = Callable[[str], tuple[str, str] | None]

# Per asset type name: (the AssetType, {metric: (low, high)} of its finitely bounded
# metrics), for the fast path below. The AssetType is kept to notice a reloaded catalogue.
_BOUNDS: dict[str, tuple[AssetType, dict[str, tuple[float, float]]]] = {}


def _bounds(asset_type: AssetType) -> dict[str, tuple[float, float]]:
    entry = _BOUNDS.get(asset_type.name)
    if entry is None or entry[0] is not asset_type:
        finite = {
            m.name: (m.low, m.high)
            for m in asset_type.metrics
            if math.isfinite(m.low) and math.isfinite(m.high)
        }
        entry = _BOUNDS[asset_type.name] = (asset_type, finite)
    return entry[1]


def _plainly_valid(metrics: Mapping[str, object], bounds: dict[str, tuple[float, float]]) -> bool:
    """True when every metric is a known one whose value is a float within its finite
    bounds: what the checks below accept, tested with one dict lookup and one chained
    comparison each (NaN and inf fail the comparison). False means nothing: the full
    checks then decide, and give the reason."""
    for name, value in metrics.items():
        b = bounds.get(name)
        if b is None or type(value) is not float or not b[0] <= value <= b[1]:
            return False
    return True


def validate_reading(
    raw: bytes | None,
    lookup_device: DeviceLookup,
    *,
    now: datetime | None = None,
    max_skew: timedelta = timedelta(minutes=5),
    max_age: timedelta | None = None,
    max_bytes: int = 65536,
) -> Reading | Maintenance | Rejection:
    """Parse and check one message from the ``readings`` topic (a reading or maintenance).

    Parameters
    ----------
    raw : bytes
        The message value.
    lookup_device : callable
        ``device_id -> (asset_id, asset_type)`` or ``None`` when unregistered.
    now : datetime, optional
        The worker's clock (UTC); readings later than ``now + max_skew`` are refused.
    max_age : timedelta, optional
        Readings older than ``now - max_age`` are refused (``too_old``); None: no limit.
    max_bytes : int
        Longest message accepted (``too_large``).
    """
    decoded = decode_message(raw, max_bytes)
    if isinstance(decoded, Rejection):
        return decoded
    kind, data = decoded
    device_id: str = data["device_id"]
    asset_type = ASSET_TYPES.get(data["asset_type"])
    if asset_type is None:
        return Rejection("unknown_asset_type", f"asset type {data['asset_type']!r}", device_id)
    registered = lookup_device(device_id)
    if registered is None:
        return Rejection("unknown_device", f"device {device_id!r} is not registered", device_id)
    if registered != (data["asset_id"], data["asset_type"]):
        return Rejection(
            "asset_mismatch",
            f"device {device_id} is registered to {registered}, "
            f"message says {(data['asset_id'], data['asset_type'])}",
            device_id,
        )
    ts = decode_ts(data["ts"], device_id)
    if isinstance(ts, Rejection):
        return ts
    now = now or datetime.now(UTC)
    try:
        ahead = ts > now + max_skew
        too_old = max_age is not None and ts < now - max_age
    except OverflowError:  # an offset that pushes year 1 or 9999 out of range
        return Rejection("schema", f"ts {data['ts']!r} is out of range", device_id)
    if ahead:
        return Rejection(
            "clock_skew", f"ts {ts.isoformat()} is ahead of {now.isoformat()}", device_id
        )
    if too_old:
        return Rejection(
            "too_old",
            f"ts {ts.isoformat()} is older than {max_age} before {now.isoformat()}",
            device_id,
        )
    source = decode_source(data.get("source"), device_id)
    if isinstance(source, Rejection):
        return source
    if kind == MAINTENANCE:
        return Maintenance(
            device_id=device_id,
            asset_id=data["asset_id"],
            asset_type=asset_type.name,
            ts=ts,
            source=source,
        )
    metrics: Mapping[str, object] = data["metrics"]
    if not metrics:
        return Rejection("schema", "no metrics", device_id)
    if _plainly_valid(metrics, _bounds(asset_type)):
        # Every value is already the float the checks would keep: the decoded dict (fresh
        # from json.loads, owned by nobody else) is used as it is, not copied.
        return Reading(
            device_id=device_id,
            asset_id=data["asset_id"],
            asset_type=asset_type.name,
            ts=ts,
            metrics=metrics,  # type: ignore[arg-type]
            source=source,
        )
    clean: dict[str, float] = {}
    for name, value in metrics.items():
        spec = asset_type.metric(name)
        if spec is None:
            return Rejection(
                "unknown_metric", f"{name!r:.80} is not a {asset_type.name} metric", device_id
            )
        number = decode_metric(name, value, device_id)
        if isinstance(number, Rejection):
            return number
        if not spec.in_range(number):
            return Rejection(
                "out_of_range",
                f"metric {name!r}={number} outside [{spec.low}, {spec.high}] {spec.unit}",
                device_id,
            )
        clean[name] = number
    return Reading(
        device_id=device_id,
        asset_id=data["asset_id"],
        asset_type=asset_type.name,
        ts=ts,
        metrics=clean,
        source=source,
    )
