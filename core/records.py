"""The records every layer passes around: a reading, a score, an alert, a dead letter.

One type per record: the worker builds them, ``core.wire`` puts them on and takes
them off the topics, the sink stores them (``storage.sinks`` spells each table's
columns from these fields), and the crew service reads their tables. They hold
values only: no I/O, no policy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["Alert", "DeadLetter", "Explanation", "Maintenance", "Reading", "Score"]


@dataclass(frozen=True, slots=True)
class Reading:
    """One validated sensor reading from one device."""

    ts: datetime
    device_id: str
    asset_id: str
    asset_type: str
    metrics: Mapping[str, float]
    source: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Maintenance:
    """A validated maintenance event: the device's asset was repaired at ``ts``.

    Not a reading: it is stored in ``maintenance_events``, never scored, and
    resets the device's feature baseline (``readings_since_maintenance``).
    """

    ts: datetime
    device_id: str
    asset_id: str
    asset_type: str
    source: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Score:
    """A score of one reading: ``risk`` is the alerting signal, from ``model_kind``."""

    ts: datetime
    device_id: str
    asset_id: str
    asset_type: str
    model_version: str
    risk: float
    threshold: float
    role: str = "champion"  # or "challenger": shadow scores, stored but never alerting
    model_kind: str = "failure_risk"  # or "anomaly": which model ``risk`` comes from
    anomaly_score: float | None = None  # cold-start health: distance / control limit
    ttf_low: float | None = None  # days to failure: 10 %, median, 90 % (None: no model)
    ttf_median: float | None = None
    ttf_high: float | None = None


@dataclass(frozen=True, slots=True)
class Explanation:
    """Why a score was high: LightGBM feature contributions (log-odds), bias as ``_bias``."""

    ts: datetime
    device_id: str
    asset_id: str
    model_version: str
    risk: float
    contributions: dict[str, float]


@dataclass(frozen=True, slots=True)
class Alert:
    """The worker's alert after a transition: ``status`` is 'open' or 'closed' (then
    ``closed_at`` is set). The inbox maps it onto the crews' lifecycle."""

    alert_id: str
    asset_id: str
    device_id: str
    asset_type: str
    status: str
    opened_at: datetime
    closed_at: datetime | None
    peak_risk: float
    last_risk: float
    threshold: float
    model_version: str
    model_kind: str = "failure_risk"  # or "anomaly"
    outlook: str | None = None  # "likely to fail in 9-20 days" (remaining-life model)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """What could not be used, with why. ``raw`` may be truncated: then ``raw_size`` and
    ``raw_sha256`` describe the original (computed from ``raw`` when left unset)."""

    deadletter_id: str
    stage: str
    reason: str
    detail: str
    source_topic: str | None
    source_partition: int | None
    source_offset: int | None
    device_id: str | None
    raw: bytes
    raw_size: int | None = None
    raw_sha256: str | None = None
