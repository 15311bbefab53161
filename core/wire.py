"""The wire formats: readings on the ``readings`` topic, scores on the ``scores`` topic.

Readings are JSON bytes keyed by device id. Encoding is here, and so is decoding:
turning bytes from outside into fields the worker can trust, or into a
:class:`Rejection` with a reason from ``core.vocabulary.WORKER_REJECTIONS``. What
needs the asset catalogue, the device registry or the worker's clock is checked by
``streams.validation``.

Every source (simulator, LoRaWAN bridge, webhook, file replay) produces exactly
this shape; ``streams`` validates it. Example::

    {"device_id": "70b3d57ed0000001", "asset_id": "pump-0001",
     "asset_type": "water_pump", "ts": "2026-11-24T21:00:00.123000+00:00",
     "metrics": {"vibration_rms": 2.31, "bearing_temp": 41.0},
     "source": {"kind": "simulator", "seq": 17}}

Maintenance events (a repair or replacement) travel on the same topic, keyed
by the same device id, so they are ordered with that device's readings; they
carry ``"type": "maintenance"`` and no metrics (a reading has no ``type``, or
``"type": "reading"``)::

    {"type": "maintenance", "device_id": "70b3d57ed0000001", "asset_id": "pump-0001",
     "asset_type": "water_pump", "ts": "2026-11-24T21:05:00.123000+00:00",
     "source": {"kind": "simulator"}}
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from core.records import Score

try:  # a faster parser for the worker's hot path; json.loads stays the reference
    import orjson as _orjson
except ImportError:  # pragma: no cover - orjson is a dependency, but optional here
    _orjson = None

READING_FIELDS = ("device_id", "asset_id", "asset_type", "ts", "metrics", "source")
MAINTENANCE = "maintenance"  # the "type" of a maintenance event


# One encoder for every call (json.dumps builds a new one when given options).
# allow_nan: NaN is bad input the worker must see and dead-letter, not hide.
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=True)


def encode_reading(
    *,
    device_id: str,
    asset_id: str,
    asset_type: str,
    ts: datetime,
    metrics: Mapping[str, float],
    source: Mapping[str, Any] | None = None,
) -> bytes:
    """Serialise one reading. ``ts`` must be timezone-aware."""
    if ts.tzinfo is None:
        raise ValueError("reading timestamps must be timezone-aware")
    return _ENCODER.encode(
        {
            "device_id": device_id,
            "asset_id": asset_id,
            "asset_type": asset_type,
            "ts": ts.isoformat(),
            "metrics": dict(metrics),
            "source": dict(source or {}),
        },
    ).encode()


def encode_maintenance(
    device_id: str,
    asset_id: str,
    asset_type: str,
    ts: datetime,
    source: Mapping[str, Any] | None = None,
) -> bytes:
    """Serialise one maintenance event (the device's asset was repaired at ``ts``).

    The worker resets the device's feature baseline when it reads one, so it
    must be sent keyed by ``device_id`` on the readings topic, before the
    device's first reading after the repair.
    """
    if ts.tzinfo is None:
        raise ValueError("maintenance timestamps must be timezone-aware")
    return _ENCODER.encode(
        {
            "type": MAINTENANCE,
            "device_id": device_id,
            "asset_id": asset_id,
            "asset_type": asset_type,
            "ts": ts.isoformat(),
            "source": dict(source or {}),
        },
    ).encode()


# -- decoding readings: every byte comes from outside, so nothing here raises ----------

#: Bounds on what a message may hold. A reading is a few hundred bytes; a LoRaWAN
#: uplink's metadata in ``source`` a few kilobytes.
MAX_ID_CHARS = 128
MAX_TS_CHARS = 64
MAX_SOURCE_DEPTH = 6
MAX_SOURCE_NODES = 512
MAX_SOURCE_STRING = 1024

_REQUIRED = {"device_id": str, "asset_id": str, "asset_type": str, "ts": str, "metrics": dict}
_MAINTENANCE_REQUIRED = {"device_id": str, "asset_id": str, "asset_type": str, "ts": str}


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a message was refused; becomes a dead letter."""

    reason: str
    detail: str
    device_id: str | None = None


def decode_message(raw: bytes | None, max_bytes: int) -> tuple[str, dict] | Rejection:
    """``(kind, fields)`` of one ``readings`` message, ``kind`` being ``"reading"`` or
    :data:`MAINTENANCE`; every field its kind requires is there, typed, and bounded
    (``ts``, ``metrics`` and ``source`` are checked by the functions below)."""
    if not raw:
        return Rejection("schema", "empty message")
    if len(raw) > max_bytes:
        return Rejection("too_large", f"message of {len(raw)} bytes, limit {max_bytes}")
    try:
        data = _loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return Rejection("malformed_json", f"not JSON: {exc}")
    except RecursionError:
        return Rejection("too_large", "JSON nested too deeply")
    except ValueError as exc:  # an integer literal over Python's digit limit
        return Rejection("too_large", f"number too long: {str(exc)[:120]}")
    if not isinstance(data, dict):
        return Rejection("schema", f"expected a JSON object, got {type(data).__name__}")
    kind = data.get("type", "reading")
    if kind == MAINTENANCE:
        required = _MAINTENANCE_REQUIRED
    elif kind == "reading":
        required = _REQUIRED
    else:
        return Rejection("schema", f"unknown message type {kind!r:.80}", _id_of(data))
    for name, type_ in required.items():
        value = data.get(name)
        if not isinstance(value, type_):
            return Rejection(
                "schema",
                f"field {name!r} must be {type_.__name__}, got {type(value).__name__}",
                _id_of(data),
            )
        if type_ is str:
            problem = _text_problem(value, MAX_TS_CHARS if name == "ts" else MAX_ID_CHARS)
            if problem is not None:
                return Rejection(problem[0], f"field {name!r}: {problem[1]}", _id_of(data))
    return kind, data


# Digits to "0", every other byte to " ": a run of 19 zeros then marks an integer that
# orjson would turn into a float (beyond int64/uint64), where json.loads keeps an int.
_DIGITS = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_LONG_NUMBER = b"0" * 19


def _loads(raw: bytes) -> Any:
    """``json.loads(raw)``, via orjson (~0.9 µs instead of ~2.7 for a reading) where it
    gives the same objects: orjson refuses NaN/Infinity, BOMs, lone surrogates, invalid
    UTF-8, other encodings and deep nesting, so those fall back to json.loads and get
    exactly the old outcome and reason; only long integers parse differently, and the
    digit scan sends them to json.loads too. Duplicate keys: both keep the last value
    at the first key's position."""
    if _orjson is not None and type(raw) is bytes and _LONG_NUMBER not in raw.translate(_DIGITS):
        try:
            return _orjson.loads(raw)
        except ValueError:  # orjson.JSONDecodeError: json.loads decides, as it always did
            pass
    return json.loads(raw)


def decode_ts(text: str, device_id: str) -> datetime | Rejection:
    """A message's ``ts``: ISO 8601 with a timezone."""
    try:
        ts = datetime.fromisoformat(text)
    except ValueError:
        return Rejection("schema", f"ts {text!r} is not ISO 8601", device_id)
    if ts.tzinfo is None:
        return Rejection("schema", f"ts {text!r} has no timezone", device_id)
    return ts


def decode_source(source: object, device_id: str) -> dict | Rejection:
    """A message's ``source`` (absent: empty), as PostgreSQL's jsonb will take it."""
    if source is None:
        return {}
    if not isinstance(source, dict):
        return Rejection(
            "schema", f"source must be an object, got {type(source).__name__}", device_id
        )
    problem = _json_problem(source) if source and not _plainly_flat(source) else None
    if problem is not None:
        return Rejection(problem[0], f"source: {problem[1]}", device_id)
    return source


def decode_metric(name: str, value: object, device_id: str) -> float | Rejection:
    """One metric's value: a finite number (JSON booleans are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return Rejection("schema", f"metric {name!r} is {type(value).__name__}", device_id)
    try:
        number = float(value)
    except OverflowError:
        return Rejection("out_of_range", f"metric {name!r} is too big for a float", device_id)
    if not math.isfinite(number):
        return Rejection("nan_value", f"metric {name!r} is {number}", device_id)
    return number


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


def _plainly_flat(source: dict) -> bool:
    """True for a small flat object of short ASCII strings and ints (a simulator's or a
    bridge's usual ``source``), which :func:`_json_problem` always accepts; False means
    nothing: the full walk then decides, and gives the reason."""
    if len(source) >= 64:
        return False
    for key, value in source.items():
        if not (len(key) <= 64 and key.isascii() and "\x00" not in key):
            return False
        if type(value) is str:
            if not (len(value) <= 64 and value.isascii() and "\x00" not in value):
                return False
        elif type(value) is not int:
            return False
    return True


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


# -- scores: one message per partition per worker batch ---------------------------------


def _extras(s: Score) -> dict[str, Any]:
    # Optional per-score facts, by name: a later field (a forecast, say) is one more key,
    # and a reader that does not know a key ignores it.
    out: dict[str, Any] = {"kind": s.model_kind}
    if s.anomaly_score is not None and s.anomaly_score == s.anomaly_score:
        out["anomaly"] = s.anomaly_score
    if s.ttf_median is not None:
        out["ttf"] = [s.ttf_low, s.ttf_median, s.ttf_high]
    return out


def encode_score_batch(scores: Sequence[Score]) -> bytes:
    """The ``scores`` topic value: scores of assets that share a partition.

    Takes the worker's stored scores as they are, so a score is built once per reading.

    JSON, one compact row per score::

        {"v": 1, "scores": [[asset_id, device_id, asset_type, ts, risk, threshold, model,
                             {"kind": "anomaly", "anomaly": 1.7}], ...]}

    The eighth element (named extras) was added later; rows of seven still decode
    (as failure-risk scores), so messages already on the topic stay readable.
    """
    rows = [
        [
            s.asset_id,
            s.device_id,
            s.asset_type,
            s.ts.isoformat(),
            s.risk,
            s.threshold,
            s.model_version,
            _extras(s),
        ]
        for s in scores
    ]
    return json.dumps({"v": 1, "scores": rows}, separators=(",", ":")).encode()


def decode_score_batch(raw: bytes) -> list[Score]:
    """Inverse of :func:`encode_score_batch`."""
    data = json.loads(raw)
    if data.get("v") != 1:
        raise ValueError(f"unsupported score batch version {data.get('v')!r}")
    out = []
    for row in data["scores"]:
        a, d, t, ts, r, th, m = row[:7]
        extras = row[7] if len(row) > 7 and isinstance(row[7], dict) else {}
        anomaly = extras.get("anomaly")
        ttf = extras.get("ttf")
        lo, mid, hi = (
            (float(v) for v in ttf)
            if isinstance(ttf, list) and len(ttf) == 3
            else (
                None,
                None,
                None,
            )
        )
        out.append(
            Score(
                ts=datetime.fromisoformat(ts),
                device_id=d,
                asset_id=a,
                asset_type=t,
                model_version=m,
                risk=float(r),
                threshold=float(th),
                model_kind=str(extras.get("kind", "failure_risk")),
                anomaly_score=None if anomaly is None else float(anomaly),
                ttf_low=lo,
                ttf_median=mid,
                ttf_high=hi,
            )
        )
    return out
