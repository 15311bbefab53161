"""Validate raw reading bytes: a :class:`Reading`, or a :class:`Rejection` with a reason.

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

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from core.assets import ASSET_TYPES
from core.records import Maintenance, Reading
from core.wire import MAINTENANCE

#: Bounds on what a message may hold. A reading is a few hundred bytes; a LoRaWAN
#: uplink's metadata in ``source`` a few kilobytes.
MAX_ID_CHARS = 128
MAX_TS_CHARS = 64
MAX_SOURCE_DEPTH = 6
MAX_SOURCE_NODES = 512
MAX_SOURCE_STRING = 1024

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
    if not raw:
        return Rejection("schema", "empty message")
    if len(raw) > max_bytes:
        return Rejection("too_large", f"message of {len(raw)} bytes, limit {max_bytes}")
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return Rejection("malformed_json", f"not JSON: {exc}")
    except RecursionError:
        return Rejection("too_large", "JSON nested too deeply")
    except ValueError as exc:  # an integer literal over Python's digit limit
        return Rejection("too_large", f"number too long: {str(exc)[:120]}")
    if not isinstance(data, dict):
        return Rejection("schema", f"expected a JSON object, got {type(data).__name__}")
    kind_of_message = data.get("type", "reading")
    if kind_of_message == MAINTENANCE:
        required = _MAINTENANCE_REQUIRED
    elif kind_of_message == "reading":
        required = _REQUIRED
    else:
        return Rejection("schema", f"unknown message type {kind_of_message!r:.80}", _id_of(data))
    for name, kind in required.items():
        value = data.get(name)
        if not isinstance(value, kind):
            return Rejection(
                "schema",
                f"field {name!r} must be {kind.__name__}, got {type(value).__name__}",
                _id_of(data),
            )
        if kind is str:
            problem = _text_problem(value, MAX_TS_CHARS if name == "ts" else MAX_ID_CHARS)
            if problem is not None:
                return Rejection(problem[0], f"field {name!r}: {problem[1]}", _id_of(data))
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
    try:
        ts = datetime.fromisoformat(data["ts"])
    except ValueError:
        return Rejection("schema", f"ts {data['ts']!r} is not ISO 8601", device_id)
    if ts.tzinfo is None:
        return Rejection("schema", f"ts {data['ts']!r} has no timezone", device_id)
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
    source = data.get("source")
    if source is None:
        source = {}
    elif not isinstance(source, dict):
        return Rejection(
            "schema", f"source must be an object, got {type(source).__name__}", device_id
        )
    elif source:
        problem = _json_problem(source)
        if problem is not None:
            return Rejection(problem[0], f"source: {problem[1]}", device_id)
    if required is _MAINTENANCE_REQUIRED:
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
    clean: dict[str, float] = {}
    for name, value in metrics.items():
        spec = asset_type.metric(name)
        if spec is None:
            return Rejection(
                "unknown_metric", f"{name!r:.80} is not a {asset_type.name} metric", device_id
            )
        if isinstance(value, bool) or not isinstance(value, int | float):
            return Rejection("schema", f"metric {name!r} is {type(value).__name__}", device_id)
        try:
            value = float(value)
        except OverflowError:
            return Rejection("out_of_range", f"metric {name!r} is too big for a float", device_id)
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
        source=source,
    )


def _id_of(data: dict) -> str | None:
    device_id = data.get("device_id")
    return device_id if isinstance(device_id, str) else None


def _text_problem(text: str, limit: int) -> tuple[str, str] | None:
    if len(text) > limit:
        return "too_large", f"{len(text)} characters, limit {limit}"
    if "\x00" in text:
        return "bad_text", "NUL character"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return "bad_text", "lone surrogate"
    return None


def _json_problem(value: object) -> tuple[str, str] | None:
    """What PostgreSQL's jsonb would refuse, or what is too big to keep: (reason, detail)."""
    nodes = 0
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:  # iterative: the depth is the attacker's choice
        item, depth = stack.pop()
        nodes += 1
        if nodes > MAX_SOURCE_NODES:
            return "too_large", f"more than {MAX_SOURCE_NODES} values"
        if isinstance(item, dict | list):
            if depth >= MAX_SOURCE_DEPTH:
                return "too_large", f"nested deeper than {MAX_SOURCE_DEPTH}"
            if isinstance(item, dict):
                for key, child in item.items():
                    problem = _text_problem(key, MAX_SOURCE_STRING)
                    if problem is not None:
                        return problem
                    stack.append((child, depth + 1))
            else:
                stack.extend((child, depth + 1) for child in item)
        elif isinstance(item, str):
            problem = _text_problem(item, MAX_SOURCE_STRING)
            if problem is not None:
                return problem
        elif isinstance(item, float) and not math.isfinite(item):
            return "nan_value", f"{item} is not a JSON number"
    return None
