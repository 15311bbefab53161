"""Parse, de-duplicate and map uplinks; queue readings and dead letters on Kafka.

:class:`UplinkProcessor` has no network I/O of its own. ``offer(topic,
payload, now)`` parses an uplink and hands it to the
:class:`~ingest.lorawan.dedup.FrameDeduplicator`; ``flush(now)`` maps the frames
whose hold window closed to readings (device registry, codec) and queues them
on the :class:`~ingest.lorawan.publisher.KafkaPublisher`; ``confirm()`` waits
until Kafka acknowledged all of it.

Each message and each frame is isolated: bad input is an ``UplinkError`` with
its reason, and *any other exception* while handling one frame (a bug, a codec
blowing up on hostile bytes) becomes an ``internal_error`` dead letter naming
the exception, so the next frame is handled as usual. Only a
:class:`~ingest.lorawan.errors.TransientError` (the database or Kafka is
unavailable) escapes: the caller must hold its input and retry.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from ingest.lorawan.codecs import Codec, get_codec
from ingest.lorawan.dedup import FrameDeduplicator
from ingest.lorawan.errors import TransientError, UplinkError
from ingest.lorawan.mapping import map_uplink
from ingest.lorawan.publisher import deadletter_id
from ingest.lorawan.registry import DeviceEntry, find_entry
from ingest.lorawan.uplink import (
    MAX_MESSAGE_BYTES,
    Network,
    Uplink,
    parse_topic,
    parse_uplink,
    split_messages,
)

__all__ = ["AutoRegister", "BridgeStats", "UplinkProcessor"]

log = logging.getLogger(__name__)


@dataclass
class BridgeStats:
    """Counters of one bridge (or webhook) process.

    Attributes
    ----------
    received : int
        Messages offered (every copy, good or bad).
    published : int
        Readings queued for Kafka (one per frame).
    duplicates : int
        Copies merged into a frame or dropped as late repeats.
    deadletters : Counter
        Dead letters by reason.
    auto_registered : int
        Unknown devices registered because the operator allowed it.
    acked : int
        Input messages acknowledged after Kafka confirmed their output.
    transient_failures : int
        Times a dependency (Kafka, database) failed and the input was held for a retry.
    """

    received: int = 0
    published: int = 0
    duplicates: int = 0
    deadletters: Counter[str] = field(default_factory=Counter)
    auto_registered: int = 0
    acked: int = 0
    transient_failures: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "published": self.published,
            "duplicates": self.duplicates,
            "deadletters": sum(self.deadletters.values()),
            "deadletters_by_reason": dict(sorted(self.deadletters.items())),
            "auto_registered": self.auto_registered,
            "acked": self.acked,
            "transient_failures": self.transient_failures,
        }


@dataclass(frozen=True)
class AutoRegister:
    """Operator opt-in: register unknown devices as ``asset_type`` decoded with ``codec``.

    The asset id is ``auto-<dev_eui>`` (``auto-<device id>`` for a device
    known only by its network-server id) until an operator loads a registry entry.
    """

    asset_type: str
    codec: str = "passthrough"

    def entry(self, dev_eui: str | None, device_id: str | None = None) -> DeviceEntry:
        return DeviceEntry(
            dev_eui=dev_eui,
            device_id=None if dev_eui else device_id,
            asset_id=f"auto-{dev_eui or device_id}",
            asset_type=self.asset_type,
            codec=self.codec,
        )


class UplinkProcessor:
    """Parse, de-duplicate and map uplinks; queue readings and dead letters on Kafka.

    Parameters
    ----------
    publisher : KafkaPublisher
        Anything with ``reading(key, value)``, ``deadletter(...)`` and ``flush()``.
    registry : mutable mapping of str to DeviceEntry
        Registered devices by :attr:`DeviceEntry.key` (found by DevEUI or
        network-server device id, :func:`find_entry`). A lookup may raise
        :class:`TransientError` (database down): the frame is then held.
    network : {"chirpstack", "tts"}, optional
        Force the format; otherwise the topic or body decides.
    channel : str
        ``mqtt`` or ``http``: prefix of dead-letter ids. Only ``mqtt`` topics are
        checked against the body (device, application, event).
    dedup : FrameDeduplicator, optional
    auto_register : AutoRegister, optional
        Register unknown devices instead of dead-lettering them.
    on_register : callable, optional
        Called with each auto-registered entry before its first reading is
        queued (the CLI stores it in the database, so the worker accepts it).
    max_bytes : int
        Larger messages are dead-lettered as ``too_large`` without being parsed.
    profile_dirs : sequence of path, optional
        Directories of ``profile:<name>`` codecs; default: the shipped profiles.
    """

    def __init__(
        self,
        publisher: Any,
        registry: MutableMapping[str, DeviceEntry],
        *,
        network: Network | None = None,
        channel: str = "mqtt",
        dedup: FrameDeduplicator | None = None,
        auto_register: AutoRegister | None = None,
        on_register: Callable[[DeviceEntry], None] | None = None,
        max_bytes: int = MAX_MESSAGE_BYTES,
        profile_dirs: Any = None,
    ) -> None:
        self.publisher = publisher
        self.registry = registry
        self.network = network
        self.channel = channel
        self.dedup = dedup if dedup is not None else FrameDeduplicator()
        self.auto_register = auto_register
        self.on_register = on_register
        self.max_bytes = max_bytes
        self.profile_dirs = profile_dirs
        self.stats = BridgeStats()
        #: (reason, detail) of the most recent dead letter, for synchronous callers.
        self.last_deadletter: tuple[str, str] = ("", "")
        #: (device, f_cnt) of the frames of the most recent message, for :meth:`forget_last`.
        self.last_frames: list[tuple[str, int]] = []
        # Raw bytes of each held frame's first copy, for its dead letter if mapping fails.
        self._raw: dict[tuple[str, int, Any], tuple[str, bytes]] = {}
        # get_codec resolves profile paths on every call; look each codec up once.
        self._codecs: dict[str, Codec] = {}

    def reset_dedup(self) -> None:
        """Forget every frame (after a failed Kafka flush: their copies will be redelivered)."""
        self.dedup = FrameDeduplicator(
            window_s=self.dedup.window_s,
            memory_s=self.dedup.memory_s,
            max_skew_s=self.dedup.max_skew_s,
            max_frames=self.dedup.max_frames,
        )
        self._raw.clear()

    def forget_last(self) -> None:
        """Forget the last message's frames: their output never reached Kafka, so a retry is new."""
        for frame in self.last_frames:
            self.dedup.forget(*frame)
        self.last_frames = []

    def offer(self, topic: str, payload: bytes, now: float) -> None:
        """Take one message; frames come out of :meth:`flush` once their window closes.

        A body holding several uplinks (a JSON array, newline-delimited
        objects: :func:`~ingest.lorawan.uplink.split_messages`) is taken
        element by element, each counted, and contained, on its own: one bad
        element is one dead letter, and its neighbours go on.

        Raises
        ------
        TransientError
            Only when a dependency failed; every other failure is a dead letter.
        """
        self.last_frames = []
        try:
            parts = split_messages(payload, self.max_bytes)
        except Exception:  # splitting is parsing: a fault here must not lose the message
            log.exception("splitting a message on %.200r raised", topic)
            parts = None
        if not parts:
            # One message; or an empty array, refused whole so it too leaves a trace.
            self._offer_contained(topic, payload, now, None)
            return
        # The id names the body (by its hash, taken once) and the element, so a
        # retried body maps onto the same dead letters.
        body = hashlib.sha256(payload).digest()
        for index, part in enumerate(parts):
            self._offer_contained(topic, part, now, body + b"#%d" % index)

    def _offer_contained(
        self, topic: str, payload: bytes, now: float, id_source: bytes | None
    ) -> None:
        self.stats.received += 1
        try:
            self._offer(topic, payload, now, id_source)
        except TransientError:
            raise
        except Exception as exc:  # a bug or a library fault on hostile input: contain it
            log.exception("uplink on %.200r raised; dead-lettered as internal_error", topic)
            self._dead(topic, payload, _internal(exc), None, id_source=id_source)

    def too_large(self, topic: str, head: bytes, size: int, sha256: str) -> None:
        """Dead-letter a message read only in part (``head``): the webhook's big bodies."""
        self.stats.received += 1
        self.last_frames = []
        exc = UplinkError("too_large", f"{size} bytes > {self.max_bytes}")
        self._dead(topic, head, exc, None, size=size, sha256=sha256)

    def _offer(self, topic: str, payload: bytes, now: float, id_source: bytes | None) -> None:
        # Only MQTT topics describe the device; a webhook "topic" is just a label.
        mqtt_topic = topic if self.channel == "mqtt" and topic else None
        if len(payload) > self.max_bytes:
            exc = UplinkError("too_large", f"{len(payload)} bytes > {self.max_bytes}")
            self._dead(topic, payload, exc, _topic_key(mqtt_topic), id_source=id_source)
            return
        try:
            uplink = parse_uplink(
                payload, topic=mqtt_topic, network=self.network, max_bytes=self.max_bytes
            )
        except UplinkError as exc:
            self._dead(topic, payload, exc, _topic_key(mqtt_topic), id_source=id_source)
            return
        self.last_frames.append((uplink.device, uplink.f_cnt))
        stats = self.dedup.stats
        copies_before = stats.merged + stats.late
        emitted = self.dedup.offer(uplink, now=now)
        if stats.merged + stats.late > copies_before:
            self.stats.duplicates += 1
        else:
            self._raw.setdefault(_frame_key(uplink), (topic, bytes(payload)))
        if emitted is not None:
            self._publish(emitted)

    def flush(self, now: float) -> int:
        """Map and queue every frame whose hold window closed; return how many."""
        frames = self.dedup.flush(now=now)
        for uplink in frames:
            self._publish(uplink)
        return len(frames)

    def drain(self) -> int:
        """Map and queue every held frame now (shutdown)."""
        frames = self.dedup.drain()
        for uplink in frames:
            self._publish(uplink)
        return len(frames)

    def confirm(self) -> int:
        """Block until Kafka acknowledged everything queued; return how many messages.

        Messages Kafka refused (too large for it) were replaced by
        ``kafka_refused`` dead letters; the counters follow.

        Raises
        ------
        PublishError
            Kafka did not acknowledge: hold the inputs and retry.
        """
        delivered = self.publisher.flush()
        for refusal in getattr(self.publisher, "take_refusals", list)():
            if refusal.was_reason is None:
                self.stats.published -= 1
            else:
                self.stats.deadletters[refusal.was_reason] -= 1
            self.stats.deadletters["kafka_refused"] += 1
            self.last_deadletter = ("kafka_refused", refusal.detail)
        return delivered

    def oldest_held(self) -> float:
        """Clock time the oldest held frame was first seen (``inf`` when none)."""
        deadline = self.dedup.next_deadline()
        if deadline is None:
            return float("inf")
        return deadline - self.dedup.window_s

    def _publish(self, uplink: Uplink) -> None:
        topic, raw = self._raw.pop(_frame_key(uplink), ("", b""))
        key = uplink.device.encode("utf-8", "backslashreplace")
        try:
            entry = find_entry(self.registry, uplink.dev_eui, uplink.device_name)
            if entry is None:
                entry = self._auto_register(uplink)
            codec = self._codecs.get(entry.codec)
            if codec is None:
                codec = get_codec(entry.codec, profile_dirs=self.profile_dirs)
                self._codecs[entry.codec] = codec
            reading = map_uplink(uplink, entry, codec=codec)
        except UplinkError as exc:
            self._dead(topic, raw, exc, key)
            return
        except TransientError:
            raise
        except Exception as exc:  # a bug, a broken profile, a codec fault: this frame only
            log.exception("mapping %s f_cnt %d raised", uplink.device, uplink.f_cnt)
            self._dead(topic, raw, _internal(exc), key)
            return
        self.publisher.reading(reading.key, reading.value)
        self.stats.published += 1

    def _auto_register(self, uplink: Uplink) -> DeviceEntry:
        if self.auto_register is None:
            raise UplinkError("unknown_device", f"{_identity(uplink)} is not in the registry")
        entry = self.auto_register.entry(uplink.dev_eui, uplink.device_name)
        if self.on_register is not None:
            self.on_register(entry)
        self.registry[entry.key] = entry
        self.stats.auto_registered += 1
        log.info("auto-registered %s as %s (%s)", entry.key, entry.asset_id, entry.asset_type)
        return entry

    def _dead(
        self,
        topic: str,
        raw: bytes,
        exc: UplinkError,
        key: bytes | None,
        *,
        size: int | None = None,
        sha256: str | None = None,
        id_source: bytes | None = None,
    ) -> None:
        raw = bytes(raw)
        self.stats.deadletters[exc.reason] += 1
        self.last_deadletter = (exc.reason, exc.detail)
        if id_source is not None:  # one element of a body holding several uplinks
            dl_id = deadletter_id(self.channel, topic, id_source)
        elif size is None:  # the id hashes the whole message; for a head only, use its sha256
            dl_id = deadletter_id(self.channel, topic, raw)
        else:
            dl_id = deadletter_id(self.channel, topic, (sha256 or "").encode())
        self.publisher.deadletter(
            key=key,
            raw=raw,
            reason=exc.reason,
            detail=exc.detail,
            dl_id=dl_id,
            raw_size=size,
            raw_sha256=sha256 or hashlib.sha256(raw).hexdigest(),
        )


def _internal(exc: BaseException) -> UplinkError:
    return UplinkError("internal_error", f"{type(exc).__name__}: {exc}"[:500])


def _identity(uplink: Uplink) -> str:
    if uplink.dev_eui:
        return f"dev_eui {uplink.dev_eui}"
    return f"device_id {uplink.device_name}"


def _frame_key(uplink: Uplink) -> tuple[str, int, Any]:
    return (uplink.device, uplink.f_cnt, uplink.received_at)


def _topic_key(topic: str | None) -> bytes | None:
    info = parse_topic(topic) if topic else None
    return info.device.lower().encode("utf-8", "backslashreplace") if info is not None else None
