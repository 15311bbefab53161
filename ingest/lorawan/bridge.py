"""MQTT -> decode -> de-duplicate -> Kafka: the LoRaWAN bridge.

Two parts:

:class:`UplinkProcessor` (no network I/O of its own)
    ``offer(topic, payload, now)`` parses an uplink and hands it to the
    :class:`~ingest.lorawan.dedup.FrameDeduplicator`; ``flush(now)`` maps the
    frames whose hold window closed to readings (device registry, codec) and
    queues them on the :class:`~ingest.lorawan.publisher.KafkaPublisher`.
    Anything unusable is queued as an ingest-stage dead letter with its reason
    and raw bytes, and counted. Nothing raises for bad input.

:class:`MqttBridge`
    Subscribes to ChirpStack v4 or The Things Stack v3 uplink topics with QoS 1
    on a persistent session (MQTT 5, clean start off, session expiry), so
    messages published while the bridge is down are delivered when it comes
    back. paho's network thread only appends messages to an inbox; the bridge
    loop processes the inbox in batches, flushes Kafka once per batch and only
    then sends the MQTT PUBACKs (paho ``manual_ack``).

Delivery guarantee: at-least-once from MQTT to Kafka. A message is acked when
(1) the frame it belongs to has left the de-duplication window and (2) Kafka
acknowledged the reading or dead letter it became. Acks are released by a
watermark: every message received before the oldest frame still held. If Kafka
fails, nothing more is acked, the de-duplicator forgets what it emitted, and
the MQTT session is re-established so the broker redelivers the unacked
messages. Repeats that reach Kafka are removed downstream (readings' natural
key). Broker side, ``max_inflight_messages`` must allow a window's worth of
unacked messages (the embedded Mosquitto config sets it unlimited).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ingest.lorawan.codecs import Codec, get_codec
from ingest.lorawan.dedup import FrameDeduplicator
from ingest.lorawan.errors import UplinkError
from ingest.lorawan.mapping import map_uplink
from ingest.lorawan.publisher import PublishError, deadletter_id
from ingest.lorawan.registry import DeviceEntry
from ingest.lorawan.uplink import Network, Uplink, parse_topic, parse_uplink

__all__ = [
    "TOPIC_FILTERS",
    "AutoRegister",
    "BridgeStats",
    "MqttBridge",
    "UplinkProcessor",
    "parse_mqtt_url",
]

log = logging.getLogger(__name__)

#: Subscriptions per network server: every device's uplink events.
TOPIC_FILTERS: dict[str, str] = {
    "chirpstack": "application/+/device/+/event/up",
    "tts": "v3/+/devices/+/up",
}


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
    """

    received: int = 0
    published: int = 0
    duplicates: int = 0
    deadletters: Counter[str] = field(default_factory=Counter)
    auto_registered: int = 0
    acked: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "published": self.published,
            "duplicates": self.duplicates,
            "deadletters": sum(self.deadletters.values()),
            "deadletters_by_reason": dict(sorted(self.deadletters.items())),
            "auto_registered": self.auto_registered,
            "acked": self.acked,
        }


@dataclass(frozen=True)
class AutoRegister:
    """Operator opt-in: register unknown devices as ``asset_type`` decoded with ``codec``.

    The asset id is ``auto-<dev_eui>`` until an operator loads a registry entry.
    """

    asset_type: str
    codec: str = "passthrough"

    def entry(self, dev_eui: str) -> DeviceEntry:
        return DeviceEntry(
            dev_eui=dev_eui,
            asset_id=f"auto-{dev_eui}",
            asset_type=self.asset_type,
            codec=self.codec,
        )


