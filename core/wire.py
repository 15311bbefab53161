"""The wire formats: readings on the ``readings`` topic, scores on the ``scores`` topic.

Readings are JSON bytes keyed by device id.

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
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from core.records import Score

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
