"""What travels between the worker's steps and on its topics.

The ``readings`` topic carries raw bytes (see ``core.wire``) so that a
malformed message reaches our validator instead of crashing Faust's
deserialiser; a reading that passes validation becomes a :class:`Reading`.

Per-message Python objects are the worker's main cost, so the hot path avoids
Faust records: :class:`Reading` is a slotted dataclass, and scores travel as
one :class:`ScoreBatch` message per ``scores`` partition per batch rather than
one message per score.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import faust

from core.records import ScoreRow


@dataclass(slots=True)
class Reading:
    """One validated sensor reading from one device."""

    device_id: str
    asset_id: str
    asset_type: str
    ts: datetime
    metrics: Mapping[str, float]
    source: Mapping[str, Any]


@dataclass(slots=True)
class Maintenance:
    """A validated maintenance event: the device's asset was repaired at ``ts``.

    Not a reading: it is stored in ``maintenance_events``, never scored, and
    resets the device's feature baseline (``readings_since_maintenance``).
    """

    device_id: str
    asset_id: str
    asset_type: str
    ts: datetime
    source: Mapping[str, Any]


@dataclass(slots=True)
class Score:
    """A score of one reading: ``risk`` is the alerting signal, from ``model_kind``."""

    asset_id: str
    device_id: str
    asset_type: str
    ts: datetime
    risk: float
    threshold: float
    model_version: str
    model_kind: str = "failure_risk"  # or "anomaly": which model ``risk`` comes from
    anomaly_score: float | None = None
    ttf_low: float | None = None  # days to failure (10 %, median, 90 %)
    ttf_median: float | None = None
    ttf_high: float | None = None


def _extras(s: Score | ScoreRow) -> dict[str, Any]:
    # Optional per-score facts, by name: a later field (a forecast, say) is one more key,
    # and a reader that does not know a key ignores it.
    out: dict[str, Any] = {"kind": s.model_kind}
    if s.anomaly_score is not None and s.anomaly_score == s.anomaly_score:
        out["anomaly"] = s.anomaly_score
    if s.ttf_median is not None:
        out["ttf"] = [s.ttf_low, s.ttf_median, s.ttf_high]
    return out


def encode_score_batch(scores: Sequence[Score | ScoreRow]) -> bytes:
    """The ``scores`` topic value: scores of assets that share a partition.

    Takes the worker's stored rows as they are (same field names), so a score is
    built once per reading.

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
                a,
                d,
                t,
                datetime.fromisoformat(ts),
                float(r),
                float(th),
                m,
                str(extras.get("kind", "failure_risk")),
                None if anomaly is None else float(anomaly),
                lo,
                mid,
                hi,
            )
        )
    return out


class AlertEvent(faust.Record, serializer="json", isodates=True):
    """An alert transition (``open`` or ``close``); published to ``alerts`` keyed by asset."""

    alert_id: str
    transition: str
    asset_id: str
    device_id: str
    asset_type: str
    opened_at: datetime
    closed_at: datetime | None
    peak_risk: float
    last_risk: float
    threshold: float
    model_version: str
    model_kind: str = "failure_risk"
    outlook: str | None = None  # "likely to fail in 9-20 days"
