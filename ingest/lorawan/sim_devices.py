"""Simulated sensors that obey downlinks: the radio side of the adaptive-sampling loop.

:class:`SimulatedRadios` subscribes to the downlink topics of both network
servers on the simulator's MQTT broker (ChirpStack's ``.../command/down``,
The Things Stack's ``.../down/push``), decodes each command with the device
profile's downlink encoder, as the sensor's firmware would, and keeps each
device's reporting interval. The simulator then asks :meth:`due` before
transmitting a reading: a sensor sends only when its interval has passed
since its last transmission, or when a reading was requested.

A command the device cannot read (no encoder, wrong port, bad bytes) is
counted and ignored, as real firmware does.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
from collections import Counter
from collections.abc import Mapping
from datetime import datetime

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from ingest.lorawan.codecs.downlink import DownlinkError, downlink_encoder
from ingest.lorawan.mqtt_conn import parse_mqtt_url
from ingest.lorawan.registry import DeviceEntry

__all__ = ["SimulatedRadios"]

log = logging.getLogger(__name__)
TOPICS = ("application/+/device/+/command/down", "v3/+/devices/+/down/push")


def _commands(topic: str, body: bytes) -> tuple[str, list[tuple[int, bytes]]]:
    """``(device, [(f_port, payload), ...])`` of a downlink message of either server."""
    doc = json.loads(body)
    parts = topic.split("/")
    if parts[0] == "application":
        return parts[3], [(int(doc["fPort"]), base64.b64decode(doc["data"], validate=True))]
    items = doc["downlinks"]
    return parts[3], [
        (int(d["f_port"]), base64.b64decode(d["frm_payload"], validate=True)) for d in items
    ]


class SimulatedRadios:
    """The reporting state of simulated sensors, steered by downlinks over MQTT.

    Parameters
    ----------
    mqtt_url : str
    registry : mapping of str to DeviceEntry
        The simulated devices (DevEUI = device id), for their codecs.
    normal_interval_s : int
        Each device's interval until told otherwise.
    time_scale : float
        Simulated seconds per second of reading time: a demo that runs a tick
        of 5 simulated minutes every 0.1 s has 3000.
    """

    def __init__(
        self,
        mqtt_url: str,
        registry: Mapping[str, DeviceEntry],
        *,
        normal_interval_s: int = 600,
        time_scale: float = 1.0,
    ) -> None:
        self.registry = dict(registry)
        self.normal_interval_s = normal_interval_s
        self.time_scale = time_scale
        self.intervals: dict[str, int] = {}
        self.requested: set[str] = set()
        self.last_sent: dict[str, datetime] = {}
        self.changes: dict[str, list[tuple[datetime | None, int]]] = {}
        self.received = 0
        self.ignored: Counter[str] = Counter()
        self.skipped = 0  # readings a sleeping sensor did not transmit
        self._lock = threading.Lock()
        self._clock: dict[str, datetime] = {}  # each device's newest reading time
        target = parse_mqtt_url(mqtt_url)
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="", protocol=mqtt.MQTTv311
        )
        target.configure(self._client)
        self._subscribed = threading.Event()
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = lambda *_a: self._subscribed.set()
        self._client.on_message = self._on_message
        self._client.connect(target.host, target.port)
        self._client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError(f"could not subscribe to downlinks on {target.redacted()}")

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        client.subscribe([(t, 1) for t in TOPICS])

    def _on_message(self, client, userdata, message) -> None:
        try:
            device, items = _commands(message.topic, message.payload)
        except (ValueError, KeyError, TypeError, IndexError, binascii.Error):
            self.ignored["malformed"] += 1
            return
        dev_eui = device.removeprefix("eui-").lower()
        entry = self.registry.get(dev_eui)
        encoder = downlink_encoder(entry.codec) if entry else None
        if encoder is None:
            self.ignored["no_encoder"] += 1
            return
        for f_port, payload in items:
            try:
                command, args = encoder.decode(f_port, payload)
            except DownlinkError as exc:
                self.ignored["undecodable"] += 1
                log.debug("device %s ignored a downlink: %s", dev_eui, exc)
                continue
            with self._lock:
                self.received += 1
                if command == "set_interval":
                    self.intervals[dev_eui] = args["interval_s"]
                    at = self._clock.get(dev_eui)
                    self.changes.setdefault(dev_eui, []).append((at, args["interval_s"]))
                else:
                    self.requested.add(dev_eui)

    def interval(self, dev_eui: str) -> int:
        return self.intervals.get(dev_eui, self.normal_interval_s)

    def due(self, dev_eui: str, ts: datetime) -> bool:
        """Whether the sensor transmits its reading taken at ``ts`` (and note it if so)."""
        with self._lock:
            self._clock[dev_eui] = ts
            last = self.last_sent.get(dev_eui)
            asked = dev_eui in self.requested
            # A hair of slack: tick times jitter, and a tick must count as a full tick.
            elapsed = (ts - last).total_seconds() * self.time_scale * 1.01 if last else 0.0
            if asked or last is None or elapsed >= self.interval(dev_eui):
                self.requested.discard(dev_eui)
                self.last_sent[dev_eui] = ts
                return True
            self.skipped += 1
            return False

    def loops(self) -> list[dict[str, object]]:
        """Devices whose interval was shortened and later restored: the closed loop."""
        out = []
        for dev_eui, changes in sorted(self.changes.items()):
            values = [v for _, v in changes]
            fast = min(values)
            if fast < self.normal_interval_s and values[-1] == self.normal_interval_s:
                out.append(
                    {
                        "device": dev_eui,
                        "intervals_s": [self.normal_interval_s, *values],
                        "changed_at": [t.isoformat() if t else None for t, _ in changes],
                    }
                )
        return out

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
