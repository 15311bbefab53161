"""Faust records for the worker's topics.

The ``readings`` topic carries raw bytes (see ``citywatch.readings``) so that a
malformed message reaches our validator instead of crashing Faust's
deserialiser; a reading that passes validation becomes a :class:`Reading`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import faust


class Reading(faust.Record, validation=True, serializer="json", isodates=True):
    """One validated sensor reading from one device."""

    device_id: str
    asset_id: str
    asset_type: str
    ts: datetime
    metrics: Mapping[str, float]
    source: Mapping[str, Any]


class Score(faust.Record, serializer="json", isodates=True):
    """A failure-risk score; published to ``scores`` keyed by asset."""

    asset_id: str
    device_id: str
    asset_type: str
    ts: datetime
    risk: float
    threshold: float
    model_version: str


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
