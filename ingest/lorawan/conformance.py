"""Conformance check: run captured uplink messages through the bridge's own steps.

A directory of example messages comes with a ``manifest.csv`` (columns
``file, network, mqtt_topic, expect, note, source``; ``expect`` is ``reading``
or ``deadletter``). :func:`check_directory` feeds each file to an
:class:`~ingest.lorawan.processor.UplinkProcessor`, the same class the MQTT
bridge and the webhooks use (splitting, parsing, de-duplication, registry,
codec, mapping), with a publisher that records instead of producing to Kafka.
A file given an MQTT topic is checked against it, as the bridge does.

A device missing from the registry is a dead letter (``unknown_device``) in
the bridge. Here, unless ``strict``, it counts as a reading: the message
parsed into an identified, timed uplink, and only an operator's registry
entry (codec, asset) is missing. Its result says so (``registered: false``).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingest.lorawan.dedup import FrameDeduplicator
from ingest.lorawan.processor import UplinkProcessor
from ingest.lorawan.registry import DeviceEntry
from ingest.lorawan.uplink import parse_uplink, split_messages

__all__ = ["ManifestRow", "RecordingPublisher", "check_directory", "check_message", "read_manifest"]


@dataclass
class RecordingPublisher:
    """A publisher for :class:`UplinkProcessor` that keeps what it is given."""

    readings: list[tuple[bytes, bytes]] = field(default_factory=list)
    deadletters: list[dict[str, Any]] = field(default_factory=list)

    def reading(self, key: bytes, value: bytes) -> None:
        self.readings.append((key, value))

    def deadletter(self, **kwargs: Any) -> None:
        self.deadletters.append(kwargs)

    def flush(self) -> int:
        return len(self.readings) + len(self.deadletters)


@dataclass(frozen=True)
class ManifestRow:
    """One line of ``manifest.csv``."""

    file: str
    network: str | None
    mqtt_topic: str | None
    expect: str | None
    note: str = ""


def read_manifest(directory: str | Path) -> list[ManifestRow]:
    """The rows of ``DIRECTORY/manifest.csv`` (``file`` is required, the rest optional)."""
    path = Path(directory) / "manifest.csv"
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        if "file" not in (reader.fieldnames or ()):
            raise ValueError(f"{path}: no 'file' column")
        return [
            ManifestRow(
                file=row["file"].strip(),
                network=(row.get("network") or "").strip() or None,
                mqtt_topic=(row.get("mqtt_topic") or "").strip() or None,
                expect=(row.get("expect") or "").strip() or None,
                note=(row.get("note") or "").strip(),
            )
            for row in reader
            if (row.get("file") or "").strip()
        ]


def _summary(value: bytes) -> dict[str, Any]:
    reading = json.loads(value)
    source = reading.get("source") or {}
    return {
        "device_id": reading["device_id"],
        "asset_id": reading["asset_id"],
        "ts": reading["ts"],
        "time_source": source.get("time_source", "network"),
        "simulated": bool(source.get("simulated", False)),
        "metrics": sorted(reading.get("metrics") or {}),
    }


def _unregistered(raw: bytes, network: str | None, topic: str | None) -> dict[str, Any]:
    # Parsed again only to describe the frame; the verdict came from the processor.
    uplink = parse_uplink(raw, topic=topic, network=network)  # type: ignore[arg-type]
    return {
        "device_id": uplink.device,
        "ts": uplink.received_at.isoformat(),
        "time_source": uplink.time_source,
        "simulated": uplink.simulated,
        "registered": False,
    }


def check_message(
    raw: bytes,
    *,
    registry: Mapping[str, DeviceEntry] | None = None,
    network: str | None = None,
    topic: str | None = None,
    strict: bool = False,
    profile_dirs: Sequence[str | Path] | None = None,
) -> dict[str, Any]:
    """What the bridge makes of one message: ``{"result", "reason", ...}``.

    ``result`` is ``reading`` when every uplink in the message became a
    reading (or, unless ``strict``, an uplink of an unregistered device), and
    ``deadletter`` otherwise, with the first dead letter's ``reason: detail``.
    """
    publisher = RecordingPublisher()
    processor = UplinkProcessor(
        publisher,
        dict(registry or {}),
        network=network,  # type: ignore[arg-type]
        channel="mqtt" if topic else "http",
        dedup=FrameDeduplicator(window_s=0),
        profile_dirs=profile_dirs,
    )
    processor.offer(topic or "file", raw, 0.0)
    processor.drain()
    processor.confirm()
    parts = split_messages(raw) or [raw]
    uplinks = [_summary(value) | {"registered": True} for _key, value in publisher.readings]
    dead = []
    for letter in publisher.deadletters:
        if letter["reason"] == "unknown_device" and not strict:
            uplinks.append(_unregistered(letter["raw"], network, topic))
        else:
            dead.append(f"{letter['reason']}: {letter['detail']}")
    result: dict[str, Any] = {
        "result": "deadletter" if dead or not uplinks else "reading",
        "reason": dead[0] if dead else (None if uplinks else "no uplink in the message"),
        "messages": len(parts),
        "readings": len(uplinks),
        "deadletters": len(dead),
    }
    if uplinks:
        result["uplinks"] = uplinks
    if processor.stats.duplicates:
        result["duplicates"] = processor.stats.duplicates
    return result


def check_directory(
    directory: str | Path,
    *,
    registry: Mapping[str, DeviceEntry] | None = None,
    strict: bool = False,
    profile_dirs: Sequence[str | Path] | None = None,
) -> list[dict[str, Any]]:
    """:func:`check_message` for every file of the directory's manifest, in its order.

    Each result also carries the manifest's ``expect`` and whether it ``agrees``.
    """
    directory = Path(directory)
    out = []
    for row in read_manifest(directory):
        path = directory / row.file
        entry: dict[str, Any] = {"file": row.file}
        try:
            raw = path.read_bytes()
        except OSError as exc:
            entry |= {"result": "missing", "reason": f"cannot read: {exc.strerror}"}
        else:
            entry |= check_message(
                raw,
                registry=registry,
                network=row.network,
                topic=row.mqtt_topic,
                strict=strict,
                profile_dirs=profile_dirs,
            )
        if row.expect:
            entry["expect"] = row.expect
            entry["agrees"] = entry["result"] == row.expect
        out.append(entry)
    return out
