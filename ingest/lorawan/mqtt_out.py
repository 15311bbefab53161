"""Publish simulated uplinks to an MQTT broker, as a network server would.

:class:`UplinkPublisher` is a ``send(key, value)`` callable for
:func:`ingest.producer.run_simulation`: it takes a wire-format reading, encodes
it with :class:`~ingest.lorawan.uplink_sim.UplinkEncoder` (one copy per
simulated gateway, some frames corrupted) and publishes every copy with QoS 1.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from datetime import datetime

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from ingest.lorawan.mqtt_conn import parse_mqtt_url
from ingest.lorawan.uplink_sim import UplinkEncoder

__all__ = ["UplinkPublisher"]

log = logging.getLogger(__name__)


class UplinkPublisher:
    """Encode readings as uplinks and publish them to MQTT (QoS 1).

    Parameters
    ----------
    url : str
        ``mqtt://host:port``.
    encoder : UplinkEncoder
    client_id : str

    Attributes
    ----------
    frames : int
        Readings encoded (one frame each).
    messages : int
        MQTT messages published (copies and corrupted frames included).
    corrupted : Counter
        Corrupted frames by the dead-letter reason they should get.
    """

    def __init__(self, url: str, encoder: UplinkEncoder, *, client_id: str = "") -> None:
        target = parse_mqtt_url(url)
        self.encoder = encoder
        self.frames = 0
        self.messages = 0
        self.corrupted: Counter[str] = Counter()
        self._infos: list[mqtt.MQTTMessageInfo] = []
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311
        )
        # Unlimited local queue: the simulator must never drop a message it counted.
        self._client.max_queued_messages_set(0)
        self._client.max_inflight_messages_set(1000)
        target.configure(self._client)
        self._client.connect(target.host, target.port, keepalive=30)
        self._client.loop_start()

    def send(self, key: bytes, value: bytes) -> None:
        """Publish the uplinks of one wire-format reading (``key`` is unused)."""
        reading = json.loads(value)
        ts = datetime.fromisoformat(reading["ts"])
        self.publish_reading(reading["device_id"], reading["metrics"], ts)

    def publish_reading(self, dev_eui: str, metrics: dict[str, float], ts: datetime) -> None:
        """Encode one reading's frame and publish every copy."""
        uplinks = self.encoder.encode(dev_eui, metrics, ts)
        self.frames += 1
        for up in uplinks:
            if up.corruption is not None:
                self.corrupted[up.corruption] += 1
            self._infos.append(self._client.publish(up.topic, up.payload, qos=1))
            self.messages += 1
        if len(self._infos) > 10_000:
            self._infos = [i for i in self._infos if not i.is_published()]

    def flush(self, timeout_s: float = 60.0) -> None:
        """Wait until the broker acknowledged every message published so far."""
        for info in self._infos:
            info.wait_for_publish(timeout_s)
        self._infos = []

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._client.disconnect()
            self._client.loop_stop()
