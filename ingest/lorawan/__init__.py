"""LoRaWAN decoding layer: network-server JSON in, citywatch readings out.

The pipeline, one uplink message at a time::

    uplink = parse_uplink(body, topic=topic)          # Uplink | UplinkError
    dedup.offer(uplink)                               # hold copies briefly
    for frame in dedup.flush():                       # one Uplink per frame
        reading = map_with_registry(frame, registry)  # MappedReading | UplinkError
        produce(topic="readings", key=reading.key, value=reading.value)

Every failure is an :class:`UplinkError` with a ``reason``; the caller turns
it into a dead letter with the raw bytes. All of it is pure code: no network
I/O happens in this package.
"""

from ingest.lorawan.codecs import (
    Codec,
    DecodeResult,
    UnknownCodecError,
    available_codecs,
    get_codec,
)
from ingest.lorawan.dedup import DedupStats, FrameDeduplicator
from ingest.lorawan.errors import REASONS, UplinkError
from ingest.lorawan.mapping import MappedReading, map_uplink, map_with_registry
from ingest.lorawan.registry import DeviceEntry, RegistryError, load_registry
from ingest.lorawan.uplink import GatewayRx, TopicInfo, Uplink, parse_topic, parse_uplink

__all__ = [
    "REASONS",
    "Codec",
    "DecodeResult",
    "DedupStats",
    "DeviceEntry",
    "FrameDeduplicator",
    "GatewayRx",
    "MappedReading",
    "RegistryError",
    "TopicInfo",
    "UnknownCodecError",
    "Uplink",
    "UplinkError",
    "available_codecs",
    "get_codec",
    "load_registry",
    "map_uplink",
    "map_with_registry",
    "parse_topic",
    "parse_uplink",
]
