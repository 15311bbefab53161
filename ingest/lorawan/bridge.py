"""MQTT -> decode -> de-duplicate -> Kafka: the LoRaWAN bridge.

:class:`MqttBridge` runs an :class:`~ingest.lorawan.processor.UplinkProcessor`
(parse, de-duplicate, map, queue on Kafka; re-exported here) on a live MQTT
subscription. It subscribes to ChirpStack v4 or The Things Stack v3 uplink
topics with QoS 1 on a persistent session (MQTT 5, clean start off, session
expiry), so messages published while the bridge is down are delivered when it
comes back. paho's network thread only appends messages to an inbox; the
bridge loop processes the inbox in batches, flushes Kafka once per batch and
only then sends the MQTT PUBACKs (paho ``manual_ack``).

Delivery guarantee: at-least-once from MQTT to Kafka. A message is acked when
(1) the frame it belongs to has left the de-duplication window and (2) Kafka
acknowledged the reading or dead letter it became. Acks are released by a
watermark: every message received before the oldest frame still held.

Containment: every frame is isolated by the processor (a bad or poisonous
message becomes a dead letter with its reason, a 2 MB one a ``too_large`` dead
letter cut to 64 KiB), so a redelivered message can never crash-loop the
bridge. When a dependency fails (Kafka does not acknowledge, the registry's
database is down), nothing more is acked, the de-duplicator forgets what it
emitted, the bridge waits (doubling up to 30 s) and re-establishes the MQTT
session so the broker redelivers every unacked message. Any other exception
escaping a step (a bug outside the per-frame code) drops the pending acks
before it propagates: ``stop()`` then acks nothing it did not publish.
Repeats that reach Kafka are removed downstream (readings' natural key, dead
letters' ``deadletter_id``). Broker side, ``max_inflight_messages`` must allow
a window's worth of unacked messages (the embedded Mosquitto config sets it
unlimited).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
import uuid
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ingest.lorawan.errors import TransientError
from ingest.lorawan.mqtt_conn import MqttTarget, parse_mqtt_url
from ingest.lorawan.processor import AutoRegister, BridgeStats, UplinkProcessor
from ingest.lorawan.publisher import PublishError
from ingest.lorawan.uplink import Network

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
        url: str | MqttTarget,
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
        self._failures = 0
        # Pause before replaying after a dependency failed, doubling per failure in a row.
        self._backoff_min_s = min(reconnect_min_s, 0.5)
        self._backoff_max_s = reconnect_max_s
        self.target = url if isinstance(url, MqttTarget) else parse_mqtt_url(url)
        self.host, self.port = self.target.host, self.target.port
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
        self.target.configure(self._client)
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
        try:
            while inbox and taken < self.batch_max:
                received, topic, payload, mid, qos = inbox.popleft()
                if qos > 0:
                    self._pending.append((received, mid, qos))
                taken += 1
                processor.offer(topic, payload, received)
            if final:
                processor.drain()
            else:
                processor.flush(now)
            processor.confirm()
        except (PublishError, TransientError) as exc:
            self._recover(exc)
            return taken
        except BaseException:
            # Unknown state: ack nothing of this session's pending messages (the
            # broker redelivers them), and let the caller see the bug.
            self._drop_pending()
            raise
        self._failures = 0
        watermark = processor.oldest_held()
        pending, acked = self._pending, 0
        while pending and pending[0][0] < watermark:
            _, mid, qos = pending.popleft()
            self._client.ack(mid, qos)
            acked += 1
        processor.stats.acked += acked
        return taken

    def _drop_pending(self) -> None:
        self._inbox.clear()
        self._pending.clear()
        self.processor.reset_dedup()

    def _recover(self, exc: Exception) -> None:
        self._failures += 1
        self.processor.stats.transient_failures += 1
        delay = min(self._backoff_min_s * 2 ** (self._failures - 1), self._backoff_max_s)
        log.error("%s; holding the batch, replaying from MQTT in %.1f s", exc, delay)
        self._drop_pending()
        time.sleep(delay)
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
