"""What the fleet simulator emits: devices, readings with their ground truth, failures,
and the wire encoding of a simulated reading."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from core.wire import encode_maintenance, encode_reading


@dataclass(frozen=True, slots=True)
class Device:
    """One sensor node fitted to one asset.

    Parameters
    ----------
    device_id : str
        16 lowercase hex digits, shaped like a LoRaWAN DevEUI.
    asset_id : str
        The asset the node is fitted to, e.g. ``"pump-0001"``.
    asset_type : str
        A key of :data:`core.assets.ASSET_TYPES`.
    lat, lon : float
        Where the asset stands (WGS 84).
    installed_at : datetime
        When the node was installed (timezone-aware).
    """

    device_id: str
    asset_id: str
    asset_type: str
    lat: float
    lon: float
    installed_at: datetime


@dataclass(frozen=True, slots=True)
class FailureEvent:
    """Ground truth: a device failed after a period of degradation.

    ``degradation_started_tick`` is the first tick of degradation (health
    still 1 there) and ``failed_tick`` the tick whose reading has health 0.
    For devices seeded as already degrading (``initial_degrading_fraction``)
    the start tick is negative and ``degradation_started_at`` is extrapolated
    back from tick 0 with the mean tick period observed up to the failure.
    """

    device_id: str
    asset_id: str
    asset_type: str
    mode: str
    degradation_started_at: datetime
    failed_at: datetime
    degradation_started_tick: int
    failed_tick: int


@dataclass(frozen=True, slots=True)
class Degradation:
    """A degradation in progress: the device will fail at ``failing_tick``."""

    device_id: str
    mode: str
    started_tick: int
    failing_tick: int


@dataclass(frozen=True, slots=True)
class SimReading:
    """One simulated reading plus its ground truth.

    Parameters
    ----------
    device : Device
        The reporting device.
    tick : int
        Simulator tick (0-based, counts every call to ``step``).
    ts : datetime
        Reading time: the tick's time plus a fixed per-device delay of a few ms.
    metrics : dict of str to float
        One value per metric of the device's asset type, within its MetricSpec.
    health : float
        Ground truth in [0, 1]; 1 is healthy, 0 is the failure tick. Never sent
        on the wire.
    repaired : bool
        True for the device's first reading after a failure: the asset was
        repaired just before it. Producers send a maintenance event (see
        :func:`maintenance_bytes`) immediately before such a reading.
    """

    device: Device
    tick: int
    ts: datetime
    metrics: dict[str, float]
    health: float
    repaired: bool = False


def reading_bytes(r: SimReading, seq: int) -> bytes:
    """Encode a simulated reading in the wire format (ground truth is left out)."""
    d = r.device
    return encode_reading(
        device_id=d.device_id,
        asset_id=d.asset_id,
        asset_type=d.asset_type,
        ts=r.ts,
        metrics=r.metrics,
        source={"kind": "simulator", "seq": seq},
    )


def maintenance_bytes(r: SimReading) -> bytes:
    """The maintenance event to send right before a ``repaired`` reading (same key, same ts).

    It carries the reading's timestamp, so "the first reading at or after a
    maintenance event" is that very reading, online and in training alike.
    """
    d = r.device
    return encode_maintenance(
        d.device_id, d.asset_id, d.asset_type, r.ts, {"kind": "simulator", "reason": "repair"}
    )
