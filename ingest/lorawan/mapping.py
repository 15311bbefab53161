"""Turn a deduplicated uplink plus its registry entry into a citywatch reading.

Steps: decode the payload with the device's codec (``passthrough`` uses the
network server's decoded object), flatten nested values to dotted keys
(``gps_1.latitude``), rename them through the entry's ``metric_map``, keep the
metrics in the asset type's catalogue, and serialise with
:func:`core.wire.encode_reading`.

Decoded values that are not metrics of the asset type (a battery voltage, a
status bit, an unmapped LPP channel) are dropped from ``metrics`` but listed
by name in ``source.dropped_metrics``: the reading stays valid for the
validator, and nothing disappears without a trace. Keeping them would make
every such reading fail catalogue validation downstream. Values outside the
catalogue's physical range are kept: judging them is the validator's job.

Failures raise :class:`~ingest.lorawan.errors.UplinkError`: ``unknown_device``,
``decode_error`` (the codec reported errors) and ``no_metrics`` (nothing left
to publish).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.assets import ASSET_TYPES
from core.wire import encode_reading
from ingest.lorawan.codecs import Codec, DecodeResult, PassthroughCodec, get_codec
from ingest.lorawan.errors import UplinkError
from ingest.lorawan.registry import DeviceEntry, find_entry
from ingest.lorawan.uplink import Uplink

__all__ = ["MappedReading", "flatten", "map_uplink", "map_with_registry", "reading_source"]


@dataclass(frozen=True)
class MappedReading:
    """A reading ready for Kafka.

    Attributes
    ----------
    key : bytes
        Kafka key: the device's citywatch id (DevEUI, else network-server id), so
        a device's readings stay ordered in one partition.
    value : bytes
        The reading, as :func:`core.wire.encode_reading` writes it.
    metrics : mapping
        The published metrics.
    dropped : tuple of str
        Decoded keys that are not metrics of the asset type.
    warnings : tuple of str
        Codec and mapping warnings (also in ``source.codec_warnings``).
    """

    key: bytes
    value: bytes
    metrics: Mapping[str, float]
    dropped: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Flatten nested decoded values into dotted keys, keeping only numbers.

    Examples
    --------
    >>> flatten({"gps_1": {"latitude": 42.35, "longitude": -87.9}, "t": 1})
    {'gps_1.latitude': 42.35, 'gps_1.longitude': -87.9, 't': 1}
    """
    out: dict[str, float] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if type(value) is dict or isinstance(value, Mapping):
            out.update(flatten(value, f"{path}."))
        elif isinstance(value, bool):
            out[path] = int(value)
        elif isinstance(value, int | float):
            out[path] = value
    return out


def reading_source(uplink: Uplink, codec: str | None = None) -> dict[str, Any]:
    """The ``source`` block of a LoRaWAN reading: radio and network facts.

    Includes the network server, frame counter and port, gateway count and
    ids, the best RSSI and SNR over those gateways, spreading factor and
    frequency, so link quality can be charted next to the asset's metrics.
    """
    source: dict[str, Any] = {
        "kind": "lorawan",
        "network": uplink.network,
        "f_cnt": uplink.f_cnt,
        "f_port": uplink.f_port,
        "gateways": uplink.gateway_count,
        "rssi": uplink.best_rssi,
        "snr": uplink.best_snr,
        "sf": uplink.spreading_factor,
        "frequency": uplink.frequency,
        "gateway_ids": list(uplink.gateway_ids),
    }
    if codec is not None:
        source["codec"] = codec
    if uplink.simulated:
        # Injected by the network server's console: kept out of training by default.
        source["simulated"] = True
    if uplink.time_source != "network":
        source["time_source"] = uplink.time_source
    # Where to address a downlink: ChirpStack by application and DevEUI, The Things
    # Stack by application, tenant and its own device id.
    if uplink.application_id is not None:
        source["application_id"] = uplink.application_id
    if uplink.network == "tts" and uplink.device_name is not None:
        source["ns_device_id"] = uplink.device_name
    if uplink.tenant is not None:
        source["tenant"] = uplink.tenant
    return source


def _decode(uplink: Uplink, entry: DeviceEntry, codec: Codec) -> DecodeResult:
    if isinstance(codec, PassthroughCodec):
        return codec.decode_object(uplink.decoded)
    return codec.decode(uplink.payload, uplink.f_port, entry.variables)


def map_uplink(
    uplink: Uplink,
    entry: DeviceEntry,
    *,
    codec: Codec | None = None,
    profile_dirs: Sequence[str | Path] | None = None,
) -> MappedReading:
    """Decode and map one uplink of a registered device.

    Parameters
    ----------
    uplink : Uplink
        A deduplicated uplink.
    entry : DeviceEntry
        The device's registry entry (found by :func:`find_entry`); its
        :attr:`~DeviceEntry.key` is the reading's device id and Kafka key.
    codec : Codec, optional
        Overrides ``get_codec(entry.codec)``; handy in tests.
    profile_dirs : sequence of path, optional
        Extra profile directories, as given to :func:`load_registry`.

    Returns
    -------
    MappedReading

    Raises
    ------
    UplinkError
        ``decode_error`` or ``no_metrics``.
    """
    codec = codec or get_codec(entry.codec, profile_dirs=profile_dirs)
    result = _decode(uplink, entry, codec)
    if result.errors:
        raise UplinkError("decode_error", f"{codec.name}: " + "; ".join(result.errors))
    warnings = list(result.warnings)
    catalogue = ASSET_TYPES[entry.asset_type].metric_names
    metrics: dict[str, float] = {}
    dropped: list[str] = []
    for key, value in flatten(result.data).items():
        name = entry.metric_map.get(key, key)
        if name not in catalogue:
            dropped.append(key)
        elif name in metrics:
            warnings.append(f"{key}: {name} already set by another key; ignored")
        else:
            metrics[name] = value
    if not metrics:
        decoded = ", ".join(dropped) or "nothing"
        raise UplinkError(
            "no_metrics",
            f"{codec.name} decoded {decoded}; none is a {entry.asset_type} metric "
            f"{list(catalogue)} (add a metric_map to the registry entry?)",
        )
    source = reading_source(uplink, codec.name)
    if dropped:
        source["dropped_metrics"] = dropped
    if warnings:
        source["codec_warnings"] = warnings
    wire = encode_reading(
        device_id=entry.key,
        asset_id=entry.asset_id,
        asset_type=entry.asset_type,
        ts=uplink.received_at,
        metrics=metrics,
        source=source,
    )
    return MappedReading(
        key=entry.key.encode(),
        value=wire,
        metrics=metrics,
        dropped=tuple(dropped),
        warnings=tuple(warnings),
    )


def map_with_registry(
    uplink: Uplink,
    registry: Mapping[str, DeviceEntry],
    *,
    profile_dirs: Sequence[str | Path] | None = None,
) -> MappedReading:
    """Look the device up in ``registry`` and :func:`map_uplink` it.

    Raises
    ------
    UplinkError
        ``unknown_device`` when the DevEUI is not registered, plus the
        reasons of :func:`map_uplink`.
    """
    entry = find_entry(registry, uplink.dev_eui, uplink.device_name)
    if entry is None:
        raise UplinkError("unknown_device", f"device {uplink.device} is not in the registry")
    return map_uplink(uplink, entry, profile_dirs=profile_dirs)