class UplinkProcessor:
    """Parse, de-duplicate and map uplinks; queue readings and dead letters on Kafka.

    Parameters
    ----------
    publisher : KafkaPublisher
        Anything with ``reading(key, value)`` and ``deadletter(...)``.
    registry : mutable mapping of str to DeviceEntry
        Registered devices by lower-case DevEUI.
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
    ) -> None:
        self.publisher = publisher
        self.registry = registry
        self.network = network
        self.channel = channel
        self.dedup = dedup if dedup is not None else FrameDeduplicator()
        self.auto_register = auto_register
        self.on_register = on_register
        self.stats = BridgeStats()
        #: (reason, detail) of the most recent dead letter, for synchronous callers.
        self.last_deadletter: tuple[str, str] = ("", "")
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

    def offer(self, topic: str, payload: bytes, now: float) -> None:
        """Take one message; frames come out of :meth:`flush` once their window closes."""
        self.stats.received += 1
        try:
            # Only MQTT topics describe the device; a webhook "topic" is just a label.
            mqtt_topic = topic if self.channel == "mqtt" and topic else None
            uplink = parse_uplink(payload, topic=mqtt_topic, network=self.network)
        except UplinkError as exc:
            self._dead(topic, payload, exc, _topic_key(mqtt_topic))
            return
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

    def oldest_held(self) -> float:
        """Clock time the oldest held frame was first seen (``inf`` when none)."""
        deadline = self.dedup.next_deadline()
        if deadline is None:
            return float("inf")
        return deadline - self.dedup.window_s

    def _publish(self, uplink: Uplink) -> None:
        topic, raw = self._raw.pop(_frame_key(uplink), ("", b""))
        try:
            entry = self.registry.get(uplink.dev_eui)
            if entry is None:
                entry = self._auto_register(uplink.dev_eui)
            codec = self._codecs.get(entry.codec)
            if codec is None:
                codec = self._codecs[entry.codec] = get_codec(entry.codec)
            reading = map_uplink(uplink, entry, codec=codec)
        except UplinkError as exc:
            self._dead(topic, raw, exc, uplink.dev_eui.encode())
            return
        self.publisher.reading(reading.key, reading.value)
        self.stats.published += 1

    def _auto_register(self, dev_eui: str) -> DeviceEntry:
        if self.auto_register is None:
            raise UplinkError("unknown_device", f"dev_eui {dev_eui} is not in the registry")
        entry = self.auto_register.entry(dev_eui)
        if self.on_register is not None:
            self.on_register(entry)
        self.registry[dev_eui] = entry
        self.stats.auto_registered += 1
        log.info("auto-registered %s as %s (%s)", dev_eui, entry.asset_id, entry.asset_type)
        return entry

    def _dead(self, topic: str, raw: bytes, exc: UplinkError, key: bytes | None) -> None:
        self.stats.deadletters[exc.reason] += 1
        self.last_deadletter = (exc.reason, exc.detail)
        self.publisher.deadletter(
            key=key,
            raw=bytes(raw),
            reason=exc.reason,
            detail=exc.detail,
            dl_id=deadletter_id(self.channel, topic, bytes(raw)),
        )


def _frame_key(uplink: Uplink) -> tuple[str, int, Any]:
    return (uplink.dev_eui, uplink.f_cnt, uplink.received_at)


def _topic_key(topic: str | None) -> bytes | None:
    info = parse_topic(topic) if topic else None
    return info.device.lower().encode() if info is not None else None


def parse_mqtt_url(url: str) -> tuple[str, int, str | None, str | None]:
    """``mqtt://[user:password@]host[:port]`` -> ``(host, port, user, password)``."""
    parts = urlsplit(url if "://" in url else f"mqtt://{url}")
    if parts.scheme not in ("mqtt", "tcp") or not parts.hostname:
        raise ValueError(f"expected mqtt://host:port, got {url!r}")
    return parts.hostname, parts.port or 1883, parts.username, parts.password


