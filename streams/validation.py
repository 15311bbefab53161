"""Validate raw reading bytes: a :class:`Reading`, or a :class:`Rejection` with a reason.

A message with ``"type": "maintenance"`` becomes a :class:`Maintenance` after
the checks that apply to it (schema, asset type, known device, asset match,
timestamp, clock skew); any other ``type`` than ``reading`` is a ``schema`` error.

Reasons are a closed vocabulary shared with the dead-letter table and the
simulator's fault injector: ``malformed_json``, ``schema``,
``unknown_asset_type``, ``unknown_device``, ``asset_mismatch``,
``unknown_metric``, ``nan_value``, ``out_of_range``, ``clock_skew``,
``duplicate`` (the last is decided by the worker's per-device state).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from citywatch.assets import ASSET_TYPES
from citywatch.readings import MAINTENANCE

from .records import Maintenance, Reading

REASONS = (
    "malformed_json",
    "schema",
    "unknown_asset_type",
    "unknown_device",
    "asset_mismatch",
    "unknown_metric",
    "nan_value",
    "out_of_range",
    "clock_skew",
    "duplicate",
)

DeviceLookup = Callable[[str], tuple[str, str] | None]


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a message was refused; becomes a dead letter."""

    reason: str
    detail: str
    device_id: str | None = None


_REQUIRED = {"device_id": str, "asset_id": str, "asset_type": str, "ts": str, "metrics": dict}
_MAINTENANCE_REQUIRED = {"device_id": str, "asset_id": str, "asset_type": str, "ts": str}


def validate_reading(
    raw: bytes | None,
    lookup_device: DeviceLookup,
    *,
    now: datetime | None = None,
    max_skew: timedelta = timedelta(minutes=5),
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
    """
    if not raw:
        return Rejection("schema", "empty message")
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return Rejection("malformed_json", f"not JSON: {exc}")
    if not isinstance(data, dict):
        return Rejection("schema", f"expected a JSON object, got {type(data).__name__}")
    kind_of_message = data.get("type", "reading")
    if kind_of_message == MAINTENANCE:
        required = _MAINTENANCE_REQUIRED
    elif kind_of_message == "reading":
        required = _REQUIRED
    else:
        return Rejection(
            "schema",
            f"unknown message type {kind_of_message!r}",
            data.get("device_id") if isinstance(data.get("device_id"), str) else None,
        )
    for name, kind in required.items():
        value = data.get(name)
        if not isinstance(value, kind):
            return Rejection(
                "schema",
                f"field {name!r} must be {kind.__name__}, got {type(value).__name__}",
                data.get("device_id") if isinstance(data.get("device_id"), str) else None,
            )
    device_id: str = data["device_id"]
    asset_type = ASSET_TYPES.get(data["asset_type"])
    if asset_type is None:
        return Rejection("unknown_asset_type", f"asset type {data['asset_type']!r}", device_id)
    registered = lookup_device(device_id)
    if registered is None:
        return Rejection("unknown_device", f"device {device_id} is not registered", device_id)
    if registered != (data["asset_id"], data["asset_type"]):
        return Rejection(
            "asset_mismatch",
            f"device {device_id} is registered to {registered}, "
            f"message says {(data['asset_id'], data['asset_type'])}",
            device_id,
        )
    try:
        ts = datetime.fromisoformat(data["ts"])
    except ValueError:
        return Rejection("schema", f"ts {data['ts']!r} is not ISO 8601", device_id)
    if ts.tzinfo is None:
        return Rejection("schema", f"ts {data['ts']!r} has no timezone", device_id)
    now = now or datetime.now(UTC)
    if ts > now + max_skew:
        return Rejection(
            "clock_skew", f"ts {ts.isoformat()} is ahead of {now.isoformat()}", device_id
        )
    source = data.get("source")
    if required is _MAINTENANCE_REQUIRED:
        return Maintenance(
            device_id=device_id,
            asset_id=data["asset_id"],
            asset_type=asset_type.name,
            ts=ts,
            source=source if isinstance(source, dict) else {},
        )
    metrics: Mapping[str, object] = data["metrics"]
    if not metrics:
        return Rejection("schema", "no metrics", device_id)
    clean: dict[str, float] = {}
    for name, value in metrics.items():
        spec = asset_type.metric(name)
        if spec is None:
            return Rejection(
                "unknown_metric", f"{name!r} is not a {asset_type.name} metric", device_id
            )
        if isinstance(value, bool) or not isinstance(value, int | float):
            return Rejection("schema", f"metric {name!r} is {type(value).__name__}", device_id)
        value = float(value)
        if not math.isfinite(value):
            return Rejection("nan_value", f"metric {name!r} is {value}", device_id)
        if not spec.in_range(value):
            return Rejection(
                "out_of_range",
                f"metric {name!r}={value} outside [{spec.low}, {spec.high}] {spec.unit}",
                device_id,
            )
        clean[name] = value
    return Reading(
        device_id=device_id,
        asset_id=data["asset_id"],
        asset_type=asset_type.name,
        ts=ts,
        metrics=clean,
        source=source if isinstance(source, dict) else {},
    )
