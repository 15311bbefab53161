"""The reading wire format: JSON bytes on the ``readings`` topic, keyed by device id.

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
from collections.abc import Mapping
from datetime import datetime
from typing import Any

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