class MqttBridge:
    """Run an :class:`UplinkProcessor` on a live MQTT subscription.

    Parameters
    ----------
    url : str
        ``mqtt://host:port``.
    fmt : {"chirpstack", "tts"}
        Which topics to subscribe to.
    processor : UplinkProcessor
    client_id : str
        Stable id: the broker keeps this session's subscription and unacked
        messages while the bridge is away.
    session_expiry_s : int
        How long the broker keeps the session after a disconnect.
    batch_max : int
        Most messages processed per loop (per Kafka flush).
    reconnect_min_s, reconnect_max_s : float
        Reconnect backoff (paho doubles the delay up to the maximum).
    """

    def __init__(
        self,
        url: str,
        fmt: Network,
        processor: UplinkProcessor,
        *,
        client_id: str = "citywatch-lorawan-bridge",
        session_expiry_s: int = 86_400,
        batch_max: int = 20_000,
        reconnect_min_s: float = 0.5,
        reconnect_max_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.host, self.port, user, password = parse_mqtt_url(url)
        self.fmt = fmt
        self.processor = processor
        self.batch_max = batch_max
        self._clock = clock
        self._inbox: collections.deque[tuple[float, str, bytes, int, int]] = collections.deque()
        self._pending: collections.deque[tuple[float, int, int]] = collections.deque()
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._session_expiry_s = session_expiry_s
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        if user is not None:
            self._client.username_pw_set(user, password)
        self._client.reconnect_delay_set(min_delay=reconnect_min_s, max_delay=reconnect_max_s)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

    # -- paho callbacks (network thread) ----------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.warning("MQTT connect to %s:%d refused: %s", self.host, self.port, reason_code)
            return
        log.info(
            "MQTT connected to %s:%d (session present: %s)",
            self.host,
            self.port,
            flags.session_present,
        )
        self._connected.set()
        self._subscribed.clear()
        client.subscribe(TOPIC_FILTERS[self.fmt], qos=1)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        self._subscribed.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._connected.clear()
        if reason_code != 0:
            log.warning("MQTT connection lost (%s); reconnecting with backoff", reason_code)

    def _on_message(self, client, userdata, message) -> None:
        # Only queue here: the network thread must keep reading the socket.
        self._inbox.append(
            (self._clock(), message.topic, message.payload, message.mid, message.qos)
        )

    # -- lifecycle --------------------------------------------------------

    def start(self, wait_s: float = 10.0) -> bool:
        """Connect (in the background, with reconnects) and subscribe.

        Returns whether the subscription is active within ``wait_s``; the
        client keeps retrying either way.
        """
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self._session_expiry_s
        # Let the broker send a whole de-duplication window of unacked messages.
        props.ReceiveMaximum = 65_535
        self._client.connect_async(
            self.host, self.port, keepalive=30, clean_start=False, properties=props
        )
        self._client.loop_start()
        return self._subscribed.wait(wait_s)

    def stop(self) -> None:
        """Publish and ack whatever is held, then disconnect."""
        try:
            self.step(final=True)
        finally:
            self._client.disconnect()
            self._client.loop_stop()

    # -- processing (caller's thread) -------------------------------------

    def step(self, final: bool = False) -> int:
        """Process up to ``batch_max`` inbox messages, flush Kafka, ack; return messages taken."""
        now = self._clock()
        taken = 0
        inbox, processor = self._inbox, self.processor
        while inbox and taken < self.batch_max:
            received, topic, payload, mid, qos = inbox.popleft()
            processor.offer(topic, payload, received)
            if qos > 0:
                self._pending.append((received, mid, qos))
            taken += 1
        if final:
            processor.drain()
        else:
            processor.flush(now)
        try:
            processor.publisher.flush()
        except PublishError as exc:
            self._recover(exc)
            return taken
        watermark = processor.oldest_held()
        pending, acked = self._pending, 0
        while pending and pending[0][0] < watermark:
            _, mid, qos = pending.popleft()
            self._client.ack(mid, qos)
            acked += 1
        processor.stats.acked += acked
        return taken

    def _recover(self, exc: PublishError) -> None:
        log.error("Kafka did not acknowledge a batch (%s); replaying from MQTT", exc)
        self._inbox.clear()
        self._pending.clear()
        self.processor.reset_dedup()
        # Dropping the connection makes the broker redeliver every unacked message.
        try:
            self._client.reconnect()
        except OSError as err:  # paho's own loop keeps retrying with backoff
            log.warning("MQTT reconnect failed (%s); the client retries", err)

    def run(
        self,
        should_stop: Callable[[], bool] = lambda: False,
        idle_sleep_s: float = 0.02,
        on_progress: Callable[[int], None] | None = None,
    ) -> BridgeStats:
        """Loop until ``should_stop()``; then flush what is held and disconnect."""
        try:
            while not should_stop():
                taken = self.step()
                if on_progress is not None and taken:
                    on_progress(taken)
                if not taken:
                    time.sleep(idle_sleep_s)
        finally:
            self.stop()
        return self.processor.stats

    def wait_subscribed(self, timeout_s: float) -> bool:
        """Block until the current connection's subscription is confirmed."""
        return self._subscribed.wait(timeout_s)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def backlog(self) -> int:
        """Messages received but not yet processed."""
        return len(self._inbox)


def default_client_id(prefix: str = "citywatch-lorawan") -> str:
    """A unique client id (for tests and benchmarks that must not share a session)."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"
